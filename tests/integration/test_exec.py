"""``kubectl exec`` on the real control plane: kubectl -> kube-apiserver (WebSocket v5) -> our kubelet
API (SPDY/3.1, translated by the apiserver) -> the mock provider's exec. And ``kubectl port-forward``
(kubectl's SPDY tunnelled through a WebSocket to the apiserver, then SPDY to us).

The nodes advertise the machine's non-loopback IPv4 address, as in test_kubelet_api.py (the
apiserver proxies only to global unicast addresses).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import VirtualNode, eventually, pod_manifest, wait_phase
from tests.integration.test_kubelet_api import _interface_ips
from tests.spdy_client import spdy_exec
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
MOCK = "mock.vk-operator.io/"


@pytest.fixture(scope="session")
def node_ip() -> str:
    ips = _interface_ips()
    if not ips:
        pytest.skip("the apiserver proxies only to non-loopback addresses and this machine has none")
    return ips[0]


@pytest.fixture
def exec_node(virtual_node: StartNode, node_ip: str) -> StartNode:
    async def start(*extra: str, **kwargs: Any) -> VirtualNode:
        return await virtual_node("--node-ip", node_ip, "--metrics-port", "0", *extra, **kwargs)

    return start


def two_containers(name: str, node: str, **spec: Any) -> dict[str, Any]:
    manifest = pod_manifest(name, node, **spec)
    manifest["spec"]["containers"] = [
        {
            "name": "app",
            "image": "nginx:1.27",
            "env": [
                {"name": "GREETING", "value": "hello"},
                {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
        },
        {"name": "side", "image": "busybox:1.36", "env": [{"name": "ROLE", "value": "sidecar"}]},
    ]
    return manifest


@pytest.fixture
def kubectl_run(cluster: Cluster, kubectl_binary: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl with stdin and the full result (exit code, stdout, stderr)."""

    def run(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary, f"--kubeconfig={cluster.admin_kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


Run = Callable[..., subprocess.CompletedProcess[str]]


async def _running(admin: Kube, namespace: str, manifest: dict[str, Any]) -> str:
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
    await wait_phase(admin, namespace, manifest["metadata"]["name"], "Running")
    return str(manifest["metadata"]["name"])


async def test_kubectl_exec_echo_hostname_env_and_container_selection(
    admin: Kube, namespace: str, exec_node: StartNode, kubectl_run: Run
) -> None:
    vn = await exec_node()
    pod = await _running(admin, namespace, two_containers("shell", vn.name))
    ns = ["-n", namespace]

    echo = kubectl_run("exec", pod, *ns, "--", "echo", "hello")
    assert (echo.returncode, echo.stdout) == (0, "hello\n"), echo.stderr
    assert 'Defaulted container "app" out of: app, side' in echo.stderr

    assert kubectl_run("exec", pod, *ns, "-c", "side", "--", "hostname").stdout == "shell\n"
    # Each container's own resolved env (service links included, as the kubelet adds them).
    side_env = kubectl_run("exec", pod, *ns, "-c", "side", "--", "env").stdout.splitlines()
    assert "ROLE=sidecar" in side_env and "GREETING=hello" not in side_env
    assert "KUBERNETES_SERVICE_HOST=10.0.0.1" in side_env
    app_env = kubectl_run("exec", pod, *ns, "-c", "app", "--", "env").stdout.splitlines()
    assert "GREETING=hello" in app_env and f"MY_POD={pod}" in app_env  # downward API resolved
    assert "ROLE=sidecar" not in app_env
    script = kubectl_run("exec", pod, *ns, "--", "sh", "-c", "echo $GREETING from $MY_POD; echo oops >&2")
    assert (script.returncode, script.stdout) == (0, "hello from shell\n")
    assert "oops\n" in script.stderr


async def test_kubectl_exec_stdin(
    admin: Kube, namespace: str, exec_node: StartNode, kubectl_run: Run
) -> None:
    vn = await exec_node()
    pod = await _running(admin, namespace, two_containers("cat", vn.name))
    ns = ["-n", namespace]

    result = kubectl_run("exec", "-i", pod, *ns, "-c", "app", "--", "cat", stdin="line one\nline two\n")
    assert (result.returncode, result.stdout) == (0, "line one\nline two\n"), result.stderr

    # Much more than SPDY's 64 KiB initial window, both ways (spdystream grants no windows).
    big = "".join(f"{i:07d} {'x' * 56}\n" for i in range(20000))  # 1.28 MB
    result = kubectl_run("exec", "-i", pod, *ns, "-c", "app", "--", "cat", stdin=big)
    assert result.returncode == 0 and result.stdout == big

    result = kubectl_run("exec", "-i", pod, *ns, "-c", "app", "--", "sh", stdin="echo from stdin\nexit 6\n")
    assert (result.returncode, result.stdout) == (6, "from stdin\n")


async def test_kubectl_exec_exit_codes_and_unknown_commands(
    admin: Kube, namespace: str, exec_node: StartNode, kubectl_run: Run
) -> None:
    vn = await exec_node()
    pod = await _running(admin, namespace, two_containers("codes", vn.name))
    ns = ["-n", namespace, "-c", "app"]

    three = kubectl_run("exec", pod, *ns, "--", "sh", "-c", "exit 3")
    assert three.returncode == 3
    assert "command terminated with exit code 3" in three.stderr

    assert kubectl_run("exec", pod, *ns, "--", "false").returncode == 1
    assert kubectl_run("exec", pod, *ns, "--", "true").returncode == 0

    missing = kubectl_run("exec", pod, *ns, "--", "no-such-tool", "--flag")
    assert missing.returncode == 127
    assert "sh: no-such-tool: not found" in missing.stderr
    assert "command terminated with exit code 127" in missing.stderr


async def test_kubectl_exec_unknown_container_and_pod(
    admin: Kube, namespace: str, exec_node: StartNode, kubectl_run: Run
) -> None:
    vn = await exec_node()
    pod = await _running(admin, namespace, two_containers("picky", vn.name))

    wrong = kubectl_run("exec", pod, "-n", namespace, "-c", "nope", "--", "echo", "x")
    assert wrong.returncode != 0 and wrong.stdout == ""
    assert "container nope is not valid for pod picky" in wrong.stderr
    absent = kubectl_run("exec", "ghost", "-n", namespace, "--", "echo", "x")
    assert absent.returncode != 0 and 'pods "ghost" not found' in absent.stderr


async def test_kubectl_exec_into_a_container_that_is_not_running_yet(
    admin: Kube, namespace: str, exec_node: StartNode, kubectl_run: Run
) -> None:
    vn = await exec_node()
    manifest = two_containers("slow", vn.name, annotations={MOCK + "start-seconds": "600"})
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)

    async def pending_in_provider() -> bool:
        return bool(vn.provider_uids())

    await eventually(pending_in_provider, what="pod created in the mock")
    result = kubectl_run("exec", "slow", "-n", namespace, "-c", "app", "--", "echo", "x")
    assert result.returncode == 1 and result.stdout == ""
    assert "error executing command in container" in result.stderr
    assert 'container "app" in pod "slow" is not running' in result.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pseudo-terminal")
