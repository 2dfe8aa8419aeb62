"""A watchdog for the event loop: every stall longer than a threshold is journaled with where the loop was.

A stall probe outside the process (``bench/stall_probe.py``) says *that* the loop stopped answering, not
*why*. Here the loop beats every ``TICK_S``; a thread of its own notices when a beat is overdue by the
threshold and copies the loop thread's stack at that moment (``sys._current_frames``). When the loop comes
back it journals ``mock.stall`` on the server timeline with the stall's length and that stack (and, with
``echo``, prints both to stderr). The thread
needs the GIL to look, so a stall inside one long C call is seen only when it ends (the stack then shows
the Python code that made the call).

Off unless asked for (``rtsip mock --stall-watch MS``): its beat costs the loop a callback every 10 ms.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback

from . import journal_entries as je
from .journal import Journal

TICK_S = 0.010
STACK_FRAMES = 30
STALL_LINE = "rtsip mock: the event loop stalled"


class StallWatch:
    def __init__(self, journal: Journal, threshold_s: float, tick_s: float = TICK_S, echo: bool = False) -> None:
        self.journal = journal
        self.echo = echo
        self.threshold_s = threshold_s
        self.tick_s = tick_s
        self.last = time.monotonic()
        self.stack: str | None = None  # written by the watching thread during a stall, read by the loop after it
        self.stalls = 0
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="rtsip-stall-watch", daemon=True)

    def start(self) -> StallWatch:
        self._loop_thread = threading.get_ident()
        self.last = time.monotonic()
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _beat(self) -> None:
        now = time.monotonic()
        late = now - self.last - self.tick_s
        if late > self.threshold_s:
            self.stalls += 1
            stack = self.stack or ""
            self.journal.add(None, je.MockStall(ms=round(late * 1000, 1), stack=stack))
            if self.echo:  # the journal may be reset; what a person watching the mock sees stays
                print(f"{STALL_LINE} {late * 1000:.0f} ms; the loop was in:\n{stack}", file=sys.stderr, flush=True)
        self.stack = None
        self.last = now
        self._handle = asyncio.get_running_loop().call_later(self.tick_s, self._beat)

    def _watch(self) -> None:
        while not self._stop.wait(self.tick_s):
            if self.stack is None and time.monotonic() - self.last - self.tick_s > self.threshold_s:
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    self.stack = "".join(traceback.format_stack(frame, limit=STACK_FRAMES))
