"""An `azurebatch` virtual node on the real control plane, backed by the local Batch service in its own
process.

``batch_node(...)`` starts ``python -m providers.azurebatch.localbatch`` on a free port with the pool
``POOL`` (1 dedicated + 1 low-priority ``standard_nc6s_v3`` node), writes a provider config pointing
at it (shared key, from an environment variable of the virtual kubelet's process), starts
``virtual-kubelet --provider azurebatch`` under the node's kubelet identity and waits for the Node to
be Ready. At teardown the virtual kubelets are stopped first, then the service is asked
(``/_localbatch/validation-failures``) whether any request the SDK sent or any response it got did not
validate against the spec (or was signed wrongly: that is a 403 the provider would have failed on);
any such failure fails the test.

The service is a separate process on purpose: the tests run ``kubectl`` synchronously, which would
stall a service living on the test's event loop. What the tests read from it they read through the
Batch API with the SDK (signed like the provider's requests), or through the admin endpoints.
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
from azure.batch.aio import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from providers.azurebatch.localbatch import DEFAULT_ACCOUNT, DEFAULT_KEY
from tests.conftest import REPO, VirtualKubeletProcess, wait_node_ready
from vk_operator.devcluster.cluster import Cluster, free_port
from vk_operator.kube import Kube

POOL = "gpu-pool"
VM_SIZE = "standard_nc6s_v3"
KEY_ENV = "VK_BATCH_KEY"
SERVER_ARGS = ("--pool", f"{POOL}:{VM_SIZE}:1:1", "--schedule-seconds", "0.2", "--prepare-seconds", "0.2")
TEST_PROVIDER_CONFIG: dict[str, Any] = {"status_poll": {"calls_per_minute": 600}}
_LISTENING = re.compile(r"localbatch listening on (http://\S+)")


class LocalBatchProcess:
    """``python -m providers.azurebatch.localbatch`` as a process, with helpers to read its state."""

    def __init__(self, args: list[str], log_path: pathlib.Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "providers.azurebatch.localbatch", "--port", "0", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        self.base_url = ""
        self._session: aiohttp.ClientSession | None = None
        self._client: BatchClient | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_listening(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not self.base_url:
            if self.proc.poll() is not None:
                raise AssertionError(f"localbatch exited {self.proc.returncode}:\n{self.log()}")
            found = _LISTENING.search(self.log())
            if found:
                self.base_url = found.group(1)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"localbatch not listening within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self.base_url

    @property
    def client(self) -> BatchClient:
        """The SDK, signing with the service's key (its reads are validated like the provider's)."""
        if self._client is None:
            self._client = BatchClient(self.base_url, AzureNamedKeyCredential(DEFAULT_ACCOUNT, DEFAULT_KEY))
        return self._client

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._session.request(method, f"{self.base_url}/_localbatch/{path}", json=body) as resp:
            text = await resp.text()
            assert resp.status == 200, f"{method} /_localbatch/{path}: {resp.status} {text}"
            return json.loads(text)

    async def calls(self, operation: str, status: int | None = None) -> int:
        counted: dict[str, int] = (await self.admin("GET", "stats"))["calls"]
        return sum(
            n
            for key, n in counted.items()
            if key.split(" ")[0] == operation and (status is None or key.split(" ")[1] == str(status))
        )

    async def set_pool(self, **fields: Any) -> None:
        await self.admin("PUT", f"pools/{POOL}", fields)

    async def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        """The job's tasks by pod UID (from their environment), as REST JSON."""
        found = {}
        async for task in self.client.list_tasks(job_id):
            body = task.as_dict()
            env = {e["name"]: e.get("value", "") for e in body.get("environmentSettings") or []}
            found[env.get("VK_OPERATOR_POD_UID", f"?{body['id']}")] = body
        return found

    async def validation_failures(self) -> list[str]:
        return (await self.admin("GET", "validation-failures"))["failures"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
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


class BatchNode:
    """A running ``virtual-kubelet --provider azurebatch`` and the local Batch service behind it."""

    def __init__(
        self,
        name: str,
        process: VirtualKubeletProcess,
        batch: LocalBatchProcess,
        args: list[str],
        start_vk: Callable[..., VirtualKubeletProcess],
    ) -> None:
        self.name = name
        self.process = process
        self.batch = batch
        self.args = args
        self._start_vk = start_vk
        self.processes = [process]

    @property
    def job_id(self) -> str:
        from providers.azurebatch.naming import job_id

        return job_id(self.name)

    def restart(self) -> VirtualKubeletProcess:
        self.process = self._start_vk(*self.args, env={KEY_ENV: DEFAULT_KEY})
        self.processes.append(self.process)
        return self.process

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)


@pytest.fixture
def start_localbatch(tmp_path: pathlib.Path) -> Iterator[Callable[..., Awaitable[LocalBatchProcess]]]:
    started: list[LocalBatchProcess] = []

    async def start(*args: str) -> LocalBatchProcess:
        batch = LocalBatchProcess([*SERVER_ARGS, *args], tmp_path / f"localbatch-{len(started)}.log")
        started.append(batch)
        await batch.wait_listening()
        return batch

    yield start
    problems = []
    for batch in started:
        code = batch.stop()
        if code not in (0, None):
            problems.append(f"localbatch exited {code} (1: validation failures):\n{batch.log()[-5000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
async def batch_node(
    cluster: Cluster,
    node_name: str,
    tmp_path: pathlib.Path,
    start_vk: Callable[..., VirtualKubeletProcess],
    start_localbatch: Callable[..., Awaitable[LocalBatchProcess]],
) -> AsyncIterator[Callable[..., Awaitable[BatchNode]]]:
    """``await batch_node(*vk_flags, config={...})``: a Ready `azurebatch` node."""
    nodes: list[BatchNode] = []

    async def start(*extra: str, config: dict[str, Any] | None = None) -> BatchNode:
        batch = await start_localbatch()
        config_file = tmp_path / f"{node_name}-azurebatch.json"
        config_file.write_text(
            json.dumps(
                {
                    "account_endpoint": batch.base_url,
                    "pool_id": POOL,
                    "credential": "shared_key",
                    "account_name": DEFAULT_ACCOUNT,
                    "shared_key_env": KEY_ENV,
                    **TEST_PROVIDER_CONFIG,
                    **(config or {}),
                },
                indent=1,
            )
        )
        args = [
            "--provider",
            "azurebatch",
            "--provider-config",
            str(config_file),
            "--nodename",
            node_name,
            "--kubeconfig",
            str(cluster.node_kubeconfig(node_name)),
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
        process = start_vk(*args, env={KEY_ENV: DEFAULT_KEY})
        node = BatchNode(node_name, process, batch, args, start_vk)
        nodes.append(node)
        kube = await Kube.connect(str(cluster.admin_kubeconfig))
        try:
            await wait_node_ready(kube, node_name, process)
        finally:
            await kube.close()
        return node

    yield start
    failures: list[str] = []
    for node in nodes:
        for process in node.processes:
            process.stop()
        with contextlib.suppress(aiohttp.ClientError, OSError):
            failures += await node.batch.validation_failures()
        await node.batch.close()
    assert failures == [], "requests or responses did not validate against the spec:\n" + "\n".join(failures)
