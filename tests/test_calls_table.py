"""The sans-I/O call lifecycle, fed events directly: no sockets, no loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from mock_api import calls as c
from mock_api.fault_script import FaultScript
from mock_api.faults import Fault

ROOT = Path(__file__).resolve().parent.parent
BAD_BODY = c.BodyProblem("unknown_parameter", "Unknown parameter: 'input_audio_transcription'.",
                         "input_audio_transcription")


def new() -> c.Call:
    return c.Call.incoming([{"name": "From", "value": "sip:a@b"}])


def faults(*items: str | dict[str, object]) -> FaultScript:
    return FaultScript.of(Fault.model_validate(f) for f in items)


def test_ids_and_happy_path() -> None:
    call = new()
    assert call.call_id.startswith("rtc_") and len(call.call_id) == 36
    out = call.handle(c.Accept({"type": "realtime"}))
    assert out.ok and out.after is c.CallState.ACTIVE
    assert [type(e) for e in out.effects] == [c.AnswerSip, c.StartSession, c.CancelTimer]
    out = call.handle(c.Hangup())
    assert out.after is c.CallState.ENDED and out.effects[0] == c.SendBye(after_s=0.0)
    assert call.header("from") == "sip:a@b"


@pytest.mark.parametrize(
    ("events", "state", "sip_status"),
    [
        ([c.Reject()], c.CallState.REJECTED, 603),
        ([c.Reject(486)], c.CallState.REJECTED, 486),
        ([c.Timeout(408)], c.CallState.NO_ANSWER, 408),
        ([c.Accept({}, BAD_BODY)], c.CallState.FAILED, None),
        ([c.Accept({}), c.Refer("tel:1"), c.ReferDone()], c.CallState.REFERRED, None),
        ([c.Accept({}), c.Refer("tel:1"), c.CallerBye()], c.CallState.REFERRED, None),
        ([c.CallerBye()], c.CallState.ENDED, None),
        ([c.Hangup()], c.CallState.ENDED, 487),
        ([c.Fail("worker died")], c.CallState.FAILED, 500),
        ([c.Accept({}), c.Fail("worker died")], c.CallState.FAILED, None),
    ],
)
def test_terminal_paths(events: list[c.Event], state: c.CallState, sip_status: int | None) -> None:
    call = new()
    for ev in events:
        assert call.handle(ev).ok
    assert call.state is state and state.terminal
    assert call.sip_final_status == sip_status
    for ev in (c.Accept({}), c.Reject(), c.Refer("tel:2"), c.Hangup(), c.CallerBye(), c.Timeout()):
        out = call.handle(ev)
        assert out.refusal == c.not_found() and call.state is state


def test_refusals_in_live_states() -> None:
    call = new()
    assert call.handle(c.Refer("tel:1")).refusal.code == "call_not_active"  # type: ignore[union-attr]
    call.handle(c.Accept({}))
    assert call.handle(c.Accept({})).refusal.code == "call_already_accepted"  # type: ignore[union-attr]
    assert call.handle(c.Reject()).refusal.code == "call_already_accepted"  # type: ignore[union-attr]
    assert call.handle(c.Timeout()).refusal.code == "invalid_call_state"  # type: ignore[union-attr]
    out = call.handle(c.Refer("sip:agent@x", faults=faults("refer_noop")))
    assert out.ok and out.after is c.CallState.ACTIVE and call.refer_target == "sip:agent@x"
    call.handle(c.Refer("sip:agent@x"))
    assert call.handle(c.Refer("sip:other@x")).refusal.code == "refer_in_progress"  # type: ignore[union-attr]


def test_ring_timer() -> None:
    """The ring timer is the table's: the no_answer_timeout fault beats the config, accepting stops it."""
    call = new()
    out = call.handle(c.Incoming(30.0, 480))
    assert out.ok and out.after is c.CallState.RINGING
    assert out.effects == (c.StartTimer(c.TimerKind.RING, 30.0, c.Timeout(480), "timer"),)
    faulted = new().handle(c.Incoming(30.0, faults=faults({"name": "no_answer_timeout", "seconds": 0.5})))
    assert [(e.after_s, e.event) for e in faulted.effects if isinstance(e, c.StartTimer)] == [(0.5, c.Timeout(408))]
    assert new().handle(c.Incoming(None)).effects == ()
    accepted = call.handle(c.Accept({}))
    assert c.CancelTimer(c.TimerKind.RING) in accepted.effects
    assert call.handle(c.Timeout()).refusal.code == "invalid_call_state"  # type: ignore[union-attr]


def test_every_end_cancels_the_timers() -> None:
    paths: list[list[c.Event]] = [[c.Reject()], [c.Timeout()], [c.Accept({}), c.Hangup()],
                                  [c.Accept({}), c.CallerBye()]]
    for events in paths:
        call = new()
        outcomes = [call.handle(ev) for ev in events]
        assert outcomes[-1].effects[-1] == c.CancelTimers() and call.state.terminal


def test_invalid_accept_strict_refuses_else_fails_after_200() -> None:
    """Failure mode 5: strict_accept refuses with the parameter; otherwise 200, then the BYE a second later."""
    strict = new()
    out = strict.handle(c.Accept({"x": 1}, BAD_BODY, strict=True))
    assert out.refusal == c.Refusal(400, "unknown_parameter", BAD_BODY.message, "input_audio_transcription")
    assert strict.state is c.CallState.RINGING and strict.accept_body is None
    lenient = new()
    out = lenient.handle(c.Accept({"x": 1}, BAD_BODY))
    assert out.after is c.CallState.FAILED and lenient.accept_body == {"x": 1}
    assert out.effects[:2] == (c.AnswerSip(), c.SendBye(after_s=c.INVALID_ACCEPT_BYE_S))
    assert lenient.end_reason == f"invalid_session_config: {BAD_BODY.message}"
    forced = new()
    out = forced.handle(c.Accept({}, BAD_BODY, strict=True,
                                 faults=faults({"name": "accept_invalid_hangup", "after_s": 0.25})))
    assert out.ok and out.after is c.CallState.FAILED and c.SendBye(after_s=0.25) in out.effects


def test_random_hangup_is_a_timer_feeding_caller_bye() -> None:
    call = new()
    out = call.handle(c.Accept({}, faults=faults({"name": "random_hangup", "after_s": 3})))
    timers = [e for e in out.effects if isinstance(e, c.StartTimer)]
    assert timers == [c.StartTimer(c.TimerKind.RANDOM_HANGUP, 3.0, c.CallerBye(), "fault")]
    out = call.handle(timers[0].event)
    assert out.after is c.CallState.ENDED and call.end_reason == "caller_hangup"


def test_the_architecture_doc_shows_the_current_table() -> None:
    """docs/architecture.md carries the generated table; regenerate it with
    ``python -m mock_api.calls --write docs/architecture.md``."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert c.with_diagram(doc) == doc, "the lifecycle table in docs/architecture.md is stale: regenerate it"


def test_the_diagram_covers_every_rule_of_the_table() -> None:
    """Each (state, event) the table handles is shown, fed an example of that event: no rule is left out."""
    rows = c.lifecycle_diagram().splitlines()
    kinds = {type(ev): c._kind(label) for label, ev in c._examples()}
    for state, event_type in c._TABLE:
        assert any(r.startswith(f"| {state.value} | {kinds[event_type]}") for r in rows), (state, event_type)
    assert "| ringing | accept, invalid body, strict_accept | 400 unknown_parameter |" in rows
    assert "| active | refer + refer_noop | active | none |" in rows
