"""Issue 15: errors at the door, only valid JSON in and out, the smaller repros (a real mock over real sockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI, BadRequestError

from mock_api import wire_json
from mock_api.client import MockClient, MockControlError
from mock_api.running import RunningMock
from tests.helpers import until

AUTH = {"Authorization": "Bearer sk-test-key", "Content-Type": "application/json"}


async def post(url: str, body: bytes | str, method: str = "POST") -> tuple[int, Any, str]:
    """Send ``body`` as it is; the answer's status, parsed JSON (strict) and raw text."""
    async with aiohttp.ClientSession() as http, http.request(method, url, data=body, headers=AUTH) as r:
        text = await r.text()
        return r.status, wire_json.loads(text) if text else None, text


def shaped(answer: Any, param: str | None = None) -> dict[str, Any]:
    """The API's error envelope, with the parameter it names."""
    err = answer["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param, err
    return dict(err)


# ---- only valid JSON in ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ['{"type": "realtime", "audio": {"output": {"speed": NaN}}}',
                                 '{"type": "realtime", "audio": {"output": {"speed": Infinity}}}',
                                 '{"type": "realtime", "audio": {"output": {"speed": 1e999}}}',
                                 "[" * 100_000 + "]" * 100_000])
async def test_rest_refuses_what_is_not_json(mock: RunningMock, control: MockClient, raw: str) -> None:
    call_id = await control.start_call()
    status, answer, _ = await post(f"{mock.base_url}/realtime/calls/{call_id}/accept", raw)
    assert status == 400
    assert "could not parse the JSON body" in shaped(answer)["message"]
    assert (await control.call(call_id)).state == "ringing"


@pytest.mark.parametrize("raw", ['{"ring_timeout_s": NaN}', '{"ring_timeout_s": 1e999}', '{"retry": {"multiplier": '
                                 'Infinity}}'])
async def test_control_api_refuses_what_is_not_json(mock: RunningMock, control: MockClient, raw: str) -> None:
    before = await control.config()
    status, answer, _ = await post(mock.url + "/_mock/config", raw, "PUT")
    assert status == 400
    shaped(answer)
    assert await control.config() == before


async def test_nested_tool_parameters_are_refused_and_calls_stay_readable(
        mock: RunningMock, client: AsyncOpenAI, control: MockClient) -> None:
    params: dict[str, Any] = {"type": "object"}
    for _ in range(200):
        params = {"type": "object", "properties": {"x": params}}
    call_id = await control.start_call()
    with pytest.raises(BadRequestError):
        await client.realtime.calls.accept(call_id, type="realtime", tools=[
            {"type": "function", "name": "deep", "parameters": params}])
    assert [c.call_id for c in await control.calls()] == [call_id]  # GET /_mock/calls keeps working


async def test_client_secrets_and_builtins_refuse_bad_json(mock: RunningMock) -> None:
    status, answer, _ = await post(mock.base_url + "/realtime/client_secrets", '{"session": {"type": "realtime", '
                                   '"audio": {"output": {"speed": NaN}}}}')
    assert status == 400 and shaped(answer)
    status, answer, _ = await post(mock.base_url + "/responses", '{"model": "gpt-4o", "temperature": Infinity}')
    assert status == 400 and shaped(answer)
    status, answer, _ = await post(mock.base_url + "/responses", '{"model": "gpt-4o", "temperature": "hot"}')
    assert status == 400 and shaped(answer, "temperature")["code"] == "invalid_type"
    status, answer, _ = await post(mock.base_url + "/chat/completions", '{"model": 5, "messages": [{"role": '
                                   '"user", "content": "hi"}]}')
    assert status == 400 and shaped(answer, "model")


async def test_websocket_refuses_nan_and_never_sends_it(mock: RunningMock) -> None:
    url = mock.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=AUTH) as sock:
        await sock.receive_str()
        await sock.send_str('{"type": "session.update", "session": {"type": "realtime", "audio": {"output": '
                            '{"speed": NaN}}}}')
        answer = wire_json.loads(await sock.receive_str())  # strict: a NaN in it would raise here
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"


