"""The one step driver (harness/caller_steps.py) against a recording target: the walk's own rules."""

from __future__ import annotations

import asyncio
from typing import Any

from harness.caller_steps import drive
from harness.journal_view import JournalView
from harness.scenario import Step


class Recorder:
    """A StepTarget that records what it was asked and answers as told."""

    def __init__(self, *, answered: str | None = None, events: bool = True, go_on_after_hangup: bool = True) -> None:
        self.calls: list[tuple[str, object]] = []
        self.notes: list[str] = []
        self._answered = answered
        self._events = events
        self._after_hangup = go_on_after_hangup
        self.over = False

    async def answered(self, timeout: float) -> str | None:
        return self._answered

    async def say(self, ref: str, left: float) -> bool:
        self.calls.append(("say", ref))
        return True

    async def dial(self, digits: str) -> bool:
        self.calls.append(("dial", digits))
        return True

    async def hold(self, seconds: float) -> bool:
        self.calls.append(("hold", seconds))
        return True

    async def new_ssrc(self) -> bool:
        self.calls.append(("new_ssrc", None))
        return True

    async def hang_up(self) -> bool:
        self.calls.append(("hangup", None))
        self.over = True
        return self._after_hangup

    async def wait_event(self, kind: str, count: int, timeout: float) -> bool:
        self.calls.append(("wait", (kind, count)))
        return self._events

    def note(self, text: str) -> None:
        self.notes.append(text)


def _steps(*raw: dict[str, object]) -> list[Step]:
    return [Step.model_validate(r) for r in raw]


def test_steps_in_order_and_the_nth_wait_counts_the_nth_event() -> None:
    target = Recorder()
    steps = _steps({"say": "a"}, {"wait_for": "response.done"}, {"dtmf": "12#"}, {"wait_for": "response.done"},
                   {"wait_for": "call.accepted"}, {"new_ssrc": True}, {"barge_in": "b"})
    asyncio.run(drive(steps, target, max_duration_s=30))
    assert target.calls == [
        ("say", "a"), ("wait", ("response.done", 1)), ("dial", "12#"), ("wait", ("response.done", 2)),
        ("wait", ("call.accepted", 1)), ("new_ssrc", None), ("wait", ("response.created", 1)), ("say", "b"),
    ]
    assert target.notes == []


def test_a_call_that_does_not_take_audio_skips_the_step_with_a_note_and_stops() -> None:
    target = Recorder(answered="the call is no_answer")
    asyncio.run(drive(_steps({"say": "a"}, {"dtmf": "1"}), target, max_duration_s=30))
    assert target.calls == []
    assert target.notes == ["step 0 skipped, the call is no_answer"]


def test_a_missed_event_stops_when_the_target_says_so() -> None:
    target = Recorder(events=False)
    asyncio.run(drive(_steps({"wait_for": "response.done"}, {"say": "a"}), target, max_duration_s=30))
    assert target.calls == [("wait", ("response.done", 1))]


def test_barge_in_without_a_response_to_interrupt_is_not_spoken() -> None:
    target = Recorder(events=False)
    asyncio.run(drive(_steps({"barge_in": "b"}, {"say": "a"}), target, max_duration_s=30))
    assert target.calls == [("wait", ("response.created", 1))]


def test_hangup_ends_the_walk_once_the_call_is_over() -> None:
    target = Recorder()
    asyncio.run(drive(_steps({"hangup": True}, {"say": "a"}), target, max_duration_s=30))
    assert target.calls == [("hangup", None)]


def test_the_deadline_is_noted_at_the_step_it_stops() -> None:
    target = Recorder()
    asyncio.run(drive(_steps({"say": "a"}), target, max_duration_s=0))
    assert target.calls == []
    assert target.notes == ["max_duration_s reached at step 0"]


def test_a_wait_counts_journal_kinds_and_realtime_event_types_typed_or_raw() -> None:
    raw: list[dict[str, Any]] = [
        {"seq": 1, "t_ms": 0, "kind": "caller.say", "data": {"ref": "a"}},
        {"seq": 2, "t_ms": 1, "kind": "ws.server", "data": {"event": {"type": "response.done"}}},
        {"seq": 3, "t_ms": 2, "kind": "ws.client", "data": {"event": {"type": "response.create"}}},
        {"seq": 4, "t_ms": 3, "kind": "ws.server", "data": {"event": {"type": "response.done"}}},
    ]
    view = JournalView(raw)
    for kind, n in (("caller.say", 1), ("response.done", 2), ("response.create", 1), ("session.created", 0)):
        assert view.count(kind) == n
        assert JournalView.count_raw(raw, kind) == n
