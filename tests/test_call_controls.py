"""REST call controls through the official SDK, and every bad input the issue lists."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from harness.softphone import Softphone
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.sip_helpers import App, Receiver

# Any: splatted into the SDK as keyword arguments; BETA_ACCEPT carries a field the SDK does not type
GA_ACCEPT: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime", "instructions": "You are Alex."}
BETA_ACCEPT: dict[str, Any] = {
    "type": "realtime", "model": "gpt-4o-mini-realtime-preview-2024-12-17", "instructions": "Jessica",
    # a beta field, sent the way an SDK app would smuggle it in
    "extra_body": {"input_audio_transcription": {"model": "whisper-1", "language": "es"}}}


async def test_accept_then_hangup(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call()
    # the SDK types these as returning nothing; the test pins that the 200 has no body the SDK would parse
    assert await client.realtime.calls.accept(call_id, **GA_ACCEPT) is None  # type: ignore[func-returns-value]
    view = await control.call(call_id)
    assert view.state == "active"
    assert view.accept_body == GA_ACCEPT
    assert await client.realtime.calls.hangup(call_id) is None  # type: ignore[func-returns-value]
    view = await control.call(call_id)
    assert (view.state, view.end_reason) == ("ended", "hangup")
    with pytest.raises(openai.NotFoundError) as exc:
        await client.realtime.calls.hangup(call_id)
    assert exc.value.code == "call_id_not_found"
    assert "No session found for the provided call_id" in exc.value.message


async def test_reject_codes(client: AsyncOpenAI, control: MockClient) -> None:
    busy = await control.start_call()
    await client.realtime.calls.reject(busy, status_code=486)
    default = await control.start_call()
    await client.realtime.calls.reject(default)
    assert (await control.call(busy)).sip_final_status == 486
    view = await control.call(default)
    assert (view.state, view.sip_final_status) == ("rejected", 603)


async def test_refer_records_target(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, type="realtime")
    await client.realtime.calls.refer(call_id, target_uri="tel:+14155550123")
    view = await control.wait_for(call_id, lambda v: v.terminal)
    assert (view.state, view.refer_target) == ("referred", "tel:+14155550123")
    effects = [e.data["effect"] for e in view.of_kind("call.effect")]
    assert effects.index("SendRefer") < effects.index("EndSession")


async def test_refer_noop_fault_keeps_call_active(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call(faults=["refer_noop"])
    await client.realtime.calls.accept(call_id, type="realtime")
    await client.realtime.calls.refer(call_id, target_uri="sip:agent@example.com")
    view = await control.call(call_id)
    assert view.state == "active" and "call.refer_noop" in view.kinds()


async def test_unknown_call_and_bad_keys(client: AsyncOpenAI, mock: RunningMock, control: MockClient) -> None:
    for op in ("accept", "reject", "refer", "hangup"):
        kwargs = {"accept": {"type": "realtime"}, "refer": {"target_uri": "tel:1"}}.get(op, {})
        with pytest.raises(openai.NotFoundError):
            await getattr(client.realtime.calls, op)("rtc_0000000000000000000000000000dead", **kwargs)
    call_id = await control.start_call()
    bad = AsyncOpenAI(api_key="not-a-key", base_url=mock.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        await bad.realtime.calls.accept(call_id, type="realtime")
    assert exc.value.code == "invalid_api_key"
    async with aiohttp.ClientSession() as http, http.post(f"{mock.base_url}/realtime/calls/{call_id}/hangup") as resp:
        assert resp.status == 401
        body = await resp.json()
        assert body["error"]["type"] == "invalid_request_error"
        assert "didn't provide an API key" in body["error"]["message"]
    assert (await control.call(call_id)).state == "ringing"


async def test_invalid_accept_answers_200_then_fails(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, **BETA_ACCEPT)
    view = await control.call(call_id)
    assert view.state == "failed"
    assert "input_audio_transcription" in (view.end_reason or "")
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(call_id)


async def test_strict_accept_answers_400(client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(strict_accept=True)
    call_id = await control.start_call()
    with pytest.raises(openai.BadRequestError) as exc:
        await client.realtime.calls.accept(call_id, **BETA_ACCEPT)
    assert exc.value.code == "unknown_parameter"
    assert exc.value.param == "input_audio_transcription"
    assert (await control.call(call_id)).state == "ringing"
    await client.realtime.calls.accept(call_id, **GA_ACCEPT)
    assert (await control.call(call_id)).state == "active"


async def test_sip_leg_gets_its_bye_after_the_200_to_an_invalid_accept(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone) -> None:
    """Failure mode 5 over SIP, as the call table orders it: the fault overrides strict_accept, the leg is
    answered, and its BYE leaves the fault's ``after_s`` after the table said so."""
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(strict_accept=True, faults=[{"name": "accept_invalid_hangup", "after_s": 0.4}])
    receiver.app = App(mock, accept=BETA_ACCEPT)
    call = await sip_phone.call(mock.sip.uri())
    assert await call.answered(timeout=10)
    await call.ended(timeout=10)
    assert call.ended_by == "remote"
    [view] = await control.calls()
    view = await control.wait_for(view.call_id, lambda v: "sip.ended" in v.kinds())
    assert view.state == "failed" and (view.end_reason or "").startswith("invalid_session_config")
    ordered = [e for e in view.of_kind("call.effect") if e.data["effect"] == "SendBye"]
    bye = [e for e in view.of_kind("sip.sent") if e.data.get("request") == "BYE"]
    assert len(ordered) == 1 and len(bye) == 1
    assert bye[0].t_ms - ordered[0].t_ms >= 400 - 1  # the journal's times are rounded


