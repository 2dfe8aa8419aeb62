"""The sans-I/O call lifecycle, fed events directly: no sockets, no loop."""

from __future__ import annotations

import pytest

from mock_api import calls as c


def new() -> c.Call:
    return c.Call.incoming([{"name": "From", "value": "sip:a@b"}])


def test_ids_and_happy_path() -> None:
    call = new()
    assert call.call_id.startswith("rtc_") and len(call.call_id) == 36
    out = call.handle(c.Accept({"type": "realtime"}))
    assert out.ok and out.after is c.CallState.ACTIVE
    assert [type(e) for e in out.effects] == [c.AnswerSip, c.StartSession]
    out = call.handle(c.Hangup())
    assert out.after is c.CallState.ENDED and isinstance(out.effects[0], c.SendBye)
    assert call.header("from") == "sip:a@b"


@pytest.mark.parametrize(
    ("events", "state", "sip_status"),
    [
        ([c.Reject()], c.CallState.REJECTED, 603),
        ([c.Reject(486)], c.CallState.REJECTED, 486),
        ([c.Timeout(408)], c.CallState.NO_ANSWER, 408),
        ([c.Accept({}, valid=False, error="x")], c.CallState.FAILED, None),
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
    out = call.handle(c.Refer("sip:agent@x", noop=True))
    assert out.ok and out.after is c.CallState.ACTIVE and call.refer_target == "sip:agent@x"
    call.handle(c.Refer("sip:agent@x"))
    assert call.handle(c.Refer("sip:other@x")).refusal.code == "refer_in_progress"  # type: ignore[union-attr]


def test_ring_deadline() -> None:
    call = new()
    call.ring_deadline = 10.0
    assert not call.due(9.9) and call.due(10.0)
    call.handle(c.Accept({}))
    assert not call.due(11.0)


@pytest.mark.parametrize("status", [603, 486, 404, 500])
def test_a_declined_refer_leaves_the_call_active(status: int) -> None:
    """The transferee's final status is not 2xx: nothing moved, the call goes on and may be referred again."""
    call = new()
    for ev in (c.Accept({}), c.Refer("sip:agent@example.com")):
        assert call.handle(ev).ok
    out = call.handle(c.ReferDone(status))
    assert out.ok and out.effects == () and call.state is c.CallState.ACTIVE
    assert call.refer_status == status and call.end_reason is None
    assert call.handle(c.Refer("sip:other@example.com")).ok and call.state is c.CallState.REFERRING
    assert call.handle(c.ReferDone(202)).after is c.CallState.REFERRED and call.refer_status == 202
