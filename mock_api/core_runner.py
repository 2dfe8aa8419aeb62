"""Running one sans-I/O session core on the event loop: what the Realtime and the GPT-Live hosts share.

Rules:

- Inputs reach the core in arrival order, one at a time, each with its arrival time (``now``), whether
  it ran at once or had to wait, so the core sees the same inputs at the same times either way.
- A heavy input (a long audio append, a commit, a fixture) runs on a worker thread so the loop keeps
  serving; inputs arriving meanwhile wait. Its outputs go out :data:`EMIT_SLICE` per loop turn, and the
  core stays busy (later inputs wait) until the last one is out.
- One loop timer follows the core's next deadline, re-armed only when the deadline moves.
- What the outputs mean is the host's business (:meth:`CoreRunner.dispatch`); so is what a failure on the
  worker thread becomes (:meth:`CoreRunner._thread_failed`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import MockServer

EMIT_SLICE = 16  # outputs of a heavy input dispatched per loop turn (about a millisecond of work)
CORE_THREADS = 4  # sessions whose heavy input runs at the same time (each session runs one at a time)

CoreCall = Callable[[float], Sequence[Any]]  # one input to the session core, given the clock's now
Origin = Any  # the socket an input came from (its own errors go back there), or None

_core_pool: ThreadPoolExecutor | None = None


def core_pool() -> ThreadPoolExecutor:
    """Worker threads for heavy core calls, shared by every session of the process."""
    global _core_pool
    if _core_pool is None:
        _core_pool = ThreadPoolExecutor(max_workers=CORE_THREADS, thread_name_prefix="rtsip-core")
    return _core_pool


class CoreRunner:
    """The input queue, the worker-thread hand-off and the timer pump of one session core."""

    server: MockServer
    session: Any  # the core: next_deadline() and advance(now), the rest is the host's

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None  # fires the core's next timer
        self._timer_due: float | None = None
        self._busy: asyncio.Future[None] | None = None  # a heavy input runs; resolved once its outputs are out
        self._waiting: deque[tuple[CoreCall, float, Origin, bool]] = deque()

    # ---- what a host says -----------------------------------------------------------------------------

    def dispatch(self, outputs: Sequence[Any], origin: Origin = None) -> None:
        raise NotImplementedError

    def _stopped(self) -> bool:
        """The session is over: no timer of it runs any more."""
        raise NotImplementedError

    def _bug_key(self) -> str | None:
        """The journal timeline a bug of this host goes to."""
        raise NotImplementedError

    def _thread_failed(self, exc: BaseException, origin: Origin) -> Sequence[Any]:
        """A heavy input raised past the core (the core turns its own exceptions into outputs): journaled
        as a mock bug; what to send about it, the host says."""
        self.server.mock_bug(self._bug_key(), "core thread", exc)
        return []

    def _run_inline(self, call: CoreCall, now: float, origin: Origin) -> None:
        self.dispatch(call(now), origin)

    # ---- running ----------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A heavy input is running on a worker thread (the core must not be touched meanwhile)."""
        return self._busy is not None

    async def settled(self) -> None:
        """Wait until no heavy input runs: a socket reads its next frame only then (back-pressure)."""
        while self._busy is not None:
            await asyncio.wait({self._busy})

    def _submit(self, call: CoreCall, origin: Origin = None, *, heavy: bool = False) -> None:
        """Run one input now, or queue it behind the heavy one running (rule 1)."""
        self._waiting.append((call, self.server.clock(), origin, heavy))
        if self._busy is None:
            self._drain()

    def _drain(self) -> None:
        while self._waiting and self._busy is None:
            call, now, origin, heavy = self._waiting.popleft()
            if heavy:
                self._busy = self._loop.create_future()
                work = self._loop.run_in_executor(core_pool(), call, now)
                work.add_done_callback(partial(self._heavy_done, origin))
                return
            self._run_inline(call, now, origin)

    def _heavy_done(self, origin: Origin, work: asyncio.Future[Sequence[Any]]) -> None:
        if work.cancelled():  # the loop is shutting down
            self._release()
            return
        exc = work.exception()
        self._emit(work.result() if exc is None else self._thread_failed(exc, origin), origin, 0)

    def _emit(self, outputs: Sequence[Any], origin: Origin, start: int) -> None:
        """Dispatch a heavy call's outputs EMIT_SLICE per loop turn (rule 2)."""
        end = start + EMIT_SLICE
        try:
            self.dispatch(outputs[start:end], origin)
        except Exception as exc:  # the host's own bug, off any socket's task: journal it, never stay busy
            self.server.mock_bug(self._bug_key(), "dispatch", exc)
            end = len(outputs)
        if end < len(outputs):
            self._loop.call_soon(self._emit, outputs, origin, end)
        else:
            self._release()

    def _release(self) -> None:
        busy, self._busy = self._busy, None
        if busy is not None and not busy.done():
            busy.set_result(None)
        self._schedule()
        self._drain()

    def _schedule(self) -> None:
        """Keep one loop timer at the core's next deadline (rule 3). Called after every input, so it must
        stay cheap: audio frames rarely move the deadline."""
        if self._busy is not None:
            return  # the core is running on a thread; re-armed when it is done
        due = None if self._stopped() else self.session.next_deadline()
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            self._timer = self._loop.call_later(max(0.0, due - self.server.clock()), self._fire)

    def _fire(self) -> None:
        """Run the core's due timers on the real clock."""
        self._timer, self._timer_due = None, None
        if not self._stopped():
            self._submit(self.session.advance)
