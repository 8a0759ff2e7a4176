"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler.

The processes run in the background, detached from the caller, and are described by
``DIR/state.json`` so that ``down`` and ``status`` can find them from another process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from vk_operator import pki
from vk_operator.devcluster import build

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CIDR = "10.0.0.0/24"
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
FRONT_PROXY_CLIENT = "front-proxy-client"  # the apiserver's identity towards aggregated API servers


class ClusterError(RuntimeError):
    """A control-plane operation failed; the message says which component and why."""


@dataclasses.dataclass
class Options:
    """Knobs for `up`; the defaults are upstream's except where a laptop needs otherwise."""

    verify_kubelet_serving_cert: bool = False  # --kubelet-certificate-authority
    apiserver_args: Sequence[str] = ()
    controller_manager_args: Sequence[str] = ()
    scheduler_args: Sequence[str] = ()
    timeout: float = 120.0


_START_ATTEMPTS = 3
logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pid_alive(pid: int, binary: str) -> bool:
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # Guard against pid reuse: the process must still be our binary, and not a zombie.
    if os.path.basename(cmdline.split(b"\0", 1)[0].decode(errors="replace")) != binary:
        return False
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_kubeconfig(
    path: pathlib.Path,
    server: str,
    ca: pathlib.Path,
    cert: pathlib.Path,
    key: pathlib.Path,
    user: str,
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))


