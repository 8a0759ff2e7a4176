"""`python -m vk_operator.devcluster up|down|status|node-kubeconfig|build --dir DIR`, and
`node up|down|import` for a real kubelet node beside the control plane."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from vk_operator.devcluster import build, image
from vk_operator.devcluster.cluster import Cluster, ClusterError, Options
from vk_operator.devcluster.node import RealNode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vk_operator.devcluster")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "node-kubeconfig"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, type=pathlib.Path)
        if name == "up":
            p.add_argument(
                "--verify-kubelet-serving-cert",
                action="store_true",
                help="start the apiserver with --kubelet-certificate-authority",
            )
            p.add_argument("--apiserver-arg", action="append", default=[])
            p.add_argument("--controller-manager-arg", action="append", default=[])
            p.add_argument("--scheduler-arg", action="append", default=[])
        if name == "node-kubeconfig":
            p.add_argument("--node", required=True)
    built = sub.add_parser("build", help="build (or find in the cache) the control-plane binaries")
    built.add_argument("--real-node", action="store_true", help="also the kubelet and the pause image")
    node = sub.add_parser("node", help="a real kubelet node (containerd, runc, bridge CNI) beside it")
    node.add_argument("action", choices=("up", "down", "import"))
    node.add_argument("--dir", required=True, type=pathlib.Path)
    node.add_argument("archive", nargs="?", type=pathlib.Path, help="import: a docker or OCI archive")
    args = parser.parse_args(argv)
    if args.command == "node":
        return _node(args.action, RealNode(args.dir), args.archive)

    if args.command == "build":
        components = (*build.COMPONENTS, build.KUBELET) if args.real_node else build.COMPONENTS
        for binary, path in build.ensure_built(components).items():
            print(f"{binary}: {path}")
        if args.real_node:
            print(f"{image.PAUSE_IMAGE}: {image.ensure_pause_image()}")
        return 0
    cluster = Cluster(args.dir)
    try:
        if args.command == "up":
            cluster.up(
                Options(
                    verify_kubelet_serving_cert=args.verify_kubelet_serving_cert,
                    apiserver_args=args.apiserver_arg,
                    controller_manager_args=args.controller_manager_arg,
                    scheduler_args=args.scheduler_arg,
                )
            )
            state = cluster.state()
            print(f"control plane up in {state['startup_seconds']}s at {state['server']}")
            print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
        elif args.command == "down":
            undone = RealNode(args.dir).down()  # its kubelet first, and the host as it was
            if undone:
                print(f"real node: undone {', '.join(undone)}")
            stopped = cluster.down()
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "status":
            report = cluster.status()
            for name, row in report.items():
                word = "running" if row["running"] else "stopped"
                extra = f" pid={row['pid']} rss={row['rss_mb']}MB" if row["running"] else ""
                print(f"{name:<24} {word}{extra}")
            if cluster.state():
                print(json.dumps({"server": cluster.state().get("server")}))
            return 0 if all(r["running"] for r in report.values()) else 3
        elif args.command == "node-kubeconfig":
            print(cluster.node_kubeconfig(args.node))
    except ClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return 0


def _node(action: str, node: RealNode, archive: pathlib.Path | None) -> int:
    try:
        if action == "up":
            node.up()
            print(f"node {node.name} Ready; journal of host changes: {node.journal}")
        elif action == "down":
            undone = node.down()
            print(f"undone: {', '.join(undone)}" if undone else "no real node was up")
        else:
            if archive is None:
                print("devcluster: node import needs an archive", file=sys.stderr)
                return 2
            node.import_image(archive)
            print(f"imported {archive}")
    except ClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
