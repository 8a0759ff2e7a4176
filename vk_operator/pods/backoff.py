"""Capped exponential backoff for a pod's failed provider calls."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    deadline: float = 600.0  # give up (pod Failed) when transient errors last this long

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.initial * 2.0 ** max(attempt - 1, 0))
