"""The WebSocket endpoint over real sockets, with the official SDK as the client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI, BadRequestError, NotFoundError
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from mock_api import audio, session_host
from mock_api.config import ConfigPatch, MockConfig
from mock_api.faults import Fault
from mock_api.http import create_app
from mock_api.server import MockServer
from tests.helpers import until
from tests.realtime_fixtures import assert_server_event, recv_until, utterance

pytestmark = pytest.mark.asyncio

SCRIPT = {"turns": [{"hears": "I need to reset my password.", "says": "Sure, let me help you reset it."},
                    {"hears": "My username is alex.", "says": "Thanks, Alex."}],
          "response_latency_s": 0.01, "generation_speed": 50, "transcription_delay_s": 0.05}


class Mock:
    def __init__(self, server: MockServer, http: TestServer) -> None:
        self.server = server
        self.http = http
        self.base = f"http://127.0.0.1:{http.port}"
        self.client = AsyncOpenAI(api_key="sk-test", base_url=self.base + "/v1", max_retries=0)

    async def active_call(self, body: dict[str, Any] | None = None, **kw: Any) -> str:
        call = self.server.start_call(from_uri="sip:+15551230000@example.com", to_uri="sip:proj_x@127.0.0.1",
                                      script=kw.pop("script", SCRIPT), **kw)
        await self.client.realtime.calls.accept(call.call_id, **(body or {"type": "realtime"}))
        return call.call_id


@pytest.fixture
async def mock() -> AsyncIterator[Mock]:
    server = MockServer(MockConfig(script=SCRIPT))
    app = create_app(server)
    http = TestServer(app, host="127.0.0.1", port=0)
    await http.start_server()
    try:
        yield Mock(server, http)
    finally:
        await http.close()




async def recv_all(conn: Any, types: set[str], timeout: float = 5.0) -> list[dict[str, Any]]:
    """Receive (validated) events until every type in ``types`` has been seen once."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not types <= {e["type"] for e in got}:
            event = json.loads(await conn.recv_bytes())
            assert_server_event(event)
            got.append(event)
    return got


async def send(conn: Any, event: dict[str, Any]) -> None:
    await conn.send_raw(json.dumps(event))


async def test_call_socket_session_created_first_and_journal(mock: Mock) -> None:
    call_id = await mock.active_call({"type": "realtime", "instructions": "You are Alex.",
                                      "audio": {"output": {"voice": "ash"}}})
    async with mock.client.realtime.connect(call_id=call_id) as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        assert first.session.type == "realtime"
        s = first.session.model_dump()
        assert s["instructions"] == "You are Alex." and s["audio"]["output"]["voice"] == "ash"
        assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # SIP keeps G.711
        await conn.session.update(session={"type": "realtime", "model": "gpt-realtime", "tracing": "auto"})
        upd = await conn.recv()
        assert upd.type == "session.updated"
    await until(lambda: any(mock.server.journal.entries(call_id, "ws.close")), what="the server journals the close")
    kinds = [e.kind for e in mock.server.journal.entries(call_id) if e.kind.startswith("ws.")]
    assert kinds[:4] == ["ws.connect", "ws.server", "ws.client", "ws.server"]
    assert kinds[-1] == "ws.close"
    client = next(e for e in mock.server.journal.entries(call_id, "ws.client"))
    assert client.data["event"]["type"] == "session.update"


async def test_unknown_and_ended_call_id_get_404_before_upgrade(mock: Mock) -> None:
    with pytest.raises(Exception, match="404"):
        async with mock.client.realtime.connect(call_id="rtc_nope") as conn:
            await conn.recv()
    async with aiohttp.ClientSession() as http:
        r = await http.get(mock.base + "/v1/realtime?call_id=rtc_nope", headers={"Authorization": "Bearer sk-test"})
        assert r.status == 404
        body = await r.json()
        assert body["error"]["code"] == "call_id_not_found"
        assert body["error"]["message"] == "No session found for the provided call_id"
    call_id = await mock.active_call()
    await mock.client.realtime.calls.hangup(call_id)
    async with aiohttp.ClientSession() as http:
        r = await http.get(mock.base + f"/v1/realtime?call_id={call_id}", headers={"Authorization": "Bearer sk-x"})
        assert r.status == 404
    with pytest.raises(NotFoundError):
        await mock.client.realtime.calls.hangup(call_id)


