"""``python -m providers.aci.localarm --port N [...]``: serve the local ARM until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .server import LocalArm, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m providers.aci.localarm",
        description="A local, spec-validating ARM server for Microsoft.ContainerInstance 2023-05-01.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on start)")
    parser.add_argument("--reads-per-second", type=float, default=25.0)
    parser.add_argument("--reads-burst", type=int, default=250)
    parser.add_argument("--writes-per-second", type=float, default=10.0)
    parser.add_argument("--writes-burst", type=int, default=200)
    parser.add_argument("--no-throttling", action="store_true")
    parser.add_argument("--quota-cores", type=int, default=1000)
    parser.add_argument("--quota-container-groups", type=int, default=5000)
    parser.add_argument("--pull-seconds", type=float, default=0.5)
    parser.add_argument("--delete-seconds", type=float, default=0.2)
    parser.add_argument("--restart-backoff-seconds", type=float, default=1.0)
    parser.add_argument("--restart-backoff-max-seconds", type=float, default=10.0)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument(
        "--seed-examples",
        action="store_true",
        help="seed the spec's Get_Succeeded and Get_Failed groups (subscription 'subid', group 'demo')",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    arm = LocalArm(
        throttling=not args.no_throttling,
        reads_per_second=args.reads_per_second,
        reads_burst=args.reads_burst,
        writes_per_second=args.writes_per_second,
        writes_burst=args.writes_burst,
        quota_cores=args.quota_cores,
        quota_container_groups=args.quota_container_groups,
        pull_seconds=args.pull_seconds,
        delete_seconds=args.delete_seconds,
        restart_backoff_seconds=args.restart_backoff_seconds,
        restart_backoff_max_seconds=args.restart_backoff_max_seconds,
        page_size=args.page_size,
    )
    if args.seed_examples:
        arm.seed_example("ContainerGroupsGet_Succeeded.json", name="demo1")
        arm.seed_example("ContainerGroupsGet_Failed.json", name="demo1-failed")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with serve(arm, host=args.host, port=args.port):
        print(f"localarm listening on {arm.base_url}", flush=True)
        await stop.wait()
    failures = arm.validation_failures
    for failure in failures:
        print(f"validation failure: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
