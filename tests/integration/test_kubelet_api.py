"""The kubelet HTTPS API on the real control plane: through the apiserver with real kubectl, and direct.

The apiserver refuses to proxy ``/api/v1/nodes/NODE/proxy/...`` to a loopback address (only global
unicast IPs are proxyable), so these nodes advertise the machine's own non-loopback IPv4 address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import fcntl
import itertools
import json
import pathlib
import re
import socket
import ssl
import struct
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import VirtualNode, eventually, pod_manifest, wait_phase
from vk_operator import pki
from vk_operator.devcluster.cluster import Cluster, Options, free_port
from vk_operator.kube import ApiError, Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
MOCK = "mock.vk-operator.io/"
LINE = re.compile(r"^(\S+) app line (\d+)$")
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (\S+) app line (\d+)$")


def _interface_ips() -> list[str]:
    """IPv4 addresses of the machine's interfaces (SIOCGIFADDR), loopback excluded."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                found.append(address)
    return found


@pytest.fixture(scope="session")
def node_ip() -> str:
    ips = _interface_ips()
    if not ips:
        pytest.skip("the apiserver proxies only to non-loopback addresses and this machine has none")
    return ips[0]


def kubelet_port(vn: VirtualNode) -> int:
    return int(vn.args[vn.args.index("--kubelet-port") + 1])


