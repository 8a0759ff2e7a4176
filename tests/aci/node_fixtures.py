"""An `aci` virtual node on the real control plane, backed by the local ARM server in its own process.

``aci_node(...)`` starts ``python -m providers.aci.localarm`` on a free port, writes an ACI provider
config pointing at it, starts ``virtual-kubelet --provider aci`` under the node's kubelet identity and
waits for the Node to be Ready. At teardown the virtual kubelets are stopped first, then the server is
asked (``/_localarm/validation-failures``) whether any request the SDK sent or any response it got did
not validate against the spec: any such failure fails the test. Then the server is stopped.

The server is a separate process on purpose: the tests run ``kubectl`` synchronously, which would
stall a server living on the test's event loop (and with it every ARM call of the virtual kubelet).

What the tests read from the server, they read through ARM itself (``ContainerGroups_Get`` and
``_ListByResourceGroup``, validated like every other request; they count as reads) or through the
unthrottled admin endpoints (``/_localarm/stats``: calls per ``"<operationId> <status>"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO, VirtualKubeletProcess, wait_node_ready
from vk_operator.devcluster.cluster import Cluster, free_port
from vk_operator.kube import Kube

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000bb"
RESOURCE_GROUP = "vk-node-test"
REGION = "westus"
API_VERSION = "2023-05-01"
PROVIDER_PATH = "providers/Microsoft.ContainerInstance/containerGroups"
TAG_NODE = "vk-operator.node"
TAG_UID = "vk-operator.uid"

# Simulated time fast enough for tests, real enough to be seen in transition.
FAST_SERVER_ARGS = (
    "--pull-seconds",
    "0.2",
    "--delete-seconds",
    "0.2",
    "--restart-backoff-seconds",
    "0.2",
    "--restart-backoff-max-seconds",
    "1",
)
# The provider's status budget, raised for tests so restarts and exit codes show within seconds.
TEST_PROVIDER_CONFIG: dict[str, Any] = {
    "poll_interval_seconds": 0.2,
    "status_poll": {"calls_per_minute": 600, "refresh_seconds": 2},
}
_LISTENING = re.compile(r"localarm listening on (http://\S+)")


class LocalArmProcess:
    """``python -m providers.aci.localarm`` as a process, with helpers to read its state."""

    def __init__(self, args: list[str], log_path: pathlib.Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "providers.aci.localarm", "--port", "0", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        self.base_url = ""
        self._session: aiohttp.ClientSession | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_listening(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not self.base_url:
            if self.proc.poll() is not None:
                raise AssertionError(f"localarm exited {self.proc.returncode}:\n{self.log()}")
            found = _LISTENING.search(self.log())
            if found:
                self.base_url = found.group(1)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"localarm not listening within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self.base_url

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    # -- the admin endpoints (not ARM: neither throttled nor counted) ----------------------------------
    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, f"{self.base_url}/_localarm/{path}", json=body) as resp:
            text = await resp.text()
            assert resp.status == 200, f"{method} /_localarm/{path}: {resp.status} {text}"
            return json.loads(text)

    async def stats(self) -> dict[str, Any]:
        return await self.admin("GET", "stats")  # type: ignore[no-any-return]

    async def calls(self, operation: str, status: int | None = None) -> int:
        """How many ``operation`` requests the server answered (with ``status``, or any)."""
        counted: dict[str, int] = (await self.stats())["calls"]
        return sum(
            n
            for key, n in counted.items()
            if key.split(" ")[0] == operation and (status is None or key.split(" ")[1] == str(status))
        )

    async def validation_failures(self) -> list[str]:
        return (await self.admin("GET", "validation-failures"))["failures"]  # type: ignore[no-any-return]

    async def set_knobs(self, **knobs: Any) -> dict[str, Any]:
        return await self.admin("PATCH", "knobs", knobs)  # type: ignore[no-any-return]

    async def seed(self, example: str, name: str, tags: dict[str, str] | None) -> str:
        body = {
            "example": example,
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": RESOURCE_GROUP,
            "name": name,
            **({"tags": tags} if tags is not None else {}),
        }
        return (await self.admin("POST", "seed", body))["id"]  # type: ignore[no-any-return]

    # -- ARM reads (validated like the provider's, and counted as reads) ---------------------------------
    def _groups_url(self, name: str = "") -> str:
        base = f"{self.base_url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/{PROVIDER_PATH}"
        return f"{base}/{name}" if name else base

    async def group(self, name: str) -> dict[str, Any] | None:
        """``ContainerGroups_Get``: the group with its instance view, None when absent."""
        async with self.session.get(self._groups_url(name), params={"api-version": API_VERSION}) as resp:
            if resp.status == 404:
                return None
            assert resp.status == 200, f"GET group {name}: {resp.status} {await resp.text()}"
            return await resp.json()  # type: ignore[no-any-return]

    async def groups(self) -> list[dict[str, Any]]:
        """``ContainerGroups_ListByResourceGroup``, every page."""
        items: list[dict[str, Any]] = []
        url: str | None = f"{self._groups_url()}?api-version={API_VERSION}"
        while url:
            async with self.session.get(url) as resp:
                assert resp.status == 200, f"list groups: {resp.status} {await resp.text()}"
                page = await resp.json()
            items += page.get("value") or []
            url = page.get("nextLink")
        return items

    async def groups_of(self, node: str) -> dict[str, dict[str, Any]]:
        """This node's groups by pod UID (the ownership tag)."""
        found = {}
        for group in await self.groups():
            tags = group.get("tags") or {}
            if tags.get(TAG_NODE) == node and TAG_UID in tags:
                found[tags[TAG_UID]] = group
        return found

    async def group_of(self, uid: str) -> dict[str, Any] | None:
        """The group tagged with pod UID ``uid``, read with its instance view (GET), or None."""
        for group in await self.groups():
            if (group.get("tags") or {}).get(TAG_UID) == uid:
                return await self.group(group["name"])
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class AciNode:
    """A running ``virtual-kubelet --provider aci`` and the local ARM server behind it."""

    def __init__(
        self,
        name: str,
        process: VirtualKubeletProcess,
        arm: LocalArmProcess,
        args: list[str],
        config_file: pathlib.Path,
        start_vk: Callable[..., VirtualKubeletProcess],
    ) -> None:
        self.name = name
        self.process = process
        self.arm = arm
        self.args = args
        self.config_file = config_file
        self._start_vk = start_vk
        self.processes = [process]

    def restart(self) -> VirtualKubeletProcess:
        """Start the virtual kubelet again with the very same arguments (after a stop or a kill)."""
        self.process = self._start_vk(*self.args)
        self.processes.append(self.process)
        return self.process

    def logs(self) -> str:
        """Every log line of every virtual kubelet process of this node so far."""
        return "\n".join(p.log() for p in self.processes)