async def _receive_forever(conn: Any) -> None:
    """Read events until the socket ends: only its closing exception gets out."""
    while True:
        await conn.recv()


@pytest.mark.parametrize("how", ["drop", "clean"])
async def test_socket_closes_when_call_ends(mock: Mock, how: str) -> None:
    """By default the connection goes away without a close frame, as the real service is reported to
    do at hang-up (openai-agents' SIP example catches ``ConnectionClosedError``); ``clean`` sends 1000."""
    mock.server.configure(ConfigPatch(hangup_close=how))
    call_id = await mock.active_call()
    async with mock.client.realtime.connect(call_id=call_id) as conn:
        assert (await conn.recv()).type == "session.created"
        await mock.client.realtime.calls.hangup(call_id)
        async with asyncio.timeout(15):  # bounds a hang only: the close itself must end the wait
            with pytest.raises(ConnectionClosed) as closed:
                await _receive_forever(conn)
    if how == "drop":
        assert isinstance(closed.value, ConnectionClosedError) and closed.value.rcvd is None
    else:
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    await until(lambda: any(mock.server.journal.entries(call_id, "ws.close")), what="the journaled close")
    [close] = [e.data for e in mock.server.journal.entries(call_id, "ws.close")]
    assert close == ({"code": None, "reason": "call ended", "dropped": True} if how == "drop"
                     else {"code": 1000, "reason": "call ended"})


async def test_beta_header_is_fatal_and_auth_failures_close_3000(mock: Mock) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(mock.base + "/v1/realtime?model=gpt-realtime",
                                   headers={"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}) as sock:
            msg = await sock.receive_json()
            assert_server_event(msg)
            assert msg["error"]["code"] == "beta_api_shape_disabled"
            closing = await sock.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert sock.close_code == 4000
        async with http.ws_connect(mock.base + "/v1/realtime?model=gpt-realtime",
                                   headers={"Authorization": "Bearer nope-key-1234"}) as sock:
            msg = await sock.receive_json()
            assert msg["error"]["code"] == "invalid_api_key"
            await sock.receive()
            assert sock.close_code == 3000
        async with http.ws_connect(mock.base + "/v1/realtime?model=gpt-realtime") as sock:
            msg = await sock.receive_json()
            assert msg["error"]["message"] == "Missing bearer or basic authentication in header"
            await sock.receive()
            assert sock.close_code == 3000
        async with http.ws_connect(mock.base + "/v1/realtime",
                                   headers={"Authorization": "Bearer sk-test"}) as sock:
            msg = await sock.receive_json()
            assert msg["error"]["code"] == "missing_model"
            await sock.receive()
            assert sock.close_code == 4000


async def test_model_socket_forum_flows(mock: Mock) -> None:
    """Failure modes 1–4, 19, 20 on a ?model= socket, then the corrected flow."""
    async with mock.client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        # 3: no session.type
        await send(conn, {"type": "session.update", "session": {"input_audio_transcription": {"model": "whisper-1"}}})
        (err,) = await recv_until(conn, "error")
        assert err["error"]["message"] == "Missing required parameter: 'session.type'."
        # 4: beta field name
        await send(conn, {"type": "session.update", "session": {"type": "realtime", "modalities": ["text"]}})
        (err,) = await recv_until(conn, "error")
        assert err["error"]["message"] == "Unknown parameter: 'session.modalities'."
        # 20: cancel with nothing active
        await conn.response.cancel()
        (err,) = await recv_until(conn, "error")
        assert err["error"]["code"] == "response_cancel_not_active"
        # 19: empty commit
        await conn.input_audio_buffer.commit()
        (err,) = await recv_until(conn, "error")
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        # 1: user turn without transcription -> transcript null, no transcription events
        pcm = utterance(1000)
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm).decode())
        got = await recv_until(conn, "rate_limits.updated")
        item = next(e for e in got if e["type"] == "conversation.item.done")["item"]
        assert item["content"][0]["transcript"] is None
        assert not [e for e in got if "input_audio_transcription" in e["type"]]
        # corrected flow: GA transcription config, then read ...completed by item_id (2)
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "gpt-4o-transcribe"}}}})
        await recv_until(conn, "session.updated")
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm).decode())
        got = await recv_until(conn, "conversation.item.input_audio_transcription.completed")
        done = next(e for e in got if e["type"] == "conversation.item.done" and e["item"]["role"] == "user")
        assert done["item"]["content"][0]["transcript"] is None
        assert got[-1]["item_id"] == done["item"]["id"]
        assert got[-1]["transcript"] == "My username is alex."  # the script's second turn


