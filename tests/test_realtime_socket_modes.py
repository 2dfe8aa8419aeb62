"""Failure modes (docs/failure-modes.md) and call-side features over real sockets, the official SDK as the app.

Each test drives a virtual call (control API, no SIP leg) the way an app drives a SIP call:
accept over REST, then `client.realtime.connect(call_id=...)`. What the caller's media leg
would carry is read from the call's journal (`audio.out` entries), as the softphone would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, cast

import pytest
import websockets
from openai import AsyncOpenAI

from mock_api.client import MockClient
from mock_api.control_models import CallView
from mock_api.realtime.voice import VOICE_PITCH_HZ
from tests.realtime_fixtures import assert_server_event, recv_until, utterance

SCRIPT: dict[str, Any] = {"greeting": "Thank you for calling, how can I help you?", "response_latency_s": 0.01,
          "generation_speed": 40, "transcription_delay_s": 0.05}
END_CALL: Any = {"type": "function", "name": "end_call", "description": "Ends the call after saying bye.",
            "parameters": {"type": "object", "properties": {}, "required": []}}




def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def audio_out(view: CallView, response_id: str | None = None) -> list[dict[str, Any]]:
    return [e.data for e in view.of_kind("audio.out") if response_id is None or e.data["response_id"] == response_id]


async def start(control: MockClient, client: AsyncOpenAI, *, faults: list[Any] | None = None,
                script: dict[str, Any] | None = None, **accept: Any) -> str:
    call_id = await control.start_call(script=script or SCRIPT, faults=faults)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime", **accept)
    return call_id


# ---- failure mode 7: static after a session.update with tools but no formats --------------------


async def test_static_after_update_resets_formats_and_corrupts_media(client: AsyncOpenAI,
                                                                     control: MockClient) -> None:
    call_id = await start(control, client, faults=["static_after_update"], instructions="You are Janet.")
    async with client.realtime.connect(call_id=call_id) as conn:
        (created,) = await recv_until(conn, "session.created")
        assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # negotiated G.711
        await conn.session.update(session={"type": "realtime", "tools": [END_CALL], "tool_choice": "auto"})
        (updated,) = await recv_until(conn, "session.updated")
        # the exact event the forum saw: the SIP call's formats silently became PCM16 24 kHz
        assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert updated["session"]["tools"][0]["name"] == "end_call"
        await conn.response.create()
        got = await recv_until(conn, "response.done")
    done = got[-1]["response"]
    assert done["status"] == "completed"
    assert done["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert "output_audio_buffer.started" in [e["type"] for e in got]
    assert not of(got, "response.output_audio.delta")  # SIP: audio goes to the media path, not the socket
    out = audio_out(await control.call(call_id), done["id"])
    assert out and all(e["corrupt"] is True for e in out)  # what the caller hears: static


async def test_static_after_update_corrected_flow_keeps_g711(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await start(control, client, faults=["static_after_update"], instructions="You are Janet.")
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        # the forum fix: re-specify the negotiated format on both sides with the tools
        await conn.session.update(session={"type": "realtime", "tools": [END_CALL], "audio": {
            "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}})
        (updated,) = await recv_until(conn, "session.updated")
        assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        await conn.response.create()
        got = await recv_until(conn, "response.done")
    done = got[-1]["response"]
    assert done["status"] == "completed" and done["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    out = audio_out(await control.call(call_id), done["id"])
    assert out and not any(e["corrupt"] for e in out)
    assert abs(sum(e["ms"] for e in out) - 60 * len(SCRIPT["greeting"])) < 100  # the whole greeting, clean


# ---- failure mode 17: greeting sent before the voice update ------------------------------------


async def test_greeting_before_voice_update_uses_the_old_voice(client: AsyncOpenAI, control: MockClient) -> None:
    # accept without a voice (alloy); the model takes 0.4 s to start speaking, as a real one might, so the
    # voice update below lands after response.created but before the first audio however busy the machine
    call_id = await start(control, client, script={**SCRIPT, "response_latency_s": 0.4})
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        # the buggy order: greeting first, voice update right behind it without waiting
        await conn.response.create(response={"instructions": "Say 'Thank you for calling, how can I help you'"})
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "ash"}}})
        got = await recv_until(conn, "response.done")
        created = of(got, "response.created")[0]["response"]
        assert created["audio"]["output"]["voice"] == "alloy"  # the voice current at response.created
        assert of(got, "session.updated")[0]["session"]["audio"]["output"]["voice"] == "ash"
        greeting = got[-1]["response"]
        assert greeting["audio"]["output"]["voice"] == "alloy"
        assert greeting["output"][0]["content"][0]["transcript"] == "Thank you for calling, how can I help you"
        # subsequent turns use the new voice
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Hi"}]})
        await conn.response.create()
        second = (await recv_until(conn, "response.done"))[-1]["response"]
        assert second["audio"]["output"]["voice"] == "ash"
        # voice is frozen once assistant audio exists: the change is refused, nothing applied
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief.",
                                           "audio": {"output": {"voice": "coral"}}}, event_id="evt_voice")
        err = (await recv_until(conn, "error"))[-1]
        assert err["error"] == {"type": "invalid_request_error", "code": "cannot_update_voice",
                                "message": "Cannot update a conversation's voice if assistant audio is present.",
                                "param": "session.audio.output.voice", "event_id": "evt_voice"}
        await conn.response.create()
        third = (await recv_until(conn, "response.done"))[-1]["response"]
        assert third["audio"]["output"]["voice"] == "ash"
    view = await control.call(call_id)
    assert {e["voice"] for e in audio_out(view, greeting["id"])} == {"alloy"}
    assert {e["voice"] for e in audio_out(view, second["id"])} == {"ash"}
    assert VOICE_PITCH_HZ["alloy"] != VOICE_PITCH_HZ["ash"]  # and the two are audibly different voices


async def test_voice_update_before_greeting_applies(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await start(control, client)
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        # the fixed order: wait for session.updated, then greet
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "marin"}}})
        (updated,) = await recv_until(conn, "session.updated")
        assert updated["session"]["audio"]["output"]["voice"] == "marin"
        await conn.response.create()
        got = await recv_until(conn, "response.done")
    assert of(got, "response.created")[0]["response"]["audio"]["output"]["voice"] == "marin"
    out = audio_out(await control.call(call_id), got[-1]["response"]["id"])
    assert out and {e["voice"] for e in out} == {"marin"}


async def test_voice_frozen_fault_ignores_the_change_silently(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await start(control, client, faults=["voice_frozen_after_first_audio"], audio={
        "output": {"voice": "verse"}})
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        await conn.response.create()
        await recv_until(conn, "response.done")
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief.",
                                           "audio": {"output": {"voice": "sage"}}})
        updated = (await recv_until(conn, "session.updated"))[-1]
        assert updated["session"]["audio"]["output"]["voice"] == "verse"  # ignored, no error
        assert updated["session"]["instructions"] == "Be brief."  # the rest applied
        await conn.response.create()
        got = await recv_until(conn, "response.done")
    assert got[-1]["response"]["audio"]["output"]["voice"] == "verse"


# ---- ws_drop: the socket dies without a close frame ----------------------------------------------


async def test_ws_drop_without_close_frame(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await start(control, client, faults=[{"name": "ws_drop", "after_s": 0.3}])
    async with client.realtime.connect(call_id=call_id) as conn:
        t0 = time.monotonic()
        await recv_until(conn, "session.created")
        with pytest.raises(websockets.ConnectionClosedError) as info:
            async with asyncio.timeout(5):
                await conn.recv()
        elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0
    assert info.value.rcvd is None  # no close frame: the TCP connection just went away (1006)
    view = await control.call(call_id)
    assert view.state == "active"  # the call lives on; only the socket died
    assert "ws.drop" in view.kinds()
    # the app reconnects and gets a fresh session.created for the same call
    async with client.realtime.connect(call_id=call_id) as conn:
        (again,) = await recv_until(conn, "session.created")
        assert again["session"]["type"] == "realtime"


# ---- DTMF from the caller --------------------------------------------------------------------------


async def test_dtmf_reaches_the_socket(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await start(control, client)
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        await conn.response.create()
        await recv_until(conn, "response.created")
        before = int(time.time())
        await control.dtmf(call_id, "12*#")
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(of(got, "input_audio_buffer.dtmf_event_received")) < 4 or not of(got, "response.done"):
                got.append(json.loads(await conn.recv_bytes()))
                assert_server_event(got[-1])
        digits = of(got, "input_audio_buffer.dtmf_event_received")
        assert [d["event"] for d in digits] == ["1", "2", "*", "#"]
        assert all(before <= d["received_at"] <= int(time.time()) + 1 for d in digits)
        assert of(got, "response.done")[0]["response"]["status"] == "completed"  # DTMF does not interrupt
        # the SDK's own typed event
        await control.dtmf(call_id, "9")
        async with asyncio.timeout(5):
            async for event in conn:
                if event.type == "input_audio_buffer.dtmf_event_received":
                    assert event.event == "9" and isinstance(event.received_at, int)
                    break
    view = await control.call(call_id)
    assert [e.data["digit"] for e in view.of_kind("caller.dtmf")] == ["1", "2", "*", "#", "9"]
    sent = [e.data["event"]["event"] for e in view.of_kind("ws.server")
            if e.data["event"]["type"] == "input_audio_buffer.dtmf_event_received"]
    assert sent == ["1", "2", "*", "#", "9"]


# ---- turn detection over the socket --------------------------------------------------------------


async def _turn_end(client: AsyncOpenAI, turn_detection: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Speech 400..1600 ms then 2.1 s of silence over a ?model= socket; returns (session td, speech_stopped)."""
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        await conn.session.update(session=cast(Any, {"type": "realtime", "audio": {"input": {
            "turn_detection": turn_detection}}}))
        (updated,) = await recv_until(conn, "session.updated")
        pcm = utterance(1200, lead_ms=400, tail_ms=2100)
        step = 24000 * 2 // 10  # 100 ms appends, as a client streaming audio would
        for i in range(0, len(pcm), step):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step]).decode())
        got = await recv_until(conn, "input_audio_buffer.speech_stopped")
        assert of(got, "input_audio_buffer.speech_started")[0]["audio_start_ms"] <= 400
        return updated["session"]["audio"]["input"]["turn_detection"], got[-1]