def _client_ssl(cluster: Cluster | None = None, client: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we check the served certificate ourselves where it matters
    if cluster is not None and client is not None:
        ctx.load_cert_chain(cluster.pki_dir / f"{client}.crt", cluster.pki_dir / f"{client}.key")
    return ctx


async def kubelet_get(
    vn: VirtualNode,
    path: str,
    *,
    token: str | None = None,
    cluster: Cluster | None = None,
    client: str | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, str]:
    """GET on the kubelet API directly: as nobody, with a bearer token, or with a client cert."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://{host}:{kubelet_port(vn)}{path}",
            headers=headers,
            ssl=_client_ssl(cluster, client),
            timeout=aiohttp.ClientTimeout(total=20),
        ) as resp,
    ):
        return resp.status, await resp.text()


def served_certificate(port: int, host: str = "127.0.0.1") -> bytes:
    """The DER certificate a new TLS connection to the kubelet API presents."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


async def create_running_pod(
    admin: Kube, namespace: str, name: str, node: str, *, interval: float = 0.2, **spec: Any
) -> dict[str, Any]:
    annotations = {MOCK + "log-interval-seconds": str(interval), **spec.pop("annotations", {})}
    manifest = pod_manifest(name, node, annotations=annotations, **spec)
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
    return await wait_phase(admin, namespace, name, "Running")


@pytest.fixture
def api_node(virtual_node: StartNode, node_ip: str) -> Callable[..., Awaitable[VirtualNode]]:
    """A virtual node reachable through the apiserver's node proxy (non-loopback IP)."""

    async def start(*extra: str, **kwargs: Any) -> VirtualNode:
        return await virtual_node("--node-ip", node_ip, "--metrics-port", "0", *extra, **kwargs)

    return start


# -- kubectl logs through the apiserver ----------------------------------------------------------------
async def test_kubectl_logs_tail_since_timestamps_and_limit_bytes(
    admin: Kube, namespace: str, api_node: StartNode, kubectl: Callable[..., str]
) -> None:
    vn = await api_node()
    await create_running_pod(admin, namespace, "talker", vn.name, interval=0.2)
    await asyncio.sleep(2.0)
    ns = ["-n", namespace]

    started = time.perf_counter()
    everything = kubectl("logs", "talker", *ns).splitlines()
    elapsed = time.perf_counter() - started
    print(f"kubectl logs through the apiserver: {elapsed * 1000:.0f} ms for {len(everything)} lines")
    numbers = [int(LINE.match(line).group(2)) for line in everything]  # type: ignore[union-attr]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 10
    assert all(LINE.match(line).group(1) == "talker" for line in everything)  # type: ignore[union-attr]

    tail = kubectl("logs", "talker", "--tail", "3", *ns).splitlines()
    tail_numbers = [int(LINE.match(line).group(2)) for line in tail]  # type: ignore[union-attr]
    assert len(tail) == 3 and tail_numbers == list(range(tail_numbers[0], tail_numbers[0] + 3))
    assert tail_numbers[0] >= numbers[-1] - 2
    assert kubectl("logs", "talker", "--tail", "0", *ns) == ""

    stamped = kubectl("logs", "talker", "--timestamps", "--tail", "4", *ns).splitlines()
    matches = [STAMPED.match(line) for line in stamped]
    assert all(matches), stamped
    times = [datetime.datetime.fromisoformat(m.group(1)[:26] + "+00:00") for m in matches if m]
    steps = {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(times)}
    assert steps == {0.2}  # line N is written at start + (N - 1) * interval: timestamps are exact

    since = kubectl("logs", "talker", "--since", "1s", "--timestamps", *ns).splitlines()
    now = datetime.datetime.now(datetime.UTC)
    since_times = [datetime.datetime.fromisoformat(line[:26] + "+00:00") for line in since]
    assert since and len(since) < len(everything) + 10
    assert all(now - t <= datetime.timedelta(seconds=2.5) for t in since_times)
    first_since = int(STAMPED.match(since[0]).group(3))  # type: ignore[union-attr]
    assert first_since > 1

    limited = kubectl("logs", "talker", "--limit-bytes", "10", *ns)
    assert limited == "talker app"  # exactly 10 bytes: cut mid-line like the kubelet
    assert kubectl("logs", "talker", "--limit-bytes", "20", "--tail", "1", *ns).startswith("talker app line ")


async def test_kubectl_logs_follow_streams_new_lines_and_ends_with_the_container(
    admin: Kube, namespace: str, api_node: StartNode, cluster: Cluster, kubectl_binary: str
) -> None:
    vn = await api_node()
    run_seconds, interval = 5.0, 0.25
    pod = await create_running_pod(
        admin,
        namespace,
        "short",
        vn.name,
        interval=interval,
        restartPolicy="Never",
        annotations={MOCK + "run-seconds": str(run_seconds)},
    )
    assert pod["status"]["phase"] == "Running"
    follow = await asyncio.create_subprocess_exec(
        kubectl_binary,
        f"--kubeconfig={cluster.admin_kubeconfig}",
        "logs",
        "-f",
        "short",
        "-n",
        namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    started = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    assert follow.stdout is not None
    async with asyncio.timeout(30):
        async for raw in follow.stdout:
            match = LINE.match(raw.decode().rstrip("\n"))
            assert match, raw
            arrivals.append((time.monotonic() - started, int(match.group(2))))
        code = await follow.wait()
    ended = time.monotonic() - started
    assert code == 0, (await follow.stderr.read()).decode() if follow.stderr else ""
    numbers = [n for _, n in arrivals]
    assert numbers == list(range(1, int(run_seconds / interval) + 1))  # every line, none after the end
    late = [t for t, _ in arrivals if t > 1.0]
    assert len(late) >= 5, arrivals  # lines written after kubectl started arrived while it waited
    print(
        f"kubectl logs -f: {len(numbers)} lines, {len(late)} streamed live, ended {ended:.1f} s after start"
    )
    assert await wait_phase(admin, namespace, "short", "Succeeded", timeout=30)


# -- node proxy: stats, metrics, pods ------------------------------------------------------------------
async def test_node_proxy_stats_summary_metrics_resource_and_pods(
    admin: Kube, namespace: str, api_node: StartNode, kubectl: Callable[..., str]
) -> None:
    vn = await api_node()
    resources = {"requests": {"cpu": "200m", "memory": "64Mi"}}
    pod = await create_running_pod(
        admin,
        namespace,
        "busy",
        vn.name,
        containers=[
            {"name": "app", "image": "nginx:1.27", "resources": resources},
            {"name": "sidecar", "image": "busybox:1.36"},
        ],
    )
    uid = pod["metadata"]["uid"]
    base = f"/api/v1/nodes/{vn.name}/proxy"

    first = json.loads(kubectl("get", "--raw", f"{base}/stats/summary"))
    assert first["node"]["nodeName"] == vn.name
    assert {"cpu", "memory", "startTime"} <= set(first["node"])
    [stats] = [p for p in first["pods"] if p["podRef"]["uid"] == uid]
    assert stats["podRef"] == {"name": "busy", "namespace": namespace, "uid": uid}
    containers = {c["name"]: c for c in stats["containers"]}
    assert set(containers) == {"app", "sidecar"}
    assert containers["app"]["cpu"]["usageNanoCores"] == 100_000_000  # half the 200m request
    assert containers["app"]["memory"]["workingSetBytes"] == 32 * 2**20  # half the 64Mi request
    assert stats["cpu"]["usageNanoCores"] == sum(c["cpu"]["usageNanoCores"] for c in containers.values())
    assert first["node"]["memory"]["workingSetBytes"] >= stats["memory"]["workingSetBytes"]
    await asyncio.sleep(1.1)
    second = json.loads(kubectl("get", "--raw", f"{base}/stats/summary"))
    [later] = [p for p in second["pods"] if p["podRef"]["uid"] == uid]
    assert later["cpu"]["usageCoreNanoSeconds"] > stats["cpu"]["usageCoreNanoSeconds"]  # cumulative

    text = kubectl("get", "--raw", f"{base}/metrics/resource")
    assert "# TYPE container_cpu_usage_seconds_total counter" in text
    label = f'container="app",namespace="{namespace}",pod="busy"'
    for metric in (
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
    ):
        assert re.search(rf"^{metric}\{{{re.escape(label)}\}} [0-9.e+]+", text, re.M), metric
    assert re.search(rf'^pod_cpu_usage_seconds_total\{{namespace="{namespace}",pod="busy"\}} ', text, re.M)
    memory = re.search(
        rf'^pod_memory_working_set_bytes\{{namespace="{namespace}",pod="busy"\}} (\d+) ', text, re.M
    )
    # The same numbers as the Summary API.
    assert memory and int(memory.group(1)) == later["memory"]["workingSetBytes"]
    assert re.search(r"^node_cpu_usage_seconds_total [0-9.]+ \d+$", text, re.M)
    assert re.search(r"^node_memory_working_set_bytes [0-9.]+ \d+$", text, re.M)
    assert re.search(r"^scrape_error 0$", text, re.M)

    pods = json.loads(kubectl("get", "--raw", f"{base}/pods"))
    assert pods["kind"] == "PodList"
    assert uid in {p["metadata"]["uid"] for p in pods["items"]}
    running = json.loads(kubectl("get", "--raw", f"{base}/runningpods/"))
    assert uid in {p["metadata"]["uid"] for p in running["items"]}
    assert kubectl("get", "--raw", f"{base}/healthz") == "ok"


# -- direct requests: authentication, authorization, errors --------------------------------------------
async def _service_account_token(admin: Kube, namespace: str, name: str) -> str:
    await admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    created = await admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
    return str(created["status"]["token"])


@pytest.fixture
async def cluster_role(admin: Kube) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    made: list[str] = []

    async def grant(subject: str, namespace: str, subresources: list[str]) -> None:
        name = f"kubelet-api-{uuid.uuid4().hex[:8]}"
        rules = [{"apiGroups": [""], "resources": [f"nodes/{s}" for s in subresources], "verbs": ["get"]}]
        await admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": name}, "rules": rules}
        )
        await admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": subject, "namespace": namespace}],
            },
        )
        made.append(name)

    yield grant
    for name in made:
        for kind in ("clusterrolebindings", "clusterroles"):
            with contextlib.suppress(ApiError):
                await admin.delete(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{name}")


async def test_direct_requests_401_403_200_by_identity_and_rbac(
    admin: Kube,
    namespace: str,
    api_node: StartNode,
    cluster: Cluster,
    cluster_role: Callable[..., Awaitable[None]],
) -> None:
    vn = await api_node()
    await create_running_pod(admin, namespace, "web", vn.name)
    logs = f"/containerLogs/{namespace}/web/app?tailLines=1"

    for path in ("/pods", logs, "/stats/summary", "/no/such/path"):
        assert await kubelet_get(vn, path) == (401, "Unauthorized\n"), path
    with pytest.raises(aiohttp.ClientError):  # TLS only: plain HTTP gets no answer
        async with aiohttp.ClientSession() as session:
            await session.get(
                f"http://127.0.0.1:{kubelet_port(vn)}/pods", timeout=aiohttp.ClientTimeout(total=5)
            )
    assert (await kubelet_get(vn, "/pods", token="not-a-token"))[0] == 401

    outsider = await _service_account_token(admin, namespace, "outsider")
    status, body = await kubelet_get(vn, "/pods", token=outsider)
    assert status == 403
    assert body == (
        f"Forbidden (user=system:serviceaccount:{namespace}:outsider, verb=get, resource=nodes, "
        "subresource(s)=[pods proxy])\n"
    )
    status, body = await kubelet_get(vn, "/stats/summary", token=outsider)
    assert (status, "subresource(s)=[stats]" in body) == (403, True)

    reader = await _service_account_token(admin, namespace, "reader")
    await cluster_role("reader", namespace, ["proxy"])
    status, body = await eventually(
        lambda: _ok(kubelet_get(vn, "/pods", token=reader)), what="nodes/proxy grant takes effect"
    )
    assert "web" in {p["metadata"]["name"] for p in json.loads(body)["items"]}
    status, body = await kubelet_get(vn, logs, token=reader)  # /containerLogs is nodes/proxy
    assert status == 200 and LINE.match(body.strip())
    assert (await kubelet_get(vn, "/stats/summary", token=reader))[0] == 403  # needs nodes/stats
    assert (await kubelet_get(vn, "/metrics/resource", token=reader))[0] == 403  # needs nodes/metrics

    await cluster_role("outsider", namespace, ["stats", "metrics"])
    # The denial above is cached for the unauthorized TTL (30 s by default), like the kubelet's.
    assert (await kubelet_get(vn, "/stats/summary", token=outsider))[0] == 403

    # The apiserver's kubelet client certificate (CN kube-apiserver-kubelet-client): authenticated
    # by our client CA (the cluster CA, by default), authorized as system:kubelet-api-admin.
    status, _ = await kubelet_get(vn, "/stats/summary", cluster=cluster, client="apiserver-kubelet-client")
    assert status == 200
    # The admin's certificate (O=system:masters) works too.
    assert (await kubelet_get(vn, "/pods", cluster=cluster, client="admin"))[0] == 200


async def _ok(request: Awaitable[tuple[int, str]]) -> tuple[int, str] | None:
    status, body = await request
    return (status, body) if status == 200 else None


async def test_direct_request_errors_400_404_and_anonymous_access(
    admin: Kube, namespace: str, api_node: StartNode, cluster: Cluster
) -> None:
    vn = await api_node("--anonymous-auth")
    await create_running_pod(admin, namespace, "web", vn.name)

    async def get(path: str) -> tuple[int, str]:
        return await kubelet_get(vn, path, cluster=cluster, client="apiserver-kubelet-client")

    base = f"/containerLogs/{namespace}/web"
    assert (await get(f"{base}/app"))[0] == 200
    for query, words in (
        ("tailLines=-1", "tailLines"),
        ("tailLines=ten", "tailLines"),
        ("limitBytes=0", "limitBytes"),
        ("sinceSeconds=0", "sinceSeconds"),
        ("sinceTime=yesterday", "sinceTime"),
        ("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z", "at most one of sinceTime or sinceSeconds"),
        ("follow=maybe", "follow"),
        ("stream=Both", "stream"),
    ):
        status, body = await get(f"{base}/app?{query}")
        assert (status, words in body) == (400, True), (query, status, body)
    status, body = await get(f"/containerLogs/{namespace}/web")
    assert status == 400 and "expected /containerLogs/NAMESPACE/POD/CONTAINER" in body
    status, body = await get(f"/containerLogs/{namespace}/nosuchpod/app")
    assert status == 404 and "nosuchpod" in body
    status, body = await get(f"{base}/nosuchcontainer")
    assert status == 404 and 'container "nosuchcontainer" not found' in body
    status, body = await get(f"{base}/app?previous=true")
    assert status == 400 and "previous terminated container" in body
    assert (await get("/no/such/path"))[0] == 404
    assert (await get("/stats/nothing"))[0] == 404

    # --anonymous-auth: no credentials is system:anonymous, which is then authorized (403, not 401).
    status, body = await kubelet_get(vn, "/pods")
    assert status == 403 and "user=system:anonymous" in body


# -- serving certificates: files, rotation, Secret ---------------------------------------------------------
def _write_pair(directory: pathlib.Path, pair: pki.KeyPair) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    tmp_cert, tmp_key = directory / "tls.crt.tmp", directory / "tls.key.tmp"
    tmp_cert.write_bytes(pair.cert_pem)
    tmp_key.write_bytes(pair.key_pem)
    tmp_key.replace(key)
    tmp_cert.replace(cert)
    return cert, key


def _serving_pair(ca: pki.KeyPair, node: str, ip: str) -> pki.KeyPair:
    return pki.issue(ca, f"system:node:{node}", organizations=["system:nodes"], hosts=[ip], server=True)


async def test_serving_certificate_from_files_rotates_without_restart(
    admin: Kube,
    namespace: str,
    api_node: StartNode,
    node_name: str,
    node_ip: str,
    tmp_path: pathlib.Path,
    kubectl: Callable[..., str],
) -> None:
    ca = pki.new_ca("rotation-test-ca")
    first = _serving_pair(ca, node_name, node_ip)
    cert, key = _write_pair(tmp_path, first)
    vn = await api_node(
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-reload-interval", "0.3"
    )
    port = kubelet_port(vn)
    assert served_certificate(port) == _der(first.cert_pem)
    await create_running_pod(admin, namespace, "web", vn.name)
    assert kubectl("logs", "web", "--tail", "1", "-n", namespace).startswith("web app line")

    second = _serving_pair(ca, node_name, node_ip)
    _write_pair(tmp_path, second)
    started = time.monotonic()
    await eventually(
        lambda: _async(served_certificate(port) == _der(second.cert_pem)), what="new certificate served"
    )
    print(f"rotation picked up {time.monotonic() - started:.2f} s after the files changed")
    assert vn.process.proc.poll() is None  # same process: no restart
    assert kubectl("logs", "web", "--tail", "1", "-n", namespace).startswith("web app line")

    # A half-done rotation (a key that does not match the certificate) keeps the current pair.
    third = _serving_pair(ca, node_name, node_ip)
    (tmp_path / "tls.crt").write_bytes(third.cert_pem)
    await asyncio.sleep(1.0)
    assert served_certificate(port) == _der(second.cert_pem)
    assert "keeping the current serving certificate" in vn.process.log()
    (tmp_path / "tls.key").write_bytes(third.key_pem)
    await eventually(lambda: _async(served_certificate(port) == _der(third.cert_pem)), what="completed")


async def _async(value: Any) -> Any:
    return value


async def test_serving_certificate_from_a_secret(
    admin: Kube, namespace: str, virtual_node: StartNode, cluster: Cluster, node_name: str, node_ip: str
) -> None:
    ca = pki.new_ca("secret-test-ca")
    pair = _serving_pair(ca, node_name, node_ip)

    def secret(p: pki.KeyPair) -> dict[str, Any]:
        return {
            "metadata": {"name": "kubelet-serving"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(p.cert_pem).decode(),
                "tls.key": base64.b64encode(p.key_pem).decode(),
            },
        }

    await admin.create(f"/api/v1/namespaces/{namespace}/secrets", secret(pair))
    # A node identity may not read arbitrary Secrets: this one runs with the admin's credentials.
    vn = await virtual_node(
        "--tls-secret",
        f"{namespace}/kubelet-serving",
        "--tls-reload-interval",
        "0.3",
        "--metrics-port",
        "0",
        kubeconfig=cluster.admin_kubeconfig,
    )
    port = kubelet_port(vn)
    assert served_certificate(port) == _der(pair.cert_pem)
    rotated = _serving_pair(ca, node_name, node_ip)
    await admin.request(
        "PUT", f"/api/v1/namespaces/{namespace}/secrets/kubelet-serving", body=secret(rotated)
    )
    await eventually(lambda: _async(served_certificate(port) == _der(rotated.cert_pem)), what="rotated")


# -- an apiserver that verifies the kubelet's serving certificate ----------------------------------------
@pytest.fixture(scope="module")
def verifying_cluster(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Iterator[Cluster]:
    """A second control plane started with --kubelet-certificate-authority (its own CA)."""
    second = Cluster(tmp_path_factory.mktemp("verifying-controlplane"))
    second.up(Options(verify_kubelet_serving_cert=True))
    try:
        yield second
    finally:
        second.down()


async def _node_on(
    cluster: Cluster, start_vk: Callable[..., Any], name: str, node_ip: str, tmp: pathlib.Path, *extra: str
) -> Any:
    config = tmp / f"{name}.yaml"
    config.write_text(f"state_file: {tmp / name}-state.json\nlog_interval_seconds: 0.2\n")
    process = start_vk(
        "--provider-config",
        str(config),
        "--nodename",
        name,
        "--kubeconfig",
        str(cluster.node_kubeconfig(name)),
        "--kubelet-port",
        str(free_port()),
        "--node-ip",
        node_ip,
        "--metrics-port",
        "0",
        "--lease-renew-interval",
        "2",
        *extra,
    )
    kube = await Kube.connect(str(cluster.admin_kubeconfig))
    try:

        async def ready() -> bool:
            assert process.proc.poll() is None, process.log()
            node = await kube.get(f"/api/v1/nodes/{name}")
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

        await eventually(ready, what=f"node {name} Ready")
    finally:
        await kube.close()
    return process


def _kubectl_on(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = str(cluster.state()["binaries"]["kubectl"])  # type: ignore[index]
    return subprocess.run(
        [kubectl, f"--kubeconfig={cluster.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _pod_on(cluster: Cluster, node: str) -> tuple[Kube, str]:
    kube = await Kube.connect(str(cluster.admin_kubeconfig))
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    await kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("web", node))
    await wait_phase(kube, namespace, "web", "Running")
    return kube, namespace


async def test_verifying_apiserver_rejects_self_signed_and_accepts_a_cluster_signed_cert(
    verifying_cluster: Cluster, start_vk: Callable[..., Any], node_ip: str, tmp_path: pathlib.Path
) -> None:
    c = verifying_cluster
    plain = f"vk-{uuid.uuid4().hex[:8]}"
    await _node_on(c, start_vk, plain, node_ip, tmp_path)  # self-signed
    kube, namespace = await _pod_on(c, plain)
    try:
        refused = _kubectl_on(c, "logs", "web", "-n", namespace)
        assert refused.returncode != 0 and "x509" in refused.stderr, refused.stderr

        signed = f"vk-{uuid.uuid4().hex[:8]}"
        ca = pki.KeyPair((c.pki_dir / "ca.crt").read_bytes(), (c.pki_dir / "ca.key").read_bytes())
        cert, key = _write_pair(tmp_path, _serving_pair(ca, signed, node_ip))
        await _node_on(
            c, start_vk, signed, node_ip, tmp_path, "--tls-cert-file", str(cert), "--tls-key-file", str(key)
        )
        await kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("signed", signed))
        await wait_phase(kube, namespace, "signed", "Running")
        out = _kubectl_on(c, "logs", "signed", "--tail", "1", "-n", namespace)
        assert out.returncode == 0 and out.stdout.startswith("signed app line"), out.stderr
        raw = _kubectl_on(c, "get", "--raw", f"/api/v1/nodes/{signed}/proxy/stats/summary")
        assert raw.returncode == 0 and json.loads(raw.stdout)["node"]["nodeName"] == signed, raw.stderr
    finally:
        await kube.close()


async def test_verifying_apiserver_with_a_kubelet_serving_csr_approved_by_the_admin(
    verifying_cluster: Cluster, start_vk: Callable[..., Any], node_ip: str, tmp_path: pathlib.Path
) -> None:
    c = verifying_cluster
    name = f"vk-{uuid.uuid4().hex[:8]}"
    process = await _node_on(c, start_vk, name, node_ip, tmp_path, "--serving-cert-csr")
    kube, namespace = await _pod_on(c, name)
    try:

        async def pending_csr() -> str | None:
            csrs = await kube.get("/apis/certificates.k8s.io/v1/certificatesigningrequests")
            for csr in csrs["items"]:
                if csr["spec"]["username"] == f"system:node:{name}":
                    assert csr["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                    assert not (csr.get("status") or {}).get("conditions")  # nobody approved it
                    return str(csr["metadata"]["name"])
            return None

        csr_name = await eventually(pending_csr, what="a pending kubelet-serving CSR")
        refused = _kubectl_on(c, "logs", "web", "-n", namespace)
        assert refused.returncode != 0 and "x509" in refused.stderr  # still self-signed

        approved = _kubectl_on(c, "certificate", "approve", csr_name)
        assert approved.returncode == 0, approved.stderr
        started = time.monotonic()

        async def logs_work() -> str | None:
            out = _kubectl_on(c, "logs", "web", "--tail", "1", "-n", namespace)
            return out.stdout if out.returncode == 0 else None

        assert (await eventually(logs_work, what="logs over the CSR-issued cert", timeout=30)).startswith(
            "web app"
        )
        print(f"CSR approval to verified logs: {time.monotonic() - started:.1f} s")
        assert f"CSR {csr_name}" in process.log()
    finally:
        await kube.close()


async def test_verifying_apiserver_with_a_self_approved_csr(
    verifying_cluster: Cluster, start_vk: Callable[..., Any], node_ip: str, tmp_path: pathlib.Path
) -> None:
    c = verifying_cluster
    name = f"vk-{uuid.uuid4().hex[:8]}"
    role = f"self-approve-{name}"
    kube = await Kube.connect(str(c.admin_kubeconfig))
    rules = [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["certificatesigningrequests/approval"],
            "verbs": ["update"],
        },
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": ["kubernetes.io/kubelet-serving"],
            "verbs": ["approve"],
        },
    ]
    await kube.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": role}, "rules": rules}
    )
    await kube.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [
                {"kind": "User", "name": f"system:node:{name}", "apiGroup": "rbac.authorization.k8s.io"}
            ],
        },
    )
    await kube.close()
    await _node_on(c, start_vk, name, node_ip, tmp_path, "--serving-cert-csr", "--serving-cert-self-approve")
    kube, namespace = await _pod_on(c, name)
    try:

        async def logs_work() -> str | None:
            out = _kubectl_on(c, "logs", "web", "--tail", "1", "-n", namespace)
            return out.stdout if out.returncode == 0 else None

        assert (await eventually(logs_work, what="logs over the self-approved cert", timeout=30)).startswith(
            "web"
        )
    finally:
        await kube.close()


