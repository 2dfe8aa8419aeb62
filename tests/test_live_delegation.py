"""GPT-Live delegation, end to end: a virtual call accepted through GPT-Live whose script turn delegates, the
app on the official SDK's sideband (``client.live.sideband.connect``) answering as a ``client`` or a
``responses`` delegation would, against a real mock on 127.0.0.1. Every frame is parsed with the SDK's
``ConnectServerEvent`` union (the sideband tests' helper), and every nested ``response.event`` with the SDK's
Responses ``ResponseStreamEvent`` union. Also the core's own end of a session (the ``live_session_end`` fault)."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
from openai import AsyncOpenAI
from openai.types.responses import ResponseStreamEvent

from mock_api.client import MockClient
from tests.test_live_primary import caller_turn, primary
from tests.test_live_session import WEATHER_TOOL, delegating
from tests.test_live_sideband import LIVE_SESSION, Sideband, sideband

NESTED: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
WAIT_S = 20.0  # a guard against a hang, never a timing assumption
AFTER_TOOL = "Your policy 5665-2870 is active."
LOOKUP = {"hears": "policy number", "says": "Let me look.", "after_tool": AFTER_TOOL,
          "tool_calls": [{"name": "lookup_policy", "arguments": {"policy": "5665-2870"}, "call_id": "call_p1"}]}
SCRIPT: dict[str, Any] = {"turns": [LOOKUP], "response_latency_s": 0.05, "ms_per_char": 15}
LOOKUP_TOOL = {"type": "function", "name": "lookup_policy", "parameters": {"type": "object"}}


async def delegated_call(control: MockClient, client: AsyncOpenAI, delegation: dict[str, Any],
                         faults: list[dict[str, Any]] | None = None) -> tuple[str, str]:
    call_id = await control.start_call(script=SCRIPT, faults=faults)
    live_id = (await control.call(call_id)).live_id
    session: Any = {**LIVE_SESSION, "delegation": delegation}
    await client.live.sessions.accept(live_id, session=session)
    return call_id, live_id


def nested(sb: Sideband) -> list[dict[str, Any]]:
    """The nested Responses events seen so far, each parsed by the SDK's Responses models."""
    out = []
    for e in sb.of("response.event"):
        parsed = NESTED.validate_python(e["event"])
        assert parsed.type == e["event"]["type"], f"nested {e['event']['type']} parsed as {type(parsed).__name__}"
        assert not parsed.model_extra, f"nested {parsed.type}: undeclared {sorted(parsed.model_extra or {})}"
        out.append(e)
    return out


async def test_a_client_delegation_is_answered_by_commentary(client: AsyncOpenAI, control: MockClient) -> None:
    """The delegation's id is taken by the appends, and the commentary is said. The acknowledgement is kept out
    of the way (a minute's delay): whether an append cancels it depends on which comes first, a rule the core's
    unit tests check on a manual clock, never by racing the mock here."""
    delay_ms = 60_000
    call_id, live_id = await delegated_call(control, client, {"type": "client", "acknowledgement_delay_ms": delay_ms})
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await control.say(call_id, "caller_policy_number", speed=4)
        created = await sb.until("session.delegation.created")
        delegation = created["delegation"]
        assert delegation["target"] == "client" and "response_id" not in delegation
        heard = sb.of("session.input_transcript.delta")
        assert heard and created["offset_ms"] >= heard[-1]["end_ms"]
        await sb.conn.session.thinking.append(content="Looking the policy up.", delegation_id=delegation["id"],
                                              event_id="t1")
        await sb.until("session.thinking.appended", client_event_id="t1")
        await sb.conn.session.commentary.append(content=AFTER_TOOL, delegation_id=delegation["id"], event_id="c1")
        await sb.until("session.commentary.appended", client_event_id="c1")
        said = await sb.text_of("session.output_transcript.delta", AFTER_TOOL)  # the model says the answer
        assert said[0]["start_ms"] >= created["offset_ms"]
        assert sb.of("session.output_audio.delta")
        assert "".join(e["delta"] for e in sb.of("session.output_transcript.delta")) == AFTER_TOOL
        await sb.conn.session.commentary.append(content="x", delegation_id="del_unknown", event_id="c2")
        refused = await sb.until("error")
        assert (refused["error"]["code"], refused["client_event_id"]) == ("delegation_not_found", "c2")
    view = await control.call(call_id)
    sent = [e.data["event"] for e in view.of_kind("live.server")]
    assert [e["delegation"]["id"] for e in sent if e["type"] == "session.delegation.created"] == [delegation["id"]]
    assert view.of_kind("audio.out")  # what the caller was played


