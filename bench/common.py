"""Shared plumbing for the benchmarks: a tuned control plane, the virtual kubelet as a subprocess,
a minimal aiohttp API client, a pod watch that timestamps what it sees, and reporting helpers.

Every benchmark starts its own control plane in a temporary directory (always torn down, also on
Ctrl-C or SIGTERM) unless ``--kubeconfig`` names an existing cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any

import aiohttp

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vk_operator.devcluster.cluster import Cluster, ClusterError, Options, free_port  # noqa: E402

# The control plane must not be the artificial bottleneck: default inflight limits (400/200) and
# priority-and-fairness queue a burst of thousands of requests from one client; the controller-
# manager's default client QPS (20, raised to 100 by devcluster) throttles its pod informers' work.
APISERVER_ARGS = (
    "--max-requests-inflight=3000",
    "--max-mutating-requests-inflight=1000",
    "--enable-priority-and-fairness=false",
)
CONTROLLER_MANAGER_ARGS = ("--kube-api-qps=1000", "--kube-api-burst=2000")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


# -- output ------------------------------------------------------------------------------------------
def say(*parts: Any) -> None:
    print(*parts, flush=True)


def loadavg() -> str:
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def table(rows: Sequence[tuple[str, Any]], title: str | None = None) -> None:
    if title:
        say(f"\n{title}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        say(f"  {key:<{width}}  {value}")


def final_line(figures: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object."""
    say(json.dumps(figures, separators=(", ", ": ")))


# -- arguments ---------------------------------------------------------------------------------------
def common_arguments(parser: argparse.ArgumentParser, *, workers: int = 16) -> None:
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    parser.add_argument(
        "--node-kubeconfig",
        help="identity for the virtual kubelet (default: a minted system:node:NODE identity on the "
        "local control plane, or --kubeconfig)",
    )
    parser.add_argument("--node", default=None, help="virtual node name (default: bench-<random>)")
    parser.add_argument(
        "--pod-workers", type=int, default=workers, help=f"VK --pod-workers (default {workers})"
    )
    parser.add_argument("--vk-log-level", default="INFO", help="VK --log-level (default INFO)")
    parser.add_argument("--vk-arg", action="append", default=[], help="extra VK flag (repeatable)")
    parser.add_argument(
        "--vk-script", help="run this Python file with the VK's flags instead of `-m vk_operator.cli`"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="bench client: concurrent requests (default 64)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) at the end")
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile the VK with py-spy during the measured phase (speedscope JSON, or .txt: collapsed)",
    )


