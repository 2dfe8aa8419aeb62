"""One walk through a scenario call's ``steps``, for every kind of caller.

The scenario runner, ``rtsip load --mode virtual`` and ``rtsip load --mode sip`` all play the same
steps (say / barge_in / dtmf / pause_ms / wait_for / hangup / hold_ms / new_ssrc, within ``max_duration_s``), so the
order of the steps, the deadline and what a ``wait_for`` counts are decided here once.  What differs
between them is how a caller does a step and how it treats a call that is gone; that is the
:class:`StepTarget`'s to decide:

* whether a step may go on after the call ended (the runner notes the skipped step and stops; a
  load caller just stops, its result read from the journal afterwards);
* how speaking takes its time (a virtual caller waits for the mock to have fed the audio; a SIP
  caller plays the file and waits for its length plus trailing silence);
* whether a missing journal event stops the steps (load) or is only noted (runner);
* whether ``hangup`` hangs up here (runner) or after the steps (load, which reads the call's RTP
  figures first).

A virtual call needs nothing but control-API requests for its steps: :mod:`harness.control_walk`
turns this walk into those, for ``rtsip load``'s asyncio callers and Locust's gevent ones alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .scenario import Step

TRAILING_SILENCE_MS = 800  # after each utterance, so the VAD can end the turn
BARGE_IN_WAIT_S = 10.0  # how long a barge_in waits for the assistant's response to start


class StepTarget(Protocol):
    """What a caller can do for :func:`drive`; the answers say whether the steps go on."""

    @property
    def over(self) -> bool:
        """The call has ended on the caller's side: no further step is worth taking."""
        ...

    async def answered(self, timeout: float) -> str | None:
        """Before speaking or dialling: None once the call takes the caller's audio, else why not
        (e.g. ``"the call is no_answer"``)."""
        ...

    async def say(self, ref: str, left: float) -> bool:
        """Speak ``ref`` (a fixture name or an audio path) within about ``left`` s; False: the call is gone."""
        ...

    async def dial(self, digits: str) -> bool:
        """Send DTMF ``digits``; False: the call is gone."""
        ...

    async def hold(self, seconds: float) -> bool:
        """Put the far side on hold for ``seconds``, then resume it (SIP callers only); False: the call is gone."""
        ...

    async def new_ssrc(self) -> bool:
        """Go on sending RTP as a new source once the mock has heard the first (SIP callers only); False: the
        call is gone."""
        ...

    async def hang_up(self) -> bool:
        """The scenario's ``hangup`` step; True to go on with the steps after it."""
        ...

    async def wait_event(self, kind: str, count: int, timeout: float) -> bool:
        """Until the call's journal holds ``count`` entries of ``kind`` (a journal kind or a Realtime
        event type, :meth:`harness.journal_view.JournalView.count`); True to go on with the steps."""
        ...

    def note(self, text: str) -> None:
        """Keep ``text``: why a step was skipped or the steps stopped early."""
        ...


@dataclass(frozen=True)
class Act:
    """One thing :func:`plan` asks of a caller; the driver does it and sends back its answer.

    ``op`` is a :class:`StepTarget` member (``over``, ``answered``, ``say``, ``dial``, ``hold``, ``hang_up``,
    ``wait_event``, ``note``) or ``sleep`` (a pause: the driver's own sleep, answered with None)."""

    op: str
    args: tuple[Any, ...] = ()


StepPlan = Generator[Act, Any, None]


def plan(steps: Sequence[Step], max_duration_s: float, clock: Callable[[], float] = time.monotonic) -> StepPlan:
    """The walk through ``steps``, sans I/O: it yields each :class:`Act` and is sent the result, until the
    steps are done, the call is over or ``max_duration_s`` has passed.  The n-th ``wait_for: X`` waits for
    the n-th X, so a scenario can wait for each of several responses in turn."""
    deadline = clock() + max_duration_s
    waits: dict[str, int] = {}
    for i, step in enumerate(steps):
        left = deadline - clock()
        if left <= 0:
            yield Act("note", (f"max_duration_s reached at step {i}",))
            return
        if (yield Act("over")):
            return
        if not (yield from _step(step, i, waits, left)):
            return


def _step(step: Step, i: int, waits: dict[str, int], left: float) -> Generator[Act, Any, bool]:
    """One step; False when the steps stop here."""
    if step.hangup:
        return bool((yield Act("hang_up")))
    if step.pause_ms is not None:
        yield Act("sleep", (min(step.pause_ms / 1000, left),))
        return True
    if step.wait_for is not None:
        waits[step.wait_for] = waits.get(step.wait_for, 0) + 1
        return bool((yield Act("wait_event", (step.wait_for, waits[step.wait_for], max(0.1, left)))))
    why = yield Act("answered", (left,))
    if why is not None:
        yield Act("note", (f"step {i} skipped, {why}",))
        return False
    if step.dtmf is not None:
        return bool((yield Act("dial", (step.dtmf,))))
    if step.hold_ms is not None:
        return bool((yield Act("hold", (min(step.hold_ms / 1000, left),))))
    if step.new_ssrc:
        return bool((yield Act("new_ssrc")))
    if step.barge_in is not None:
        if not (yield Act("wait_event", ("response.created", 1, BARGE_IN_WAIT_S))):
            return False
        return bool((yield Act("say", (step.barge_in, left))))
    if step.say is not None:
        return bool((yield Act("say", (step.say, left))))
    return True


async def drive(steps: Sequence[Step], target: StepTarget, max_duration_s: float) -> None:
    """:func:`plan` on an asyncio caller."""
    walk = plan(steps, max_duration_s)
    answer: Any = None
    while (act := _next(walk, answer)) is not None:
        if act.op == "over":
            answer = target.over
        elif act.op == "note":
            target.note(*act.args)
            answer = None
        elif act.op == "sleep":
            answer = await asyncio.sleep(*act.args)
        else:
            answer = await getattr(target, act.op)(*act.args)


def _next(walk: StepPlan, answer: Any) -> Act | None:
    try:
        return walk.send(answer)
    except StopIteration:
        return None
