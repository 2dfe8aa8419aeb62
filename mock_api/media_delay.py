"""A constant network delay on one direction of a SIP call's audio (``media_delay``, ``media_jitter``'s buffer).

What goes through a lane happens ``delay_s`` after it was handed in, in the order it was handed in: toward the
caller, the reply audio's play commands and the cut a barge-in makes in them (so the caller hears the reply late
and hears it run on for the delay after the cut, as over a long path); toward the model, the worker's speech and
DTMF events. Closing a lane (the call ended) loses what is still on its way, as the network would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Action = Callable[[], Awaitable[object]]


class DelayLane:
    """One direction's delay: actions run ``delay_s`` after :meth:`put`, one at a time, in order."""

    def __init__(self, delay_s: float, on_error: Callable[[BaseException], object],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.delay_s = delay_s
        self._on_error, self._clock, self._sleep = on_error, clock, sleep
        self._items: deque[tuple[float, Action]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def put(self, action: Action) -> None:
        if self._closed:
            return
        self._items.append((self._clock() + self.delay_s, action))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._items:
                due, action = self._items[0]
                wait = due - self._clock()
                if wait > 0:
                    await self._sleep(wait)  # the delay is the fault itself
                self._items.popleft()
                try:
                    await action()
                except Exception as exc:  # one failed action must not strand the ones behind it
                    self._on_error(exc)
        finally:
            self._task = None

    def close(self) -> None:
        self._closed = True
        self._items.clear()
        if self._task is not None:
            self._task.cancel()
