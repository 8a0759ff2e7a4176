"""Env and volume resolution for pods of the virtual node, against real ConfigMaps, Secrets, Services."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import (
    VirtualNode,
    chart_rules,
    events_for,
    eventually,
    pod_manifest,
    wait_event,
    wait_phase,
)
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
SECRET_VALUE = "hunter2-very-secret"


async def _objects(admin: Kube, namespace: str) -> None:
    await admin.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "cfg"}, "data": {"color": "blue", "size": "L", "1bad": "x"}},
    )
    await admin.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "metadata": {"name": "creds"},
            "data": {"password": base64.b64encode(SECRET_VALUE.encode()).decode()},
        },
    )
    await admin.create(
        f"/api/v1/namespaces/{namespace}/services",
        {"metadata": {"name": "backend"}, "spec": {"ports": [{"name": "http", "port": 8080}]}},
    )


def _provider_pod(vn: VirtualNode, uid: str) -> dict[str, Any]:
    return vn.provider_state()["pods"][uid]  # type: ignore[no-any-return]


async def test_env_is_resolved_for_the_provider(admin: Kube, namespace: str, virtual_node: StartNode) -> None:
    vn = await virtual_node()
    await _objects(admin, namespace)
    manifest = pod_manifest("env", vn.name)
    manifest["spec"]["containers"][0].update(
        {
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
            "envFrom": [
                {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                {"configMapRef": {"name": "cfg"}},
            ],
            "env": [
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {
                    "name": "OPTIONAL",
                    "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
                },
                {"name": "GREETING", "value": "color=$(COLOR) literal=$$(COLOR) unknown=$(UNDEFINED)"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {
                    "name": "CPU_MILLIS",
                    "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}},
                },
                {
                    "name": "MEM_MI",
                    "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
                },
            ],
        }
    )
    created = await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
    pod = await wait_phase(admin, namespace, "env", "Running")
    provider = _provider_pod(vn, created["metadata"]["uid"])
    env = {v["name"]: v["value"] for v in provider["pod"]["spec"]["containers"][0]["env"]}
    assert env["COLOR"] == "blue"
    assert env["CFG_color"] == "blue" and env["CFG_size"] == "L"
    assert env["CFG_1bad"] == "x" and "1bad" not in env  # invalid without the prefix: skipped
    assert env["PASSWORD"] == SECRET_VALUE
    assert "OPTIONAL" not in env
    assert env["GREETING"] == "color=blue literal=$(COLOR) unknown=$(UNDEFINED)"
    assert env["POD_IP"] == pod["status"]["podIP"]
    assert env["HOST_IP"] == "127.0.0.1"
    assert env["NODE"] == vn.name and env["POD_NAME"] == "env"
    assert (env["CPU_MILLIS"], env["MEM_MI"]) == ("500", "256")
    assert env["BACKEND_SERVICE_HOST"].startswith("10.0.0.") and env["BACKEND_SERVICE_PORT_HTTP"] == "8080"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert ["app", "PASSWORD"] in provider["secret_env"]
    assert "envFrom" not in provider["pod"]["spec"]["containers"][0]
    wanted = {"OptionalSecretNotFound", "InvalidEnvironmentVariableNames", "ProviderCreateSuccess"}

    async def posted() -> list[dict[str, Any]] | None:  # Events are posted after the status write
        events = await events_for(admin, namespace, "env")
        return events if wanted <= {e["reason"] for e in events} else None

    events = await eventually(posted, what=f"events {sorted(wanted)}", timeout=30)
    assert not [e for e in events if SECRET_VALUE in e["message"]]


async def test_volumes_are_resolved_for_the_provider(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    await _objects(admin, namespace)
    manifest = pod_manifest("vols", vn.name, automountServiceAccountToken=True)
    manifest["metadata"]["labels"] = {"tier": "web"}
    manifest["spec"]["volumes"] = [
        {"name": "config", "configMap": {"name": "cfg", "items": [{"key": "color", "path": "color.txt"}]}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {
            "name": "info",
            "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
        },
        {"name": "scratch", "emptyDir": {}},
    ]

    async def default_sa() -> bool:
        found = await admin.get(f"/api/v1/namespaces/{namespace}/serviceaccounts")
        return any(sa["metadata"]["name"] == "default" for sa in found["items"])

    await eventually(default_sa, what="default ServiceAccount")
    created = await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
    await wait_phase(admin, namespace, "vols", "Running")
    volumes = _provider_pod(vn, created["metadata"]["uid"])["volumes"]
    assert volumes["config"] == {"color.txt": "blue"}
    assert volumes["creds"] == {"password": SECRET_VALUE}
    assert volumes["info"] == {"labels": 'tier="web"'}
    assert volumes["scratch"] == {}
    # The ServiceAccount admission plugin's projected volume: a bound token, the CA, the namespace.
    api_access = next(v for name, v in volumes.items() if name.startswith("kube-api-access-"))
    assert set(api_access) == {"token", "ca.crt", "namespace"}
    assert api_access["namespace"] == namespace
    assert api_access["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    assert api_access["token"].count(".") == 2  # a JWT


async def test_missing_mandatory_reference_blocks_creation_until_it_exists(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--retry-initial", "0.2", "--retry-cap", "1")
    manifest = pod_manifest("waits", vn.name)
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}
    ]
    created = await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
    event = await wait_event(admin, namespace, "waits", "MandatoryConfigMapNotFound")
    assert event["type"] == "Warning" and "later" in event["message"]
    pod = await admin.get(f"/api/v1/namespaces/{namespace}/pods/waits")
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["reason"] == "MandatoryConfigMapNotFound"
    assert created["metadata"]["uid"] not in vn.provider_state()["calls"]["create"]  # never sent
    await admin.create(
        f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "later"}, "data": {"x": "1"}}
    )
    await wait_phase(admin, namespace, "waits", "Running")


async def test_unsupported_volume_fails_the_pod_naming_the_volume(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    manifest = pod_manifest("hosty", vn.name)
    manifest["spec"]["volumes"] = [{"name": "host-data", "hostPath": {"path": "/var/data"}}]
    pod = (
        await wait_phase(admin, namespace, "hosty", "Failed")
        if await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
        else None
    )
    assert pod is not None
    assert pod["status"]["reason"] == "UnsupportedVolume"
    assert "host-data" in pod["status"]["message"] and "hostPath" in pod["status"]["message"]


async def test_namespace_the_virtual_kubelet_may_not_read_is_a_clear_error_not_a_crash(
    admin: Kube,
    namespace: str,
    virtual_node: StartNode,
    rbac_kubeconfig: Callable[..., Awaitable[Any]],
    node_name: str,
) -> None:
    # The VK may read ConfigMaps only in `namespace` (a Role), not in `other`.
    other = f"t-{uuid.uuid4().hex[:8]}"
    await admin.create("/api/v1/namespaces", {"metadata": {"name": other}})
    rules = [r for r in chart_rules() if "configmaps" not in r["resources"]]
    kubeconfig = await rbac_kubeconfig(f"vk-{node_name}", rules)
    await admin.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "metadata": {"name": "read-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    )
    await admin.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": "read-cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
            "subjects": [{"kind": "ServiceAccount", "name": f"vk-{node_name}", "namespace": "vk-system"}],
        },
    )
    vn = await virtual_node(kubeconfig=kubeconfig)
    try:
        for ns in (namespace, other):
            await admin.create(
                f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
            )

        def with_ref(name: str, optional: bool) -> dict[str, Any]:
            manifest = pod_manifest(name, vn.name)
            manifest["spec"]["containers"][0]["env"] = [
                {
                    "name": "A",
                    "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a", "optional": optional}},
                }
            ]
            return manifest

        await admin.create(f"/api/v1/namespaces/{other}/pods", with_ref("optional", True))
        await admin.create(f"/api/v1/namespaces/{other}/pods", with_ref("mandatory", False))
        await admin.create(f"/api/v1/namespaces/{namespace}/pods", with_ref("allowed", False))

        await wait_phase(admin, namespace, "allowed", "Running")
        await wait_phase(admin, other, "optional", "Running")
        warning = await wait_event(admin, other, "optional", "FailedToReadOptionalConfigMap")
        assert "forbidden" in warning["message"].lower()
        event = await wait_event(admin, other, "mandatory", "FailedToReadMandatoryConfigMap")
        assert "forbidden" in event["message"].lower()
        pod = await admin.get(f"/api/v1/namespaces/{other}/pods/mandatory")
        assert pod["status"]["phase"] == "Pending"
        assert pod["status"]["reason"] == "FailedToReadMandatoryConfigMap"
        assert vn.process.proc.poll() is None
    finally:
        await admin.delete(f"/api/v1/namespaces/{other}")
