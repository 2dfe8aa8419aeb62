"""A virtual caller speaks fixture audio into a call: the app sees a real turn over the SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from openai import AsyncOpenAI

from audio_fixtures import fixture
from mock_api.client import MockClient, MockControlError
from tests.realtime_fixtures import events_until

SCRIPT = {"turns": [{"hears": "My policy number is 5665-2870.", "says": "Thanks, I found it."}],
          "transcription_delay_s": 0.05}




async def test_fixture_speech_becomes_a_turn(client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call(script=SCRIPT)
    await client.realtime.calls.accept(call_id, type="realtime",
                                       audio={"input": {
        "transcription": {"model": "gpt-4o-transcribe"},
        # the hangover the fixture's segments were measured with, so digit pauses do not end the turn
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
    fx = fixture("caller_policy_number")
    async with client.realtime.connect(call_id=call_id) as conn:
        await events_until(conn, "session.created")
        await control.say(call_id, "caller_policy_number", speed=4)
        got = await events_until(conn, "conversation.item.input_audio_transcription.completed")
        kinds = [e.type for e in got]
        started = next(e for e in got if e.type == "input_audio_buffer.speech_started")
        stopped = next(e for e in got if e.type == "input_audio_buffer.speech_stopped")
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.committed")
        (seg_start, seg_end), = fx.speech_segments
        # As on the real API: the start includes prefix_padding_ms (300), the end silence_duration_ms (500).
        assert abs(started.audio_start_ms - max(0, seg_start - 300)) <= 150
        assert abs(stopped.audio_end_ms - (seg_end + 500)) <= 150
        assert got[-1].transcript == "My policy number is 5665-2870."
        await control.dtmf(call_id, "9#")
        dtmf = [e async for e in _take(conn, 2, "input_audio_buffer.dtmf_event_received")]
        assert [d.event for d in dtmf] == ["9", "#"]
    view = await control.call(call_id)
    assert {"caller.say", "caller.said", "caller.dtmf"} <= set(view.kinds())


async def _take(conn: Any, n: int, kind: str) -> Any:
    count = 0
    async with asyncio.timeout(10):
        async for event in conn:
            if event.type == kind:
                count += 1
                yield event
                if count == n:
                    return


async def test_say_refused_before_accept_and_for_unknown_fixture(control: MockClient, client: AsyncOpenAI) -> None:
    call_id = await control.start_call()
    with pytest.raises(MockControlError) as exc:
        await control.say(call_id, "caller_greeting")
    assert exc.value.status == 400 and exc.value.body["error"]["code"] == "call_not_active"
    await client.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(MockControlError) as exc:
        await control.say(call_id, "no_such_clip")
    assert exc.value.status == 400 and "no_such_clip" in exc.value.body["error"]["message"]
    with pytest.raises(MockControlError):
        await control.dtmf(call_id, "12x")