# -- operational endpoints -----------------------------------------------------------------------------------
async def test_metrics_healthz_and_readyz_on_the_operational_port(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    port = free_port()
    vn = await virtual_node("--metrics-port", str(port))
    await create_running_pod(admin, namespace, "web", vn.name)
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str]:
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                return resp.status, await resp.text()

        assert await get("/healthz") == (200, "ok\n")
        status, body = await get("/readyz")
        assert status == 200
        assert body.splitlines()[:3] == ["[+]registered ok", "[+]lease-fresh ok", "[+]provider ok"]

        async def running_counted() -> str | None:
            text = (await get("/metrics"))[1]
            return text if 'vk_pods{phase="Running"} 1.0' in text else None

        text = await eventually(running_counted, what="pods by phase")
        assert re.search(r"^vk_node_heartbeat_age_seconds [0-9.]+$", text, re.M)
        assert "vk_pod_queue_depth 0.0" in text
        assert re.search(r"^vk_api_requests_total [1-9]", text, re.M)
        assert 'vk_provider_call_duration_seconds_count{method="ping"}' in text
        assert re.search(r'^vk_provider_call_duration_seconds_count\{method="create_pod"\} 1\.0$', text, re.M)
        for code, resource, verb in (("200", "pods/status", "PATCH"), ("201", "events", "POST")):
            labels = f'code="{code}",resource="{resource}",verb="{verb}"'
            assert re.search(rf"^vk_api_writes_total\{{{labels}\}} [1-9]", text, re.M), labels
        assert "process_resident_memory_bytes" in text
