"""The 2026 production reports as faults (docs/failure-modes.md 25 and 27), on the session core's manual clock.

Every event the session emits is parsed with the SDK's models by the Driver.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from pydantic import ValidationError

from mock_api.client import MockClient
from mock_api.config import FieldProblem, check_faults
from mock_api.faults import FAULTS, Fault
from mock_api.realtime.responses import UNAVAILABLE_ERROR
from mock_api.running import RunningMock
from tests.realtime_fixtures import Driver

SCRIPT = {"greeting": "Thank you for calling.", "response_latency_s": 0,
          "turns": [{"says": "I found your policy."}]}
USER_TEXT = {"type": "conversation.item.create", "item": {
    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "My policy is 5665-2870."}]}}
AZURE_ACCEPT = {"type": "realtime", "model": "gpt-realtime", "instructions": "You are Alex."}  # Azure needs all three
PCMU_BOTH = {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}


def respond(d: Driver) -> dict[str, Any]:
    """One response.create, run to its end: the response as response.done shows it."""
    d.send({"type": "response.create"})
    d.advance(5)
    return d.of("response.done")[-1]["response"]


def said(response: dict[str, Any]) -> str:
    return "".join(c.get("transcript") or c.get("text") or "" for item in response["output"]
                   for c in item.get("content") or [])


# ---- response_failed (failure mode 25) -------------------------------------------------------------


def test_the_nth_response_fails_as_the_report_shows_and_the_socket_goes_on() -> None:
    d = Driver(script=SCRIPT, faults=[Fault(name="response_failed")])  # nth 2: the first reply after the greeting
    assert respond(d)["status"] == "completed"
    d.send(USER_TEXT)
    failed = respond(d)
    assert failed["status"] == "failed" and failed["output"] == []
    assert failed["status_details"] == {"type": "failed", "reason": None, "error": UNAVAILABLE_ERROR}
    assert UNAVAILABLE_ERROR["code"] == "inference_service_unavailable_error"
    assert failed["usage"]["input_tokens"] > 0 and failed["usage"]["output_tokens"] == 0
    assert d.session.active_response_id is None and not d.session.closed
    retried = respond(d)  # the app's retry: the same turn's answer, which the failed one never used up
    assert retried["status"] == "completed" and said(retried) == "I found your policy."


def test_count_fails_that_many_in_a_row() -> None:
    d = Driver(script=SCRIPT, faults=[Fault(name="response_failed", nth=1, count=2)])
    assert [respond(d)["status"] for _ in range(3)] == ["failed", "failed", "completed"]
    assert said(d.of("response.done")[-1]["response"]) == "Thank you for calling."


def test_without_the_fault_no_response_fails() -> None:
    d = Driver(script=SCRIPT)
    assert [respond(d)["status"] for _ in range(3)] == ["completed"] * 3


# ---- forced_format_static (failure mode 27) ------------------------------------------------------


def sip_reply_audio(faults: list[Fault], accept_audio: dict[str, Any] | None = None,
                    update_audio: dict[str, Any] | None = None, transport: str = "sip") -> Driver:
    config: dict[str, Any] = {"type": "realtime"}
    if accept_audio is not None:
        config["audio"] = accept_audio
    d = Driver(transport=transport, config=config, faults=faults, script=SCRIPT)
    if update_audio is not None:
        (updated,) = d.send({"type": "session.update", "session": {"type": "realtime", "audio": update_audio}})
        assert updated["type"] == "session.updated"
    respond(d)
    return d


def test_a_format_named_in_the_accept_garbles_the_reply_and_the_events_stay_normal() -> None:
    d = sip_reply_audio([Fault(name="forced_format_static")], accept_audio=PCMU_BOTH)
    assert d.audio and all(a.corrupt for a in d.audio)
    assert not d.of("error") and said(d.of("response.done")[-1]["response"]) == "Thank you for calling."


@pytest.mark.parametrize("accept_audio", [None, {"output": {"voice": "marin"}}])
def test_an_accept_without_a_format_plays_clean(accept_audio: dict[str, Any] | None) -> None:
    d = sip_reply_audio([Fault(name="forced_format_static")], accept_audio=accept_audio)
    assert d.audio and not any(a.corrupt for a in d.audio)


def test_one_side_is_enough() -> None:
    d = sip_reply_audio([Fault(name="forced_format_static")], accept_audio={"input": PCMU_BOTH["input"]})
    assert d.audio and all(a.corrupt for a in d.audio)


@pytest.mark.parametrize(("via", "corrupt"), [("accept", False), ("any", True)])
def test_via_says_whether_a_later_update_counts(via: str, corrupt: bool) -> None:
    d = sip_reply_audio([Fault(name="forced_format_static", via=via)], update_audio=PCMU_BOTH)
    assert d.audio and all(a.corrupt == corrupt for a in d.audio)


def test_silence_keeps_the_length_and_is_not_static() -> None:
    loud = sip_reply_audio([], accept_audio=PCMU_BOTH)
    quiet = sip_reply_audio([Fault(name="forced_format_static", effect="silence")], accept_audio=PCMU_BOTH)
    assert [len(a.pcm) for a in quiet.audio] == [len(a.pcm) for a in loud.audio]
    assert any(a.pcm.strip(b"\0") for a in loud.audio)
    assert all(not a.pcm.strip(b"\0") and not a.corrupt for a in quiet.audio)


def test_only_sip_calls() -> None:
    d = Driver(config={"type": "realtime", "audio": PCMU_BOTH}, faults=[Fault(name="forced_format_static")],
               script=SCRIPT)
    assert respond(d)["status"] == "completed" and not d.session._media_corrupt()


# ---- the door: parameters are checked when the fault is named ------------------------------------


@pytest.mark.parametrize(("fault", "words"), [
    ({"name": "response_failed", "nth": 0}, "whole number from 1"),
    ({"name": "response_failed", "count": 1.5}, "whole number from 1"),
    ({"name": "response_failed", "after": 1}, "takes no parameter 'after'"),
    ({"name": "forced_format_static", "effect": "noise"}, "is one of static, silence"),
    ({"name": "forced_format_static", "via": "update"}, "is one of accept, any"),
])
def test_bad_parameters_are_refused_at_the_door(fault: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Fault.model_validate(fault)


def test_check_faults_takes_the_defaults_types() -> None:
    assert check_faults([Fault(name="response_failed", nth=3, count=2)])
    with pytest.raises(FieldProblem):
        check_faults([Fault.model_construct(name="response_failed", nth=-1)])


def test_the_registry_names_their_failure_modes() -> None:
    assert (FAULTS["response_failed"].section, FAULTS["forced_format_static"].section) == ("25", "27")
    assert FAULTS["response_failed"].layer == FAULTS["forced_format_static"].layer == "session"


# ---- refer_500 (failure mode 24) and accept_slow_404 (failure mode 22): the REST layer -----------


async def test_refer_500_answers_json_and_the_call_goes_on(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call(faults=["refer_500"])
    await client.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(openai.InternalServerError) as exc:
        await client.realtime.calls.refer(call_id, target_uri="tel:+15555550199")
    assert exc.value.status_code == 500 and exc.value.type == "server_error"
    view = await control.call(call_id)
    assert view.state == "active" and view.refer_target is None
    assert [e.data["fault"] for e in view.of_kind("fault.fired")] == ["refer_500"]
    assert "SendRefer" not in [e.data["effect"] for e in view.of_kind("call.effect")]


@pytest.mark.parametrize(("body", "path", "plain"), [("text", "/v1", True), ("auto", "/openai/v1", True),
                                                      ("auto", "/v1", False)])
async def test_refer_500_plain_text_as_azure_answered(mock: RunningMock, control: MockClient, body: str, path: str,
                                                      plain: bool) -> None:
    call_id = await control.start_call(faults=[{"name": "refer_500", "body": body}])
    root = mock.base_url.removesuffix("/v1")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-test-key", "api-key": "sk-test-key"}) as http:
        async with http.post(f"{root}{path}/realtime/calls/{call_id}/accept", json=AZURE_ACCEPT) as resp:
            assert resp.status == 200
        async with http.post(f"{root}{path}/realtime/calls/{call_id}/refer", json={"target_uri": "tel:1"}) as resp:
            assert resp.status == 500
            text = await resp.text()
            assert (resp.content_type, text) == (("text/plain", "Internal Server Error") if plain else
                                                 ("application/json", text))
            if not plain:
                assert json.loads(text)["error"]["type"] == "server_error"


async def test_accept_slow_404_answers_late_and_fails_the_call(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call(faults=[{"name": "accept_slow_404", "delay_s": 0.3}])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(openai.NotFoundError) as exc:
        await client.realtime.calls.accept(call_id, type="realtime")
    assert loop.time() - started >= 0.3 and exc.value.code == "call_id_not_found"
    view = await control.call(call_id)
    assert (view.state, view.sip_final_status, view.end_reason) == ("failed", 480, "accept_slow_404")
    assert [e.data["fault"] for e in view.of_kind("fault.fired")] == ["accept_slow_404"]
