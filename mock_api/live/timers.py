"""Work a Live session does later: callables of ``now`` run in due order (ties in scheduling order).

A timer is never cancelled; its callable checks whether it still applies (a reply cut by barge-in
ignores its remaining chunks), which keeps the heap a plain heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from .outputs import Output

Timer = Callable[[float], list[Output]]


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def at(self, due: float, fn: Timer) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), fn))

    def run_due(self, now: float) -> list[Output]:
        """Run every timer due by ``now``, each at its own due time; timers they add run too if due."""
        out: list[Output] = []
        while self._heap and self._heap[0][0] <= now:
            due, _, fn = heapq.heappop(self._heap)
            out.extend(fn(due))
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def clear(self) -> None:
        self._heap.clear()
