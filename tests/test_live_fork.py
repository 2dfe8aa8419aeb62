"""Forks of a stored GPT-Live session: the SDK's ``client.live.forks.connect()`` (the fork WebSocket) and
``client.live.sessions.fork()`` (REST, WebRTC only) against a real mock on 127.0.0.1. A fork starts with a
``ForkSessionConfig``, gets a new ``live_`` id, the stored session's model, settings and conversation, and then
hears and answers like a primary. Every frame a fork receives is parsed with the SDK's ``ForkServerEvent``
union and must declare no field the SDK's models do not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pydantic
import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.live.forks import AsyncForksConnection
from openai.types.live import ForkServerEvent

from mock_api import audio
from mock_api.client import MockClient
from mock_api.live import forks
from mock_api.live.session import LiveSession
from mock_api.live.settings import LiveSettings
from tests.test_live_primary import MODEL, Primary, caller_turn, primary
from tests.test_live_sideband import LIVE_SESSION

HEARD = "My policy number is 5665-2870."
FIRST = "Thanks, I found your policy."
SECOND = "You told me that already: it is on file."
# the same words twice: the first time answers FIRST, and a conversation that goes on answers SECOND
SCRIPT: dict[str, Any] = {"turns": [{"hears": "policy number", "says": FIRST},
                                    {"hears": "policy number", "says": SECOND}],
                          "response_latency_s": 0.05}
WEBRTC = {"type": "webrtc", "sdp": "v=0\r\n"}


class Fork(Primary):
    """A fork's connection: its events are the SDK's ``ForkServerEvent`` union."""

    EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ForkServerEvent)
    conn: AsyncForksConnection  # type: ignore[assignment]

    async def start(self, **session: Any) -> dict[str, Any]:  # no model: a fork inherits it
        await self.conn.session.start(session=session, event_id="fork_start")  # type: ignore[arg-type]
        return await self.until("session.started")


@asynccontextmanager
async def fork(client: AsyncOpenAI, live_id: str) -> AsyncIterator[Fork]:
    async with client.live.forks.connect(session_id=live_id) as conn:
        yield Fork(conn)


async def stored_primary_with_a_turn(p: Primary, fmt: audio.WireFormat = "audio/pcm", **session: Any) -> str:
    """A stored primary session in which the caller said HEARD (in ``fmt``) and the model answered FIRST; its id."""
    live_id = str((await p.start(store=True, instructions="You answer insurance calls.", **session))["session"]["id"])
    await p.say(caller_turn(), 8000, fmt)
    await p.text_of("session.output_transcript.delta", FIRST)
    return live_id


async def test_a_fork_of_an_ended_stored_session_continues_its_conversation(
        client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(script=SCRIPT)
    async with primary(client) as p:
        parent = await stored_primary_with_a_turn(p)
        await p.conn.session.close()
        await p.until("session.closed")
    async with fork(client, parent) as f:
        started = await f.start()
        session = started["session"]
        assert started["client_event_id"] == "fork_start"
        assert session["id"].startswith("live_") and session["id"] != parent
        assert (session["model"], session["store"], session["instructions"]) == (
            MODEL, True, "You answer insurance calls.")  # inherited
        assert session["audio"]["format"] == {"type": "audio/pcm", "rate": 24000}
        await f.say(caller_turn(), 8000, "audio/pcm")
        heard = await f.text_of("session.input_transcript.delta", HEARD)
        said = await f.text_of("session.output_transcript.delta", SECOND)  # the stored turn stays used
        assert heard[0]["start_ms"] < 5000  # the fork's own timeline, from its own start
        assert heard[-1]["end_ms"] <= said[0]["start_ms"] and f.of("session.output_audio.delta")
        await f.conn.session.close()
        assert (await f.until("session.closed"))["reason"] == "close_requested"
    fork_id = session["id"]
    entries = await control.session_journal(fork_id)
    (connect,) = [e["data"] for e in entries if e["kind"] == "live.connect"]
    assert connect["path"] == f"/v1/live/sessions/{parent}/fork"  # the link to what it forked
    assert entries[0]["kind"] == "live.settings" and "mock.bug" not in {e["kind"] for e in entries}
    opened = [e["data"] for e in await control.server_journal() if e["kind"] == "live.session"]
    assert {"session": fork_id, "forked_from": parent} in opened
    recording = await client.live.sessions.download_recording(fork_id)  # stored, as its source was
    assert recording.response.headers["content-type"] == "audio/wav"


async def test_a_running_session_forks_with_overrides_and_refused_starts_change_nothing(
        client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(script=SCRIPT)
    async with primary(client) as p:
        pcmu = {"format": {"type": "audio/pcmu", "rate": 8000}}
        parent = await stored_primary_with_a_turn(p, "audio/pcmu", audio=pcmu)
        async with fork(client, parent) as f:
            await f.conn.send_raw(json.dumps({"type": "session.start", "session": {"model": MODEL},
                                              "event_id": "with_model"}))
            refused = (await f.until("error"))["error"]
            assert (refused["code"], refused["param"], refused["client_event_id"]) == (
                "unknown_parameter", "session.model", "with_model")
            await f.conn.session.start(session={"delegation": {"type": "responses"}}, event_id="deleg")
            refused = (await f.until("error"))["error"]  # the stored session delegates to the client
            assert (refused["code"], refused["client_event_id"]) == ("delegation_type_mismatch", "deleg")
            started = await f.start(audio={"format": {"type": "audio/pcma", "rate": 8000}}, store=False)
            assert started["session"]["audio"]["format"] == {"type": "audio/pcma", "rate": 8000}
            assert started["session"]["store"] is False
            await f.conn.send_raw(json.dumps({"type": "transport.dtmf.send", "event": "1", "event_id": "key"}))
            assert (await f.until("error"))["error"]["code"] == "invalid_event_for_connection"  # sidebands only
            await f.say(caller_turn(), 8000, "audio/pcma")
            await f.text_of("session.output_transcript.delta", SECOND)
            fork_id = started["session"]["id"]
            with pytest.raises(websockets.InvalidStatus) as unstored:  # the fork was not stored
                async with fork(client, fork_id):
                    pass
            assert unstored.value.response.status_code == 400
            assert json.loads(unstored.value.response.body)["error"]["code"] == "session_not_stored"
        assert p.of("session.output_transcript.delta")  # the parent went on meanwhile, untouched
        assert "".join(e["delta"] for e in p.of("session.output_transcript.delta")) == FIRST
    refused_entries = [e["data"] for e in await control.session_journal(fork_id) if e["kind"] == "live.refused"]
    assert [(r["status"], r["code"]) for r in refused_entries] == [(400, "session_not_stored")]


async def test_forks_of_unknown_and_unstored_sessions_and_rest_forks_are_refused(
        client: AsyncOpenAI, control: MockClient) -> None:
    with pytest.raises(websockets.InvalidStatus) as unknown:
        async with fork(client, "live_nobody"):
            pass
    assert unknown.value.response.status_code == 404
    assert json.loads(unknown.value.response.body)["error"]["code"] == "session_not_found"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.live.sessions.fork("live_nobody", transport=WEBRTC)  # type: ignore[arg-type]
    assert missing.value.code == "session_not_found"
    async with primary(client) as p:
        unstored = (await p.start())["session"]["id"]
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with fork(client, unstored):
                pass
        assert refused.value.response.status_code == 400
        with pytest.raises(openai.BadRequestError) as rest_unstored:
            await client.live.sessions.fork(unstored, transport=WEBRTC)  # type: ignore[arg-type]
        assert (rest_unstored.value.code, rest_unstored.value.param) == ("session_not_stored", "session_id")
    call_id = (await control.start_call(script=SCRIPT))
    live_id = (await control.call(call_id)).live_id
    stored: Any = {**LIVE_SESSION, "store": True}
    await client.live.sessions.accept(live_id, session=stored)
    with pytest.raises(openai.BadRequestError) as webrtc:  # stored, but WebRTC is not emulated
        await client.live.sessions.fork(live_id, transport=WEBRTC, session={"store": False})  # type: ignore[arg-type]
    assert (webrtc.value.code, webrtc.value.param) == ("unsupported_transport", "transport.type")
    async with fork(client, live_id) as f:  # a stored SIP call forks over the WebSocket
        session = (await f.start())["session"]
        assert session["model"] == LIVE_SESSION["model"] and session["id"] != live_id
        assert session["audio"]["format"] == {"type": "audio/pcm", "rate": 24000}  # SIP has none to inherit
    refusals = [(e.data["status"], e.data["code"]) for e in (await control.call(call_id)).of_kind("live.refused")]
    assert refusals == [(400, "unsupported_transport")]


def test_only_a_started_stored_session_has_a_fork_source() -> None:
    s = LiveSession.websocket(script=SCRIPT)
    assert s.fork_source() is None  # not started
    s.connect("primary", "primary", 0.0)
    s.receive("primary", json.dumps({"type": "session.start", "session": {"model": MODEL}}), 0.0)
    assert s.fork_source() is None  # started without store: true
    stored = LiveSession.websocket(script=SCRIPT)
    stored.connect("primary", "primary", 0.0)
    stored.receive("primary", json.dumps({"type": "session.start", "session": {"model": MODEL, "store": True}}), 0.0)
    source = stored.fork_source()
    assert source is not None and source.session_id == stored.id and source.used_turns == frozenset()
    config = forks.config_for(source, {"store": False}, stored.settings)
    assert isinstance(config, dict) and config["store"] is False and config["model"] == MODEL
    assert "id" not in config and "expires_at" not in config
    assert forks.start_problem({"client": {}}) is not None and forks.start_problem({}) is None


def test_a_fork_start_merges_responses_delegation_and_chooses_its_audio_format() -> None:
    res = {"id": "live_a", "model": MODEL, "status": "active", "expires_at": 1, "store": True,
           "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "cedar"}},
           "delegation": {"type": "responses", "acknowledgement_delay_ms": 0, "responses": {"model": "gpt-5.5"}}}
    source = forks.ForkSource("live_a", res, "websocket", LiveSession.websocket().script, frozenset({0}), ())
    config = forks.config_for(source, {"delegation": {"type": "responses", "acknowledgement_delay_ms": 250}},
                              LiveSettings())
    assert isinstance(config, dict)
    assert config["delegation"] == {"type": "responses", "acknowledgement_delay_ms": 250,
                                    "responses": {"model": "gpt-5.5"}}  # omitted settings kept
    assert config["audio"] == res["audio"]  # the stored WebSocket format, by default
    fresh = forks.config_for(source, {}, LiveSettings(fork_inherits_audio_format=False))
    assert isinstance(fresh, dict) and fresh["audio"] == {"output": {"voice": "cedar"}}  # PCM16 24 kHz at start
    client_res = {**res, "delegation": {"type": "client", "acknowledgement_delay_ms": 0}}
    refused = forks.config_for(forks.ForkSource("live_b", client_res, "sip", source.script, frozenset(), ()),
                               {"delegation": {"type": "responses"}}, LiveSettings())
    assert isinstance(refused, forks.Refused) and refused.param == "session.delegation.type"
