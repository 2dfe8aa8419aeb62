"""GPT-Live's runtime for an accepted call: the ``/live/sessions/{id}/attach`` sideband with the official SDK as
client, a virtual caller speaking fixtures into it, DTMF both ways and the session's end, against a real mock on
127.0.0.1. Every frame a sideband receives is parsed with the SDK's ``ConnectServerEvent`` union, and must declare
no field the SDK's models do not."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import pydantic
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.live.sideband import AsyncSidebandConnection
from openai.types.live import ConnectServerEvent

from audio_fixtures import fixture
from mock_api import live_host
from mock_api.audio import tone
from mock_api.client import MockClient
from mock_api.live_host import CallerEar, TurnEnded, TurnStarted, close_reason
from mock_api.running import RunningMock

LIVE_SESSION: dict[str, Any] = {"type": "live", "model": "gpt-live-1", "instructions": "You answer insurance calls."}
REPLY = "Thanks, I found your policy."
SCRIPT: dict[str, Any] = {"turns": [{"hears": "policy number", "says": REPLY}], "response_latency_s": 0.05}
SIDEBAND_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ConnectServerEvent)
WAIT_S = 20.0  # a guard against a hang, never a timing assumption


def _declared_only(model: pydantic.BaseModel, path: str) -> None:
    assert not model.model_extra, f"{path}: fields the SDK does not declare: {sorted(model.model_extra or {})}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, pydantic.BaseModel):
                _declared_only(sub, f"{path}.{name}")


class CheckedConnection:
    """An SDK Live connection whose every frame is checked against the SDK's models (``EVENTS``)."""

    EVENTS: pydantic.TypeAdapter[Any] = SIDEBAND_EVENTS

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        event = json.loads(await self.conn.recv_bytes())
        parsed = self.EVENTS.validate_python(event)
        assert parsed.type == event["type"], f"{event['type']} parsed as {type(parsed).__name__}"
        _declared_only(parsed, event["type"])
        self.seen.append(event)
        return event

    async def until(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Read until an event of ``type_`` whose fields include ``fields``."""
        async with asyncio.timeout(WAIT_S):
            while True:
                event = await self.next()
                if event["type"] == type_ and all(event.get(k) == v for k, v in fields.items()):
                    return event

    async def text_of(self, type_: str, text: str) -> list[dict[str, Any]]:
        """Read until the deltas of ``type_`` spell ``text``; returns them."""
        async with asyncio.timeout(WAIT_S):
            while "".join(e["delta"] for e in self.of(type_)) != text:
                await self.next()
        return self.of(type_)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == type_]


class Sideband(CheckedConnection):
    """A sideband (``/attach``): its events are the ``ConnectServerEvent`` union."""

    conn: AsyncSidebandConnection


@asynccontextmanager
async def sideband(client: AsyncOpenAI, live_id: str, **kw: Any) -> AsyncIterator[Sideband]:
    async with client.live.sideband.connect(session_id=live_id, **kw) as conn:
        yield Sideband(conn)


async def live_call(control: MockClient, client: AsyncOpenAI, script: dict[str, Any] | None = None) -> tuple[str, str]:
    """A virtual call accepted through GPT-Live: (its rtc_ id, its live_ id)."""
    call_id = await control.start_call(script=script or SCRIPT)
    live_id = (await control.call(call_id)).live_id
    await client.live.sessions.accept(live_id, session=LIVE_SESSION)  # type: ignore[arg-type]
    return call_id, live_id


async def test_the_caller_speaks_and_the_sideband_hears_the_turn_and_the_reply(
        client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id) as sb:
        started = await sb.until("session.started")  # the replay begins with it
        assert started["session"]["id"] == live_id and started["session"]["model"] == "gpt-live-1"
        await control.say(call_id, "caller_policy_number", speed=4)
        heard = await sb.text_of("session.input_transcript.delta", "My policy number is 5665-2870.")
        said = await sb.text_of("session.output_transcript.delta", REPLY)
        assert [e["start_ms"] for e in heard + said] == sorted(e["start_ms"] for e in heard + said)
        assert heard[-1]["end_ms"] <= said[0]["start_ms"]
        assert sb.of("session.input_audio.append")  # the caller's audio, reflected
        assert "event_id" not in sb.of("session.input_audio.append")[0]
        assert sb.of("session.output_audio.delta")  # the reply's audio, with its span
        assert all(e["start_ms"] <= e["end_ms"] for e in sb.of("session.output_audio.delta"))
    view = await control.call(call_id)
    (settings,) = view.of_kind("live.settings")
    assert settings.data["session_id"] == live_id and "attach_replay_events" in settings.data["settings"]
    (turn,) = view.of_kind("live.heard")
    assert (turn.data["text"], turn.data["recognised"]) == ("My policy number is 5665-2870.", True)
    assert view.of_kind("audio.out")  # what the virtual caller heard
    sent = [e.data["event"]["type"] for e in view.of_kind("live.server")]
    assert sent.count("session.input_transcript.delta") == len(heard)


async def test_dtmf_both_ways(client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await control.dtmf(call_id, "5#")
        assert (await sb.until("transport.dtmf.received"))["event"] == "5"
        assert (await sb.until("transport.dtmf.received"))["event"] == "#"
        await sb.conn.transport.dtmf.send(event="9", event_id="dtmf_1")
        sent = await sb.until("transport.dtmf.sent")
        assert (sent["event"], sent["client_event_id"]) == ("9", "dtmf_1")
        await sb.conn.transport.dtmf.send(event="X", event_id="dtmf_2")
        error = await sb.until("error")
        assert error["error"]["client_event_id"] == "dtmf_2"
    view = await control.call(call_id)
    assert [e.data["digit"] for e in view.of_kind("live.dtmf_out")] == ["9"]
    frames = [e.data for e in view.of_kind("live.client")]
    assert [f["event"]["event"] for f in frames] == ["9", "X"]


async def test_the_caller_hanging_up_closes_the_session_remote_hangup(client: AsyncOpenAI,
                                                                      control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id, graceful_close=True) as sb:
        await sb.until("session.started")
        await control.caller_hangup(call_id)
        closed = await sb.until("session.closed")
        assert closed["reason"] == "remote_hangup" and closed["session"]["status"] == "active"
        with pytest.raises(websockets.ConnectionClosedOK):  # a closing handshake: it asked for one
            await sb.conn.recv_bytes()
    view = await control.call(call_id)
    assert [e.data["code"] for e in view.of_kind("live.close")] == [1000]


async def test_a_rest_hangup_closes_it_close_requested_and_drops_a_sideband_that_did_not_ask(
        client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await client.live.sessions.hangup(live_id)
        assert (await sb.until("session.closed"))["reason"] == "close_requested"
        with pytest.raises(websockets.ConnectionClosedError):  # dropped: graceful_close's default is off
            await sb.conn.recv_bytes()
    view = await control.call(call_id)
    assert (view.state, view.end_reason) == ("ended", "hangup")
    (close,) = view.of_kind("live.close")
    assert close.data["dropped"] is True


async def test_session_close_from_the_sideband_ends_the_call(client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id, graceful_close=True) as sb:
        await sb.until("session.started")
        await sb.conn.send({"type": "session.close", "event_id": "bye_1"})
        closed = await sb.until("session.closed")
        assert (closed["reason"], closed["client_event_id"]) == ("close_requested", "bye_1")
    view = await control.wait_for(call_id, lambda v: v.terminal)
    assert view.state == "ended"
    assert [e.data["source"] for e in view.of_kind("state") if e.data["after"] == "ended"] == ["session"]


async def test_the_timer_drives_usage_and_expiry(mock: RunningMock, client: AsyncOpenAI,
                                                 control: MockClient) -> None:
    await control.configure(live={"usage_period_s": 0.2, "expires_after_s": 1})
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        closed = await sb.until("session.closed")
        assert closed["reason"] == "expired" and closed["usage"] == {"seconds": 1.0}
        seconds = [e["usage"]["seconds"] for e in sb.of("session.usage.updated")]
        assert seconds and seconds == sorted(seconds)  # cumulative
    view = await control.wait_for(call_id, lambda v: v.terminal)
    assert view.state == "ended"  # the session ended the call: a BYE on a SIP leg
    assert view.of_kind("live.settings")[0].data["settings"]["expires_after_s"] == 1


async def test_a_second_sideband_gets_the_replay(client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id) as first:
        started = await first.until("session.started")
        await control.dtmf(call_id, "7")
        dtmf = await first.until("transport.dtmf.received")
        async with sideband(client, live_id) as second:
            assert await second.next() == started  # the same events, ids included
            assert await second.until("transport.dtmf.received") == dtmf
            assert not second.of("session.input_audio.append")  # a short history, never a media buffer
            await control.dtmf(call_id, "8")
            for sb in (first, second):  # each attached sideband gets the session's events
                assert (await sb.until("transport.dtmf.received"))["event"] == "8"


async def test_a_fixture_the_app_plays_goes_to_the_caller(client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await live_call(control, client)
    pcm = tone(2000, 24000)  # 2 s: a frame over 64 KiB, read off the loop
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await sb.conn.send({"type": "session.output_audio.fixture.play", "audio": base64.b64encode(pcm).decode(),
                            "event_id": "fx_1"})
        assert (await sb.until("session.output_audio.fixture.playing"))["client_event_id"] == "fx_1"
        assert (await sb.until("session.output_audio.fixture.played"))["client_event_id"] == "fx_1"
    view = await control.call(call_id)
    assert [e.data["ms"] for e in view.of_kind("audio.out")] == [2000.0]  # what the caller heard
    (frame,) = view.of_kind("live.client")
    assert frame.data["event"]["audio"].startswith("<")  # journaled as its size and checksum


async def test_turns_a_sip_worker_found_reach_the_session(mock: RunningMock, client: AsyncOpenAI,
                                                          control: MockClient) -> None:
    """The entry points the SIP ingress uses: the worker decides the turn and hands over its audio."""
    call_id, live_id = await live_call(control, client)
    host = live_host.get_host(mock.server, call_id)
    assert host is not None
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        turn = fixture("caller_policy_number").pcm(8000)
        host.media_speech_started(300)
        host.media_audio(turn, 8000, 0)
        host.media_speech_stopped(5380, 5880)
        await sb.text_of("session.input_transcript.delta", "My policy number is 5665-2870.")
        await sb.text_of("session.output_transcript.delta", REPLY)


async def test_a_sideband_that_reads_nothing_is_closed_1008_and_the_others_go_on(
        mock: RunningMock, client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(ws_send_queue_bytes=256 * 1024)  # four big events
    call_id, live_id = await live_call(control, client)
    item = {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "x" * 60_000}
    url = mock.base_url.replace("http://", "ws://") + f"/live/sessions/{live_id}/attach"

    async def closes() -> list[dict[str, Any]]:
        return [e.data for e in (await control.call(call_id)).of_kind("live.close")]

    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"Authorization": "Bearer sk-x"},
                                                                 max_msg_size=0) as idle:
        async with sideband(client, live_id) as sb:
            await sb.until("session.started")
            create = cast(Any, {"type": "decision.item.create", "item": item})
            for n in range(1, 1000):  # each echo of a big item goes to the idle sideband too, until its buffers fill
                await sb.conn.send(create)
                await sb.until("decision.item.created")
                if n % 16 == 0 and await closes():
                    break
            (closed,) = await closes()
            assert (closed["code"], closed["reason"]) == (1008, "send queue full")
            assert closed["queued_bytes"] <= 256 * 1024
            await sb.conn.transport.dtmf.send(event="1")  # the reading sideband goes on
            await sb.until("transport.dtmf.sent")
        async with asyncio.timeout(WAIT_S):  # what was sent before the close, then the close frame
            while (msg := await idle.receive()).type == aiohttp.WSMsgType.TEXT:
                SIDEBAND_EVENTS.validate_python(json.loads(msg.data))
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008


async def test_attach_refusals(mock: RunningMock, client: AsyncOpenAI, control: MockClient) -> None:
    with pytest.raises(websockets.InvalidStatus) as exc:
        async with sideband(client, "live_0000000000000000000000000000dead"):
            pass
    assert exc.value.response.status_code == 404
    call_id = await control.start_call()
    live_id = (await control.call(call_id)).live_id
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{mock.base_url}/live/sessions/{live_id}/attach") as resp:  # still ringing
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "session_not_found"
        await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
        async with http.get(f"{mock.base_url}/live/sessions/{live_id}/attach") as resp:  # Realtime won the call
            assert resp.status == 404
        _, other_live = await live_call(control, client)
        async with http.get(f"{mock.base_url}/live/sessions/{other_live}/attach?graceful_close=yes") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "graceful_close"
        async with http.ws_connect(f"{mock.base_url}/live/sessions/{other_live}/attach",
                                   headers={"Authorization": "Bearer nope"}) as ws:
            event = json.loads((await ws.receive()).data)
            SIDEBAND_EVENTS.validate_python(event)
            assert (event["type"], event["error"]["code"]) == ("error", "invalid_api_key")
            await ws.receive()
            assert ws.close_code == 3000
        async with http.get(f"{mock.url}/openai/v1/live/sessions/{other_live}/attach") as resp:
            assert resp.status == 401  # Azure's front door, in Azure's envelope
            assert (await resp.json())["error"]["code"] == "401"
    view = await control.call(call_id)
    assert [e.data["status"] for e in view.of_kind("live.refused")] == [404, 404]


async def test_the_ear_finds_one_turn_and_hands_over_its_audio() -> None:
    pcm = fixture("caller_policy_number").pcm(8000) + bytes(16 * 800)
    ear = CallerEar()
    found = [t for i in range(0, len(pcm), 1600) for t in ear.hear(pcm[i:i + 1600], 8000)]
    assert [type(t) for t in found] == [TurnStarted, TurnEnded]
    ended = found[1]
    assert isinstance(ended, TurnEnded)
    assert 5000 < len(ended.pcm) // 16 <= len(pcm) // 16  # the whole utterance, padded, in one turn


def test_close_reasons_follow_how_the_call_ended() -> None:
    from mock_api import calls as c

    def ended(state: c.CallState, reason: str) -> c.Call:
        return c.Call("rtc_x", [], state=state, end_reason=reason)

    assert close_reason(ended(c.CallState.ENDED, "caller_hangup")) == "remote_hangup"
    assert close_reason(ended(c.CallState.ENDED, "hangup")) == "close_requested"
    assert close_reason(ended(c.CallState.FAILED, "reset")) == "connection_lost"
    assert close_reason(ended(c.CallState.REFERRED, "referred")) == "remote_hangup"


def test_the_journal_keeps_audio_as_a_summary_and_words_whole() -> None:
    audio_delta = {"type": "session.output_audio.delta", "delta": "A" * 1000, "start_ms": 0, "end_ms": 100}
    words = {"type": "session.output_transcript.delta", "delta": "B" * 1000, "start_ms": 0, "end_ms": 100}
    assert live_host.journal_view(audio_delta, False)["delta"].startswith("<1000 base64 chars")
    assert live_host.journal_view(words, False) == words
    assert live_host.journal_view(audio_delta, True) == audio_delta  # --record keeps audio whole
