"""Process memory: garbage-collector tuning and giving freed memory back to the system.

A burst of pods leaves the heap at its high-water mark: decoded watch events and responses are
freed, but glibc keeps the pages (pinned between long-lived objects, or above a mmap threshold it
raised after the first large free). A virtual kubelet idles at thousands of pods for hours after
such a burst, so once a burst has passed we collect and trim. glibc-only parts are skipped
elsewhere (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt(3)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018  (glibc has both; others lack one)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _glibc()


def tune() -> None:
    """Once, at start-up, after the imports.

    Collect garbage in larger, rarer batches, and never re-scan what start-up loaded: a pod decoded
    from JSON is ~150 containers; resync pages and bursts of watch events allocate them by the
    hundred thousand, and with the default young-generation threshold (700) that triggers full
    collections walking the whole heap: most of the idle CPU at 10,000 pods and a fifth of the CPU
    in a burst. Nearly all of it is acyclic and freed by refcounting. 10,000 rather than more:
    the cyclic garbage a burst leaves (tasks, futures) is freed sooner, so fewer heap pages are
    ever touched (RSS at 10,000 pods 157 -> 150 MB at 50,000 -> 10,000).

    Fix glibc's mmap threshold at its default (128 KB): each TLS connection's read buffer (256 KB,
    asyncio's SSL protocol) is then mapped on its own and unmapped when the connection closes.
    Without this glibc raises the threshold after the first such free, and later buffers come
    from the heap, where closing the connection returns nothing.
    """
    gc.collect()
    gc.freeze()  # modules, classes, kopf's registry: permanent, never garbage
    gc.set_threshold(10_000, 20, 20)
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def release() -> None:
    """Collect garbage and return free heap pages to the system (~20-40 MB after a large burst)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


async def release_after_bursts(
    activity: Callable[[], int], *, quiet_seconds: float = 5.0, min_activity: int = 500
) -> None:
    """Run forever: :func:`release` once ``activity`` (a counter) grew by ``min_activity`` or more
    and then stood still for ``quiet_seconds``. Costs nothing while busy or idle."""
    released_at = seen = activity()
    while True:
        await asyncio.sleep(quiet_seconds)
        now = activity()
        if now == seen and now - released_at >= min_activity:
            release()
            log.debug("released free memory after %d events and reconciles", now - released_at)
            released_at = now
        seen = now
