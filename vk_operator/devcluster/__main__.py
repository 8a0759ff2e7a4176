"""`python -m vk_operator.devcluster up|down|status|node-kubeconfig|build --dir DIR`."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from vk_operator.devcluster import build
from vk_operator.devcluster.cluster import Cluster, ClusterError, Options


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
    sub.add_parser("build", help="build (or find in the cache) the control-plane binaries")
    args = parser.parse_args(argv)

    if args.command == "build":
        for binary, path in build.ensure_built().items():
            print(f"{binary}: {path}")
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


if __name__ == "__main__":
    sys.exit(main())
