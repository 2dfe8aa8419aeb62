"""GPT-Live's primary WebSocket, ``GET /v1/live/sessions``, with the official SDK's ``client.live.connect()`` as
client against a real mock on 127.0.0.1: ``session.start`` first, audio in the start's format heard and
answered, ``session.close``, the client leaving, a sideband attached to the primary's session. Every frame the
primary receives is parsed with the SDK's ``ServerEvent`` union and must declare no field the SDK's models do
not (the sideband's with ``ConnectServerEvent``, by the sideband tests' helper)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pydantic
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.live.live import AsyncLiveConnection
from openai.types.live import ServerEvent

from audio_fixtures import fixture
from mock_api import audio
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.test_live_sideband import CheckedConnection, sideband

MODEL = "gpt-live-1.1"
REPLY = "Thanks, I found your policy."
SCRIPT: dict[str, Any] = {"turns": [{"hears": "policy number", "says": REPLY}], "response_latency_s": 0.05}
HEARD = "My policy number is 5665-2870."
PRIMARY_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ServerEvent)
WAIT_S = 20.0  # a guard against a hang, never a timing assumption
CHUNK_MS = 100


class Primary(CheckedConnection):
    """A primary connection: its events are the SDK's ``ServerEvent`` union."""

    EVENTS = PRIMARY_EVENTS
    conn: AsyncLiveConnection

    async def start(self, **session: Any) -> dict[str, Any]:
        config: Any = {"model": MODEL, **session}
        await self.conn.session.start(session=config, event_id="start_1")
        return await self.until("session.started")

    async def say(self, pcm: bytes, rate: int, fmt: audio.WireFormat, chunk_ms: int = CHUNK_MS) -> None:
        """Append ``pcm`` in the start's wire format, ``chunk_ms`` an event (as fast as the socket takes them)."""
        wire = audio.encode_wire(pcm, rate, fmt)
        step = len(wire) * chunk_ms // round(audio.duration_ms(pcm, rate))
        step -= step % 2
        for i in range(0, len(wire), step):
            await self.conn.session.input_audio.append(audio=base64.b64encode(wire[i:i + step]).decode())


@asynccontextmanager
async def primary(client: AsyncOpenAI) -> AsyncIterator[Primary]:
    async with client.live.connect() as conn:
        yield Primary(conn)


def caller_turn() -> bytes:
    """The fixture followed by the silence that ends its turn, at 8 kHz."""
    return fixture("caller_policy_number").pcm(8000) + audio.silence(1500, 8000)


async def test_start_first_then_started_and_close_requested(client: AsyncOpenAI, control: MockClient) -> None:
    async with primary(client) as p:
        await p.conn.session.input_audio.mute(event_id="early_1")
        error = await p.until("error")
        assert (error["client_event_id"], error["error"]["client_event_id"]) == ("early_1", "early_1")
        started = await p.start(instructions="You answer insurance calls.")
        session = started["session"]
        assert started["client_event_id"] == "start_1"
        assert session["id"].startswith("live_") and session["model"] == MODEL and session["status"] == "active"
        assert session["audio"]["format"] == {"type": "audio/pcm", "rate": 24000}  # the default format
        await p.conn.session.start(session={"model": MODEL}, event_id="start_2")
        assert (await p.until("error"))["client_event_id"] == "start_2"  # once
        await p.conn.session.close(event_id="bye_1")
        closed = await p.until("session.closed")
        assert (closed["reason"], closed["client_event_id"]) == ("close_requested", "bye_1")
        with pytest.raises(websockets.ConnectionClosedOK):  # a closing handshake follows
            await p.conn.recv_bytes()
    live_id = session["id"]
    listed = {s["id"]: s for s in await control.sessions()}
    assert listed[live_id]["ended"] is True  # its own timeline, retired like a call-less Realtime session's
    entries = await control.session_journal(live_id)
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "live.settings" and "live.connect" in kinds
    (close,) = [e["data"] for e in entries if e["kind"] == "live.close"]
    assert (close["conn"], close["code"]) == ("primary", 1000)
    opened = [e["data"] for e in await control.server_journal() if e["kind"] == "live.session"]
    assert {"session": live_id} in opened