# -- signals -----------------------------------------------------------------------------------------
def sigterm_as_interrupt() -> None:
    """SIGTERM tears down like Ctrl-C does (KeyboardInterrupt runs every ``finally``)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# -- the control plane ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Environment:
    workdir: pathlib.Path
    admin_kubeconfig: pathlib.Path
    node: str
    node_kubeconfig: pathlib.Path
    cluster: Cluster | None
    settings: dict[str, Any]

    def identity_for(self, node: str) -> pathlib.Path:
        """A kubelet identity for another node name (the admin kubeconfig on an external cluster)."""
        return self.cluster.node_kubeconfig(node) if self.cluster else self.admin_kubeconfig

    def kubectl_binary(self) -> str | None:
        if self.cluster is None:
            return shutil.which("kubectl")
        binaries = self.cluster.state().get("binaries")
        return str(binaries["kubectl"]) if isinstance(binaries, dict) else None


@contextlib.contextmanager
def environment(
    args: argparse.Namespace,
    *,
    extra_apiserver_args: Sequence[str] = (),
    prepare: Callable[[pathlib.Path, str], Sequence[str]] | None = None,
) -> Iterator[Environment]:
    """A tuned local control plane in a temporary directory (or the cluster of --kubeconfig).

    ``prepare(workdir, node)`` may return more apiserver flags (files it wrote in workdir, e.g. an
    audit policy).
    """
    sigterm_as_interrupt()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="vk-bench-"))
    node = args.node or f"bench-{uuid.uuid4().hex[:6]}"
    cluster: Cluster | None = None
    try:
        if args.kubeconfig:
            admin = pathlib.Path(args.kubeconfig)
            node_kc = pathlib.Path(args.node_kubeconfig or args.kubeconfig)
            settings: dict[str, Any] = {"control_plane": f"external ({admin}); not tuned by this script"}
        else:
            extra = list(prepare(workdir, node)) if prepare else []
            apiserver = [*APISERVER_ARGS, *extra_apiserver_args, *extra]
            settings = {
                "control_plane": f"local, {workdir / 'cp'}",
                "apiserver_args": apiserver,
                "controller_manager_args": list(CONTROLLER_MANAGER_ARGS),
            }
            say(f"starting a local control plane in {workdir / 'cp'} ...")
            started = time.monotonic()
            options = Options(apiserver_args=apiserver, controller_manager_args=list(CONTROLLER_MANAGER_ARGS))
            for attempt in range(3):
                cluster = Cluster(workdir / ("cp" if attempt == 0 else f"cp{attempt}"))
                try:
                    cluster.up(options)
                    break
                except ClusterError as exc:
                    # Seen on a busy machine: a free port taken meanwhile, or a component judged dead
                    # because /proc/PID/cmdline was read while it was still being exec'd (then
                    # `down` leaves it running). Kill what this attempt started, retry elsewhere.
                    kill_started_in(cluster.dir)
                    if attempt == 2:
                        raise
                    say(f"control plane start failed ({str(exc).splitlines()[0]}); retrying")
            assert cluster is not None
            say(f"control plane up in {time.monotonic() - started:.1f}s")
            admin = cluster.admin_kubeconfig
            node_kc = cluster.node_kubeconfig(node)
        settings["cpus"] = os.cpu_count()
        settings["load_at_start"] = loadavg()
        yield Environment(workdir, admin, node, node_kc, cluster, settings)
    finally:
        # Ctrl-C while tearing down must not leave processes behind: ignore it until done.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if cluster is not None:
                cluster.down()
            kill_started_in(workdir)  # anything `down` missed (see above), and a VK left running
            if args.keep:
                say(f"work directory kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def kill_started_in(directory: pathlib.Path) -> None:
    """SIGKILL the processes whose command line names ``directory`` (ours: it is a fresh temp dir)."""
    needle = str(directory).encode()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


def print_settings(settings: dict[str, Any]) -> None:
    rows = []
    for key, value in settings.items():
        rows.append((key, " ".join(value) if isinstance(value, list) else value))
    table(rows, "settings")


# -- counting the VK's requests on the apiserver side ----------------------------------------------------
def audit_args(workdir: pathlib.Path, node: str) -> list[str]:
    """An audit policy logging (metadata only) the requests of the node's identity, nothing else."""
    policy = workdir / "audit-policy.json"
    policy.write_text(
        json.dumps(
            {
                "apiVersion": "audit.k8s.io/v1",
                "kind": "Policy",
                "omitStages": ["RequestReceived"],
                "rules": [{"level": "Metadata", "users": [f"system:node:{node}"]}, {"level": "None"}],
            }
        )
    )
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxsize=0",
    ]


def audited_requests(workdir: pathlib.Path, since: float, until: float) -> dict[str, int]:
    """Requests received in [since, until) per "verb resource[/subresource]" from the audit log."""
    seen: dict[str, str] = {}
    try:
        lines = (workdir / "audit.log").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        entry = json.loads(line)
        received = parse_time(entry["requestReceivedTimestamp"])
        if not since <= received < until:
            continue
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource", entry.get("requestURI", "?"))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        seen[entry["auditID"]] = f"{entry['verb']} {resource}"
    counts: dict[str, int] = {}
    for what in seen.values():
        counts[what] = counts.get(what, 0) + 1
    return dict(sorted(counts.items()))