class Cluster:
    """One control plane rooted at a directory."""

    def __init__(self, directory: pathlib.Path | str) -> None:
        self.dir = pathlib.Path(directory).absolute()
        self.pki_dir = self.dir / "pki"
        self.log_dir = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}  # processes this object started

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        try:
            loaded: dict[str, object] = json.loads(self.state_file.read_text())
            return loaded
        except (OSError, ValueError):
            return {}

    def running(self) -> dict[str, int]:
        """Components whose recorded process is alive: name -> pid."""
        pids = self.state().get("pids", {})
        assert isinstance(pids, dict)
        return {name: pid for name, pid in pids.items() if _pid_alive(pid, name)}

    @property
    def admin_kubeconfig(self) -> pathlib.Path:
        return self.dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return str(self.state()["server"])

    # -- up --------------------------------------------------------------------------------------
    def up(self, options: Options | None = None) -> None:
        options = options or Options()
        live = self.running()
        if live:
            raise ClusterError(
                f"a control plane already runs in {self.dir} ({', '.join(sorted(live))}); "
                f"run `down --dir {self.dir}` first"
            )
        binaries = build.ensure_built()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start(options, binaries)
                return
            except ClusterError as exc:
                # A port seen free can be taken before the component binds it (an outgoing
                # connection's ephemeral port, another control plane): start again on new ports.
                if "address already in use" not in str(exc) or attempt == _START_ATTEMPTS:
                    raise
                logger.warning("a port was taken while starting (attempt %d/%d)", attempt, _START_ATTEMPTS)

    def _start(self, options: Options, binaries: dict[str, pathlib.Path]) -> None:
        self._reset()
        ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        self._write_pki(server)
        pids: dict[str, int] = {}
        state: dict[str, object] = {
            "server": server,
            "ports": ports,
            "pids": pids,
            "binaries": {k: str(v) for k, v in binaries.items()},
        }
        started = time.monotonic()
        try:
            etcd_url = f"http://127.0.0.1:{ports['etcd']}"
            peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
            pids["etcd"] = self._spawn(
                "etcd",
                binaries["etcd"],
                [
                    "--name=default",
                    f"--data-dir={self.dir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                state,
            )
            self._wait_http("etcd", f"{etcd_url}/health", options.timeout, started)

            p = self.pki_dir
            apiserver_args = [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP",
                "--allow-privileged=true",
                # The aggregation layer, so aggregated API servers (metrics-server: `kubectl top`)
                # can run out of cluster: the apiserver proxies to them as front-proxy-client and
                # they trust the user it names in X-Remote-* headers. With no kube-proxy here the
                # apiserver must dial the Service's endpoints itself, not its cluster IP.
                f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-username-headers=X-Remote-User",
                f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
                "--enable-aggregator-routing=true",
            ]
            if options.verify_kubelet_serving_cert:
                apiserver_args.append(f"--kubelet-certificate-authority={p / 'ca.crt'}")
            pids["kube-apiserver"] = self._spawn(
                "kube-apiserver",
                binaries["kube-apiserver"],
                [*apiserver_args, *options.apiserver_args],
                state,
            )
            self._wait_http("kube-apiserver", f"{server}/readyz", options.timeout, started, client="admin")

            common = ["--leader-elect=false", "--bind-address=127.0.0.1"]
            kcm = self.dir / "controller-manager.kubeconfig"
            pids["kube-controller-manager"] = self._spawn(
                "kube-controller-manager",
                binaries["kube-controller-manager"],
                [
                    *common,
                    f"--secure-port={ports['kcm']}",
                    f"--kubeconfig={kcm}",
                    f"--authentication-kubeconfig={kcm}",
                    f"--authorization-kubeconfig={kcm}",
                    f"--root-ca-file={p / 'ca.crt'}",
                    f"--service-account-private-key-file={p / 'sa.key'}",
                    "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={p / 'ca.crt'}",
                    f"--cluster-signing-key-file={p / 'ca.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--kube-api-qps=100",
                    "--kube-api-burst=200",
                    *options.controller_manager_args,
                ],
                state,
            )
            sched = self.dir / "scheduler.kubeconfig"
            pids["kube-scheduler"] = self._spawn(
                "kube-scheduler",
                binaries["kube-scheduler"],
                [
                    *common,
                    f"--secure-port={ports['scheduler']}",
                    f"--kubeconfig={sched}",
                    f"--authentication-kubeconfig={sched}",
                    f"--authorization-kubeconfig={sched}",
                    *options.scheduler_args,
                ],
                state,
            )
            self._wait_http(
                "kube-controller-manager",
                f"https://127.0.0.1:{ports['kcm']}/healthz",
                options.timeout,
                started,
            )
            self._wait_http(
                "kube-scheduler", f"https://127.0.0.1:{ports['scheduler']}/healthz", options.timeout, started
            )
            self._bootstrap(binaries["kubectl"], options.timeout, started)
        except BaseException:
            self.down()
            raise
        state["startup_seconds"] = round(time.monotonic() - started, 2)
        self._save(state)

    def _reset(self) -> None:
        # A dead previous run leaves data and logs behind; a control plane always starts empty.
        for sub in ("etcd", "logs", "pki", "nodes"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pki_dir.mkdir(parents=True, exist_ok=True)

    def _save(self, state: dict[str, object]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _spawn(self, name: str, binary: pathlib.Path, args: list[str], state: dict[str, object]) -> int:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(binary), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlive the `up` command and ignore its terminal's Ctrl-C
        )
        log.close()
        self._spawned[name] = proc
        pids = state["pids"]
        assert isinstance(pids, dict)
        pids[name] = proc.pid
        commands = state.setdefault("commands", {})
        assert isinstance(commands, dict)
        commands[name] = [str(binary), *args]  # to restart it the same way (fault tests)
        self._save(state)  # saved at once, so `down` finds the process even if `up` dies now
        return proc.pid

    def restart_apiserver(
        self, down_seconds: float = 0.0, timeout: float = 60.0, stop_grace: float = 5.0
    ) -> None:
        """An apiserver outage as clients see it: stopped (SIGKILL after ``stop_grace`` s: it drains
        long-running requests for up to a minute otherwise), down ``down_seconds``, started again
        with the same flags, ready."""
        self._restart("kube-apiserver", "/readyz", down_seconds, timeout, stop_grace, client="admin")

    def restart_etcd(self, down_seconds: float = 0.0, timeout: float = 60.0) -> None:
        """An etcd outage (same flags and data directory after it); the apiserver stays up."""
        self._restart("etcd", "/health", down_seconds, timeout, stop_grace=timeout)

    def _restart(
        self,
        name: str,
        health_path: str,
        down_seconds: float,
        timeout: float,
        stop_grace: float,
        client: str | None = None,
    ) -> None:
        """SIGTERM ``name`` (SIGKILL after ``stop_grace`` s), wait ``down_seconds``, start it again
        with the argv it was started with, and wait until ``health_path`` answers."""
        state = self.state()
        pids, commands, ports = state["pids"], state["commands"], state["ports"]
        assert isinstance(pids, dict) and isinstance(commands, dict) and isinstance(ports, dict)
        pid = pids[name]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + stop_grace
        while _pid_alive(pid, name):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        _reap(pid)
        time.sleep(down_seconds)  # the outage itself: a chosen length, not a wait for anything
        binary, *args = commands[name]
        started = time.monotonic()
        self._spawn(name, pathlib.Path(binary), args, state)
        base = self.server if name == "kube-apiserver" else f"http://127.0.0.1:{ports['etcd']}"
        self._wait_http(name, f"{base}{health_path}", timeout, started, client=client)

    def _ssl_context(self, client: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        if client:
            ctx.load_cert_chain(self.pki_dir / f"{client}.crt", self.pki_dir / f"{client}.key")
        return ctx

    def _wait_http(
        self, name: str, url: str, timeout: float, started: float, client: str | None = None
    ) -> None:
        if url.startswith("https") and client is None:
            # controller-manager and scheduler serve /healthz with self-signed certificates.
            ctx: ssl.SSLContext | None = ssl._create_unverified_context()
        else:
            ctx = self._ssl_context(client) if url.startswith("https") else None
        last = ""
        while time.monotonic() - started < timeout:
            if not self._alive(name):
                raise ClusterError(
                    f"{name} exited during start-up; last log lines:\n{_tail(self.log_dir / f'{name}.log')}"
                )
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ClusterError(
            f"{name} not healthy after {timeout:.0f}s ({url}: {last}); last log lines:\n"
            f"{_tail(self.log_dir / f'{name}.log')}"
        )

    def _alive(self, name: str) -> bool:
        # Right after fork, /proc/PID/cmdline still shows the parent (python) until exec: ask
        # the Popen object about processes we started ourselves.
        proc = self._spawned.get(name)
        if proc is not None:
            return proc.poll() is None
        return self.running_pid(name) is not None

    def running_pid(self, name: str) -> int | None:
        pids = self.state().get("pids", {})
        assert isinstance(pids, dict)
        pid = pids.get(name)
        return pid if pid is not None and _pid_alive(pid, name) else None

    def kubectl(self, binary: pathlib.Path | str, *args: str, timeout: float = 60) -> str:
        out = subprocess.run(
            [str(binary), f"--kubeconfig={self.admin_kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def _bootstrap(self, kubectl: pathlib.Path, timeout: float, started: float) -> None:
        # What kubeadm does: let the apiserver's kubelet client use the kubelet API.
        self.kubectl(
            kubectl,
            "create",
            "clusterrolebinding",
            "kube-apiserver-kubelet-client",
            "--clusterrole=system:kubelet-api-admin",
            f"--user={APISERVER_KUBELET_CLIENT}",
        )
        # Controllers are healthy once they have done work: the service-account controller
        # creates `default` in every namespace and the root-CA publisher its ConfigMap.
        while time.monotonic() - started < timeout:
            if not self._alive("kube-controller-manager"):
                raise ClusterError(
                    "kube-controller-manager exited; last log lines:\n"
                    + _tail(self.log_dir / "kube-controller-manager.log")
                )
            try:
                self.kubectl(
                    kubectl,
                    "get",
                    "serviceaccount/default",
                    "configmap/kube-root-ca.crt",
                    "-n",
                    "default",
                    "-o",
                    "name",
                )
                return
            except ClusterError:
                time.sleep(0.3)
        raise ClusterError(
            "controllers did not create the default ServiceAccount in time; "
            "last log lines:\n" + _tail(self.log_dir / "kube-controller-manager.log")
        )

    def _write_pki(self, server: str) -> None:
        p = self.pki_dir
        ca = pki.new_ca()
        self._write_pair(p / "ca", ca)
        self._write_pair(
            p / "apiserver",
            pki.issue(
                ca,
                "kube-apiserver",
                server=True,
                hosts=[
                    "127.0.0.1",
                    "localhost",
                    "10.0.0.1",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
            ),
        )
        # The aggregator's client identity has a CA of its own, as kubeadm does: aggregated servers
        # take X-Remote-User only from a certificate it signs, never from any client of ca.crt.
        front_proxy_ca = pki.new_ca("front-proxy-ca")
        self._write_pair(p / "front-proxy-ca", front_proxy_ca)
        self._write_pair(p / "front-proxy-client", pki.issue(front_proxy_ca, FRONT_PROXY_CLIENT, client=True))
        sa_key, sa_pub = pki.new_signing_key()
        (p / "sa.key").write_bytes(sa_key)
        (p / "sa.pub").write_bytes(sa_pub)
        clients = {
            "admin": ("admin", ["system:masters"]),
            "controller-manager": ("system:kube-controller-manager", []),
            "scheduler": ("system:kube-scheduler", []),
            "apiserver-kubelet-client": (APISERVER_KUBELET_CLIENT, []),
        }
        for stem, (cn, groups) in clients.items():
            self._write_pair(p / stem, pki.issue(ca, cn, organizations=groups, client=True))
        for stem, kubeconfig in (
            ("admin", self.admin_kubeconfig),
            ("controller-manager", self.dir / "controller-manager.kubeconfig"),
            ("scheduler", self.dir / "scheduler.kubeconfig"),
        ):
            _write_kubeconfig(
                kubeconfig, server, p / "ca.crt", p / f"{stem}.crt", p / f"{stem}.key", clients[stem][0]
            )

    @staticmethod
    def _write_pair(stem: pathlib.Path, pair: pki.KeyPair) -> None:
        stem.with_suffix(".crt").write_bytes(pair.cert_pem)
        key = stem.with_suffix(".key")
        key.touch(mode=0o600)
        key.write_bytes(pair.key_pem)

    # -- node identities ---------------------------------------------------------------------------
    def node_kubeconfig(self, node: str) -> pathlib.Path:
        """Mint a kubelet identity (system:node:NODE in system:nodes) and return its kubeconfig."""
        if not self.state_file.exists():
            raise ClusterError(f"no control plane in {self.dir}")
        ca = pki.KeyPair((self.pki_dir / "ca.crt").read_bytes(), (self.pki_dir / "ca.key").read_bytes())
        nodes = self.dir / "nodes"
        nodes.mkdir(exist_ok=True)
        self._write_pair(
            nodes / node, pki.issue(ca, f"system:node:{node}", organizations=["system:nodes"], client=True)
        )
        path = nodes / f"{node}.kubeconfig"
        _write_kubeconfig(
            path,
            self.server,
            self.pki_dir / "ca.crt",
            nodes / f"{node}.crt",
            nodes / f"{node}.key",
            f"system:node:{node}",
        )
        return path

    # -- down / status -----------------------------------------------------------------------------
    def down(self, grace: float = 10.0) -> list[str]:
        """Stop every recorded process (newest first); returns the names that were running."""
        pids = self.state().get("pids", {})
        assert isinstance(pids, dict)
        stopped = []
        for name in reversed(list(pids)):
            pid = pids[name]
            if not _pid_alive(pid, name):
                continue
            stopped.append(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _pid_alive(pid, name) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if _pid_alive(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        pids = self.state().get("pids", {})
        assert isinstance(pids, dict)
        report: dict[str, dict[str, object]] = {}
        for name in COMPONENTS:
            pid = pids.get(name)
            alive = pid is not None and _pid_alive(pid, name)
            report[name] = {"pid": pid, "running": alive, "rss_mb": _rss_mb(pid) if pid and alive else None}
        return report


def _reap(pid: int) -> None:
    # Children of this process (when `up` and `down` run in one process) must be waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
