"""The mock's clocks, in one place so tests can move them.

``now()`` is the status clock (wall time, UTC): pod lifetimes, log timestamps and usage are derived
from it. ``monotonic()`` stamps the call log (``time.monotonic``, the clock asyncio's loop runs on,
comparable between processes of one machine).

Call them through the module (``clock.now()``) so that patching ``providers.mock.clock.now``
moves every part of the mock at once.
"""

from __future__ import annotations

import datetime
import time


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def monotonic() -> float:
    return time.monotonic()
