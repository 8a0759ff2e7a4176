"""Shared fixtures: one real control plane per test session, isolation by namespace and node name."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from vk_operator.devcluster.cluster import Cluster, Options
from vk_operator.kube import ApiError, Kube

T = TypeVar("T")
REPO = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real control plane. VK_TEST_CLUSTER_DIR reuses a live one (`devcluster up`) for fast reruns."""
    reuse = os.environ.get("VK_TEST_CLUSTER_DIR")
    if reuse and Cluster(reuse).running():
        yield Cluster(reuse)
        return
    cluster = Cluster(tmp_path_factory.mktemp("controlplane"))
    # A short node-monitor grace period so "node goes NotReady when the VK stops" is quick to see.
    cluster.up(
        Options(controller_manager_args=["--node-monitor-grace-period=20s", "--node-monitor-period=2s"])
    )
    atexit.register(cluster.down)  # also on Ctrl-C or a crash of the session
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kubectl_binary(cluster: Cluster) -> str:
    return str(cluster.state()["binaries"]["kubectl"])  # type: ignore[index]


@pytest.fixture
def kubectl(cluster: Cluster, kubectl_binary: str) -> Callable[..., str]:
    def run(
        *args: str, kubeconfig: pathlib.Path | None = None, check: bool = True, timeout: float = 60
    ) -> str:
        out = subprocess.run(
            [kubectl_binary, f"--kubeconfig={kubeconfig or cluster.admin_kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out.stdout if check else out.stdout + out.stderr

    return run


@pytest.fixture
async def admin(cluster: Cluster) -> AsyncIterator[Kube]:
    kube = await Kube.connect(str(cluster.admin_kubeconfig))
    try:
        yield kube
    finally:
        await kube.close()


@pytest.fixture
def node_name() -> str:
    return f"vk-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def namespace(admin: Kube) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
    # The controller-manager makes the `default` ServiceAccount a moment later, or, after a fault
    # test restarted the apiserver, once its informers have recovered; pods are refused until then.
    try:
        await admin.create(f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}})
    except ApiError as exc:
        if not exc.conflict:
            raise
    try:
        yield name
    finally:
        await admin.delete(f"/api/v1/namespaces/{name}")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except ApiError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


