"""Turn detection done by the media path (SIP workers hand over only each turn's audio, with its end).

The SIP ingress hands the session speech boundaries instead of audio: ``media_speech_started``
(first voiced ms) and ``media_speech_stopped`` (last voiced ms, and when the silence ran out). The
session turns them into the same events its own VAD would emit, with real audio milliseconds, and
tells the ingress its effective config so the worker's VAD follows ``turn_detection``.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI

from mock_api import session_host
from mock_api.client import MockClient
from mock_api.realtime.session import ClearAudio
from mock_api.running import RunningMock
from tests.realtime_fixtures import Driver, recv_until

SCRIPT = {"turns": [{"hears": "I'd like to book a table.", "says": "For how many people?"}],
          "response_latency_s": 0.01, "transcription_delay_s": 0.05}
WHISPER = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}


def test_media_boundaries_make_a_full_turn() -> None:
    d = Driver(transport="sip", config=WHISPER, script=SCRIPT)
    got = d._take(d.session.media_speech_started(1000, d.now))
    (started,) = got
    assert started["type"] == "input_audio_buffer.speech_started"
    assert started["audio_start_ms"] == 700  # first voiced ms minus prefix_padding_ms (300)
    assert d._take(d.session.media_speech_started(1100, d.now)) == []  # already in a turn
    d.now += 1.5
    got = d._take(d.session.media_speech_stopped(2300, 2500, d.now))
    assert d.types(got)[:4] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                                "conversation.item.added", "conversation.item.done"]
    assert got[0]["audio_end_ms"] == 2500 and got[0]["item_id"] == started["item_id"]
    assert "response.created" in d.types(got)  # create_response: true
    d.advance(3)
    (comp,) = d.of("conversation.item.input_audio_transcription.completed")
    assert comp["item_id"] == started["item_id"] and comp["transcript"] == "I'd like to book a table."
    assert comp["usage"] == {"type": "duration", "seconds": 1.8}  # 700..2500 ms of caller audio
    assert d.of("response.done")[0]["response"]["usage"]["input_token_details"]["audio_tokens"] == 18


def test_manual_turns_still_learn_the_audio_length() -> None:
    d = Driver(transport="sip", config={"type": "realtime", "audio": {"input": {"turn_detection": None}}},
               script=SCRIPT)
    assert d._take(d.session.media_speech_started(400, d.now)) == []
    assert d._take(d.session.media_speech_stopped(1400, 1600, d.now)) == []
    got = d.send({"type": "input_audio_buffer.commit"})
    assert d.types(got) == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert not d.of("input_audio_buffer.speech_started")
    item_id = got[0]["item_id"]
    pcm, rate = d.session.item_audio[item_id]
    assert len(pcm) // 2 * 1000 // rate == 1600


def test_media_speech_barges_in_on_playback() -> None:
    d = Driver(transport="sip", config={"type": "realtime"}, script={**SCRIPT, "generation_speed": 50})
    d.send({"type": "response.create"})
    d.advance(0.3)  # generated, still playing on the line
    rid = d.of("response.created")[0]["response"]["id"]
    got = d._take(d.session.media_speech_started(5000, d.now))
    assert d.types(got)[0] == "input_audio_buffer.speech_started"
    assert any(isinstance(o, ClearAudio) and o.response_id == rid for o in d.other)
    assert [e["response_id"] for e in d.of("output_audio_buffer.cleared", got)] == [rid]




async def test_host_forwards_boundaries_and_config(mock: RunningMock, control: MockClient,
                                                   client: AsyncOpenAI) -> None:
    call_id = await control.start_call(script=SCRIPT)
    await client.realtime.calls.accept(call_id, type="realtime", audio={"input": {
        "transcription": {"model": "gpt-4o-transcribe"}}})
    host = session_host.get_session(mock.server, call_id)
    assert host is not None
    configs: list[dict[str, Any]] = []
    host.on_session_config = configs.append
    assert configs[0]["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # told at once
    async with client.realtime.connect(call_id=call_id) as conn:
        await recv_until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}})
        await recv_until(conn, "session.updated")
        assert configs[-1]["audio"]["input"]["turn_detection"]["eagerness"] == "high"
        host.media_speech_started(1200)
        host.media_speech_stopped(2000, 2300)
        got = await recv_until(conn, "conversation.item.input_audio_transcription.completed")
    started = next(e for e in got if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in got if e["type"] == "input_audio_buffer.speech_stopped")
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (900, 2300)
    assert got[-1]["transcript"] == "I'd like to book a table."
    assert got[-1]["usage"]["input_token_details"]["audio_tokens"] == 14  # 1.4 s at 1 token / 100 ms