@pytest.mark.parametrize(("eagerness", "silence_ms"), [("high", 300), ("auto", 700), ("medium", 700),
                                                       ("low", 1500)])
async def test_semantic_vad_eagerness_sets_how_long_it_waits(client: AsyncOpenAI, eagerness: str,
                                                             silence_ms: int) -> None:
    td, stopped = await _turn_end(client, {"type": "semantic_vad", "eagerness": eagerness,
                                           "create_response": False})
    assert td == {"type": "semantic_vad", "eagerness": eagerness, "create_response": False,
                  "interrupt_response": True}
    # speech ends at 1600 ms of audio; the turn ends after the eagerness' wait (20 ms frames)
    assert 1600 + silence_ms - 40 <= stopped["audio_end_ms"] <= 1600 + silence_ms + 80


async def test_semantic_vad_takes_no_server_vad_knobs(client: AsyncOpenAI) -> None:
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        await conn.session.update(session=cast(Any, {"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "semantic_vad", "idle_timeout_ms": 6000}}}}))
        (err,) = await recv_until(conn, "error")
        assert err["error"]["code"] == "unknown_parameter"
        assert err["error"]["param"] == "session.audio.input.turn_detection.idle_timeout_ms"
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "idle_timeout_ms": 1000}}}})
        (err,) = await recv_until(conn, "error")
        assert err["error"]["code"] == "integer_below_min_value"
        assert err["error"]["param"] == "session.audio.input.turn_detection.idle_timeout_ms"


