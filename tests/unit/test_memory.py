"""memory.release_after_bursts: release once a burst of activity has stood still, never while busy."""

from __future__ import annotations

import asyncio

import pytest

from vk_operator import memory


@pytest.mark.parametrize(
    ("readings", "released_at"),
    [
        # initial, then one reading per quiet period
        ([0, 300, 600, 600, 600], [3]),  # grew by 600, then still: one release, not two
        ([0, 600, 1200, 1800, 2400], []),  # always busy: never
        ([0, 100, 100, 200, 200], []),  # still, but too little happened
        ([0, 600, 600, 700, 700, 1300, 1300], [2, 6]),  # counted from the last release
        ([5, 5, 5], []),  # idle from the start
    ],
)
async def test_release_follows_a_burst_that_stood_still(
    monkeypatch: pytest.MonkeyPatch, readings: list[int], released_at: list[int]
) -> None:
    calls: list[int] = []
    index = -1

    def activity() -> int:
        nonlocal index
        index += 1
        if index == len(readings):
            raise asyncio.CancelledError  # every reading was acted on: stop the loop
        return readings[index]

    monkeypatch.setattr(memory, "release", lambda: calls.append(index))
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await memory.release_after_bursts(activity, quiet_seconds=0, min_activity=500)
    assert calls == released_at