class VirtualKubeletProcess:
    """`virtual-kubelet` run as a real process, the way users run it."""

    def __init__(
        self, args: list[str], log_path: pathlib.Path, env: dict[str, str], uid: int | None = None
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        # ``uid``: the process sees itself as that user and group (a user namespace mapping it onto
        # ours), as a container's runAsUser does, while it reads our files as before.
        as_user = [] if uid is None else ["unshare", "--user", f"--map-user={uid}", f"--map-group={uid}"]
        self.proc = subprocess.Popen(
            [*as_user, sys.executable, "-m", "vk_operator.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


async def wait_node_ready(kube: Kube, node: str, process: VirtualKubeletProcess, timeout: float = 45) -> None:
    """Until the virtual kubelet ``process`` has its Node Ready (it must not exit meanwhile)."""

    async def ready() -> bool:
        assert process.proc.poll() is None, f"virtual-kubelet exited:\n{process.log()}"
        obj = await kube.get(f"/api/v1/nodes/{node}")
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", [])
        )

    await eventually(ready, what=f"node {node} Ready", timeout=timeout)


def mock_vk_args(cluster: Cluster, node_name: str, config: pathlib.Path, *extra: str) -> list[str]:
    """`virtual-kubelet` flags for the mock provider with ``config`` under the node's own identity."""
    return [
        "--provider",
        "mock",
        "--provider-config",
        str(config),
        "--nodename",
        node_name,
        "--kubeconfig",
        str(cluster.node_kubeconfig(node_name)),
        *extra,
    ]


@pytest.fixture
def start_vk(tmp_path: pathlib.Path) -> Iterator[Callable[..., VirtualKubeletProcess]]:
    started: list[VirtualKubeletProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, uid: int | None = None, clean_env: bool = False
    ) -> VirtualKubeletProcess:
        """``clean_env``: only ``env`` (and PATH), as a container gets, instead of the test's own."""
        base = {"PATH": os.environ["PATH"]} if clean_env else dict(os.environ)
        process = VirtualKubeletProcess(
            list(args),
            tmp_path / f"vk-{len(started)}.log",
            {**base, "PYTHONUNBUFFERED": "1", **(env or {})},
            uid,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


class VirtualNode:
    """A running virtual kubelet with its node identity, mock state file and helpers."""

    def __init__(
        self, name: str, process: VirtualKubeletProcess, state_file: pathlib.Path, args: list[str]
    ) -> None:
        self.name = name
        self.process = process
        self.state_file = state_file
        self.args = args

    def provider_state(self) -> dict[str, Any]:
        import json

        try:
            return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return {"pods": {}, "calls": {"create": {}, "created": {}, "delete": {}}}

    def provider_uids(self) -> set[str]:
        return set(self.provider_state()["pods"])


@pytest.fixture
def virtual_node(
    cluster: Cluster,
    node_name: str,
    tmp_path: pathlib.Path,
    start_vk: Callable[..., VirtualKubeletProcess],
) -> Callable[..., Awaitable[VirtualNode]]:
    """Start `virtual-kubelet` on the mock provider (state kept in a file) and wait for its Node."""
    from vk_operator.devcluster.cluster import free_port

    async def start(
        *extra: str,
        config: str = "",
        kubeconfig: pathlib.Path | None = None,
        name: str | None = None,
        wait_ready: bool = True,
    ) -> VirtualNode:
        node = name or node_name
        state_file = tmp_path / f"{node}-mock-state.json"
        config_file = tmp_path / f"{node}-mock.yaml"
        config_file.write_text(f"state_file: {state_file}\n{config}")
        args = [
            "--provider",
            "mock",
            "--provider-config",
            str(config_file),
            "--nodename",
            node,
            "--kubeconfig",
            str(kubeconfig or cluster.node_kubeconfig(node)),
            "--kubelet-port",
            str(free_port()),
            "--lease-renew-interval",
            "2",
            *extra,
        ]
        process = start_vk(*args)
        vn = VirtualNode(node, process, state_file, args)
        if wait_ready:
            kube = await Kube.connect(str(cluster.admin_kubeconfig))
            try:
                await wait_node_ready(kube, node, process, timeout=30)
            finally:
                await kube.close()
        return vn

    return start


def pod_manifest(name: str, node: str, **spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", None)
    manifest: dict[str, Any] = {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "nginx:1.27"}],
            "automountServiceAccountToken": False,
            **spec,
        },
    }
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    return manifest


async def pod_phase(kube: Kube, namespace: str, name: str) -> str | None:
    try:
        pod = await kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except ApiError as exc:
        if exc.not_found:
            return None
        raise
    return pod.get("status", {}).get("phase")  # type: ignore[no-any-return]


async def wait_phase(
    kube: Kube, namespace: str, name: str, phase: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        pod = await kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return pod if pod.get("status", {}).get("phase") == phase else None

    return await eventually(probe, what=f"pod {name} {phase}", timeout=timeout)


async def events_for(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    found = await kube.get(
        f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}"
    )
    return found["items"]  # type: ignore[no-any-return]


async def wait_event(
    kube: Kube, namespace: str, name: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return next((e for e in await events_for(kube, namespace, name) if e["reason"] == reason), None)

    return await eventually(probe, what=f"event {reason} for {name}", timeout=timeout)


def token_kubeconfig(path: pathlib.Path, cluster: Cluster, user: str, token: str) -> pathlib.Path:
    """A kubeconfig at ``path`` for ``user`` authenticating with a bearer ``token``."""
    import json

    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.pki_dir / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": user}}],
            }
        )
    )
    return path


RBAC_RULES = REPO / "charts/virtual-kubelet/files/rbac-rules.yaml"


def chart_rules() -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(RBAC_RULES.read_text())  # type: ignore[no-any-return]


@pytest.fixture
async def rbac_kubeconfig(
    cluster: Cluster, admin: Kube, tmp_path: pathlib.Path
) -> AsyncIterator[Callable[..., Awaitable[pathlib.Path]]]:
    """A ServiceAccount identity (a TokenRequest token) bound to a ClusterRole with given rules.

    Default rules: the chart's, i.e. what a `helm install` grants the virtual kubelet.
    """

    made: list[str] = []
    sa_namespace = "vk-system"
    try:
        await admin.create("/api/v1/namespaces", {"metadata": {"name": sa_namespace}})
    except ApiError as exc:
        if not exc.conflict:
            raise

    async def make(name: str, rules: list[dict[str, Any]] | None = None) -> pathlib.Path:
        await admin.create(f"/api/v1/namespaces/{sa_namespace}/serviceaccounts", {"metadata": {"name": name}})
        await admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {"metadata": {"name": name}, "rules": chart_rules() if rules is None else rules},
        )
        await admin.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": sa_namespace}],
            },
        )
        made.append(name)
        token = (
            await admin.create(
                f"/api/v1/namespaces/{sa_namespace}/serviceaccounts/{name}/token",
                {"spec": {"expirationSeconds": 3600}},
            )
        )["status"]["token"]
        return token_kubeconfig(tmp_path / f"{name}.kubeconfig", cluster, name, token)

    yield make
    for name in made:
        for path in (
            f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
            f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
            f"/api/v1/namespaces/{sa_namespace}/serviceaccounts/{name}",
        ):
            with contextlib.suppress(ApiError):
                await admin.delete(path)
