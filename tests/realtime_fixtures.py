"""Helpers shared by the Realtime tests: every server event is checked against the SDK.

``assert_server_event`` is the fidelity oracle of the design: an event the official SDK
cannot parse as ``RealtimeServerEvent`` fails the test that produced it. The lead may
import ``realtime_event_validator`` into tests/conftest.py so every test gets it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from mock_api import audio
from mock_api.realtime.session import AudioOut, Output, RealtimeSession
from mock_api.realtime.voice import speech_like

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
SEEN: list[dict[str, Any]] = []


def assert_server_event(event: dict[str, Any]) -> None:
    """Fail unless the SDK parses ``event`` as the model its ``type`` names (extra fields allowed)."""
    parsed = SERVER_EVENT.validate_python(event)
    assert getattr(parsed, "type", None) == event["type"], f"{event['type']} parsed as {type(parsed).__name__}"
    SEEN.append(event)


@pytest.fixture
def realtime_event_validator() -> Any:
    return assert_server_event


class Driver:
    """A RealtimeSession on a manual clock; validates every event it emits."""

    def __init__(self, **kw: Any) -> None:
        self.now = kw.pop("now", 0.0)
        self.session = RealtimeSession(now=self.now, **kw)
        self.events: list[dict[str, Any]] = []
        self.audio: list[AudioOut] = []
        self.other: list[Any] = []  # ClearAudio, Close, LimitHit
        self._take(self.session.start(self.now))

    def _take(self, outs: list[Output]) -> list[dict[str, Any]]:
        got = []
        for o in outs:
            if isinstance(o, dict):
                assert_server_event(o)
                got.append(o)
            elif isinstance(o, AudioOut):
                self.audio.append(o)
            else:
                self.other.append(o)
        self.events.extend(got)
        return got

    def send(self, event: dict[str, Any] | str, dt: float = 0.0) -> list[dict[str, Any]]:
        self.now += dt
        text = event if isinstance(event, str) else json.dumps(event)
        return self._take(self.session.receive(text, self.now))

    def advance(self, dt: float) -> list[dict[str, Any]]:
        """Move the clock by dt, firing timers in order (in small steps, like an event loop)."""
        got: list[dict[str, Any]] = []
        end = self.now + dt
        while True:
            nxt = self.session.next_deadline()
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            got.extend(self._take(self.session.advance(self.now)))
        self.now = end
        got.extend(self._take(self.session.advance(self.now)))
        return got

    def append_pcm(self, pcm: bytes, rate: int = 24000, chunk_ms: int = 100, fmt: str = "audio/pcm") -> list[dict]:
        """Send audio as input_audio_buffer.append events in real-time-sized chunks, advancing the clock."""
        got: list[dict[str, Any]] = []
        step = audio.samples_for_ms(chunk_ms, rate) * 2
        for i in range(0, len(pcm), step):
            chunk = pcm[i:i + step]
            wire = audio.encode_wire(chunk, rate, fmt)  # type: ignore[arg-type]
            got.extend(self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(wire).decode()}))
            got.extend(self.advance(chunk_ms / 1000.0))
        return got

    def feed(self, pcm: bytes, rate: int = 8000, chunk_ms: int = 20) -> list[dict[str, Any]]:
        """SIP media path: feed PCM frames in real time."""
        got: list[dict[str, Any]] = []
        step = audio.samples_for_ms(chunk_ms, rate) * 2
        for i in range(0, len(pcm), step):
            got.extend(self._take(self.session.feed_audio(pcm[i:i + step], rate, self.now)))
            got.extend(self.advance(chunk_ms / 1000.0))
        return got

    def types(self, events: list[dict[str, Any]] | None = None) -> list[str]:
        return [e["type"] for e in (self.events if events is None else events)]

    def of(self, type_: str, events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return [e for e in (self.events if events is None else events) if e["type"] == type_]


def utterance(speech_ms: float = 1200, rate: int = 24000, lead_ms: float = 400, tail_ms: float = 900) -> bytes:
    """Silence, speech-like audio, silence: one caller turn webrtcvad recognises."""
    return audio.silence(lead_ms, rate) + speech_like(speech_ms, rate) + audio.silence(tail_ms, rate)


async def recv_until(conn: Any, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Raw events from an SDK connection (each checked against the SDK's models) up to the first ``kind``."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await conn.recv_bytes())
            assert_server_event(event)
            got.append(event)
            if event["type"] == kind:
                return got


async def events_until(conn: Any, kind: str, timeout: float = 15.0) -> list[Any]:
    """Parsed SDK events up to the first ``kind``; fails if the socket closes first."""
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in conn:
            got.append(event)
            if event.type == kind:
                return got
    raise AssertionError(f"socket closed before {kind}")
