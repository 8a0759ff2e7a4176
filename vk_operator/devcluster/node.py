"""A real kubelet node beside the dev control plane: `devcluster node up|down --dir DIR`.

kubelet (built from the control plane's wrapper module) on containerd + runc + the bridge CNI plugin
from Debian, with a locally built pause image. Pods get addresses on a private bridge, reach the
in-cluster API address (10.0.0.1:443; the dev cluster has no kube-proxy) through one DNAT rule to
the loopback apiserver, and nothing they send leaves the machine (FORWARD drops it).

This changes the host, so every change is written to ``DIR/realnode/host.json`` *before* it is made
(a journal, appended and synced), and ``down`` undoes the journal in reverse order — also after a
failed or interrupted ``up``. Changes made by the kubelet, containerd and the CNI plugins rather than
by us (sysctls, iptables chains, cgroups, mounts, network namespaces) are journaled as snapshots
taken before those processes start; ``down`` removes what is new since.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

from vk_operator.devcluster import build, image
from vk_operator.devcluster.cluster import Cluster, ClusterError, _pid_alive, _reap, _tail, free_port

NODE_NAME = "vk-realnode"
# Other tests' pods must never land here by accident: only pods tolerating this run on the node.
TAINT_KEY = "vk-operator.io/real-node"
BRIDGE = "vkbr0"
POD_SUBNET = "10.233.0.0/24"  # private, used only on this machine
CLUSTER_API = ("10.0.0.1", 443)  # the `kubernetes` Service's address, a SAN of the apiserver cert
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
DEBIAN_PACKAGES = {"containerd": "containerd", "runc": "runc", "ctr": "containerd"}
# What the kubelet and the bridge plugin set (kubelet: protectKernelDefaults off).
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
IPTABLES = ("iptables", "ip6tables")
IPTABLES_TABLES = ("filter", "nat", "mangle")
# New chains `down` removes: the kubelet's and the CNI plugins'; nothing else is touched.
OWNED_CHAIN_PREFIXES = ("KUBE-", "CNI-")
NETNS_DIR = pathlib.Path("/run/netns")
# Default paths of the kubelet, containerd's runc shim and libcni that our flags do not move: the ones
# that did not exist before `up` are removed at `down`.
DEFAULT_PATHS = (
    "/run/netns",
    "/run/containerd",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
)
CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")


class NodeError(ClusterError):
    """The real node could not start or stop; the message says why."""


def sysctl_path(key: str) -> pathlib.Path:
    return pathlib.Path("/proc/sys") / key.replace(".", "/")


def _host_ip() -> str:
    """The machine's non-loopback address (the kubelet's --node-ip and serving address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.1", 9))  # UDP connect sends nothing; it only picks the route
        address: str = s.getsockname()[0]
    if address.startswith("127."):
        raise NodeError("no non-loopback IPv4 address for the kubelet")
    return address


