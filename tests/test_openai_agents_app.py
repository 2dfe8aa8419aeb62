"""An app built on openai-agents (examples/agents_sip_app.py) runs against the mock over a real SIP/TLS call.

OpenAI's own SIP sample accepts with the SDK's generic ``client.post(".../accept", cast_to=dict)`` and then
attaches the Agents SDK's realtime SIP model by ``call_id``. ``scenarios/examples/agents_sip_app.yaml`` runs
our own app built that way through the scenario runner: a softphone call in which the triage agent greets,
the caller's policy number goes through a function tool, the caller's request for a person hands the call
to the claims agent, and the hang-up drops the socket without a close frame. Beyond the scenario's own
expectations, the journal must show each of those steps on the wire, in order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from audio_fixtures import fixture
from examples.agents_sip_app import CLAIMS_INSTRUCTIONS, GREETING, TRIAGE_INSTRUCTIONS
from harness.runner import ScenarioResult, run_scenario
from harness.scenario import Scenario, load_scenario
from mock_api.control_models import CallView, JournalEntry

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "examples" / "agents_sip_app.yaml"
CALLER_CLIPS = ("caller_greeting", "caller_policy_number", "caller_ask_human")


def _events(call: CallView, kind: str, type_: str) -> list[tuple[JournalEntry, dict[str, Any]]]:
    """(entry, event) for each WebSocket event of ``type_`` one side sent (``ws.client`` / ``ws.server``)."""
    return [(e, e.data["event"]) for e in call.entries
            if e.kind == kind and isinstance(e.data.get("event"), dict) and e.data["event"].get("type") == type_]


def _tool_call(call: CallView, name: str) -> tuple[JournalEntry, dict[str, Any]]:
    calls = [(e, ev) for e, ev in _events(call, "ws.server", "response.function_call_arguments.done")
             if ev["name"] == name]
    assert len(calls) == 1, f"the fake model should call {name} once; it called it {len(calls)} times"
    return calls[0]


def _tool_output(call: CallView, call_id: str) -> tuple[JournalEntry, dict[str, Any]]:
    outputs = [(e, ev["item"]) for e, ev in _events(call, "ws.client", "conversation.item.create")
               if ev["item"].get("type") == "function_call_output" and ev["item"].get("call_id") == call_id]
    assert len(outputs) == 1, f"the app sent {len(outputs)} function_call_output items for {call_id}, not 1"
    return outputs[0]


def _lines(result: ScenarioResult) -> list[str]:
    return [line for _, line in result.app_output]


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    monkeypatch.setenv("RTSIP_STATE_DIR", str(tmp_path / "state"))  # the SIP certificates go here, not into ~
    return load_scenario(SCENARIO)


async def test_openai_agents_sip_app_end_to_end(scenario: Scenario) -> None:
    result = await run_scenario(scenario)
    output = "\n".join(_lines(result))
    assert result.passed, f"{result.verdict}\nnotes: {result.notes}\napp output:\n{output[-4000:]}"
    (call,) = result.calls
    assert call.transport == "sip"
    _check_generic_accept(call, output)
    _check_policy_tool(call, output)
    _check_handoff(call, scenario)
    _check_user_transcripts(call)
    _check_clean_end(call, result, output)


def _check_generic_accept(call: CallView, output: str) -> None:
    """The accept came from the SDK's generic post and was answered 200 with an empty body."""
    (request,) = [e for e in call.of_kind("rest.request") if e.data.get("op") == "accept"]
    assert request.data["path"] == f"/v1/realtime/calls/{call.call_id}/accept"
    assert request.data["headers"]["User-Agent"].startswith("AsyncOpenAI/Python"), request.data["headers"]
    body = request.data["body"]
    assert body["type"] == "realtime" and body["instructions"] == TRIAGE_INSTRUCTIONS
    responses = call.of_kind("rest.response")
    assert [(r.data["status"], r.data["body"]) for r in responses] == [(200, "")], (
        f"the accept must be answered 200 with no body; the mock answered {[r.data for r in responses]}")
    # ...and the generic post took it: no JSON content type to parse, so the SDK handed back the text
    assert re.search(rf"\[{call.call_id}\] accepted via client\.post: ''$", output, re.MULTILINE), output
    # the accept names the model the SIP model then names in every session.update: they never disagree
    updates = [ev["session"] for _, ev in _events(call, "ws.client", "session.update")]
    assert updates and {u.get("model") for u in updates} == {body["model"]}, (body["model"], updates)
    greeting = _events(call, "ws.server", "response.output_audio_transcript.done")[0][1]
    assert greeting["transcript"] == GREETING


