"""What the 100,000-case fuzz campaign (bench/bench_fuzz.py, seed 1) found, each pinned.

- an out-of-band ``response.create`` whose inline ``input`` holds a user message without an id crashed
  the session core (it looked the item up by id);
- a custom voice (``{"id": "voice_..."}``) was echoed as an object in ``response.audio.output.voice``,
  which the SDK's ``RealtimeResponse`` refuses (it is the voice's id there);
- ``PUT /_mock/config`` took a 2**64 ``ws_max_message_bytes``; aiohttp then mis-read every frame of the
  next socket (a protocol error instead of the API's answers);
- (a 30,000-case run later) a stub holding a lone surrogate was installed, then every listing of the stubs
  answered 500 (it cannot be encoded back).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from mock_api.client import MockClient, MockControlError
from mock_api.realtime.session import MockBug, RealtimeSession
from mock_api.running import running_mock

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def run(*frames: dict[str, Any]) -> list[dict[str, Any]]:
    session = RealtimeSession(kind="realtime", transport="websocket", model="gpt-realtime", now=0.0)
    out = list(session.start(0.0))
    for i, frame in enumerate(frames, 1):
        out += session.receive(json.dumps(frame), float(i))
    out += session.advance(100.0)
    assert not [o for o in out if isinstance(o, MockBug)]
    events = [o for o in out if isinstance(o, dict)]
    for event in events:
        SERVER_EVENT.validate_python(event)
    return events


def test_an_inline_user_item_without_an_id_gets_a_reply() -> None:
    events = run({"type": "response.create", "response": {
        "conversation": "none", "input": [{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What are your opening hours?"}]}]}})
    [done] = [e for e in events if e["type"] == "response.done"]
    assert done["response"]["status"] == "completed"
    assert not [e for e in events if e["type"] == "error"]


def test_a_custom_voice_is_its_id_in_a_response() -> None:
    events = run({"type": "session.update", "session": {"type": "realtime", "audio": {
        "output": {"voice": {"id": "voice_1234"}}}}}, {"type": "response.create"})
    voices = [e["response"]["audio"]["output"]["voice"] for e in events
              if e["type"] in ("response.created", "response.done")]
    assert voices == ["voice_1234", "voice_1234"]


@pytest.mark.parametrize("value", [2**64, 6227020799])
async def test_a_byte_limit_past_a_gib_is_refused_at_the_door(value: int) -> None:
    async with running_mock() as mock, MockClient(mock.url) as control:
        with pytest.raises(MockControlError) as refused:
            await control.configure(ws_max_message_bytes=value)
        assert refused.value.status in (400, 422)
        assert "ws_max_message_bytes" in json.dumps(refused.value.body)
        assert (await control.config())["ws_max_message_bytes"] == 24 * 1024 * 1024


@pytest.mark.parametrize("body", [
    b'[{"request": {"body": {"key \xed\xa0\x80": {}}}}]',  # invalid UTF-8: the bytes of a lone surrogate
    b'[{"request": {"query": {"q": "\\udb31"}}}]',  # valid JSON text, but an unpaired surrogate escape
])
async def test_stubs_with_a_lone_surrogate_are_refused_at_the_door(body: bytes) -> None:
    """The 30,000-case run after the journal changes: such a stub was installed, then listing it answered 500."""
    async with running_mock() as mock, aiohttp.ClientSession() as http:
        async with http.put(f"{mock.url}/_mock/stubs", data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert error["code"] == "invalid_value" and "surrogate" in error["message"]
        assert error["param"].startswith("[0].request.")  # where it is (a key's own bad bytes escaped)
        async with http.get(f"{mock.url}/_mock/stubs") as r:
            assert r.status == 200 and (await r.json())["stubs"] == []  # nothing half-applied
        assert not list(mock.server.journal.entries(None, "mock.bug"))


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/_mock/calls", b'{"from": "sip:\\ud800@127.0.0.1"}', "from"),
    ("/_mock/calls", b'{"headers": [{"name": "X-Tag", "value": "a\\udfff"}]}', "headers[0].value"),
    ("/_mock/config", b'{"webhook_url": "http://127.0.0.1:9/\\ud83d"}', "webhook_url"),
])
async def test_control_bodies_with_a_lone_surrogate_are_refused_at_the_door(path: str, body: bytes,
                                                                          param: str) -> None:
    """The 100,000-case run after issue 17: a call made with a lone surrogate in its caller was kept, and every
    ``GET /_mock/calls`` then answered 500 (its view could not be written as UTF-8) until the call was gone."""
    async with running_mock() as mock, aiohttp.ClientSession() as http:
        method = http.put if path == "/_mock/config" else http.post
        async with method(f"{mock.url}{path}", data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert (error["code"], error["param"]) == ("invalid_value", param) and "surrogate" in error["message"]
        async with http.get(f"{mock.url}/_mock/calls?entries=0") as r:
            assert r.status == 200 and (await r.json())["calls"] == []  # nothing was made
        assert not list(mock.server.journal.entries(None, "mock.bug"))


async def test_openai_bodies_and_socket_events_with_a_lone_surrogate_are_refused_at_the_door() -> None:
    """The 100,000-case run of this release: a lone surrogate reached a call's stored view through the OpenAI
    surface (not the control API), and ``GET /_mock/calls`` answered 500 again. Every body and client event is
    now checked where it is read: a REST body gets the 400, a socket event an ``invalid_value`` error, and the
    mock keeps nothing of either."""
    async with running_mock() as mock, MockClient(mock.url) as control, aiohttp.ClientSession() as http:
        call_id = await control.start_call()
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}
        body = b'{"type": "realtime", "model": "gpt-realtime", "instructions": "hi \\ud800"}'
        async with http.post(f"{mock.url}/v1/realtime/calls/{call_id}/accept", data=body, headers=headers) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value",
                                                                   "instructions")
        assert "surrogate" in error["message"]
        async with http.get(f"{mock.url}/_mock/calls?entries=0") as r:  # the call is still listed, unchanged
            assert r.status == 200 and [c["state"] for c in (await r.json())["calls"]] == ["ringing"]
        async with http.ws_connect(f"{mock.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                                   headers={"Authorization": "Bearer sk-test"}) as ws:
            assert (await ws.receive_json())["type"] == "session.created"
            await ws.send_str('{"type": "session.update", "event_id": "e1", '
                              '"session": {"type": "realtime", "instructions": "\\udfff"}}')
            event = await ws.receive_json()
            TypeAdapter(RealtimeServerEvent).validate_python(event)
            assert event["type"] == "error"
            assert (event["error"]["code"], event["error"]["param"], event["error"]["event_id"]) == (
                "invalid_value", "session.instructions", "e1")
            await ws.send_str('{"type": "session.update", "session": {"type": "realtime", "instructions": "ok"}}')
            assert (await ws.receive_json())["type"] == "session.updated"  # the socket goes on
        async with http.get(f"{mock.url}/_mock/sessions") as r:
            assert r.status == 200
        # on a call's socket the refused event is journaled with the call, as its escape text
        ok = b'{"type": "realtime", "model": "gpt-realtime"}'
        async with http.post(f"{mock.url}/v1/realtime/calls/{call_id}/accept", data=ok, headers=headers) as r:
            assert r.status == 200
        async with http.ws_connect(f"{mock.url.replace('http', 'ws')}/v1/realtime?call_id={call_id}",
                                   headers={"Authorization": "Bearer sk-test"}) as ws:
            assert (await ws.receive_json())["type"] == "session.created"
            await ws.send_str('{"type": "session.update", "event_id": "e2", '
                              '"session": {"type": "realtime", "instructions": "\\ud800!"}}')
            assert (await ws.receive_json())["error"]["param"] == "session.instructions"
        async with http.get(f"{mock.url}/_mock/calls/{call_id}") as r:  # with its entries: UTF-8 all through
            assert r.status == 200
            view = await r.json()
        [kept] = [e["data"]["event"] for e in view["entries"]
                  if e["kind"] == "ws.client" and e["data"]["event"].get("event_id") == "e2"]
        assert kept["session"]["instructions"] == "\\ud800!"
        assert not list(mock.server.journal.entries(None, "mock.bug"))
        assert not list(mock.server.journal.entries(call_id, "mock.bug"))