async def test_transcription_403_on_a_sip_call(mock: Mock) -> None:
    """Failure mode 6 on a call_id socket: audio arrives over the media path."""
    call_id = await mock.active_call({"type": "realtime", "audio": {"input": {
        "transcription": {"model": "whisper-1", "language": "es"}}}}, faults=[Fault(name="transcription_403")])
    async with mock.client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        host = session_host.get_session(mock.server, call_id)
        assert host is not None
        sink: list[Any] = []
        host.media_sink = sink.append
        pcm = utterance(900, rate=8000)
        for i in range(0, len(pcm), 320):
            host.feed_audio(pcm[i:i + 320], 8000)
        got = await recv_all(conn, {"response.done", "conversation.item.input_audio_transcription.failed"})
        failed = next(e for e in got if e["type"] == "conversation.item.input_audio_transcription.failed")
        assert failed["error"]["message"] == f"Input transcription failed for item '{failed['item_id']}'. 403 Forbidden"
        assert not [e for e in got if e["type"].endswith("transcription.completed")]
        assert "response.output_audio.delta" not in [e["type"] for e in got]
        assert "output_audio_buffer.started" in [e["type"] for e in got]
        assert sink and all(a.rate == 8000 for a in sink)


async def test_active_response_collision_and_oob(mock: Mock) -> None:
    """Failure mode 18 and the cookbook's out-of-band transcription over a real socket.

    The collision is certain, not a race: the script makes the automatic response a long reply
    generated in real time (about 25 s of audio), the client sends its ``response.create`` only
    after ``response.created`` arrived, and cancels the automatic response once the error came.
    """
    long_reply = "Sure, let me help you reset it. " * 13
    mock.server.configure(ConfigPatch(script={**SCRIPT, "generation_speed": 1.0, "turns": [
        {"hears": "I need to reset my password.", "says": long_reply}]}))
    async with mock.client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "gpt-4o-mini-transcribe"},
            "turn_detection": {"type": "server_vad", "create_response": True}}}})
        await recv_until(conn, "session.updated")
        await conn.input_audio_buffer.append(audio=base64.b64encode(utterance(1100)).decode())
        events = await recv_until(conn, "response.created")  # the VAD's automatic response, now in progress
        item_id = next(e for e in events if e["type"] == "conversation.item.added")["item"]["id"]
        auto_id = events[-1]["response"]["id"]
        await conn.response.create(event_id="evt_collide")
        await conn.response.create(response={
            "conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "transcription"},
            "instructions": "Transcribe the user's latest turn verbatim.",
            "input": [{"type": "item_reference", "id": item_id}]})
        cancelled = False
        async with asyncio.timeout(15):  # a bound on waiting, not a latency check (a busy CI box is slow)
            while not (any(e["type"] == "error" for e in events)
                       and sum(e["type"] == "response.done" for e in events) == 2
                       and any(e["type"].endswith("transcription.completed") for e in events)):
                e = json.loads(await conn.recv_bytes())
                assert_server_event(e)
                events.append(e)
                if e["type"] == "error" and not cancelled:
                    await conn.response.cancel(response_id=auto_id)
                    cancelled = True
        auto = next(e for e in events if e["type"] == "response.done" and e["response"]["id"] == auto_id)
        assert auto["response"]["status"] == "cancelled"
        err = next(e for e in events if e["type"] == "error")
        assert err["error"]["code"] == "conversation_already_has_active_response"
        assert err["error"]["event_id"] == "evt_collide" and auto_id in err["error"]["message"]
        oob = next(e for e in events if e["type"] == "response.done"
                   and e["response"]["metadata"] == {"topic": "transcription"})["response"]
        built_in = next(e for e in events if e["type"].endswith("transcription.completed"))
        assert oob["conversation_id"] is None
        assert oob["output"][0]["content"][0]["text"] == built_in["transcript"] == "I need to reset my password."
        # cost from usage (cookbook rates, $ per 1M tokens)
        u = oob["usage"]
        cached = u["input_token_details"]["cached_tokens"]
        cost = ((u["input_token_details"]["audio_tokens"] * 32 + u["input_token_details"]["text_tokens"] * 4
                 - cached * 0) + u["output_tokens"] * 16) / 1e6
        assert 0 < cost < 0.01
        asr = built_in["usage"]
        assert asr["type"] == "tokens" and asr["input_token_details"]["audio_tokens"] > 0


