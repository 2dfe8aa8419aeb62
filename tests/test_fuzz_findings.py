"""What the 100,000-case fuzz campaign (bench/bench_fuzz.py, seed 1) found, each pinned.

- an out-of-band ``response.create`` whose inline ``input`` holds a user message without an id crashed
  the session core (it looked the item up by id);
- a custom voice (``{"id": "voice_..."}``) was echoed as an object in ``response.audio.output.voice``,
  which the SDK's ``RealtimeResponse`` refuses (it is the voice's id there);
- ``PUT /_mock/config`` took a 2**64 ``ws_max_message_bytes``; aiohttp then mis-read every frame of the
  next socket (a protocol error instead of the API's answers).
"""

from __future__ import annotations

import json
from typing import Any

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