async def test_azure_flavour(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    async with aiohttp.ClientSession() as http:
        url = f"{mock.url}/openai/v1/realtime/calls/{call_id}/accept"
        body = {"type": "realtime", "model": "my-gpt-realtime-deployment", "instructions": "hi"}
        async with http.post(url, json=body, headers={"api-key": "sk-azure-key"}) as resp:
            assert resp.status == 200 and await resp.read() == b""
        async with http.post(url.replace("accept", "hangup"), headers={"api-key": "sk-azure-key"}) as resp:
            assert resp.status == 200
    view = await control.call(call_id)
    assert view.accept_body and view.accept_body["model"] == "my-gpt-realtime-deployment"
    assert view.state == "ended"


async def _raw(mock: RunningMock, method: str, path: str, data: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict]:
    hdrs = {"Authorization": "Bearer sk-test", **(headers or {})}
    async with aiohttp.ClientSession() as http, http.request(method, mock.url + path, data=data,
                                                              headers=hdrs) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(
    ("case", "expect_status", "expect_code"),
    [
        ("malformed_json", 400, None),
        ("wrong_content_type", 400, "unsupported_content_type"),
        ("too_large", 413, "request_too_large"),
        ("unknown_route", 404, None),
        ("wrong_method", 404, None),
        ("double_accept", 400, "call_already_accepted"),
        ("accept_after_hangup", 404, "call_id_not_found"),
        ("reject_after_accept", 400, "call_already_accepted"),
        ("refer_without_target", 400, "missing_required_parameter"),
        ("reject_bad_status", 400, "invalid_value"),
        ("body_not_object", 400, "invalid_type"),
    ],
)
async def test_bad_input(case: str, expect_status: int, expect_code: str | None, mock: RunningMock,
                         client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call()
    base = f"/v1/realtime/calls/{call_id}"
    ctype = {"Content-Type": "application/json"}
    if case == "malformed_json":
        status, body = await _raw(mock, "POST", base + "/accept", b'{"type": "realtime",', ctype)
        assert "could not parse the JSON body" in body["error"]["message"]
    elif case == "wrong_content_type":
        status, body = await _raw(mock, "POST", base + "/accept", b"type=realtime",
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    elif case == "too_large":
        status, body = await _raw(mock, "POST", base + "/accept", b'{"x":"' + b"a" * (2 << 20) + b'"}', ctype)
    elif case == "unknown_route":
        status, body = await _raw(mock, "POST", "/v1/realtime/calls/" + call_id + "/transfer", b"{}", ctype)
        assert body["error"]["message"] == f"Invalid URL (POST /v1/realtime/calls/{call_id}/transfer)"
    elif case == "wrong_method":
        status, body = await _raw(mock, "GET", base + "/accept")
    elif case == "double_accept":
        await client.realtime.calls.accept(call_id, type="realtime")
        status, body = await _raw(mock, "POST", base + "/accept", b'{"type":"realtime"}', ctype)
    elif case == "accept_after_hangup":
        await client.realtime.calls.accept(call_id, type="realtime")
        await client.realtime.calls.hangup(call_id)
        status, body = await _raw(mock, "POST", base + "/accept", b'{"type":"realtime"}', ctype)
        assert body["error"]["message"] == "No session found for the provided call_id"
    elif case == "reject_after_accept":
        await client.realtime.calls.accept(call_id, type="realtime")
        status, body = await _raw(mock, "POST", base + "/reject", b'{"status_code":486}', ctype)
    elif case == "refer_without_target":
        await client.realtime.calls.accept(call_id, type="realtime")
        status, body = await _raw(mock, "POST", base + "/refer", b"{}", ctype)
        assert body["error"]["param"] == "target_uri"
    elif case == "reject_bad_status":
        status, body = await _raw(mock, "POST", base + "/reject", b'{"status_code":200}', ctype)
    else:
        status, body = await _raw(mock, "POST", base + "/accept", b'["realtime"]', ctype)
    assert status == expect_status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == expect_code
    # the server keeps serving and the journal holds the whole call
    assert (await control.start_call()).startswith("rtc_")
    view = await control.call(call_id)
    if case not in ("unknown_route", "wrong_method"):
        responses = view.of_kind("rest.response")
        assert responses and responses[-1].data["status"] == expect_status
    else:
        server_entries = await control.server_journal()
        assert server_entries[-1]["kind"] == "http.unknown_route"
    seqs = [e.seq for e in view.entries]
    assert seqs == sorted(seqs)


async def test_control_api_errors(mock: RunningMock, control: MockClient) -> None:
    status, body = await _raw(mock, "POST", "/_mock/calls", b'{"faults": ["no_such_fault"]}',
                              {"Content-Type": "application/json"})
    assert status == 400 and "unknown fault" in body["error"]["message"]
    status, body = await _raw(mock, "PUT", "/_mock/config", b'{"retry": {"max_attempts": 0}}',
                              {"Content-Type": "application/json"})
    assert status == 400 and body["error"]["param"] == "retry.max_attempts"
    status, body = await _raw(mock, "GET", "/_mock/calls/rtc_nope")
    assert status == 404 and body["error"]["code"] == "call_id_not_found"
    status, body = await _raw(mock, "GET", "/_mock/sip")  # this mock runs without a SIP ingress
    assert status == 404 and body["error"]["code"] == "sip_not_running"


async def test_no_answer_timeout_and_caller_cancel(mock: RunningMock, control: MockClient,
                                                   client: AsyncOpenAI) -> None:
    unanswered = await control.start_call(faults=[{"name": "no_answer_timeout", "seconds": 0.2}])
    view = await control.wait_for(unanswered, lambda v: v.terminal, timeout=3)
    assert (view.state, view.sip_final_status) == ("no_answer", 408)
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.accept(unanswered, type="realtime")
    cancelled = await control.start_call()
    view = await control.caller_hangup(cancelled)
    assert (view.state, view.end_reason) == ("ended", "caller_cancelled")


async def test_random_hangup_ends_an_accepted_call_from_the_far_side(control: MockClient,
                                                                    client: AsyncOpenAI) -> None:
    call_id = await control.start_call(faults=[{"name": "random_hangup", "after_s": 0.2}])
    await client.realtime.calls.accept(call_id, **GA_ACCEPT)
    view = await control.wait_for(call_id, lambda v: v.terminal, timeout=5)
    assert (view.state, view.end_reason) == ("ended", "caller_hangup")
    assert view.of_kind("state")[-1].data["source"] == "fault"


async def test_reset_clears_everything(mock: RunningMock, control: MockClient) -> None:
    await control.start_call()
    await control.reset()
    assert await control.calls() == []
    assert mock.server.pending_tasks == 0


async def test_retain_ended_calls_keeps_memory_bounded(mock: RunningMock, control: MockClient,
                                                      client: AsyncOpenAI) -> None:
    await control.configure(retain_ended_calls=2)
    ended = []
    for _ in range(4):
        call_id = await control.start_call()
        await client.realtime.calls.reject(call_id)
        ended.append(call_id)
    live = await control.start_call()
    ids = {v.call_id for v in await control.calls()}
    assert ids == {ended[2], ended[3], live}  # the two oldest ended calls are forgotten, the live one stays
    assert set(mock.server.journal.call_ids()) == ids
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(ended[0])