async def test_audio_in_the_start_format_is_heard_and_answered_and_a_sideband_sees_it(
        client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(script=SCRIPT)
    async with primary(client) as p:
        started = await p.start(audio={"format": {"type": "audio/pcmu", "rate": 8000}})
        live_id = started["session"]["id"]
        async with sideband(client, live_id) as sb:
            assert (await sb.next())["type"] == "session.started"  # the replay
            await p.say(caller_turn(), 8000, "audio/pcmu")
            heard = await p.text_of("session.input_transcript.delta", HEARD)
            said = await p.text_of("session.output_transcript.delta", REPLY)
            assert all(e["start_ms"] <= e["end_ms"] for e in heard + said)
            assert heard[-1]["end_ms"] <= said[0]["start_ms"]
            out = p.of("session.output_audio.delta")
            assert out and all("start_ms" not in e and "end_ms" not in e for e in out)  # none on a primary
            assert all(len(base64.b64decode(e["delta"])) % 80 == 0 for e in out)  # G.711: 8 bytes per ms
            await sb.text_of("session.output_transcript.delta", REPLY)
            reflected = sb.of("session.input_audio.append")
            pcm24 = b"".join(base64.b64decode(e["audio"]) for e in reflected)
            assert abs(audio.duration_ms(pcm24, 24000) - audio.duration_ms(caller_turn(), 8000)) < 50
            assert sb.of("session.output_audio.delta")[0]["start_ms"] >= heard[-1]["end_ms"]
    entries = await control.session_journal(live_id)
    (turn,) = [e["data"] for e in entries if e["kind"] == "live.heard"]
    assert (turn["text"], turn["recognised"]) == (HEARD, True)


async def test_the_primary_leaving_closes_the_session_for_its_sidebands(client: AsyncOpenAI) -> None:
    async with primary(client) as p:
        live_id = (await p.start())["session"]["id"]
        async with sideband(client, live_id, graceful_close=True) as sb:
            await sb.until("session.started")
            await p.conn.close()
            closed = await sb.until("session.closed")
            assert closed["reason"] == "connection_lost" and "client_event_id" not in closed
            with pytest.raises(websockets.ConnectionClosedOK):
                await sb.conn.recv_bytes()
    with pytest.raises(websockets.InvalidStatus) as exc:  # over: nothing to attach to
        async with sideband(client, live_id):
            pass
    assert exc.value.response.status_code == 404


async def test_a_primary_needs_a_key_and_no_session_is_made_without_one(mock: RunningMock,
                                                                        control: MockClient) -> None:
    url = mock.base_url.replace("http://", "ws://") + "/live/sessions"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"Authorization": "Bearer nope"}) as ws:
        event = json.loads((await ws.receive()).data)
        PRIMARY_EVENTS.validate_python(event)
        assert (event["type"], event["error"]["code"]) == ("error", "invalid_api_key")
        await ws.receive()
        assert ws.close_code == 3000
    assert await control.sessions() == []
    assert [e["data"]["code"] for e in await control.server_journal() if e["kind"] == "live.close"] == [3000]


async def test_a_sideband_cannot_attach_before_the_primary_started(mock: RunningMock, client: AsyncOpenAI,
                                                                   control: MockClient) -> None:
    from mock_api import live_host

    async with primary(client) as p:
        await p.conn.send({"type": "session.input_audio.unmute"})  # read by the mock before the attach below
        await p.until("error")
        (live_id,) = live_host.registry(mock.server).sessions
        async with aiohttp.ClientSession() as http, http.get(f"{mock.base_url}/live/sessions/{live_id}/attach") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "session_not_found"


async def test_the_config_chooses_what_the_reference_leaves_open(client: AsyncOpenAI, control: MockClient) -> None:
    """``PUT /_mock/config {"live": {...}}`` sets the undocumented choices; each session journals the ones it ran
    with, and a bad value is refused at the door, naming the field."""
    await control.configure(live={"greets_first": True, "usage_period_s": 2.5})
    async with primary(client) as p:
        started = await p.start()
        await p.conn.session.close()
        await p.until("session.closed")
    entries = await control.session_journal(started["session"]["id"])
    (chosen,) = [e["data"]["settings"] for e in entries if e["kind"] == "live.settings"]
    assert (chosen["greets_first"], chosen["usage_period_s"]) == (True, 2.5)
    with pytest.raises(Exception, match="usage_period_s"):
        await control.configure(live={"usage_period_s": -1})
    assert (await control.config())["live"]["usage_period_s"] == 2.5  # nothing half-applied


async def test_a_client_event_with_a_lone_surrogate_is_refused_and_the_session_goes_on(
        client: AsyncOpenAI, control: MockClient) -> None:
    """Kept, a lone surrogate (``"\\udfff"`` is valid JSON text, not Unicode) would break every answer that shows
    the session (its journal, an echoed item): the event is refused naming where it is, nothing is kept."""
    async with primary(client) as p:
        await p.conn.send({"type": "session.start", "event_id": "start_x",
                           "session": {"model": MODEL, "instructions": "hello \udfff"}})
        error = await p.until("error")
        assert (error["error"]["code"], error["error"]["param"], error["client_event_id"]) == (
            "invalid_value", "session.instructions", "start_x")
        started = await p.start(instructions="You answer insurance calls.")  # refused, not started: it still can
        live_id = started["session"]["id"]
        await p.conn.session.close(event_id="bye_1")
        await p.until("session.closed")
    entries = await control.session_journal(live_id)
    [refused] = [e["data"]["event"] for e in entries if e["kind"] == "live.client"
                 and e["data"]["event"].get("event_id") == "start_x"]
    assert refused["session"]["instructions"] == "hello \\udfff"  # kept as its escape text, UTF-8 again
    json.dumps(entries, ensure_ascii=False).encode("utf-8")  # nothing in the timeline that UTF-8 cannot hold