async def test_a_responses_delegation_calls_the_function_and_the_model_says_the_result(
        client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await delegated_call(control, client, {
        "type": "responses", "acknowledgement_delay_ms": 0,
        "responses": {"model": "gpt-5.5", "instructions": "Look policies up.", "tools": [LOOKUP_TOOL]}})
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await control.say(call_id, "caller_policy_number", speed=4)
        delegation = (await sb.until("session.delegation.created"))["delegation"]
        assert delegation["target"] == "responses"
        async with asyncio.timeout(WAIT_S):
            while not any(e["event"]["type"] == "response.completed" for e in sb.of("response.event")):
                await sb.next()
        first = nested(sb)
        assert {e.get("delegation_id") for e in first} == {delegation["id"]}
        inner = [e["event"] for e in first]
        assert inner[0]["type"] == "response.created" and inner[0]["response"]["id"] == delegation["response_id"]
        done = inner[-1]["response"]
        assert done["output"] == [] and done["tools"] == [] and done["instructions"] is None and "input" not in done
        (call,) = [e["item"] for e in inner if e["type"] == "response.output_item.done"]
        assert (call["type"], call["name"], call["call_id"]) == ("function_call", "lookup_policy", "call_p1")
        await sb.text_of("session.output_transcript.delta", "One moment.")  # the acknowledgement, delay 0
        await sb.conn.response.item.create(item={"type": "function_call_output", "call_id": call["call_id"],
                                                 "output": '{"status": "active"}'})
        await sb.conn.response.create(event_id="r1")
        await sb.text_of("session.output_transcript.delta", "One moment." + AFTER_TOOL)
        second = [e for e in nested(sb) if e.get("client_event_id") == "r1"]
        assert {e["delegation_id"] for e in second} == {delegation["id"]}
        text = "".join(e["event"]["delta"] for e in second if e["event"]["type"] == "response.output_text.delta")
        assert text == AFTER_TOOL and second[-1]["event"]["type"] == "response.completed"


async def test_a_primary_websocket_delegates_too_and_hears_its_commentary(client: AsyncOpenAI,
                                                                         control: MockClient) -> None:
    await control.configure(script=SCRIPT)
    async with primary(client) as p:
        await p.start(delegation={"type": "client", "acknowledgement_delay_ms": 0})
        await p.say(caller_turn(), 8000, "audio/pcm")
        delegation = (await p.until("session.delegation.created"))["delegation"]
        await p.text_of("session.output_transcript.delta", "One moment.")
        await p.conn.session.commentary.append(content=AFTER_TOOL, delegation_id=delegation["id"])
        await p.text_of("session.output_transcript.delta", "One moment." + AFTER_TOOL)
        out = p.of("session.output_audio.delta")
        assert out and all("start_ms" not in e for e in out)  # the primary's own audio, no timestamps


async def test_the_session_end_fault_is_the_cores_timer_and_is_journaled(client: AsyncOpenAI,
                                                                        control: MockClient) -> None:
    fault = {"name": "live_session_end", "after_s": 0.5, "reason": "connection_lost"}
    call_id, _ = await delegated_call(control, client, {"type": "client"}, [fault])
    view = await control.wait_for(call_id, lambda v: v.state == "ended", timeout=WAIT_S)
    (fired,) = view.of_kind("fault.fired")
    assert fired.data["fault"] == "live_session_end" and "connection_lost" in fired.data["detail"]
    (closed,) = [e.data["event"] for e in view.of_kind("live.server") if e.data["event"]["type"] == "session.closed"]
    assert closed["reason"] == "connection_lost" and closed["usage"]["seconds"] == 0.0
    kinds = view.kinds()
    assert kinds.index("fault.fired") < max(i for i, k in enumerate(kinds) if k == "live.server")


async def test_response_commands_without_responses_delegation_get_the_live_error(client: AsyncOpenAI,
                                                                                 control: MockClient) -> None:
    """``response.create`` (and ``response.item.create``) need Responses delegation: under ``client`` delegation
    each gets the Live ``error`` event (the SDK's ``ErrorEvent``, checked by the sideband's union) addressed by
    its ``event_id``, and no nested response starts."""
    call_id, live_id = await delegated_call(control, client, {"type": "client"})
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await sb.conn.response.item.create(item={"type": "function_call_output", "call_id": "call_p1",
                                                 "output": "{}"}, event_id="i1")
        await sb.conn.response.create(event_id="r1")
        for event_id in ("i1", "r1"):
            err = await sb.until("error", client_event_id=event_id)
            assert err["error"] == {"type": "invalid_request_error", "code": "responses_delegation_required",
                                    "message": err["error"]["message"], "param": "type",
                                    "client_event_id": event_id}
            assert "Responses delegation" in err["error"]["message"]
        assert not sb.of("response.event")
    view = await control.call(call_id)
    assert view.state == "active"  # a refused command changes nothing


def test_the_core_knows_which_tool_output_a_response_create_still_lacks() -> None:
    """What the command handler asks before continuing a delegation (the Responses API's "No tool output
    found"): the unanswered call of the delegation the response would continue, and nothing once answered."""
    b = delegating({"type": "responses", "acknowledgement_delay_ms": 0,
                    "responses": {"model": "gpt-5.5", "tools": [WEATHER_TOOL]}})
    assert b.session._missing_tool_output() is None  # nothing delegated yet: a response stands alone
    b.speech("weather in Paris", 0, 800)
    assert b.session._missing_tool_output() == "No tool output found for function call call_w1."
    b.send("sb", {"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_w1", "output": "21"}})
    assert b.session._missing_tool_output() is None
