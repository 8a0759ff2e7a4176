from __future__ import annotations

from typing import Any

import pytest

from vk_operator.domain.env import EnvEvent, ReadError, Sources
from vk_operator.domain.volumes import ResolvedVolume, VolumeResult, credential_secrets, resolve_volumes

TOKEN = "eyJhbGciOiJSUzI1NiJ9.token"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _pod(*volumes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "uid": "1234-abcd",
            "labels": {"tier": "front", "app": "web"},
            "annotations": {"quote": 'a"b', "multi": "l1\nl2"},
        },
        "spec": {
            "containers": [{"name": "app", "image": "busybox", "resources": {"limits": {"memory": "256Mi"}}}],
            "volumes": list(volumes),
        },
    }


def _sources(**overrides: Any) -> Sources:
    values: dict[str, Any] = {
        "configmaps": {"cm": {"a.conf": "A", "b.conf": "B"}, "kube-root-ca.crt": {"ca.crt": CA}},
        "secrets": {"sec": {"user": b"admin", "key.pem": b"\x00\x01binary"}},
        "service_account_token": TOKEN,
    }
    values.update(overrides)
    return Sources(**values)


def _resolve(*volumes: dict[str, Any], **overrides: Any) -> VolumeResult:
    return resolve_volumes(_pod(*volumes), _sources(**overrides))


def _only(result: VolumeResult) -> ResolvedVolume:
    assert result.fatal is None, result.fatal
    (volume,) = result.volumes.values()
    return volume


KUBE_API_ACCESS = {
    "name": "kube-api-access-x7k2p",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {
                "downwardAPI": {
                    "items": [
                        {
                            "path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                        }
                    ]
                }
            },
        ],
    },
}


def test_the_auto_injected_kube_api_access_volume() -> None:
    result = _resolve(KUBE_API_ACCESS)
    assert result.fatal is None
    assert result.events == ()
    assert result.volumes == {
        "kube-api-access-x7k2p": ResolvedVolume(
            name="kube-api-access-x7k2p",
            kind="projected",
            files={"token": TOKEN.encode(), "ca.crt": CA.encode(), "namespace": b"shop"},
            sensitive=True,
            modes={"token": 0o644, "ca.crt": 0o644, "namespace": 0o644},
        )
    }


def test_kube_api_access_without_token_fails_to_mount() -> None:
    result = _resolve(KUBE_API_ACCESS, service_account_token=None)
    assert result.volumes == {}
    assert result.fatal == EnvEvent(
        "FailedMount",
        'MountVolume.SetUp failed for volume "kube-api-access-x7k2p" : service account token not available',
        True,
    )


# -------- configMap/secret


@pytest.mark.parametrize(
    ("volume", "files", "sensitive"),
    [
        ({"configMap": {"name": "cm"}}, {"a.conf": b"A", "b.conf": b"B"}, False),
        (
            {"configMap": {"name": "cm", "items": [{"key": "b.conf", "path": "etc/b"}]}},
            {"etc/b": b"B"},
            False,
        ),
        ({"configMap": {"name": "absent", "optional": True}}, {}, False),
        (
            {
                "configMap": {
                    "name": "cm",
                    "optional": True,
                    "items": [{"key": "nope", "path": "n"}, {"key": "a.conf", "path": "a"}],
                }
            },
            {"a": b"A"},
            False,
        ),
        ({"secret": {"secretName": "sec"}}, {"user": b"admin", "key.pem": b"\x00\x01binary"}, True),
        ({"secret": {"secretName": "sec", "items": [{"key": "user", "path": "u"}]}}, {"u": b"admin"}, True),
        ({"secret": {"secretName": "absent", "optional": True}}, {}, True),
        (
            {"secret": {"secretName": "sec", "optional": True, "items": [{"key": "nope", "path": "n"}]}},
            {},
            True,
        ),
        ({"emptyDir": {}}, {}, False),
    ],
)
def test_configmap_and_secret_volumes(
    volume: dict[str, Any], files: dict[str, bytes], sensitive: bool
) -> None:
    resolved = _only(_resolve({"name": "vol", **volume}))
    assert resolved.name == "vol"
    assert resolved.kind == next(iter(volume))
    assert resolved.files == files
    assert resolved.sensitive is sensitive


