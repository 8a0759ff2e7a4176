"""``python -m providers.azurebatch.localbatch --port N [...]``: serve the local Batch service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .server import DEFAULT_ACCOUNT, DEFAULT_KEY, LocalBatch, serve


def _pool(text: str) -> tuple[str, str, int, int]:
    try:
        pool_id, vm_size, dedicated, low_priority = text.split(":")
        return pool_id, vm_size, int(dedicated), int(low_priority)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ID:VMSIZE:DEDICATED:LOWPRIORITY") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m providers.azurebatch.localbatch",
        description="A local Azure Batch data plane (api-version 2025-06-01) that checks every request and "
        "response against the spec and verifies shared-key signatures.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on start)")
    parser.add_argument("--account", default=DEFAULT_ACCOUNT, help="the account name clients sign with")
    parser.add_argument("--key", default=DEFAULT_KEY, help="its base64 key (default: a fixed test key)")
    parser.add_argument(
        "--pool", type=_pool, action="append", default=[], metavar="ID:VMSIZE:DEDICATED:LOWPRIORITY"
    )
    parser.add_argument("--requests-per-second", type=float, default=100.0)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--no-throttling", action="store_true")
    parser.add_argument("--schedule-seconds", type=float, default=0.1)
    parser.add_argument("--prepare-seconds", type=float, default=0.2)
    parser.add_argument("--delete-seconds", type=float, default=0.2)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    batch = LocalBatch(
        accounts={args.account: args.key},
        throttling=not args.no_throttling,
        requests_per_second=args.requests_per_second,
        burst=args.burst,
        schedule_seconds=args.schedule_seconds,
        prepare_seconds=args.prepare_seconds,
        delete_seconds=args.delete_seconds,
        page_size=args.page_size,
    )
    for pool_id, vm_size, dedicated, low_priority in args.pool:
        batch.set_pool(pool_id, vm_size=vm_size, dedicated=dedicated, low_priority=low_priority)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with serve(batch, host=args.host, port=args.port):
        print(f"localbatch listening on {batch.base_url}", flush=True)
        await stop.wait()
    failures = batch.validation_failures
    for failure in failures:
        print(f"validation failure: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
