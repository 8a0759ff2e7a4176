"""The work queue's lanes: keys in queueing order, but creates and deletes never take every worker."""

from __future__ import annotations

import asyncio

from vk_operator.pods.queue import WorkQueue

STATUS_KEYS = {("ns", "running-1"), ("ns", "running-2")}


def queue(provider_slots: int | None = None) -> WorkQueue:
    return WorkQueue(status_only=lambda key: key in STATUS_KEYS, provider_slots=provider_slots)


async def settle() -> None:
    """Let every runnable task run (no timing: a blocked get() stays blocked however long)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_keys_are_taken_in_queueing_order_while_provider_slots_are_free() -> None:
    q = queue(provider_slots=2)
    order = [("ns", "new-1"), ("ns", "running-1"), ("ns", "new-2"), ("ns", "new-3"), ("ns", "running-2")]
    for key in order:
        q.add(key)
    assert q.depth == 5
    taken = [await q.get() for _ in range(4)]
    # new-3 waits for a provider slot: running-2, queued after it, is taken first.
    assert taken == [("ns", "new-1"), ("ns", "running-1"), ("ns", "new-2"), ("ns", "running-2")]
    q.done(("ns", "new-1"))
    assert await q.get() == ("ns", "new-3")


async def test_at_most_provider_slots_creates_are_held_and_status_still_flows() -> None:
    q = queue(provider_slots=2)
    for name in ("new-1", "new-2", "new-3"):
        q.add(("ns", name))
    first, second = await q.get(), await q.get()
    assert (first, second) == (("ns", "new-1"), ("ns", "new-2"))
    third = asyncio.create_task(q.get())
    await settle()
    assert not third.done()  # both provider slots are held

    status = asyncio.create_task(q.get())
    q.add(("ns", "running-1"))
    await settle()
    # A status key goes to a waiting worker although the provider lane is full.
    assert {t.result() for t in (third, status) if t.done()} == {("ns", "running-1")}
    waiting = third if not third.done() else status

    q.done(first)  # a provider slot frees: the next create is taken
    assert await asyncio.wait_for(waiting, timeout=30) == ("ns", "new-3")


async def test_a_worker_cancelled_as_it_is_woken_passes_the_key_on() -> None:
    q = queue()
    one, two = asyncio.create_task(q.get()), asyncio.create_task(q.get())
    await settle()
    q.add(("ns", "new-1"))  # wakes `one`...
    one.cancel()  # ... which is stopped before it runs
    assert await asyncio.wait_for(two, timeout=30) == ("ns", "new-1")
    assert one.cancelled()


async def test_a_key_is_queued_once_and_requeued_when_it_changed_while_held() -> None:
    q = queue(provider_slots=1)
    q.add(("ns", "new-1"))
    q.add(("ns", "new-1"))
    assert q.depth == 1
    key = await q.get()
    q.add(key)  # changed while held: not queued twice, queued again when done
    assert q.depth == 0 and not q.idle
    q.done(key)
    assert q.depth == 1
    assert await q.get() == key  # and the provider slot it held was given back
    q.done(key)
    assert q.idle
