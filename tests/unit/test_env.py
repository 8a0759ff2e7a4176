from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from vk_operator.domain import env
from vk_operator.domain.env import EnvEvent, ReadError, Sources
from vk_operator.domain.quantity import parse_quantity

SECRET_VALUE = "s3cr3t-p4ssw0rd"


def _pod(
    *containers: dict[str, Any],
    init: tuple[dict[str, Any], ...] = (),
    volumes: tuple[dict[str, Any], ...] = (),
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "uid": "1234-abcd",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": 'say "hi"\n'},
        },
        "spec": {
            "nodeName": "vk-node",
            "serviceAccountName": "web-sa",
            "initContainers": list(init),
            "containers": list(containers),
            "volumes": list(volumes),
            **spec,
        },
    }


def _container(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **fields}


def _sources(**overrides: Any) -> Sources:
    values: dict[str, Any] = {
        "configmaps": {"cm": {"A": "from-cm", "B": "b"}},
        "secrets": {"sec": {"PASSWORD": SECRET_VALUE.encode()}},
    }
    values.update(overrides)
    return Sources(**values)


def _vars(result: env.EnvResult, container: str = "app") -> dict[str, str]:
    return {var["name"]: var["value"] for var in result.containers[container]}


def _service(name: str, ip: str, *ports: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": list(ports)},
    }


KUBERNETES = _service(
    "kubernetes", "10.96.0.1", {"name": "https", "port": 443, "protocol": "TCP"}, namespace="default"
)
KUBERNETES_VARS = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


# -------- expansion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The kubelet's own table (third_party/forked/golang/expansion/expand_test.go).
        ("$(VAR_A)", "A"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
        ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
        ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
        ("$(VAR_REF)", "$(VAR_A)"),
        ("foo$(VAR_EMPTY)bar", "foobar"),
        ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
        ("f00__(VAR_A)__", "f00__(VAR_A)__"),
        ("$?_boo_$!", "$?_boo_$!"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),
        ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
        ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
        ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
        ("$$$$$$$(VAR_A)", "$$$A"),
        ("$VAR_A)", "$VAR_A)"),
        ("${VAR_A}", "${VAR_A}"),
        ("$(VAR_B)_______$(A", "B_______$(A"),
        ("$(VAR_C)_______$(", "C_______$("),
        ("$(VAR_A)foobarzab$", "Afoobarzab$"),
        ("--$($($($($--", "--$($($($($--"),
        ("$(foo$$var)", "$(foo$$var)"),
        ("$()", "$()"),
        ("\n", "\n"),
    ],
)
def test_expand_follows_the_kubelet(text: str, expected: str) -> None:
    mapping = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}
    assert env.expand(text, mapping) == expected


def test_expand_command_uses_the_resolved_env() -> None:
    container = _container(
        command=["sh", "-c", "echo $(GREETING) $(MISSING)"], args=["$$(GREETING)", "$(WHO)"]
    )
    command, args = env.expand_command(
        container, [{"name": "GREETING", "value": "hi"}, {"name": "WHO", "value": "me"}]
    )
    assert command == ["sh", "-c", "echo hi $(MISSING)"]
    assert args == ["$(GREETING)", "me"]
    assert container["args"] == ["$$(GREETING)", "$(WHO)"]  # new lists, the spec is untouched


def test_expand_command_without_command_or_args() -> None:
    assert env.expand_command(_container(), [{"name": "A", "value": "1"}]) == ([], [])