@pytest.mark.parametrize(
    ("volume", "reason", "message"),
    [
        (
            {"configMap": {"name": "absent", "optional": True}},
            "OptionalConfigMapNotFound",
            'optional configmap "absent"',
        ),
        (
            {"configMap": {"name": "cm", "optional": True, "items": [{"key": "nope", "path": "n"}]}},
            "OptionalConfigMapKeyNotFound",
            'key "nope" does not exist in optional configmap "cm"',
        ),
        (
            {"secret": {"secretName": "absent", "optional": True}},
            "OptionalSecretNotFound",
            'optional secret "absent"',
        ),
        (
            {"secret": {"secretName": "sec", "optional": True, "items": [{"key": "nope", "path": "n"}]}},
            "OptionalSecretKeyNotFound",
            'key "nope" does not exist in optional secret "sec"',
        ),
    ],
)
def test_optional_sources_record_an_event(volume: dict[str, Any], reason: str, message: str) -> None:
    result = _resolve({"name": "vol", **volume})
    assert result.fatal is None
    assert [(e.reason, e.warning) for e in result.events] == [(reason, False)]
    assert message in result.events[0].message
    assert '"vol"' in result.events[0].message


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"configMap": {"name": "absent"}}, 'configmap "absent" not found'),
        (
            {"configMap": {"name": "cm", "items": [{"key": "nope", "path": "n"}]}},
            'configmap "cm" references non-existent key "nope"',
        ),
        ({"configMap": {"name": "denied"}}, 'failed to read configmap "denied": forbidden'),
        ({"configMap": {"name": "denied", "optional": True}}, 'failed to read configmap "denied": forbidden'),
        ({"secret": {"secretName": "absent"}}, 'secret "absent" not found'),
        (
            {"secret": {"secretName": "sec", "items": [{"key": "nope", "path": "n"}]}},
            'secret "sec" references non-existent key "nope"',
        ),
        ({"secret": {"secretName": "denied"}}, 'failed to read secret "denied": forbidden'),
        ({"projected": {"sources": [{"configMap": {"name": "absent"}}]}}, 'configmap "absent" not found'),
        ({"projected": {"sources": [{"secret": {"name": "absent"}}]}}, 'secret "absent" not found'),
        (
            {"configMap": {"name": "cm", "items": [{"key": "a.conf", "path": "../escape"}]}},
            "invalid path '../escape': must be relative and without '..'",
        ),
        (
            {"configMap": {"name": "cm", "items": [{"key": "a.conf", "path": "/etc/passwd"}]}},
            "invalid path '/etc/passwd': must be relative and without '..'",
        ),
    ],
)
def test_mandatory_problems_fail_the_mount(volume: dict[str, Any], message: str) -> None:
    denied = ReadError("forbidden")
    store = {"cm": {"a.conf": "A"}, "denied": denied}
    secrets = {"sec": {"user": b"admin"}, "denied": denied}
    result = _resolve({"name": "vol", **volume}, configmaps=store, secrets=secrets)
    assert result.volumes == {}
    assert result.fatal == EnvEvent(
        "FailedMount", f'MountVolume.SetUp failed for volume "vol" : {message}', True
    )


def test_configmap_binary_data_and_modes() -> None:
    volume = {
        "name": "vol",
        "configMap": {
            "name": "cm",
            "defaultMode": 0o600,
            "items": [{"key": "a.conf", "path": "a", "mode": 0o755}, {"key": "blob", "path": "b"}],
        },
    }
    resolved = _only(_resolve(volume, configmap_binary={"cm": {"blob": b"\xff\xfe"}}))
    assert resolved.files == {"a": b"A", "b": b"\xff\xfe"}
    assert resolved.modes == {"a": 0o755, "b": 0o600}


def test_configmap_all_keys_include_binary_data() -> None:
    resolved = _only(
        _resolve({"name": "vol", "configMap": {"name": "cm"}}, configmap_binary={"cm": {"blob": b"\x00"}})
    )
    assert resolved.files == {"a.conf": b"A", "b.conf": b"B", "blob": b"\x00"}


# -------- downwardAPI