async def test_transcription_intent_socket(mock: Mock) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(mock.base + "/v1/realtime?intent=transcription",
                               headers={"Authorization": "Bearer sk-test"}) as sock:
        created = await sock.receive_json()
        assert_server_event(created)
        assert created["session"]["type"] == "transcription"
        await sock.send_json({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"transcription": {"model": "whisper-1"}}}}})
        assert (await sock.receive_json())["type"] == "session.updated"
        await sock.send_json({"type": "input_audio_buffer.append",
                              "audio": audio.b64encode(utterance(800))})
        async with asyncio.timeout(5):
            while True:
                e = await sock.receive_json()
                assert_server_event(e)
                assert not e["type"].startswith("response.")
                if e["type"].endswith("transcription.completed"):
                    assert e["usage"]["type"] == "duration"
                    break


async def test_bad_frames_do_not_wedge_the_socket(mock: Mock) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(mock.base + "/v1/realtime?model=gpt-realtime",
                               headers={"Authorization": "Bearer sk-test"}) as sock:
        await sock.receive_json()
        for bad in ["{", "[]", "null", json.dumps({"type": 5}), json.dumps({"type": "session.update",
                                                                           "session": []})]:
            await sock.send_str(bad)
            e = await sock.receive_json()
            assert_server_event(e)
            assert e["type"] == "error"
        await sock.send_bytes(b"\x00\x01")
        e = await sock.receive_json()
        assert e["error"]["code"] == "invalid_event"
        await sock.send_json({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        assert (await sock.receive_json())["type"] == "conversation.item.added"


async def test_client_secrets_and_whisper_transcriptions(mock: Mock) -> None:
    secret = await mock.client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 600},
        session={"type": "realtime", "model": "gpt-realtime", "audio": {"output": {"voice": "marin"}}})
    assert secret.value.startswith("ek_")
    assert secret.session.type == "realtime"
    with pytest.raises(BadRequestError) as info:
        await mock.client.realtime.client_secrets.create(
            session=cast(Any, {"type": "realtime", "temperature": 0.7}))
    assert info.value.body["message"] == "Unknown parameter: 'session.temperature'."  # type: ignore[index]
    assert info.value.code == "unknown_parameter"
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(utterance(1500, rate=16000, lead_ms=0, tail_ms=500))
    result = await mock.client.audio.transcriptions.create(model="whisper-1", file=("turn.wav", wav.getvalue()))
    assert result.text == "I need to reset my password."
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds == 2