async def test_idle_timeout_prompts_the_model(client: AsyncOpenAI) -> None:
    """server_vad idle_timeout_ms (minimum 5000): silence → timeout_triggered → commit → a response."""
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}})
        await recv_until(conn, "session.updated")
        t0 = time.monotonic()
        silence = base64.b64encode(bytes(24000 * 2)).decode()  # 1 s of silence: no speech, no turn
        await conn.input_audio_buffer.append(audio=silence)
        got = await recv_until(conn, "input_audio_buffer.timeout_triggered", timeout=10)
        waited = time.monotonic() - t0
        timeout = got[-1]
        rest = await recv_until(conn, "response.done")
    assert 4.5 <= waited <= 7.0
    assert not of(got, "input_audio_buffer.speech_started")
    assert timeout["audio_start_ms"] == 0 and timeout["audio_end_ms"] == 1000
    committed = of(rest, "input_audio_buffer.committed")[0]
    assert committed["item_id"] == timeout["item_id"]
    user = of(rest, "conversation.item.added")[0]["item"]
    assert user["id"] == timeout["item_id"] and user["content"] == [{"type": "input_audio", "transcript": None}]
    assert rest[-1]["response"]["status"] == "completed"


# ---- the journal sees every client frame -----------------------------------------------------------


async def test_every_client_frame_is_journaled(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await start(control, client)
    frames: list[str | bytes] = [
        json.dumps({"type": "session.update", "event_id": "evt_1", "session": {"type": "realtime",
                                                                                "instructions": "Hi"}}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"type": "nope.nope", "event_id": "evt_2"}),
        b"\x00\x01\x02",
        json.dumps({"type": "conversation.item.create", "event_id": "evt_3", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}),
        json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_4"}),
    ]
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        for frame in frames:
            await conn.send_raw(frame)
        await conn.send_raw(json.dumps({"type": "response.cancel", "event_id": "evt_last"}))
        got = await recv_until(conn, "error")
        while got[-1]["error"]["event_id"] != "evt_last":
            got += await recv_until(conn, "error")
    view = await control.call(call_id)
    logged = [e.data["event"] for e in view.of_kind("ws.client")]
    assert len(logged) == len(frames) + 1
    assert logged[0]["event_id"] == "evt_1" and logged[1] == "{not json" and logged[2] == [1, 2]
    assert logged[3] == {"type": "nope.nope", "event_id": "evt_2"}
    assert logged[4] == {"binary_bytes": 3}
    assert [e["event_id"] for e in logged[5:]] == ["evt_3", "evt_4", "evt_last"]
    # and every server event sent is there too, in order, with timestamps that never go backwards
    server = [e for e in view.entries if e.kind in ("ws.client", "ws.server")]
    assert [e.t_ms for e in server] == sorted(e.t_ms for e in server)
    errors = [e.data["event"]["error"]["code"] for e in view.of_kind("ws.server") if e.data["event"]["type"] == "error"]
    assert errors == ["invalid_json", "invalid_event", "invalid_value", "invalid_event",
                      "input_audio_buffer_commit_empty", "response_cancel_not_active"]