# -------- quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Fraction(1)),
        ("0", Fraction(0)),
        ("100m", Fraction(1, 10)),
        ("1500m", Fraction(3, 2)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("2.", Fraction(2)),
        ("+3", Fraction(3)),
        ("-2k", Fraction(-2000)),
        ("250n", Fraction(250, 10**9)),
        ("10u", Fraction(10, 10**6)),
        ("1k", Fraction(1000)),
        ("5M", Fraction(5 * 10**6)),
        ("2G", Fraction(2 * 10**9)),
        ("1T", Fraction(10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),
        ("1Ki", Fraction(1024)),
        ("128Mi", Fraction(128 * 2**20)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1Ti", Fraction(2**40)),
        ("1Pi", Fraction(2**50)),
        ("1Ei", Fraction(2**60)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("12e-3", Fraction(12, 1000)),
        ("2e+2", Fraction(200)),
        ("100n", Fraction(1, 10**7)),
        (" 64Mi ", Fraction(64 * 2**20)),
    ],
)
def test_parse_quantity(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "m", "1x", "1KI", "1e", "abc", "1.2.3", "--1", "1 Gi"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)


# -------- service links


def test_service_links_with_named_ports_and_the_master_service() -> None:
    services = [
        _service(
            "my-svc",
            "10.0.0.5",
            {"name": "http", "port": 80},
            {"name": "metrics", "port": 9090, "protocol": "UDP"},
        ),
        _service("headless", "None", {"port": 80}),
        _service("pending", "", {"port": 80}),
        _service("other-ns", "10.0.0.9", {"port": 80}, namespace="elsewhere"),
    ]
    result = env.resolve_env(_pod(_container()), _sources(services=services, master_services=[KUBERNETES]))
    assert result.fatal is None
    assert result.containers["app"] == [
        {"name": name, "value": value}
        for name, value in [
            *KUBERNETES_VARS.items(),
            ("MY_SVC_SERVICE_HOST", "10.0.0.5"),
            ("MY_SVC_SERVICE_PORT", "80"),
            ("MY_SVC_SERVICE_PORT_HTTP", "80"),
            ("MY_SVC_SERVICE_PORT_METRICS", "9090"),
            ("MY_SVC_PORT", "tcp://10.0.0.5:80"),
            ("MY_SVC_PORT_80_TCP", "tcp://10.0.0.5:80"),
            ("MY_SVC_PORT_80_TCP_PROTO", "tcp"),
            ("MY_SVC_PORT_80_TCP_PORT", "80"),
            ("MY_SVC_PORT_80_TCP_ADDR", "10.0.0.5"),
            ("MY_SVC_PORT_9090_UDP", "udp://10.0.0.5:9090"),
            ("MY_SVC_PORT_9090_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_9090_UDP_PORT", "9090"),
            ("MY_SVC_PORT_9090_UDP_ADDR", "10.0.0.5"),
        ]
    ]


@pytest.mark.parametrize(("enable", "linked"), [(None, True), (True, True), (False, False)])
def test_enable_service_links(enable: bool | None, linked: bool) -> None:
    spec = {} if enable is None else {"enableServiceLinks": enable}
    pod = _pod(_container(), **spec)
    sources = _sources(services=[_service("db", "10.0.0.7", {"port": 5432})], master_services=[KUBERNETES])
    variables = _vars(env.resolve_env(pod, sources))
    assert env.needs_service_links(pod) is linked
    assert ("DB_SERVICE_HOST" in variables) is linked
    assert variables["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"  # always linked, like the kubelet
    if not linked:
        assert variables == KUBERNETES_VARS


def test_service_link_with_ipv6_cluster_ip() -> None:
    sources = _sources(services=[_service("v6", "fd00::10", {"port": 80})])
    variables = _vars(env.resolve_env(_pod(_container()), sources))
    assert variables["V6_SERVICE_HOST"] == "fd00::10"
    assert variables["V6_PORT"] == "tcp://[fd00::10]:80"
    assert variables["V6_PORT_80_TCP_ADDR"] == "fd00::10"


def test_namespace_service_named_kubernetes_wins_over_the_master_one() -> None:
    sources = _sources(
        services=[_service("kubernetes", "10.0.0.2", {"port": 8443})], master_services=[KUBERNETES]
    )
    assert _vars(env.resolve_env(_pod(_container()), sources))["KUBERNETES_SERVICE_HOST"] == "10.0.0.2"


# -------- order


def test_order_and_last_definition_wins() -> None:
    container = _container(
        envFrom=[{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "sec"}}],
        env=[
            {"name": "Z_FIRST", "value": "z"},
            {"name": "A", "value": "from-env"},  # overrides envFrom, keeps its place
            {"name": "KUBERNETES_SERVICE_PORT", "value": "8443"},  # overrides a service link
            {"name": "Z_FIRST", "value": "z2"},
            {"name": "EMPTY"},
        ],
    )
    result = env.resolve_env(_pod(container), _sources(master_services=[KUBERNETES]))
    names = [var["name"] for var in result.containers["app"]]
    assert names == [*KUBERNETES_VARS, "A", "B", "PASSWORD", "Z_FIRST", "EMPTY"]
    variables = _vars(result)
    assert variables["A"] == "from-env"
    assert variables["KUBERNETES_SERVICE_PORT"] == "8443"
    assert variables["Z_FIRST"] == "z2"
    assert variables["EMPTY"] == ""


def test_init_containers_are_resolved_too() -> None:
    init = _container("setup", env=[{"name": "PHASE", "value": "init"}])
    result = env.resolve_env(
        _pod(_container(env=[{"name": "PHASE", "value": "main"}]), init=(init,)), _sources()
    )
    assert list(result.containers) == ["setup", "app"]
    assert _vars(result, "setup") == {"PHASE": "init"}
    assert _vars(result, "app") == {"PHASE": "main"}


# -------- expansion in env


def test_dollar_references_in_env_values() -> None:
    container = _container(
        envFrom=[{"configMapRef": {"name": "cm"}}],
        env=[
            {"name": "LATER_REF", "value": "$(DEFINED_LATER)"},
            {"name": "FROM_CM", "value": "$(A)-x"},
            {"name": "FROM_LINK", "value": "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
            {"name": "CHAIN", "value": "$(FROM_CM)-y"},
            {"name": "ESCAPED", "value": "$$(A)"},
            {"name": "UNDEFINED", "value": "$(NOPE)"},
            {"name": "DEFINED_LATER", "value": "late"},
        ],
    )
    variables = _vars(env.resolve_env(_pod(container), _sources(master_services=[KUBERNETES])))
    assert variables["LATER_REF"] == "$(DEFINED_LATER)"
    assert variables["FROM_CM"] == "from-cm-x"
    assert variables["FROM_LINK"] == "10.96.0.1:443"
    assert variables["CHAIN"] == "from-cm-x-y"
    assert variables["ESCAPED"] == "$(A)"
    assert variables["UNDEFINED"] == "$(NOPE)"


def test_value_from_results_are_not_expanded() -> None:
    sources = _sources(configmaps={"cm": {"RAW": "$(A)"}}, secrets={})
    container = _container(
        env=[
            {"name": "A", "value": "a"},
            {"name": "RAW", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "RAW"}}},
        ]
    )
    assert _vars(env.resolve_env(_pod(container), sources))["RAW"] == "$(A)"


# -------- envFrom


def test_env_from_prefix_and_invalid_names() -> None:
    sources = _sources(
        configmaps={"cm": {"good": "1", "1bad": "2", "also bad": "3", "dotted.name": "4"}},
        secrets={"sec": {"TOKEN": b"t", "9x": b"y"}},
    )
    container = _container(
        envFrom=[
            {"configMapRef": {"name": "cm"}},
            {"configMapRef": {"name": "cm"}, "prefix": "P_"},
            {"secretRef": {"name": "sec"}, "prefix": "S_"},
        ]
    )
    result = env.resolve_env(_pod(container), sources)
    assert result.fatal is None
    assert _vars(result) == {
        "dotted.name": "4",
        "good": "1",
        "P_1bad": "2",
        "P_dotted.name": "4",
        "P_good": "1",
    } | {
        "S_9x": "y",
        "S_TOKEN": "t",
    }
    assert result.events == (
        EnvEvent(
            "InvalidEnvironmentVariableNames",
            'container "app": keys [1bad, also bad] from configmap "cm" were skipped since they are invalid '
            "as environment variable names",
            True,
        ),
        EnvEvent(
            "InvalidEnvironmentVariableNames",
            'container "app": keys [P_also bad] from configmap "cm" were skipped since they are invalid '
            "as environment variable names",
            True,
        ),
    )


def test_env_from_unknown_kind_is_fatal() -> None:
    result = env.resolve_env(_pod(_container(envFrom=[{"prefix": "X_"}])), _sources())
    assert result.fatal is not None
    assert result.fatal.reason == "UnsupportedEnvSource"


@pytest.mark.parametrize(
    ("ref_kind", "found", "optional", "event_reason", "fatal_reason"),
    [
        ("configMapRef", None, True, "OptionalConfigMapNotFound", None),
        ("configMapRef", None, False, None, "MandatoryConfigMapNotFound"),
        ("configMapRef", ReadError("forbidden by RBAC"), True, "FailedToReadOptionalConfigMap", None),
        ("configMapRef", ReadError("forbidden by RBAC"), False, None, "FailedToReadMandatoryConfigMap"),
        ("secretRef", None, True, "OptionalSecretNotFound", None),
        ("secretRef", None, False, None, "MandatorySecretNotFound"),
        ("secretRef", ReadError("forbidden by RBAC"), True, "FailedToReadOptionalSecret", None),
        ("secretRef", ReadError("forbidden by RBAC"), False, None, "FailedToReadMandatorySecret"),
    ],
)
def test_env_from_missing_or_unreadable(
    ref_kind: str, found: ReadError | None, optional: bool, event_reason: str | None, fatal_reason: str | None
) -> None:
    store = {"gone": found}
    sources = _sources(configmaps=store, secrets=store)
    container = _container(
        envFrom=[{ref_kind: {"name": "gone", "optional": optional}}], env=[{"name": "KEPT", "value": "yes"}]
    )
    result = env.resolve_env(_pod(container), sources)
    if fatal_reason:
        assert result.fatal is not None
        assert result.fatal.reason == fatal_reason
        assert result.fatal.warning is True
        assert '"app"' in result.fatal.message
        assert '"gone"' in result.fatal.message
        assert result.containers == {}
        if found is not None:
            assert "forbidden by RBAC" in result.fatal.message
    else:
        assert result.fatal is None
        assert _vars(result) == {"KEPT": "yes"}
        assert [e.reason for e in result.events] == [event_reason]
        assert result.events[0].warning is isinstance(found, ReadError)
        assert result.events[0].message.startswith('container "app" envFrom: ')
        assert '"gone"' in result.events[0].message
        assert result.events[0].message.endswith("; skipped as optional")


# -------- key refs


@pytest.mark.parametrize(
    ("ref_kind", "store", "key", "optional", "value", "event_reason", "fatal_reason"),
    [
        ("configMapKeyRef", {"cm": {"k": "v"}}, "k", False, "v", None, None),
        ("configMapKeyRef", {"cm": {"k": "v"}}, "k", True, "v", None, None),
        ("configMapKeyRef", {}, "k", True, None, "OptionalConfigMapNotFound", None),
        ("configMapKeyRef", {"cm": None}, "k", False, None, None, "MandatoryConfigMapNotFound"),
        ("configMapKeyRef", {"cm": {"other": "v"}}, "k", True, None, "OptionalConfigMapKeyNotFound", None),
        ("configMapKeyRef", {"cm": {"other": "v"}}, "k", False, None, None, "MandatoryConfigMapKeyNotFound"),
        (
            "configMapKeyRef",
            {"cm": ReadError("boom")},
            "k",
            True,
            None,
            "FailedToReadOptionalConfigMap",
            None,
        ),
        (
            "configMapKeyRef",
            {"cm": ReadError("boom")},
            "k",
            False,
            None,
            None,
            "FailedToReadMandatoryConfigMap",
        ),
        ("secretKeyRef", {"cm": {"k": b"v"}}, "k", False, "v", None, None),
        ("secretKeyRef", {"cm": {"k": b"\xffv"}}, "k", False, "\ufffdv", None, None),
        ("secretKeyRef", {}, "k", True, None, "OptionalSecretNotFound", None),
        ("secretKeyRef", {"cm": None}, "k", False, None, None, "MandatorySecretNotFound"),
        ("secretKeyRef", {"cm": {"other": b"v"}}, "k", True, None, "OptionalSecretKeyNotFound", None),
        ("secretKeyRef", {"cm": {"other": b"v"}}, "k", False, None, None, "MandatorySecretKeyNotFound"),
        ("secretKeyRef", {"cm": ReadError("boom")}, "k", True, None, "FailedToReadOptionalSecret", None),
        ("secretKeyRef", {"cm": ReadError("boom")}, "k", False, None, None, "FailedToReadMandatorySecret"),
    ],
)
def test_key_refs(
    ref_kind: str,
    store: dict[str, Any],
    key: str,
    optional: bool,
    value: str | None,
    event_reason: str | None,
    fatal_reason: str | None,
) -> None:
    sources = _sources(configmaps=store, secrets=store)
    ref = {"name": "cm", "key": key, "optional": optional}
    container = _container(
        env=[{"name": "VAR", "valueFrom": {ref_kind: ref}}, {"name": "NEXT", "value": "n"}]
    )
    result = env.resolve_env(_pod(container), sources)
    if fatal_reason:
        assert result.fatal is not None
        assert result.fatal.reason == fatal_reason
        # The message names the container, the variable, the object and (when relevant) the key.
        for part in ('"app"', '"VAR"', '"cm"'):
            assert part in result.fatal.message
        if "Key" in fatal_reason:
            assert '"k"' in result.fatal.message
        if "FailedToRead" in fatal_reason:
            assert "boom" in result.fatal.message
        assert result.containers == {}
        return
    assert result.fatal is None
    variables = _vars(result)
    assert variables.get("VAR") == value
    assert variables["NEXT"] == "n"
    assert [e.reason for e in result.events] == ([event_reason] if event_reason else [])
    if event_reason:
        assert result.events[0].warning is event_reason.startswith("FailedToRead")
        assert '"VAR"' in result.events[0].message


def test_first_mandatory_problem_stops_everything() -> None:
    first = _container(
        "first", env=[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]
    )
    second = _container(
        "second", env=[{"name": "B", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]
    )
    result = env.resolve_env(_pod(first, second), _sources())
    assert result.fatal == EnvEvent(
        "MandatoryConfigMapNotFound", 'container "first" envvar "A": configmap "nope" not found', True
    )


# -------- secrets


def test_secret_vars_track_secret_sourced_values() -> None:
    container = _container(
        envFrom=[{"secretRef": {"name": "sec"}, "prefix": "S_"}, {"configMapRef": {"name": "cm"}}],
        env=[
            {"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
            {"name": "DSN", "value": "postgres://u:$(DB_PASS)@db"},  # carries the secret: secure too
            {"name": "PLAIN", "value": "$(A)"},
            {"name": "S_PASSWORD", "value": "overridden"},  # no longer from a Secret
        ],
    )
    init = _container("init", envFrom=[{"secretRef": {"name": "sec"}}])
    result = env.resolve_env(_pod(container, init=(init,)), _sources())
    assert result.secret_vars == frozenset({("app", "DB_PASS"), ("app", "DSN"), ("init", "PASSWORD")})
    assert _vars(result)["DSN"] == f"postgres://u:{SECRET_VALUE}@db"


def test_no_secret_value_in_any_event() -> None:
    sources = _sources(
        secrets={"sec": {"PASSWORD": SECRET_VALUE.encode(), "bad key": SECRET_VALUE.encode()}, "gone": None},
        configmaps={"cm": {SECRET_VALUE + " ": "x"}} | {"unreadable": ReadError("forbidden")},
    )
    container = _container(
        envFrom=[{"secretRef": {"name": "sec"}}, {"secretRef": {"name": "gone", "optional": True}}],
        env=[
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": True}}},
            {
                "name": "Y",
                "valueFrom": {"configMapKeyRef": {"name": "unreadable", "key": "k", "optional": True}},
            },
            {"name": "Z", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "missing"}}},
        ],
    )
    result = env.resolve_env(_pod(container), sources)
    assert [e.reason for e in result.events] == [
        "InvalidEnvironmentVariableNames",
        "OptionalSecretNotFound",
        "OptionalSecretKeyNotFound",
        "FailedToReadOptionalConfigMap",
    ]
    assert result.fatal is not None
    assert result.fatal.reason == "MandatorySecretKeyNotFound"
    for event in (*result.events, result.fatal):
        assert SECRET_VALUE not in event.message


# -------- fieldRef


@pytest.mark.parametrize(
    ("field_path", "value"),
    [
        ("metadata.name", "web-0"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "1234-abcd"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['note']", 'say "hi"\n'),
        ("metadata.labels", 'app="web"\ntier="front"'),
        ("metadata.annotations", 'note="say \\"hi\\"\\n"'),
        ("spec.nodeName", "vk-node"),
        ("spec.serviceAccountName", "web-sa"),
        ("status.podIP", "10.1.2.3"),
        ("status.podIPs", "10.1.2.3"),
        ("status.hostIP", "192.0.2.10"),
        ("status.hostIPs", "192.0.2.10"),
    ],
)
def test_field_refs(field_path: str, value: str) -> None:
    container = _container(
        env=[{"name": "V", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}]
    )
    result = env.resolve_env(_pod(container), _sources(pod_ip="10.1.2.3", host_ip="192.0.2.10"))
    assert result.fatal is None
    assert _vars(result) == {"V": value}


@pytest.mark.parametrize(
    ("field_path", "reason", "mentions"),
    [
        ("status.podIP", "PodIPNotAvailable", "status.podIP"),
        ("status.podIPs", "PodIPNotAvailable", "status.podIPs"),
        ("status.hostIP", "HostIPNotAvailable", "status.hostIP"),
        ("status.hostIPs", "HostIPNotAvailable", "status.hostIPs"),
        ("spec.hostname", "UnsupportedFieldPath", "spec.hostname"),
        ("metadata.generateName", "UnsupportedFieldPath", "metadata.generateName"),
    ],
)
def test_field_ref_failures(field_path: str, reason: str, mentions: str) -> None:
    container = _container(env=[{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": field_path}}}])
    result = env.resolve_env(_pod(container), _sources())
    assert result.fatal is not None
    assert result.fatal.reason == reason
    assert mentions in result.fatal.message
    assert '"V"' in result.fatal.message


def test_unknown_value_from_is_fatal() -> None:
    container = _container(env=[{"name": "V", "valueFrom": {"fileKeyRef": {"path": "x", "key": "k"}}}])
    result = env.resolve_env(_pod(container), _sources())
    assert result.fatal is not None
    assert result.fatal.reason == "UnsupportedEnvSource"
    assert "fileKeyRef" in result.fatal.message


# -------- resourceFieldRef

RESOURCES = {
    "limits": {"cpu": "1500m", "memory": "512Mi"},
    "requests": {"cpu": "250m", "memory": "100M", "ephemeral-storage": "1Gi"},
}
ALLOCATABLE = {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "100Gi"}


@pytest.mark.parametrize(
    ("ref", "value"),
    [
        ({"resource": "limits.cpu"}, "2"),  # 1.5 cores rounded up
        ({"resource": "limits.cpu", "divisor": "1"}, "2"),
        ({"resource": "limits.cpu", "divisor": "1m"}, "1500"),
        ({"resource": "limits.cpu", "divisor": "0"}, "2"),  # a zero divisor means 1
        ({"resource": "limits.cpu", "divisor": "1n"}, "1500"),  # MilliValue() of 1n rounds up to 1m
        ({"resource": "requests.cpu", "divisor": "1m"}, "250"),
        ({"resource": "requests.cpu"}, "1"),
        ({"resource": "limits.memory"}, str(512 * 2**20)),
        ({"resource": "limits.memory", "divisor": "1Mi"}, "512"),
        ({"resource": "limits.memory", "divisor": "1G"}, "1"),  # 0.54G rounded up
        ({"resource": "requests.memory", "divisor": "1Mi"}, "96"),  # 95.37Mi rounded up
        ({"resource": "requests.ephemeral-storage", "divisor": "1Mi"}, "1024"),
        # Unset limits default to the node allocatable.
        ({"resource": "limits.ephemeral-storage", "divisor": "1Gi"}, "100"),
        ({"resource": "limits.cpu", "containerName": "bare"}, "8"),
        ({"resource": "limits.cpu", "containerName": "bare", "divisor": "1m"}, "8000"),
        ({"resource": "limits.memory", "containerName": "bare", "divisor": "1Gi"}, "16"),
        (
            {"resource": "limits.memory", "containerName": "zero", "divisor": "1Gi"},
            "16",
        ),  # zero counts as unset
        # Unset requests are zero.
        ({"resource": "requests.cpu", "containerName": "bare"}, "0"),
        ({"resource": "requests.memory", "containerName": "init"}, "64"),
    ],
)
def test_resource_field_refs(ref: dict[str, str], value: str) -> None:
    container = _container(resources=RESOURCES, env=[{"name": "R", "valueFrom": {"resourceFieldRef": ref}}])
    bare = _container("bare")
    zero = _container("zero", resources={"limits": {"memory": "0"}})
    init = _container("init", resources={"requests": {"memory": "64"}})
    result = env.resolve_env(
        _pod(container, bare, zero, init=(init,)), _sources(node_allocatable=ALLOCATABLE)
    )
    assert result.fatal is None
    assert _vars(result)["R"] == value


def test_resource_field_ref_without_allocatable_is_zero() -> None:
    container = _container(
        env=[{"name": "R", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}]
    )
    assert _vars(env.resolve_env(_pod(container), _sources()))["R"] == "0"


@pytest.mark.parametrize(
    ("ref", "mentions"),
    [
        ({"resource": "limits.cpu", "containerName": "ghost"}, "ghost"),
        ({"resource": "limits.nvidia.com/gpu"}, "limits.nvidia.com/gpu"),
        ({"resource": "limits.cpu", "divisor": "lots"}, "lots"),
        ({"resource": "limits.cpu", "divisor": "-1m"}, "negative"),
    ],
)
def test_resource_field_ref_errors(ref: dict[str, str], mentions: str) -> None:
    container = _container(env=[{"name": "R", "valueFrom": {"resourceFieldRef": ref}}])
    result = env.resolve_env(_pod(container), _sources())
    assert result.fatal is not None
    assert result.fatal.reason == "InvalidResourceFieldRef"
    assert mentions in result.fatal.message


# -------- what to fetch


def _referencing_pod() -> dict[str, Any]:
    init = _container(
        "init",
        env=[
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "init-cm", "key": "k"}}},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        envFrom=[{"secretRef": {"name": "init-envfrom-secret"}}],
    )
    app = _container(
        env=[
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "k"}}},
            {"name": "D", "value": "plain"},
        ],
        envFrom=[{"configMapRef": {"name": "app-envfrom-cm"}}],
    )
    volumes = (
        {"name": "v1", "configMap": {"name": "vol-cm"}},
        {"name": "v2", "secret": {"secretName": "vol-secret"}},
        {
            "name": "v3",
            "projected": {
                "sources": [
                    {"configMap": {"name": "proj-cm"}},
                    {"secret": {"name": "proj-secret"}},
                    {"serviceAccountToken": {"path": "token"}},
                ]
            },
        },
        {"name": "v4", "emptyDir": {}},
    )
    return _pod(app, init=(init,), volumes=volumes)


