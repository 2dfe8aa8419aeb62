"""Failure mode 23, the ghost call: the caller hangs up while it rings, yet the accept succeeds.

The call table's rule 13 fed directly, then the whole path through the real mock: the caller's
CANCEL, the official SDK's accept (200) and WebSocket (a session with nobody on the line), and the
service giving up ``timeout_s`` after the accept.
"""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosedError

from harness.journal_view import JournalView
from mock_api import calls as c
from mock_api.client import MockClient
from mock_api.fault_script import FaultScript
from mock_api.faults import Fault

GHOST = {"name": "ghost_call", "timeout_s": 20.0}
ACCEPT = {"type": "realtime", "model": "gpt-realtime", "instructions": "You are Alex."}


def born(*faults: dict[str, object], direction: str = "inbound") -> c.Call:
    """A ringing call with these faults, as ``MockServer.start_call`` makes one."""
    call = c.Call.incoming([], direction=direction)
    call.handle(c.Incoming(30.0, faults=FaultScript.of(Fault.model_validate(f) for f in faults)))
    return call


def ghost_after_cancel() -> c.Call:
    call = born(GHOST)
    out = call.handle(c.CallerBye())
    assert out.ok and out.after is c.CallState.RINGING and call.caller_gone
    assert [type(e) for e in out.effects] == [c.FaultActed]
    return call


def test_without_the_fault_a_cancel_ends_the_ringing_call() -> None:
    """Item 11, what the fault changes: the cancelled call is gone and its accept answers 404."""
    call = born()
    assert call.handle(c.CallerBye()).after is c.CallState.ENDED
    refused = call.handle(c.Accept(ACCEPT)).refusal
    assert refused is not None and (refused.http_status, refused.code) == (404, "call_id_not_found")


def test_the_ghost_accept_starts_a_session_that_the_service_ends_later() -> None:
    call = ghost_after_cancel()
    out = call.handle(c.Accept(ACCEPT))
    assert out.ok and out.after is c.CallState.ACTIVE
    assert not any(isinstance(e, c.AnswerSip) for e in out.effects), "nobody is left to answer"
    assert c.StartSession(ACCEPT) in out.effects
    timer = c.StartTimer(c.TimerKind.GHOST, 20.0, c.Fail(c.GHOST_TIMEOUT), "fault")
    assert timer in out.effects and c.CancelTimer(c.TimerKind.RING) in out.effects
    assert [e.fault for e in out.effects if isinstance(e, c.FaultActed)] == ["ghost_call"]
    end = call.handle(timer.event)
    assert (end.after, call.end_reason) == (c.CallState.FAILED, c.GHOST_TIMEOUT)
    assert [type(e) for e in end.effects] == [c.EndSession, c.CancelTimers]


@pytest.mark.parametrize(("event", "state"), [
    (c.Hangup(), c.CallState.ENDED),
    (c.Reject(486), c.CallState.REJECTED),
    (c.Timeout(), c.CallState.NO_ANSWER),
])
def test_nothing_goes_to_the_gone_leg_while_it_rings(event: c.Event, state: c.CallState) -> None:
    call = ghost_after_cancel()
    out = call.handle(event)
    assert out.after is state
    assert not [e for e in out.effects if isinstance(e, c.TO_SIP_LEG)]


def test_the_app_hanging_up_ends_the_ghost_session_without_a_bye() -> None:
    call = ghost_after_cancel()
    call.handle(c.Accept(ACCEPT))
    out = call.handle(c.Hangup())
    assert (out.after, call.end_reason) == (c.CallState.ENDED, "hangup")
    assert [type(e) for e in out.effects] == [c.EndSession, c.CancelTimers]


def test_a_second_cancel_changes_nothing_and_the_fault_leaves_answered_calls_alone() -> None:
    call = ghost_after_cancel()
    assert call.handle(c.CallerBye()).effects == ()
    answered = born(GHOST)
    answered.handle(c.Accept(ACCEPT))
    out = answered.handle(c.CallerBye())
    assert (out.after, answered.end_reason) == (c.CallState.ENDED, "caller_hangup")
    outbound = born(GHOST, direction="outbound")
    assert outbound.handle(c.CallerBye()).after is c.CallState.ENDED  # rule 12: no one rings an outbound call


async def test_ghost_call_through_the_sdk(client: AsyncOpenAI, control: MockClient) -> None:
    """CANCEL, then a 200 accept and a live WebSocket session with no caller, then the service's own end."""
    call_id = await control.start_call(faults=[{**GHOST, "timeout_s": 1.0}])
    view = await control.caller_hangup(call_id)
    assert view.state == "ringing"
    await client.realtime.calls.accept(call_id, **ACCEPT)  # type: ignore[arg-type]
    kinds: list[str] = []

    async def listen() -> None:
        async with client.realtime.connect(call_id=call_id) as conn:
            async for event in conn:
                kinds.append(event.type)

    with pytest.raises(ConnectionClosedError):  # the service drops the session's socket, as at any call's end
        await listen()
    assert kinds[0] == "session.created" and "error" not in kinds
    view = await control.wait_for(call_id, lambda v: v.terminal)
    assert (view.state, view.end_reason) == ("failed", c.GHOST_TIMEOUT)
    assert JournalView.of_call(view).ended_by(view.end_reason) == "timeout"  # the reports' word: not the app's
    fired = [e.data["detail"] for e in view.of_kind("fault.fired") if e.data["fault"] == "ghost_call"]
    assert len(fired) == 2 and "hung up while ringing" in fired[0] and "ends in 1 s" in fired[1]
    states = [(e.data["before"], e.data["after"]) for e in view.of_kind("state")]
    assert states == [(None, "ringing"), ("ringing", "active"), ("active", "failed")]
    effects = [e.data["effect"] for e in view.of_kind("call.effect")]
    assert "AnswerSip" not in effects and effects[-1] == "EndSession"
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(call_id)


async def test_the_app_hangs_up_a_ghost_call(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call(faults=[GHOST])
    await control.caller_hangup(call_id)
    await client.realtime.calls.accept(call_id, **ACCEPT)  # type: ignore[arg-type]
    await client.realtime.calls.hangup(call_id)
    view = await control.call(call_id)
    assert (view.state, view.end_reason) == ("ended", "hangup")
    assert [e.data["effect"] for e in view.of_kind("call.effect")] == ["StartSession", "EndSession"]