def _check_policy_tool(call: CallView, output: str) -> None:
    """lookup_policy ran with the number the caller read out, and its output went back to the model."""
    entry, done = _tool_call(call, "lookup_policy")
    number = json.loads(done["arguments"])["policy_number"]
    assert number in fixture("caller_policy_number").text
    assert f'tool call lookup_policy({{"policy_number": "{number}"}})' in output
    sent, item = _tool_output(call, done["call_id"])
    result = json.loads(item["output"])
    assert result["found"] is True and result["policy_number"] == number, result
    assert sent.seq > entry.seq
    # the app asked for the answer that uses the output
    creates = [e for e, _ in _events(call, "ws.client", "response.create") if e.seq > sent.seq]
    assert creates, "no response.create after lookup_policy's output"


def _check_handoff(call: CallView, scenario: Scenario) -> None:
    """transfer_to_claims_agent: the claims agent's session.update goes out before the tool's output."""
    entry, done = _tool_call(call, "transfer_to_claims_agent")
    updates = [(e, ev["session"]) for e, ev in _events(call, "ws.client", "session.update")
               if ev["session"].get("instructions") == CLAIMS_INSTRUCTIONS]
    assert len(updates) == 1, "the handoff should send one session.update with the claims agent's instructions"
    update_entry, session = updates[0]
    assert [t["name"] for t in session.get("tools", [])] == [], "the claims agent has no tools"
    assert session["audio"]["output"]["format"]["type"] == "audio/pcmu", "the update must keep the SIP formats"
    sent, item = _tool_output(call, done["call_id"])
    assert entry.seq < update_entry.seq < sent.seq, "order: handoff call, session.update, function_call_output"
    assert "Claims Agent" in item["output"], item  # the transfer message names the new agent
    applied = [ev["session"] for e, ev in _events(call, "ws.server", "session.updated") if e.seq > update_entry.seq]
    assert applied and applied[0]["instructions"] == CLAIMS_INSTRUCTIONS
    after = [ev["transcript"] for e, ev in _events(call, "ws.server", "response.output_audio_transcript.done")
             if e.seq > sent.seq]
    assert after == [scenario.mock.script.turns[2].after_tool], "the claims agent answers once, after the handoff"


def _check_user_transcripts(call: CallView) -> None:
    """Every caller turn came back transcribed, as the clips' sidecars say it."""
    got = [ev["transcript"] for _, ev in
           _events(call, "ws.server", "conversation.item.input_audio_transcription.completed")]
    assert got == [fixture(name).text for name in CALLER_CLIPS]


def _check_clean_end(call: CallView, result: ScenarioResult, output: str) -> None:
    """The caller hung up, the mock dropped the socket, and the app took that as the end of the call."""
    assert call.state == "ended" and call.end_reason == "caller_hangup", (call.state, call.end_reason)
    closes = call.of_kind("ws.close")
    assert [c.data.get("dropped") for c in closes] == [True], f"the mock should drop the socket: {closes}"
    tail = [line for line in _lines(result) if call.call_id in line][-2:]
    assert tail == [f"[{call.call_id}] call ended: socket dropped without a close frame",
                    f"[{call.call_id}] session closed"], tail
    assert "Traceback" not in output
    assert not any(n.startswith("app exited") for n in result.notes), result.notes