def test_referenced_objects_cover_init_containers_and_volumes() -> None:
    pod = _referencing_pod()
    assert env.referenced_configmaps(pod) == {"init-cm", "app-envfrom-cm", "vol-cm", "proj-cm"}
    assert env.referenced_secrets(pod) == {"init-envfrom-secret", "app-secret", "vol-secret", "proj-secret"}


@pytest.mark.parametrize(
    ("pod", "pod_ip", "token", "links"),
    [
        (_referencing_pod(), True, True, True),
        (_pod(_container()), False, False, True),
        (
            _pod(_container(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}}])),
            True,
            False,
            True,
        ),
        (
            _pod(_container(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}])),
            False,
            False,
            True,
        ),
        (_pod(_container(), enableServiceLinks=False), False, False, False),
        ({"metadata": {"name": "empty"}}, False, False, True),
    ],
)
def test_needs(pod: dict[str, Any], pod_ip: bool, token: bool, links: bool) -> None:
    assert env.needs_pod_ip(pod) is pod_ip
    assert env.needs_service_account_token(pod) is token
    assert env.needs_service_links(pod) is links


def test_empty_pod_resolves_to_nothing() -> None:
    result = env.resolve_env({"metadata": {"name": "empty"}}, _sources())
    assert result == env.EnvResult({}, frozenset(), (), None)
