"""One walk through a scenario call's ``steps``, for every kind of caller.

The scenario runner, ``rtsip load --mode virtual`` and ``rtsip load --mode sip`` all play the same
steps (say / barge_in / dtmf / pause_ms / wait_for / hangup, within ``max_duration_s``), so the
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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

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


async def drive(steps: Sequence[Step], target: StepTarget, max_duration_s: float) -> None:
    """Take ``steps`` in order on ``target`` until they are done, the call is over or
    ``max_duration_s`` has passed.  The n-th ``wait_for: X`` waits for the n-th X, so a scenario can
    wait for each of several responses in turn."""
    deadline = time.monotonic() + max_duration_s
    waits: dict[str, int] = {}
    for i, step in enumerate(steps):
        left = deadline - time.monotonic()
        if left <= 0:
            target.note(f"max_duration_s reached at step {i}")
            return
        if target.over:
            return
        if not await _take(step, i, target, waits, left):
            return


async def _take(step: Step, i: int, target: StepTarget, waits: dict[str, int], left: float) -> bool:
    """One step; False when the steps stop here."""
    if step.hangup:
        return await target.hang_up()
    if step.pause_ms is not None:
        await asyncio.sleep(min(step.pause_ms / 1000, left))
        return True
    if step.wait_for is not None:
        waits[step.wait_for] = waits.get(step.wait_for, 0) + 1
        return await target.wait_event(step.wait_for, waits[step.wait_for], max(0.1, left))
    why = await target.answered(left)
    if why is not None:
        target.note(f"step {i} skipped, {why}")
        return False
    if step.dtmf is not None:
        return await target.dial(step.dtmf)
    if step.barge_in is not None:
        if not await target.wait_event("response.created", 1, BARGE_IN_WAIT_S):
            return False
        return await target.say(step.barge_in, left)
    if step.say is not None:
        return await target.say(step.say, left)
    return True