@pytest.mark.parametrize(
    ("item", "content"),
    [
        ({"fieldRef": {"fieldPath": "metadata.name"}}, b"web-0"),
        ({"fieldRef": {"fieldPath": "metadata.namespace"}}, b"shop"),
        ({"fieldRef": {"fieldPath": "metadata.uid"}}, b"1234-abcd"),
        ({"fieldRef": {"fieldPath": "metadata.labels"}}, b'app="web"\ntier="front"'),
        ({"fieldRef": {"fieldPath": "metadata.annotations"}}, b'multi="l1\\nl2"\nquote="a\\"b"'),
        ({"fieldRef": {"fieldPath": "metadata.labels['tier']"}}, b"front"),
        ({"fieldRef": {"fieldPath": "metadata.annotations['multi']"}}, b"l1\nl2"),
        (
            {"resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}},
            b"256",
        ),
        ({"resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}}, b"4000"),
    ],
)
def test_downward_api_items(item: dict[str, Any], content: bytes) -> None:
    volume = {"name": "info", "downwardAPI": {"items": [{"path": "f", **item}]}}
    resolved = _only(_resolve(volume, node_allocatable={"cpu": "4"}))
    assert resolved.kind == "downwardAPI"
    assert resolved.files == {"f": content}
    assert resolved.sensitive is False


@pytest.mark.parametrize(
    ("item", "reason", "mentions"),
    [
        ({"fieldRef": {"fieldPath": "status.podIP"}}, "UnsupportedFieldPath", "status.podIP"),
        ({"fieldRef": {"fieldPath": "spec.nodeName"}}, "UnsupportedFieldPath", "spec.nodeName"),
        (
            {"resourceFieldRef": {"containerName": "ghost", "resource": "limits.cpu"}},
            "InvalidResourceFieldRef",
            "ghost",
        ),
        ({}, "FailedMount", "neither fieldRef nor resourceFieldRef"),
    ],
)
def test_downward_api_errors(item: dict[str, Any], reason: str, mentions: str) -> None:
    result = _resolve({"name": "info", "downwardAPI": {"items": [{"path": "f", **item}]}}, pod_ip="10.0.0.1")
    assert result.fatal is not None
    assert result.fatal.reason == reason
    assert mentions in result.fatal.message
    assert '"info"' in result.fatal.message


# -------- projected


def test_projected_combines_sources_and_is_sensitive_with_a_secret() -> None:
    volume = {
        "name": "all",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"configMap": {"name": "cm", "items": [{"key": "a.conf", "path": "conf/a"}]}},
                {"secret": {"name": "sec", "items": [{"key": "user", "path": "creds/user", "mode": 0o400}]}},
                {
                    "downwardAPI": {
                        "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                    }
                },
                {"configMap": {"name": "absent", "optional": True}},
            ],
        },
    }
    result = _resolve(volume)
    resolved = _only(result)
    assert resolved.files == {"conf/a": b"A", "creds/user": b"admin", "labels": b'app="web"\ntier="front"'}
    assert resolved.modes == {"conf/a": 0o440, "creds/user": 0o400, "labels": 0o440}
    assert resolved.sensitive is True
    assert [e.reason for e in result.events] == ["OptionalConfigMapNotFound"]


def test_projected_without_secret_or_token_is_not_sensitive() -> None:
    volume = {
        "name": "p",
        "projected": {"sources": [{"configMap": {"name": "cm", "items": [{"key": "a.conf", "path": "a"}]}}]},
    }
    assert _only(_resolve(volume)).sensitive is False


@pytest.mark.parametrize("source", ["clusterTrustBundle", "podCertificate"])
def test_unsupported_projected_sources(source: str) -> None:
    volume = {"name": "bundle", "projected": {"sources": [{source: {"path": "ca.pem", "name": "x"}}]}}
    result = _resolve(volume)
    assert result.volumes == {}
    assert result.fatal == EnvEvent(
        "UnsupportedVolume",
        f'volume "bundle" has a projected {source} source, which this provider cannot mount',
        True,
    )


# -------- emptyDir & others


@pytest.mark.parametrize(
    ("spec", "medium", "size_limit"),
    [
        ({}, "", None),
        ({"medium": "Memory"}, "Memory", None),
        ({"medium": "Memory", "sizeLimit": "64Mi"}, "Memory", "64Mi"),
    ],
)
def test_empty_dir(spec: dict[str, Any], medium: str, size_limit: str | None) -> None:
    assert _only(_resolve({"name": "scratch", "emptyDir": spec})) == ResolvedVolume(
        "scratch", "emptyDir", {}, False, medium=medium, size_limit=size_limit
    )


def test_a_volume_without_source_is_an_empty_dir() -> None:
    assert _only(_resolve({"name": "bare"})).kind == "emptyDir"


@pytest.mark.parametrize(
    "kind", ["hostPath", "persistentVolumeClaim", "nfs", "csi", "ephemeral", "image", "iscsi", "gitRepo"]
)
def test_unsupported_volume_types(kind: str) -> None:
    result = _resolve({"name": "ok", "emptyDir": {}}, {"name": "data", kind: {"path": "/x"}})
    assert result.volumes == {}
    assert result.fatal == EnvEvent(
        "UnsupportedVolume", f'volume "data" has type {kind}, which this provider cannot mount', True
    )


def test_several_volumes_and_no_secret_value_in_events() -> None:
    result = _resolve(
        KUBE_API_ACCESS,
        {"name": "cfg", "configMap": {"name": "cm"}},
        {
            "name": "creds",
            "secret": {"secretName": "sec", "optional": True, "items": [{"key": "gone", "path": "g"}]},
        },
        {"name": "tmp", "emptyDir": {}},
    )
    assert result.fatal is None
    assert list(result.volumes) == ["kube-api-access-x7k2p", "cfg", "creds", "tmp"]
    assert [e.reason for e in result.events] == ["OptionalSecretKeyNotFound"]
    for event in result.events:
        assert "admin" not in event.message
        assert TOKEN not in event.message


def test_no_volumes() -> None:
    assert resolve_volumes({"metadata": {"name": "p"}, "spec": {}}, _sources()) == VolumeResult({}, (), None)


# -- provider-declared volume types ------------------------------------------------------------------
NFS = {"server": "10.0.0.5", "path": "/exports"}
AZURE_CSI = {"driver": "file.csi.azure.com", "volumeAttributes": {"shareName": "data"}}


@pytest.mark.parametrize(
    ("volume", "declared", "kind", "source"),
    [
        ({"name": "data", "nfs": NFS}, {"nfs"}, "nfs", NFS),
        ({"name": "data", "csi": AZURE_CSI}, {"csi:file.csi.azure.com"}, "csi", AZURE_CSI),
        (
            {"name": "data", "azureFile": {"shareName": "s"}},
            {"azureFile", "nfs"},
            "azureFile",
            {"shareName": "s"},
        ),
    ],
)
def test_declared_volume_types_pass_through(
    volume: dict[str, Any], declared: set[str], kind: str, source: dict[str, Any]
) -> None:
    result = resolve_volumes(_pod({"name": "ok", "emptyDir": {}}, volume), _sources(), frozenset(declared))
    assert result.fatal is None
    assert result.volumes["data"] == ResolvedVolume("data", kind, {}, False, source=source)
    assert result.volumes["ok"].kind == "emptyDir"  # the core still resolves what it knows


@pytest.mark.parametrize(
    ("volume", "declared", "named"),
    [
        (
            {"name": "data", "csi": {"driver": "disk.csi.azure.com"}},
            {"csi:file.csi.azure.com"},
            "csi:disk.csi.azure.com",
        ),
        ({"name": "data", "nfs": NFS}, {"azureFile"}, "nfs"),
        ({"name": "data", "hostPath": {"path": "/"}}, set(), "hostPath"),
    ],
)
def test_undeclared_volume_types_still_fail_naming_the_volume(
    volume: dict[str, Any], declared: set[str], named: str
) -> None:
    result = resolve_volumes(_pod(volume), _sources(), frozenset(declared))
    assert result.volumes == {}
    assert result.fatal == EnvEvent(
        "UnsupportedVolume", f'volume "data" has type {named}, which this provider cannot mount', True
    )


STORAGE_KEY = {"azurestorageaccountname": b"acct", "azurestorageaccountkey": b"s3cr3t=="}


@pytest.mark.parametrize(
    ("volume", "declared"),
    [
        ({"name": "data", "azureFile": {"shareName": "s", "secretName": "files"}}, "azureFile"),
        (
            {"name": "data", "csi": {**AZURE_CSI, "nodePublishSecretRef": {"name": "files"}}},
            "csi:file.csi.azure.com",
        ),
        ({"name": "data", "cephfs": {"monitors": ["m"], "secretRef": {"name": "files"}}}, "cephfs"),
    ],
)
def test_a_declared_volume_gets_the_secret_it_names(volume: dict[str, Any], declared: str) -> None:
    pod = _pod(volume)
    assert credential_secrets(pod) == {"files"}
    result = resolve_volumes(pod, _sources(secrets={"files": STORAGE_KEY}), frozenset({declared}))
    assert result.fatal is None
    resolved = result.volumes["data"]
    assert resolved.secret == STORAGE_KEY and resolved.sensitive
    assert "s3cr3t" not in repr(resolved)


@pytest.mark.parametrize(
    ("found", "why"),
    [
        (None, 'secret "files" not found'),
        (ReadError("forbidden"), 'failed to read secret "files": forbidden'),
    ],
)
def test_a_declared_volume_waits_for_the_secret_it_names(found: Any, why: str) -> None:
    volume = {"name": "data", "azureFile": {"shareName": "s", "secretName": "files"}}
    result = resolve_volumes(_pod(volume), _sources(secrets={"files": found}), frozenset({"azureFile"}))
    assert result.fatal == EnvEvent(
        "FailedMount", f'MountVolume.SetUp failed for volume "data" : {why}', True
    )


def test_volume_credentials_are_read_only_for_types_the_core_does_not_mount() -> None:
    pod = _pod({"name": "s", "secret": {"secretName": "plain"}}, {"name": "e", "emptyDir": {}})
    assert credential_secrets(pod) == set()