def _run(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def iptables_rules(family: str) -> dict[str, list[str]]:
    """``iptables -S`` per table: the chain definitions and rules, one line each."""
    snapshot = {}
    for table in IPTABLES_TABLES:
        result = _run(family, "-w", "-t", table, "-S", check=False)
        snapshot[table] = result.stdout.splitlines() if result.returncode == 0 else []
    return snapshot


def nft_tables() -> list[str]:
    """nftables tables ("ip filter"...): iptables-nft creates them on first use, even to list."""
    if shutil.which("nft") is None:
        return []
    listed = _run("nft", "list", "tables", check=False).stdout.splitlines()
    return sorted(line.removeprefix("table ").strip() for line in listed if line.startswith("table "))


def _nft_table_is_empty(table: str) -> bool:
    body = _run("nft", "list", "table", *table.split(), check=False).stdout.splitlines()
    skeleton = ("table ", "chain ", "type ", "policy ", "}")
    return all(not line.strip() or line.strip().startswith(skeleton) for line in body)


def mountpoints() -> list[str]:
    points = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def kubepods_cgroups() -> list[str]:
    return sorted(str(p) for p in CGROUP_ROOT.glob("*/kubepods*"))


def netns_names() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


class RealNode:
    """The real node of the control plane in ``cluster_dir``; its files live in ``cluster_dir/realnode``."""

    def __init__(self, cluster_dir: pathlib.Path | str, name: str = NODE_NAME) -> None:
        self.cluster = Cluster(cluster_dir)
        self.name = name
        self.dir = self.cluster.dir / "realnode"
        self.journal = self.dir / "host.json"
        self.socket = self.dir / "containerd" / "containerd.sock"
        self.log_dir = self.dir / "logs"
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}

    # -- the journal of host changes ---------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.journal.read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def _record(self, kind: str, **fields: Any) -> None:
        """Append one change to the journal and sync it, before the change is made."""
        with self.journal.open("a") as f:
            f.write(json.dumps({"kind": kind, **fields}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # -- up ----------------------------------------------------------------------------------------
    def up(self, timeout: float = 180.0, ready_timeout: float | None = None) -> None:
        """Start containerd and the kubelet; return once the node is Ready (within ``ready_timeout``
        of the kubelet's start, default what is left of ``timeout``). On any failure the host is
        restored before the error propagates."""
        if not self.cluster.running():
            raise NodeError(f"no control plane runs in {self.cluster.dir}: `devcluster up` first")
        if self.entries():
            # A previous node was not taken down (or its `up` died): undo it before starting again.
            self.down()
        missing = sorted({pkg for cmd, pkg in DEBIAN_PACKAGES.items() if shutil.which(cmd) is None})
        if missing or not pathlib.Path(CNI_BIN_DIR, "bridge").is_file():
            missing.append("containernetworking-plugins")
            raise NodeError(f"missing Debian packages: apt-get install -y {' '.join(sorted(set(missing)))}")
        kubelet = build.ensure_built((build.KUBELET,))["kubelet"]
        pause = image.ensure_pause_image()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True)
        started = time.monotonic()
        try:
            self._prepare_host()
            self._start_containerd(timeout)
            self.import_image(pause)
            left = timeout - (time.monotonic() - started)
            self._start_kubelet(kubelet, ready_timeout if ready_timeout is not None else max(10.0, left))
        except BaseException:
            self.down()
            raise
        (self.dir / "node.json").write_text(
            json.dumps({"name": self.name, "startup_seconds": round(time.monotonic() - started, 2)})
        )

    def _prepare_host(self) -> None:
        self._record("sysctls", old={k: sysctl_path(k).read_text().strip() for k in SYSCTLS})
        self._record("nft_tables", old=nft_tables())  # first: listing iptables rules creates tables
        self._record("iptables", old={family: iptables_rules(family) for family in IPTABLES})
        self._record("paths", absent=[p for p in DEFAULT_PATHS if not os.path.lexists(p)])
        self._record("mounts", old=mountpoints())
        self._record("netns", old=netns_names())
        self._record("cgroups", old=kubepods_cgroups())
        # The bridge is ours (the CNI plugin adopts it), so route_localnet can be set on it before
        # any pod exists; the setting goes away with the bridge. One real node per machine: an
        # existing bridge is another's, never recorded (down would delete it).
        if pathlib.Path("/sys/class/net", BRIDGE).exists():
            raise NodeError(
                f"{BRIDGE} exists: another real node is up on this machine (`node down` it first)"
            )
        self._record("link", name=BRIDGE)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "link", "set", BRIDGE, "up")
        sysctl_path(f"net.ipv4.conf.{BRIDGE}.route_localnet").write_text("1")
        port = str(self.cluster.state()["ports"]["apiserver"])  # type: ignore[index]
        rules = [
            # Pods may talk to each other and to this machine, never beyond it.
            ("filter", ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]),
            # The in-cluster API address leads to the loopback apiserver (route_localnet allows it).
            (
                "nat",
                [
                    "PREROUTING",
                    *(
                        "-i",
                        BRIDGE,
                        "-d",
                        f"{CLUSTER_API[0]}/32",
                        "-p",
                        "tcp",
                        "--dport",
                        str(CLUSTER_API[1]),
                    ),
                    *("-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"),
                ],
            ),
        ]
        for table, rule in rules:
            self._record("rule", table=table, rule=rule)
            _run("iptables", "-w", "-t", table, "-I", *rule)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self._record("process", name=name, pid=proc.pid, binary=os.path.basename(argv[0]))
        self._spawned[name] = proc
        return proc

    def _wait(self, name: str, what: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._spawned[name].poll() is not None:
                raise NodeError(
                    f"{name} exited during start-up; last log lines:\n{_tail(self.log_dir / f'{name}.log')}"
                )
            if ready():
                return
            time.sleep(0.3)
        raise NodeError(
            f"{what} not reached in {timeout:.0f}s; last log lines:\n{_tail(self.log_dir / f'{name}.log')}"
        )

    def ctr(self, *args: str, timeout: float = 300) -> str:
        return _run(
            "ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, timeout=timeout
        ).stdout

    def _start_containerd(self, timeout: float) -> None:
        base = self.dir / "containerd"
        cni_conf = self.dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-vk-realnode.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = base / "config.toml"
        base.mkdir(exist_ok=True)
        config.write_text(self._containerd_config(base, cni_conf))
        self._spawn("containerd", ["containerd", "--config", str(config)])

        def answers() -> bool:
            return (
                self.socket.exists()
                and _run("ctr", "--address", str(self.socket), "version", check=False, timeout=30).returncode
                == 0
            )

        self._wait("containerd", "containerd answering", answers, timeout)

    def import_image(self, archive: pathlib.Path) -> None:
        """Make an image archive (docker or OCI) available to the node's pods (imagePullPolicy Never)."""
        self.ctr("images", "import", str(archive))

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "0.4.0",
            "name": "vk-realnode",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # nothing is translated towards the outside: nothing goes there
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _containerd_config(self, base: pathlib.Path, cni_conf: pathlib.Path) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{base / "containerd.ttrpc.sock"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  sandbox_image = "{image.PAUSE_IMAGE}"
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE every sandbox fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf}"
"""

    def _start_kubelet(self, kubelet: pathlib.Path, ready_timeout: float) -> None:
        host_ip = _host_ip()
        root = self.dir / "kubelet"
        root.mkdir()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this machine has hybrid cgroups; 1.35+ refuse v1 otherwise
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": host_ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {
                "x509": {"clientCAFile": str(self.cluster.pki_dir / "ca.crt")},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.dir / "pod-logs"),
            "registerWithTaints": [{"key": TAINT_KEY, "effect": "NoSchedule"}],
            # A busy shared disk must not evict the test pods; images imported here are never GC'd.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
        }
        config_path = self.dir / "kubelet-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        kubeconfig = self.cluster.node_kubeconfig(self.name)
        self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={host_ip}",
                "--v=1",
            ],
        )
        kubectl = str(build.KUBERNETES.directory() / "kubectl")

        def node_ready() -> bool:
            out = subprocess.run(
                [
                    kubectl,
                    f"--kubeconfig={self.cluster.admin_kubeconfig}",
                    "get",
                    "node",
                    self.name,
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return out.stdout.strip() == "True"

        self._wait(
            "kubelet",
            f"node {self.name} Ready",
            node_ready,
            ready_timeout,
        )

    # -- down --------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Undo the journal in reverse order; returns what was undone. Safe to call repeatedly."""
        undone = []
        entries = self.entries()
        for entry in reversed(entries):
            kind = entry["kind"]
            try:
                getattr(self, f"_undo_{kind}")(entry)
            except Exception as exc:  # one failed undo must not keep the others from running
                undone.append(f"{kind} (failed: {exc})")
            else:
                undone.append(kind if kind != "process" else entry["name"])
        if entries:
            self.journal.unlink()
            self._delete_node_object()
        return undone

    def _delete_node_object(self) -> None:
        if not self.cluster.running():
            return
        kubectl = str(build.KUBERNETES.directory() / "kubectl")
        subprocess.run(
            [
                kubectl,
                f"--kubeconfig={self.cluster.admin_kubeconfig}",
                "delete",
                "node",
                self.name,
                "--ignore-not-found",
            ],
            capture_output=True,
            timeout=60,
        )

    def _undo_process(self, entry: dict[str, Any]) -> None:
        pid, binary = entry["pid"], entry["binary"]
        if entry["name"] == "containerd" and _pid_alive(pid, binary):
            self._kill_pod_containers()
        if _pid_alive(pid, binary):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _pid_alive(pid, binary) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.1)
            if _pid_alive(pid, binary):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        _reap(pid)
        if entry["name"] == "containerd":
            self._stop_shims()

    def _kill_pod_containers(self) -> None:
        """Every container and sandbox of the node, killed and deleted through containerd (the
        kubelet is already stopped): their shims then exit and their mounts go away. Each step on
        its own: a task that already exited refuses the kill, the others must still get it."""
        try:
            listed = self.ctr("tasks", "ls", timeout=60)
        except (NodeError, subprocess.TimeoutExpired):
            return
        tasks = [line.split()[0] for line in listed.splitlines()[1:] if line.strip()]
        for task in tasks:
            with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
                self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, timeout=60)
        for task in tasks:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    self.ctr("tasks", "delete", task, timeout=60)
                    break
                except subprocess.TimeoutExpired:
                    break
                except NodeError as exc:
                    if "not found" in str(exc):
                        break
                    time.sleep(0.5)

    def _stop_shims(self) -> None:
        """Shims this node's containerd started and that outlived it (found by its socket path)."""
        needle = str(self.socket).encode()
        for proc in pathlib.Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if os.path.basename(argv[0]).startswith(b"containerd-shim") and needle in argv:
                    os.kill(int(proc.name), signal.SIGKILL)

    def _undo_rule(self, entry: dict[str, Any]) -> None:
        rule = entry["rule"]
        while _run("iptables", "-w", "-t", entry["table"], "-C", *rule, check=False).returncode == 0:
            _run("iptables", "-w", "-t", entry["table"], "-D", *rule)

    def _undo_link(self, entry: dict[str, Any]) -> None:
        if pathlib.Path("/sys/class/net", entry["name"]).exists():
            _run("ip", "link", "delete", entry["name"])

    def _undo_cgroups(self, entry: dict[str, Any]) -> None:
        old = set(entry["old"])
        for top in kubepods_cgroups():
            if top in old:
                continue
            # Deepest first: a cgroup directory can only be removed once it has no children.
            tree = [p for p in pathlib.Path(top).rglob("*") if p.is_dir()]
            for directory in [*sorted(tree, key=lambda p: len(p.parts), reverse=True), pathlib.Path(top)]:
                self._kill_members(directory)
                self._rmdir_cgroup(directory)

    @staticmethod
    def _kill_members(directory: pathlib.Path) -> None:
        """Processes still in a pod cgroup of ours (a container whose shim died with containerd)."""
        with contextlib.suppress(OSError):
            for pid in (directory / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    @staticmethod
    def _rmdir_cgroup(directory: pathlib.Path) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                directory.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                # Still busy for a moment after its last process was killed.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _undo_netns(self, entry: dict[str, Any]) -> None:
        old = set(entry["old"])
        for name in netns_names():
            if name not in old:
                _run("ip", "netns", "delete", name, check=False)

    def _undo_mounts(self, entry: dict[str, Any]) -> None:
        old = set(entry["old"])
        ours = (str(self.dir), str(NETNS_DIR))
        for point in reversed(mountpoints()):
            new = point not in old and point.startswith(ours)
            if new and _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)

    def _undo_iptables(self, entry: dict[str, Any]) -> None:
        for family, tables in entry["old"].items():
            now = iptables_rules(family)
            for table, lines in now.items():
                before = set(tables.get(table, []))
                new_chains = [
                    line.split()[1]
                    for line in lines
                    if line.startswith("-N ")
                    and line not in before
                    and line.split()[1].startswith(OWNED_CHAIN_PREFIXES)
                ]
                # Rules that jump to a new chain of theirs (e.g. INPUT -j KUBE-FIREWALL), then the chains.
                for line in lines:
                    parts = shlex.split(line)
                    if parts[0] != "-A" or line in before or parts[1] in new_chains:
                        continue
                    targets = {parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("-j", "-g")}
                    if targets & set(new_chains):
                        _run(family, "-w", "-t", table, "-D", *parts[1:], check=False)
                for chain in new_chains:
                    _run(family, "-w", "-t", table, "-F", chain, check=False)
                for chain in new_chains:
                    _run(family, "-w", "-t", table, "-X", chain, check=False)

    def _undo_paths(self, entry: dict[str, Any]) -> None:
        for path in entry["absent"]:
            if os.path.lexists(path) and not any(p.startswith(path + "/") for p in mountpoints()):
                shutil.rmtree(path)

    def _undo_nft_tables(self, entry: dict[str, Any]) -> None:
        old = set(entry["old"])
        for table in nft_tables():
            if table not in old and _nft_table_is_empty(table):
                _run("nft", "delete", "table", *table.split(), check=False)

    def _undo_sysctls(self, entry: dict[str, Any]) -> None:
        for key, value in entry["old"].items():
            path = sysctl_path(key)
            if path.read_text().strip() != value:
                path.write_text(value)

    # -- status --------------------------------------------------------------------------------------
    def running(self) -> dict[str, int]:
        return {
            e["name"]: e["pid"]
            for e in self.entries()
            if e["kind"] == "process" and _pid_alive(e["pid"], e["binary"])
        }