async def test_kubectl_exec_with_a_tty(
    admin: Kube, namespace: str, exec_node: StartNode, cluster: Cluster, kubectl_binary: str
) -> None:
    vn = await exec_node()
    pod = await _running(admin, namespace, two_containers("term", vn.name))
    command = (
        f"{kubectl_binary} --kubeconfig={cluster.admin_kubeconfig} exec -it {pod} -n {namespace} -c app "
        "-- sh -c 'echo on a terminal; nosuch; exit 4'"
    )
    script = await asyncio.create_subprocess_exec(
        "script",
        "-qec",
        command,
        "/dev/null",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        raw, _ = await script.communicate()
    out = raw.decode(errors="replace")
    assert script.returncode == 4, out
    # A terminal: CRLF line ends, stderr merged into stdout.
    assert "on a terminal\r\nsh: nosuch: not found\r\n" in out


async def test_kubectl_attach_streams_output_and_stdin_until_the_container_ends(
    admin: Kube, namespace: str, exec_node: StartNode, kubectl_run: Run
) -> None:
    vn = await exec_node()
    manifest = two_containers(
        "attached",
        vn.name,
        restartPolicy="Never",
        annotations={MOCK + "run-seconds": "6", MOCK + "log-interval-seconds": "0.25"},
    )
    manifest["spec"]["containers"][0]["stdin"] = True
    pod = await _running(admin, namespace, manifest)
    result = kubectl_run("attach", "-i", pod, "-n", namespace, "-c", "app", stdin="typed in\n", timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "typed in" in lines  # the mock's main process echoes its stdin
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(f"{pod} app line ")]
    assert len(numbers) >= 4 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    # It returned because the container ended (run-seconds), not because of a timeout.
    await wait_phase(admin, namespace, pod, "Succeeded")


# -- direct requests: the kubelet's own checks and authorization ---------------------------------------------
def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _client_tls(cluster: Cluster, client: str) -> ssl.SSLContext:
    ctx = _tls()
    ctx.load_cert_chain(cluster.pki_dir / f"{client}.crt", cluster.pki_dir / f"{client}.key")
    return ctx


def kubelet_port(vn: VirtualNode) -> int:
    return int(vn.args[vn.args.index("--kubelet-port") + 1])


@pytest.fixture
async def grant(admin: Kube) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A ServiceAccount token allowed ``verbs`` on nodes/proxy (and nothing else)."""
    made: list[str] = []

    async def make(namespace: str, verbs: list[str]) -> str:
        name = f"exec-{uuid.uuid4().hex[:8]}"
        await admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})
        rules = [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": verbs}]
        await admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": name}, "rules": rules}
        )
        await admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
        made.append(name)
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        created = await admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        return str(created["status"]["token"])

    yield make
    for name in made:
        for kind in ("clusterrolebindings", "clusterroles"):
            with contextlib.suppress(ApiError):
                await admin.delete(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{name}")


async def test_direct_exec_checks_pod_container_and_nodes_proxy_create(
    admin: Kube,
    namespace: str,
    exec_node: StartNode,
    cluster: Cluster,
    grant: Callable[..., Awaitable[str]],
) -> None:
    vn = await exec_node()
    pod = await _running(admin, namespace, two_containers("direct", vn.name))
    port = kubelet_port(vn)
    as_apiserver = _client_tls(cluster, "apiserver-kubelet-client")
    path = f"/exec/{namespace}/{pod}/side?command=echo&command=direct&output=1&error=1"

    ok = await spdy_exec(port, path, tls=as_apiserver)
    assert ok.status == 101 and ok.headers["x-stream-protocol-version"] == ["v5.channel.k8s.io"]
    assert ok.out["stdout"] == b"direct\n" and ok.error == {"metadata": {}, "status": "Success"}

    missing = await spdy_exec(port, f"/exec/{namespace}/{pod}/nope?command=ls&output=1", tls=as_apiserver)
    assert missing.status == 404 and f'container "nope" not found in pod "{pod}"' in missing.body.decode()
    ghost = await spdy_exec(port, f"/exec/{namespace}/ghost/app?command=ls&output=1", tls=as_apiserver)
    assert ghost.status == 404 and b'pod "ghost" does not exist' in ghost.body

    # An upgrade is a create on nodes/proxy, whatever the method: get is not enough.
    reader = await grant(namespace, ["get"])
    denied = await spdy_exec(port, path, tls=_tls(), headers={"Authorization": f"Bearer {reader}"})
    assert denied.status == 403
    assert "verb=create, resource=nodes, subresource(s)=[proxy]" in denied.body.decode()

    creator = await grant(namespace, ["create"])

    async def allowed() -> Any:
        result = await spdy_exec(port, path, tls=_tls(), headers={"Authorization": f"Bearer {creator}"})
        return result if result.status == 101 else None

    result = await eventually(allowed, what="nodes/proxy create takes effect", timeout=45)
    assert result.out["stdout"] == b"direct\n"


# -- kubectl port-forward --------------------------------------------------------------------------------
FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)$")


async def test_kubectl_port_forward_http_echo_and_a_refused_port(
    admin: Kube, namespace: str, exec_node: StartNode, cluster: Cluster, kubectl_binary: str
) -> None:
    vn = await exec_node()
    manifest = two_containers("fwd", vn.name)
    manifest["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    manifest["spec"]["containers"][1]["ports"] = [{"containerPort": 9000}]
    pod = await _running(admin, namespace, manifest)
    forward = await asyncio.create_subprocess_exec(
        kubectl_binary,
        f"--kubeconfig={cluster.admin_kubeconfig}",
        "port-forward",
        f"pod/{pod}",
        "-n",
        namespace,
        "--address",
        "127.0.0.1",
        ":80",
        ":9000",
        ":81",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert forward.stdout is not None and forward.stderr is not None
        local: dict[int, int] = {}
        async with asyncio.timeout(30):
            while len(local) < 3:
                line = (await forward.stdout.readline()).decode()
                assert line, (await forward.stderr.read()).decode()
                if match := FORWARDING.match(line.strip()):
                    local[int(match.group(2))] = int(match.group(1))

        # An HTTP request through the tunnel (kubectl -> WebSocket -> apiserver -> SPDY -> us).
        async with aiohttp.ClientSession() as http:
            for path in ("/hello", "/again?x=1"):
                async with http.get(f"http://127.0.0.1:{local[80]}{path}") as response:
                    assert response.status == 200
                    assert await response.text() == f"mock pod {pod} container app port 80: GET {path}\n"

        # Raw bytes, two connections at once, and a half-close answered by a close.
        (r1, w1), (r2, w2) = [await asyncio.open_connection("127.0.0.1", local[9000]) for _ in range(2)]
        w1.write(b"first")
        w2.write(b"second")
        async with asyncio.timeout(10):
            assert await r2.readexactly(6) == b"second"
            assert await r1.readexactly(5) == b"first"
            w1.write(b" and more" * 10000)
            assert await r1.readexactly(90000) == b" and more" * 10000
            w1.write_eof()
            assert await r1.read() == b""
        for writer in (w1, w2):
            writer.close()

        # Nothing listens on 81: the error reaches kubectl, which drops the session, like with a kubelet.
        r3, w3 = await asyncio.open_connection("127.0.0.1", local[81])
        w3.write(b"GET / HTTP/1.1\r\n\r\n")
        async with asyncio.timeout(20):
            assert await r3.read() == b""
            stderr = (await forward.stderr.read()).decode()
            await forward.wait()
        w3.close()
        assert f"error forwarding port 81 to pod {pod}" in stderr and "connection refused" in stderr
        assert "lost connection to pod" in stderr
    finally:
        if forward.returncode is None:
            forward.kill()
            await forward.wait()