# -- the virtual kubelet -------------------------------------------------------------------------------
class VirtualKubelet:
    """`python -m vk_operator.cli --provider mock ...` as a real process."""

    def __init__(
        self,
        env: Environment,
        args: argparse.Namespace,
        *,
        provider_config: dict[str, Any] | None = None,
        extra: Sequence[str] = (),
        tag: str = "vk",
    ) -> None:
        self.env = env
        self.config_file = env.workdir / f"{tag}-mock.json"
        self.config_file.write_text(json.dumps({"pods": "1000000", **(provider_config or {})}))
        self.log_path = env.workdir / f"{tag}.log"
        self.kubelet_port = free_port()
        self.metrics_port = free_port()
        entry = [args.vk_script] if getattr(args, "vk_script", None) else ["-m", "vk_operator.cli"]
        self.argv = [
            sys.executable,
            *entry,
            "--provider",
            "mock",
            "--provider-config",
            str(self.config_file),
            "--nodename",
            env.node,
            "--kubeconfig",
            str(env.node_kubeconfig),
            "--kubelet-port",
            str(self.kubelet_port),
            "--metrics-port",
            str(self.metrics_port),
            "--client-qps",
            "0",
            "--pod-workers",
            str(args.pod_workers),
            "--log-level",
            args.vk_log_level,
            *args.vk_arg,
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def command(self) -> str:
        return " ".join(self.argv[1:])

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # we stop it ourselves, after the bench's own Ctrl-C handling
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"the virtual kubelet exited; last log lines:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    # -- /proc figures -------------------------------------------------------------------------------
    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory now (``VmRSS``) or its high-water mark so far (``VmHWM``), in MiB."""
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    async def metrics(self) -> dict[str, float]:
        """The VK's own Prometheus metrics (plain HTTP on --metrics-port), unlabelled + labelled."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
        return parse_prometheus(text)


async def settle(vk: VirtualKubelet, seconds: float) -> None:
    """Wait ``seconds``, then until the VK has nothing left to do: no pod queued, no Event queued."""
    await asyncio.sleep(seconds)
    for _ in range(600):
        vk.check_alive()
        metrics = await vk.metrics()
        if metrics.get("vk_pod_queue_depth", 0) == 0 and metrics.get("vk_events_pending", 0) == 0:
            return
        await asyncio.sleep(0.5)


def proc_cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def parse_prometheus(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


@contextlib.contextmanager
def profiled(vk: VirtualKubelet, output: str | None) -> Iterator[None]:
    """``py-spy record`` attached to the VK for the duration of the block (no-op without output)."""
    if not output:
        yield
        return
    py_spy = pathlib.Path(sys.executable).parent / "py-spy"
    fmt = "raw" if output.endswith(".txt") else "speedscope"
    proc = subprocess.Popen(
        [
            str(py_spy if py_spy.exists() else "py-spy"),
            *("record", "-p", str(vk.pid), "-o", output, "--format", fmt, "--rate", "100"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the work starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        say(f"py-spy profile of the VK: {output}")


@contextlib.contextmanager
def running_vk(vk: VirtualKubelet) -> Iterator[VirtualKubelet]:
    vk.start()
    try:
        yield vk
    finally:
        vk.stop()


# -- a minimal API client ------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: {status}: {body[:300]}")
        self.status = status


class Api:
    """Raw JSON over one aiohttp session; credentials loaded by kubernetes-asyncio's kubeconfig loader."""

    def __init__(self, host: str, ssl_context: ssl.SSLContext, headers: dict[str, str], limit: int) -> None:
        self.host = host.rstrip("/")
        self.headers = headers
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=limit, limit_per_host=limit),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        self.requests = 0

    @classmethod
    async def connect(cls, kubeconfig: pathlib.Path | str, limit: int = 64) -> Api:
        from kubernetes_asyncio import client as k8s_client
        from kubernetes_asyncio import config as k8s_config

        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        if configuration.verify_ssl:
            ctx = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        else:
            ctx = ssl._create_unverified_context()
        if configuration.cert_file:
            ctx.load_cert_chain(configuration.cert_file, configuration.key_file)
        headers = {"Accept": "application/json"}
        token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
        if token:
            headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        return cls(str(configuration.host), ctx, headers, limit)

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
        ok_missing: bool = False,
    ) -> Any:
        headers = dict(self.headers)
        data = raw
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        self.requests += 1
        async with self.session.request(
            method, self.host + path, data=data, headers=headers, params=params
        ) as resp:
            payload = await resp.read()
            if resp.status == 404 and ok_missing:
                return None
            if not 200 <= resp.status < 300:
                raise ApiError(resp.status, method, path, payload.decode(errors="replace"))
            return json.loads(payload) if payload else None

    async def get(self, path: str, **params: str) -> Any:
        return await self.request("GET", path, params=params or None)

    async def list_all(self, path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {**params, "limit": "1000", **({"continue": token} if token else {})}
            page = await self.get(path, **query)
            items += page.get("items") or []
            token = page["metadata"].get("continue") or ""
            if not token:
                return items, page["metadata"]["resourceVersion"]

    async def watch_lines(self, path: str, resource_version: str, **params: str) -> AsyncIterator[bytes]:
        query = {
            **params,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "3600",
        }
        async with self.session.get(
            self.host + path,
            params=query,
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, "WATCH", path, await resp.text())
            async for line in resp.content:
                if line.strip():
                    yield line


async def gather_limited(limit: int, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run coroutine factories with at most ``limit`` in flight (workers pulling from a list)."""
    results: list[Any] = [None] * len(jobs)
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(jobs):
            index = position
            position += 1
            results[index] = await jobs[index]()

    await asyncio.gather(*(worker() for _ in range(min(limit, len(jobs)))))
    return results


# -- cluster objects -------------------------------------------------------------------------------------
async def make_namespace(api: Api, prefix: str = "bench") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    # The ServiceAccount admission plugin rejects pods until the `default` ServiceAccount exists.
    deadline = time.monotonic() + 60
    while (
        await api.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", ok_missing=True)
        is None
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {name} after 60s")
        await asyncio.sleep(0.1)
    return name


async def cleanup_external(api: Api, env: Environment, namespace: str | None) -> None:
    """On a cluster we did not start: remove the bench's namespace (pods force-deleted) and Node."""
    if env.cluster is not None:
        return  # the whole control plane goes away
    try:
        if namespace:
            force = {"gracePeriodSeconds": 0}
            await api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", force, ok_missing=True)
            await api.request("DELETE", f"/api/v1/namespaces/{namespace}", ok_missing=True)
        await api.request("DELETE", f"/api/v1/nodes/{env.node}", ok_missing=True)
    except ApiError as exc:
        say(f"(cleanup incomplete: {exc})")


async def wait_node_ready(api: Api, node: str, vk: VirtualKubelet | None, timeout: float = 60) -> float:
    """Seconds until the Node exists with Ready=True (and its Lease renewed after ``vk`` started)."""
    started = time.monotonic()
    while True:
        if vk is not None:
            vk.check_alive()
        obj = await api.request("GET", f"/api/v1/nodes/{node}", ok_missing=True)
        ready = obj is not None and any(
            c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions") or []
        )
        if ready and vk is not None:
            lease = await api.request(
                "GET",
                f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}",
                ok_missing=True,
            )
            renewed = (lease or {}).get("spec", {}).get("renewTime")
            ready = bool(renewed) and parse_time(renewed) >= int(vk.started_at) - 1
        if ready:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"node {node} not Ready within {timeout}s")
        await asyncio.sleep(0.05)


def parse_time(stamp: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def pod_manifest(name: str, node: str, *, service_links: bool = False, token: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": token,
            "enableServiceLinks": service_links,
            "containers": [{"name": "app", "image": PAUSE_IMAGE}],
        },
    }


# -- watching pods ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class PodTimes:
    sent: float = 0.0  # client: create request sent (time.time())
    created: float = 0.0  # client: create returned
    creation_timestamp: float = 0.0  # API: metadata.creationTimestamp (1 s resolution)
    running: float = 0.0  # watch: first event with phase Running
    delete_sent: float = 0.0
    deleted: float = 0.0  # watch: DELETED event


class PodWatch:
    """Watches pods of one namespace on one node and timestamps creation, Running and deletion."""

    def __init__(self, api: Api, namespace: str, node: str) -> None:
        self.api = api
        self.namespace = namespace
        self.node = node
        self.times: dict[str, PodTimes] = {}
        self.running = 0
        self.deleted = 0
        self.last_running = 0.0
        self.last_deleted = 0.0
        self.events = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._rv = ""

    def pod(self, name: str) -> PodTimes:
        times = self.times.get(name)
        if times is None:
            times = self.times[name] = PodTimes()
        return times

    async def start(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        _, self._rv = await self.api.list_all(path, fieldSelector=f"spec.nodeName={self.node}")
        self._task = asyncio.create_task(self._run(path))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self, path: str) -> None:
        while True:
            try:
                async for line in self.api.watch_lines(
                    path, self._rv, fieldSelector=f"spec.nodeName={self.node}"
                ):
                    self._handle(json.loads(line), time.time())
            except (TimeoutError, aiohttp.ClientError) as exc:
                say(f"(watch interrupted: {exc}; resuming)")
                await asyncio.sleep(0.1)

    def _handle(self, event: dict[str, Any], now: float) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":
            raise RuntimeError(f"watch error: {obj}")
        self._rv = meta.get("resourceVersion") or self._rv
        if kind == "BOOKMARK":
            return
        self.events += 1
        times = self.pod(meta["name"])
        if not times.creation_timestamp and meta.get("creationTimestamp"):
            times.creation_timestamp = parse_time(meta["creationTimestamp"])
        if kind == "DELETED":
            if not times.deleted:
                times.deleted = now
                self.deleted += 1
                self.last_deleted = now
        elif not times.running and (obj.get("status") or {}).get("phase") == "Running":
            times.running = now
            self.running += 1
            self.last_running = now
        self._changed.set()

    async def wait(
        self, done: Callable[[], bool], timeout: float, check: Callable[[], None] | None = None
    ) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if check:
                check()
            if self._task and self._task.done():
                self._task.result()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self._changed.wait()
        return True


def latency_summary(watch: PodWatch, names: Sequence[str]) -> dict[str, float | None]:
    """bind->Running per pod: from the client's create return, and from creationTimestamp."""
    client = [watch.times[n].running - watch.times[n].created for n in names if watch.times[n].running]
    api = [
        watch.times[n].running - watch.times[n].creation_timestamp
        for n in names
        if watch.times[n].running and watch.times[n].creation_timestamp
    ]
    return {
        "p50_s": r(percentile(client, 50)),
        "p95_s": r(percentile(client, 95)),
        "p99_s": r(percentile(client, 99)),
        "max_s": r(max(client) if client else None),
        "p50_from_creation_ts_s": r(percentile(api, 50)),
        "p99_from_creation_ts_s": r(percentile(api, 99)),
    }


async def create_pods(
    api: Api,
    namespace: str,
    manifests: Sequence[dict[str, Any]],
    watch: PodWatch | None,
    concurrency: int,
    created: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[float, float]:
    """Create pods concurrently, each handed to ``created`` as it returns; (first sent, last returned)."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    bodies = [json.dumps(m, separators=(",", ":")).encode() for m in manifests]

    def job(index: int) -> Callable[[], Any]:
        async def run() -> None:
            name = manifests[index]["metadata"]["name"]
            times = watch.pod(name) if watch else PodTimes()
            times.sent = time.time()
            pod = await api.request("POST", path, raw=bodies[index])
            times.created = time.time()
            if created:
                created(pod)

        return run

    first = time.time()
    await gather_limited(concurrency, [job(i) for i in range(len(manifests))])
    return first, time.time()


async def delete_pods(
    api: Api,
    namespace: str,
    names: Sequence[str],
    watch: PodWatch | None,
    concurrency: int,
    grace: int | None = None,
) -> tuple[float, float]:
    """Delete pods concurrently (default grace unless given); returns (first sent, last returned)."""
    raw = None if grace is None else json.dumps({"gracePeriodSeconds": grace}).encode()

    def job(name: str) -> Callable[[], Any]:
        async def run() -> None:
            if watch:
                watch.pod(name).delete_sent = time.time()
            await api.request(
                "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", raw=raw, ok_missing=True
            )

        return run

    first = time.time()
    await gather_limited(concurrency, [job(n) for n in names])
    return first, time.time()


def run_benchmark(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Environment], Coroutine[Any, Any, dict[str, Any]]],
    *,
    prepare: Callable[[pathlib.Path, str], Sequence[str]] | None = None,
) -> int:
    """Every script's main: the environment, the run, the final JSON line; Ctrl-C tears down."""
    try:
        with environment(args, prepare=prepare) as env:
            figures = asyncio.run(run(args, env))
    except KeyboardInterrupt:
        say("interrupted; control plane torn down")
        return 130
    final_line(figures)
    return 0


class ListeningServer:
    """A local backend run as a subprocess (the ARM server, moto) that logs ``<name> listening on
    <url>`` once it serves; its log in the work directory."""

    def __init__(self, name: str, argv: list[str], log_path: pathlib.Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._listening = re.compile(rf"{re.escape(name)} listening on (http://\S+)")

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,
            )

    async def start(self, timeout: float = 60) -> str:
        self.proc = self.spawn()
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            found = self._listening.search(self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
            elif time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not listening after {timeout}s: {self.tail()}")
            else:
                await asyncio.sleep(0.05)
        return self.url

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop_process(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def call_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The calls made between two counts by name (non-zero ones), sorted by name."""
    keys = set(before) | set(after)
    return {k: v for k in sorted(keys) if (v := after.get(k, 0) - before.get(k, 0))}