@pytest.fixture
def start_localarm(tmp_path: pathlib.Path) -> Iterator[Callable[..., Awaitable[LocalArmProcess]]]:
    """Start local ARM servers (``FAST_SERVER_ARGS`` + extra flags); teardown: no validation failure."""
    started: list[LocalArmProcess] = []

    async def start(*args: str) -> LocalArmProcess:
        arm = LocalArmProcess([*FAST_SERVER_ARGS, *args], tmp_path / f"localarm-{len(started)}.log")
        started.append(arm)
        await arm.wait_listening()
        return arm

    yield start
    # The async teardown of the servers is done by `aci_node` (which stops the VKs first); a server
    # started on its own is checked here, synchronously, from its exit code and stderr.
    problems = []
    for arm in started:
        code = arm.stop()
        if code not in (0, None):
            problems.append(f"localarm exited {code} (1: validation failures):\n{arm.log()[-5000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
async def aci_node(
    cluster: Cluster,
    node_name: str,
    tmp_path: pathlib.Path,
    start_vk: Callable[..., VirtualKubeletProcess],
    start_localarm: Callable[..., Awaitable[LocalArmProcess]],
) -> AsyncIterator[Callable[..., Awaitable[AciNode]]]:
    """``await aci_node(*vk_flags, server_args=(...), config={...})``: a Ready `aci` node.

    ``server_args`` are extra ``python -m providers.aci.localarm`` flags (``--writes-per-second 1``),
    ``config`` extra provider config keys (merged over ``TEST_PROVIDER_CONFIG``).
    """
    nodes: list[AciNode] = []

    async def start(
        *extra: str,
        server_args: tuple[str, ...] | list[str] = (),
        config: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> AciNode:
        node = name or node_name
        arm = await start_localarm(*server_args)
        config_file = tmp_path / f"{node}-aci.json"
        config_file.write_text(
            json.dumps(
                {
                    "subscription_id": SUBSCRIPTION,
                    "resource_group": RESOURCE_GROUP,
                    "region": REGION,
                    "base_url": arm.base_url,
                    **TEST_PROVIDER_CONFIG,
                    **(config or {}),
                },
                indent=1,
            )
        )
        args = [
            "--provider",
            "aci",
            "--provider-config",
            str(config_file),
            "--nodename",
            node,
            "--kubeconfig",
            str(cluster.node_kubeconfig(node)),
            "--kubelet-port",
            str(free_port()),
            "--node-ip",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--lease-renew-interval",
            "2",
            *extra,
        ]
        process = start_vk(*args)
        vn = AciNode(node, process, arm, args, config_file, start_vk)
        nodes.append(vn)
        kube = await Kube.connect(str(cluster.admin_kubeconfig))
        try:
            await wait_node_ready(kube, node, process)
        finally:
            await kube.close()
        return vn

    yield start
    failures: list[str] = []
    for vn in nodes:
        for process in vn.processes:
            process.stop()
        with contextlib.suppress(aiohttp.ClientError, OSError):
            failures += await vn.arm.validation_failures()
        await vn.arm.close()
    assert failures == [], "requests or responses did not validate against the spec:\n" + "\n".join(failures)