# ---- control-API bodies checked whole when received --------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    ({"faults": [{"name": "webhook_delay", "seconds": "x"}]}, "faults[0].seconds"),
    ({"faults": ["ws_drop", {"name": "random_hangup", "after_s": "soon"}]}, "faults[1].after_s"),
    ({"faults": [{"name": "webhook_duplicate", "copies": 1.5}]}, "faults[0].copies"),
    ({"faults": [{"name": "ws_drop", "after_s": -1}]}, "faults[0].after_s"),
    ({"script": {"turns": [{"says": 5}]}}, "script.turns[0].says"),
    ({"script": {"generation_speed": "fast"}}, "script.generation_speed"),
])
async def test_start_call_checks_faults_and_scripts(mock: RunningMock, control: MockClient, body: dict[str, Any],
                                                    param: str) -> None:
    status, answer, _ = await post(mock.url + "/_mock/calls", json.dumps(body))
    assert status == 400
    err = shaped(answer, param)
    assert param in err["message"]
    assert await control.calls() == []  # nothing half-made


async def test_config_patch_is_all_or_nothing(mock: RunningMock, control: MockClient) -> None:
    before = await control.config()
    with pytest.raises(MockControlError) as refused:
        await control.configure(ring_timeout_s=5, faults=[{"name": "webhook_delay", "seconds": "x"}])
    assert refused.value.status == 400 and refused.value.body["error"]["param"] == "faults[0].seconds"
    with pytest.raises(MockControlError) as refused:
        await control.configure(script={"turns": "none"})
    assert refused.value.body["error"]["param"] == "script.turns"
    assert await control.config() == before
    assert "Task exception" not in json.dumps(await control.server_journal())


# ---- the smaller ones ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["sip:+15551234567@example.com\r\nX-Injected: 1", "javascript:alert(1)",
                                    "http://example.com", "tel:+1 555"])
async def test_refer_target_must_be_a_sip_or_tel_uri(client: AsyncOpenAI, control: MockClient,
                                                     target: str) -> None:
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(BadRequestError) as refused:
        await client.realtime.calls.refer(call_id, target_uri=target)
    assert refused.value.param == "target_uri"
    assert (await control.call(call_id)).state == "active"


async def test_refer_to_a_tel_uri_still_works(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, type="realtime")
    await client.realtime.calls.refer(call_id, target_uri="tel:+15551234567")
    assert (await control.wait_for(call_id, lambda v: v.state == "referred")).refer_target == "tel:+15551234567"


async def test_say_a_file_that_is_not_audio(client: AsyncOpenAI, control: MockClient, tmp_path: Path) -> None:
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, type="realtime")
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("root:x:0:0:root:/root:/bin/bash\n" * 100)
    for path in (str(not_audio), "/etc/passwd"):
        with pytest.raises(MockControlError) as refused:
            await control.say(call_id, path=path)
        assert refused.value.status == 400
        err = refused.value.body["error"]
        assert err["param"] == "path" and "not audio" in err["message"]


async def test_socket_refusals_name_the_error_in_the_close(mock: RunningMock) -> None:
    url = mock.url.replace("http://", "ws://") + "/v1/realtime"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=AUTH) as sock:  # no model: a request-shape failure
            event = await sock.receive_json()
            await sock.receive()
        assert event["error"]["code"] == "missing_model" and sock.close_code == 4000
        async with http.ws_connect(url + "?model=gpt-realtime", headers={"Authorization": "Bearer ek_unknown"}) \
                as sock:
            event = await sock.receive_json()
            await sock.receive()
        assert event["error"]["code"] == "invalid_api_key" and sock.close_code == 3000
    closes = await until(lambda: [e.data for e in mock.server.journal.entries(None, "ws.close")][1:] and
                         [e.data for e in mock.server.journal.entries(None, "ws.close")], what="both closes")
    assert {"code": 4000, "reason": "invalid_request_error.missing_model"} in closes
    assert {"code": 3000, "reason": "invalid_request_error.invalid_api_key"} in closes


async def test_unknown_method_and_aiohttp_refusals_are_shaped(mock: RunningMock) -> None:
    status, answer, _ = await post(mock.base_url + "/realtime/calls/rtc_x/accept", "{}", "DELETE")
    assert status == 404 and shaped(answer)


@pytest.mark.parametrize("name", ["faults", "audio_library", "ws_max_message_bytes", "webhook_secret", "strict_accept"])
async def test_null_only_where_a_setting_can_be_off(mock: RunningMock, control: MockClient, name: str) -> None:
    with pytest.raises(MockControlError) as refused:
        await control.configure(**{name: None})
    assert refused.value.status == 400 and refused.value.body["error"]["param"] == name
    url = mock.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=AUTH) as sock:
        assert (await sock.receive_json())["type"] == "session.created"  # the next socket still works
    await control.configure(webhook_url=None, retain_ended_calls=None)  # these can be off
