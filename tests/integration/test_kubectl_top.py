"""`kubectl top node/pod` through a real metrics-server, built from Go modules and run on the host.

metrics-server is an aggregated API server: the apiserver proxies `metrics.k8s.io` to it (as
front-proxy-client, which `devcluster up` always configures), and it scrapes each node's
`/metrics/resource` with its own ServiceAccount token and RBAC, the ones its manifests give it. There is
no kube-proxy, so the apiserver routes to the Service's endpoints (`--enable-aggregator-routing`):
a Service without selector and an EndpointSlice at a non-loopback address of this machine (the API
refuses loopback endpoints) where metrics-server listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import VirtualNode, eventually, token_kubeconfig

# The kubelet API tests' fixtures: a node reachable through the apiserver's node proxy.
from tests.integration.test_kubelet_api import api_node, create_running_pod, node_ip  # noqa: F401
from tests.integration.test_pods import gone, pod_path
from vk_operator.devcluster import build
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
NAME = "metrics-server"
SYSTEM = "kube-system"
APISERVICE = "v1beta1.metrics.k8s.io"
RESOURCES = {"requests": {"cpu": "200m", "memory": "128Mi"}}  # the mock uses half: 100m, 64Mi
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _subject() -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": NAME, "namespace": SYSTEM}]


def _cluster_role_binding(name: str, role: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": _subject(),
    }


# What metrics-server's manifests (manifests/base/rbac.yaml) create, as (collection, object).
IDENTITY: list[tuple[str, dict[str, Any]]] = [
    (f"/api/v1/namespaces/{SYSTEM}/serviceaccounts", {"metadata": {"name": NAME}}),
    (
        f"{RBAC}/clusterroles",
        {
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")
                },
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    ),
    (
        f"{RBAC}/clusterroles",
        {
            "metadata": {"name": f"system:{NAME}"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ],
        },
    ),
    (f"{RBAC}/clusterrolebindings", _cluster_role_binding(f"system:{NAME}", f"system:{NAME}")),
    (
        f"{RBAC}/clusterrolebindings",
        _cluster_role_binding(f"{NAME}:system:auth-delegator", "system:auth-delegator"),
    ),
    (
        f"{RBAC}/namespaces/{SYSTEM}/rolebindings",
        {
            "metadata": {"name": f"{NAME}-auth-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            "subjects": _subject(),
        },
    ),
]


def _routing(host: str, port: int) -> list[tuple[str, dict[str, Any]]]:
    """Service (no selector), its EndpointSlice at host:port, and the APIService pointing at it."""
    return [
        (
            f"/api/v1/namespaces/{SYSTEM}/services",
            {
                "metadata": {"name": NAME},
                "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
            },
        ),
        (
            f"/apis/discovery.k8s.io/v1/namespaces/{SYSTEM}/endpointslices",
            {
                "metadata": {
                    "name": NAME,
                    "labels": {
                        "kubernetes.io/service-name": NAME,
                        # Not the mirroring controller's nor the EndpointSlice controller's: ours.
                        "endpointslice.kubernetes.io/managed-by": "tests.vk-operator.io",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        ),
        (
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "metadata": {"name": APISERVICE},
                "spec": {
                    "service": {"name": NAME, "namespace": SYSTEM, "port": 443},
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ),
    ]


@pytest.fixture(scope="session")
def metrics_server_binary() -> pathlib.Path:
    """Built lazily, only for this module: a cold build takes minutes (then it is cached)."""
    cached = build.METRICS_SERVER.is_built()
    started = time.monotonic()
    path = build.ensure_built((build.METRICS_SERVER,))["metrics-server"]
    if not cached:
        print(f"built metrics-server {build.METRICS_SERVER_VERSION} in {time.monotonic() - started:.0f}s")
    return path


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _kubeconfig(path: pathlib.Path, cluster: Cluster, token: str) -> pathlib.Path:
    return token_kubeconfig(path, cluster, NAME, token)


async def _create(admin: Kube, collection: str, body: dict[str, Any]) -> str:
    """Create ``body`` in ``collection`` (replacing a leftover of a run on a reused control plane)."""
    path = f"{collection}/{body['metadata']['name']}"
    try:
        await admin.create(collection, body)
    except ApiError as exc:
        if not exc.conflict:
            raise
        await admin.delete(path)
        await eventually(lambda: _absent(admin, path), what=f"{path} deleted")
        await admin.create(collection, body)
    return path


async def _absent(admin: Kube, path: str) -> bool:
    try:
        await admin.get(path)
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


def _start(binary: pathlib.Path, args: list[str], log_path: pathlib.Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT)


def _livez(host: str, port: int) -> str | None:
    """None once metrics-server answers over TLS, else why not."""
    ctx = ssl._create_unverified_context()  # its serving certificate is self-signed
    try:
        with urllib.request.urlopen(f"https://{host}:{port}/livez", context=ctx, timeout=5):
            return None
    except urllib.error.HTTPError:
        return None  # it answers: TLS works; who may read /livez is its own business
    except OSError as exc:
        return str(exc)


async def _wait_listening(proc: subprocess.Popen[bytes], host: str, port: int, log: pathlib.Path) -> None:
    deadline = time.monotonic() + 60
    while (why := await asyncio.to_thread(_livez, host, port)) is not None:
        assert proc.poll() is None, f"metrics-server exited:\n{_tail(log, 40)}"
        assert time.monotonic() < deadline, f"metrics-server not listening on {host}:{port}: {why}"
        await asyncio.sleep(0.3)


@pytest.fixture
async def metrics_server(
    cluster: Cluster,
    admin: Kube,
    node_ip: str,  # noqa: F811
    metrics_server_binary: pathlib.Path,
    tmp_path: pathlib.Path,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """metrics-server running on the host under its own ServiceAccount, served as metrics.k8s.io."""
    created: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "metrics-server.log"
    try:
        for collection, body in IDENTITY:
            created.append(await _create(admin, collection, body))
        token = (
            await admin.create(
                f"/api/v1/namespaces/{SYSTEM}/serviceaccounts/{NAME}/token",
                {"spec": {"expirationSeconds": 3600}},
            )
        )["status"]["token"]
        kubeconfig = _kubeconfig(tmp_path / "metrics-server.kubeconfig", cluster, token)
        port = _free_port(node_ip)
        proc = _start(
            metrics_server_binary,
            [
                f"--bind-address={node_ip}",
                f"--secure-port={port}",
                f"--cert-dir={tmp_path / 'metrics-server-certs'}",
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",  # the virtual kubelet's port is not 10250
                "--metric-resolution=10s",  # the shortest it accepts...
                "--kubelet-request-timeout=5s",  # ...with a scrape timeout below it (default 10s)
            ],
            log_path,
        )
        await _wait_listening(proc, node_ip, port, log_path)
        for collection, body in _routing(node_ip, port):
            created.append(await _create(admin, collection, body))

        async def available() -> bool:
            assert proc is not None and proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            obj = await admin.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}")
            conditions = obj.get("status", {}).get("conditions", [])
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        await eventually(available, timeout=60, interval=0.5, what=f"APIService {APISERVICE} Available")
        yield proc
    finally:
        # The APIService first: left pointing at a dead server, it breaks discovery (and with it
        # namespace deletion) for every later test.
        for path in reversed(created):
            with contextlib.suppress(ApiError):
                await admin.delete(path)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(f"metrics-server log (last lines):\n{_tail(log_path)}")


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


_CPU = re.compile(r"^(\d+)m$")
_MEMORY = re.compile(r"^(\d+)Mi$")


def _top(kubectl: Callable[..., str], *args: str) -> dict[str, tuple[int, int]] | None:
    """`kubectl top ... --no-headers` as name -> (millicores, MiB), or None while it has no figures."""
    out = kubectl("top", *args, "--no-headers", check=False)
    rows: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        fields = line.split()
        cpu = _CPU.match(fields[1]) if len(fields) >= 3 else None
        # top node: NAME CPU CPU% MEMORY MEMORY%; top pod: NAME CPU MEMORY
        memory = _MEMORY.match(fields[3] if len(fields) == 5 else fields[2]) if cpu else None
        if not cpu or not memory:
            return None  # "error: metrics not available yet", or a row without figures
        rows[fields[0]] = (int(cpu.group(1)), int(memory.group(1)))
    return rows or None


@pytest.mark.timeout(1500)  # the first run on a machine builds metrics-server (minutes)
async def test_kubectl_top_node_and_pod_through_metrics_server(
    admin: Kube,
    namespace: str,
    api_node: StartNode,  # noqa: F811
    metrics_server: subprocess.Popen[bytes],
    kubectl: Callable[..., str],
) -> None:
    vn = await api_node()
    started = time.monotonic()

    async def node_figures() -> tuple[int, int] | None:
        return (_top(kubectl, "node", vn.name) or {}).get(vn.name)

    async def pod_figures(*names: str) -> dict[str, tuple[int, int]] | None:
        rows = _top(kubectl, "pod", "-n", namespace)
        return rows if rows and set(rows) == set(names) else None

    # A fresh node without pods: metrics-server drops a node reporting zero, so it has figures only
    # because the node reports its own process's usage.
    idle = await eventually(node_figures, timeout=120, interval=2, what="kubectl top node of an idle node")
    print(f"after {time.monotonic() - started:.0f}s: top node {vn.name} idle: {idle[0]}m {idle[1]}Mi")
    assert idle[1] > 0, idle

    containers = [{"name": "app", "image": "nginx:1.27", "resources": RESOURCES}]
    for name in ("top-a", "top-b"):
        await create_running_pod(admin, namespace, name, vn.name, containers=containers)
    started = time.monotonic()

    async def loaded_node() -> tuple[int, int] | None:
        figures = await node_figures()
        return figures if figures is not None and figures[0] >= 150 else None

    node = await eventually(loaded_node, timeout=120, interval=2, what="kubectl top node with its pods' CPU")
    pods = await eventually(
        lambda: pod_figures("top-a", "top-b"), timeout=120, interval=2, what="kubectl top pod figures"
    )
    print(
        f"after {time.monotonic() - started:.0f}s: top node {vn.name}: {node[0]}m {node[1]}Mi; top pod {pods}"
    )
    for cpu, memory in pods.values():
        assert 80 <= cpu <= 120 and memory == 64, pods  # half of the requests, as the mock uses
    # Its pods' memory plus the kubelet process's own.
    assert node[1] > sum(memory for _, memory in pods.values()), (node, pods)

    # Pods come and go: the node keeps answering at every poll (its CPU counter only grows), the pod
    # that left disappears and the new one appears.
    await admin.delete(pod_path(namespace, "top-a"))
    await eventually(lambda: gone(admin, namespace, "top-a"), what="top-a gone")
    await create_running_pod(admin, namespace, "top-c", vn.name, containers=containers)
    changed = time.monotonic()
    node_samples: list[tuple[int, int]] = []

    async def node_answers_and_new_pod_shows() -> dict[str, tuple[int, int]] | None:
        figures = await node_figures()
        assert figures is not None, f"kubectl top node stopped answering after {node_samples}"
        node_samples.append(figures)
        # top-b runs all along (100m): the node's CPU time goes on growing at least as fast, also
        # right after top-a left (a counter that stood still until the pods caught up reads less).
        assert figures[0] >= 80, f"kubectl top node below top-b's CPU alone: {node_samples}"
        return await pod_figures("top-b", "top-c")

    pods = await eventually(
        node_answers_and_new_pod_shows, timeout=120, interval=2, what="top-c in kubectl top pod"
    )
    print(
        f"{time.monotonic() - changed:.0f}s after top-a left and top-c came: top pod {pods}; "
        f"top node (millicores, MiB) at every poll: {node_samples}"
    )
    for cpu, memory in pods.values():
        assert 80 <= cpu <= 120 and memory == 64, pods
    assert metrics_server.poll() is None
