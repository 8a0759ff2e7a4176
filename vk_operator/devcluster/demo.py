"""`make demo`: a local control plane, a virtual node on the mock provider, example pods Running."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time

from vk_operator.devcluster.cluster import Cluster, ClusterError, free_port

NODE = "vk-demo"
REPO = pathlib.Path(__file__).resolve().parents[2]


def _vk_pid(directory: pathlib.Path) -> int | None:
    try:
        pid = int((directory / "virtual-kubelet.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def up(directory: pathlib.Path) -> int:
    cluster = Cluster(directory)
    if not cluster.running():
        print("== starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler)")
        cluster.up()
        print(f"   up in {cluster.state()['startup_seconds']}s at {cluster.server}")
    kubectl = str(cluster.state()["binaries"]["kubectl"])  # type: ignore[index]

    def k(*args: str, check: bool = True) -> str:
        return (
            cluster.kubectl(kubectl, *args)
            if check
            else subprocess.run(
                [kubectl, f"--kubeconfig={cluster.admin_kubeconfig}", *args], capture_output=True, text=True
            ).stdout
        )

    if _vk_pid(directory) is None:
        print(f"== starting the virtual kubelet as system:node:{NODE} (mock provider)")
        log = (directory / "virtual-kubelet.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vk_operator.cli",
                "--provider",
                "mock",
                "--provider-config",
                str(REPO / "examples/mock-provider.yaml"),
                "--nodename",
                NODE,
                "--kubeconfig",
                str(cluster.node_kubeconfig(NODE)),
                "--kubelet-port",
                str(free_port()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (directory / "virtual-kubelet.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 90
    while "True" not in k(
        "get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
    ):
        if time.monotonic() > deadline or _vk_pid(directory) is None:
            print((directory / "virtual-kubelet.log").read_text()[-3000:], file=sys.stderr)
            raise ClusterError("the virtual node did not become Ready")
        time.sleep(0.5)
    print("== applying examples/deployment.yaml (scheduled by kube-scheduler onto the virtual node)")
    print(k("apply", "-f", str(REPO / "examples/deployment.yaml")), end="")
    k("rollout", "status", "deployment/hello-virtual", "--timeout=120s")
    print("\n$ kubectl get nodes -o wide")
    print(k("get", "nodes", "-o", "wide"), end="")
    print("\n$ kubectl get pods -o wide")
    print(k("get", "pods", "-o", "wide"), end="")
    # Logs and exec reach the virtual kubelet's API through the apiserver, as for any node.
    print("\n$ kubectl logs deployment/hello-virtual --tail=3")
    print(k("logs", "deployment/hello-virtual", "--tail=3"), end="")
    print("\n$ kubectl exec deployment/hello-virtual -- hostname")
    print(k("exec", "deployment/hello-virtual", "--", "hostname"), end="")
    print(
        f"\nThe demo keeps running. Try:\n  export KUBECONFIG={cluster.admin_kubeconfig}\n"
        f"  {kubectl} get pods -o wide\n"
        f"Stop it with: make demo-down   (virtual kubelet log: {directory}/virtual-kubelet.log)"
    )
    return 0


def down(directory: pathlib.Path) -> int:
    pid = _vk_pid(directory)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _vk_pid(directory) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(FileNotFoundError):
        (directory / "virtual-kubelet.pid").unlink()
    stopped = Cluster(directory).down()
    print(
        "stopped: " + ", ".join((["virtual-kubelet"] if pid else []) + stopped)
        if pid or stopped
        else "nothing was running"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m vk_operator.devcluster.demo")
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path(".demo"))
    args = parser.parse_args()
    args.dir = args.dir.absolute()
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        return up(args.dir) if args.command == "up" else down(args.dir)
    except ClusterError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
