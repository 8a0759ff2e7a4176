"""The mock's "notify" mode: it calls back when a pod's status changes by itself (PodNotifier).

One timer per pod, armed for its next change (started, an init container done, exited,
restarted, vanished: see status.next_change); an update calls back at once (readiness may have
changed with the annotations).
"""

from __future__ import annotations

import asyncio
import datetime
from typing import TYPE_CHECKING

from providers.mock import clock
from providers.mock.status import next_change
from vk_operator.provider import StatusCallback

if TYPE_CHECKING:
    from providers.mock.state import _MockPod


class MockNotifier:
    """Mixed into the notifying MockProvider, before it (it overrides the status-change hooks)."""

    if TYPE_CHECKING:
        pods: dict[str, _MockPod]
        _callback: StatusCallback | None
        _timers: dict[str, asyncio.TimerHandle]

        def _flush(self) -> None: ...

    def notify_pods(self, callback: StatusCallback) -> None:
        self._callback = callback
        for uid in list(self.pods):  # pods loaded from the state file
            self._arm_next(uid)

    def _created(self, mock: _MockPod) -> None:
        self._arm_next(mock.ref.uid)

    def _changed(self, mock: _MockPod) -> None:
        if self._callback is not None:
            asyncio.get_running_loop().call_soon(self._callback, mock.ref)

    def _removed(self, uid: str) -> None:
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def _arm_next(self, uid: str) -> None:
        self._removed(uid)
        mock = self.pods.get(uid)
        if mock is None or self._callback is None:
            return
        moment = next_change(mock, mock.pod.get("spec") or {}, clock.now())
        if moment is not None:
            self._arm(uid, moment)

    def _arm(self, uid: str, moment: datetime.datetime) -> None:
        left = max((moment - clock.now()).total_seconds(), 0.0)
        self._timers[uid] = asyncio.get_running_loop().call_later(left, self._fire, uid, moment)

    def _fire(self, uid: str, moment: datetime.datetime) -> None:
        """Call back once the status clock (wall time) has reached ``moment``.

        Loop timers may fire a little early by that clock (uvloop's run on a cached millisecond
        time): the status would not have changed yet and nothing would call back again, so an
        early timer is set again for the rest.
        """
        self._timers.pop(uid, None)
        mock = self.pods.get(uid)
        if mock is None or self._callback is None:
            return
        if clock.now() < moment:
            self._arm(uid, moment)
            return
        self._callback(mock.ref)
        self._arm_next(uid)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._flush()
