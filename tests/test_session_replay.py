"""A seed reproduces a whole session: same seed, clock and input give the same bytes out.

The session core takes its ids (and delta padding) from an injected ``IdSource``, its time from
``now``/``wall``, reply audio files from an injected loader and hearing from an injected
recogniser. Two sessions built alike and fed alike must emit byte-identical streams; every
server event is parsed by the SDK on the way (``Driver``).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict
from typing import Any

import pytest

from mock_api import audio, wire_json
from mock_api.ids import IdSource
from mock_api.realtime.session import AudioOut, ClearAudio, Heard, LimitHit, Output
from mock_api.recognisers import Recognition
from tests.realtime_fixtures import Driver, utterance

WALL = 1_760_000_000.0
SCRIPT = {
    "turns": [
        {"hears": "Book me a taxi to the station.",
         "tool_calls": [{"name": "book_taxi", "arguments": {"to": "station"}}],
         "after_tool": "Your taxi is booked and will arrive in five minutes."},
        {"says": "Of course, anything else?", "audio": "replies/anything_else.wav"},
    ],
    "response_latency_s": 0.05,
    "generation_speed": 4.0,
}
TOOLS = [{"type": "function", "name": "book_taxi", "description": "Book a taxi.",
          "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}]
UPDATE = {"type": "session.update", "session": {"type": "realtime", "tools": TOOLS, "include": [
    "item.input_audio_transcription.logprobs"], "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe", "language": "en"}}}}}
TURN_24K = utterance(1000, rate=24000)
TURN_8K = utterance(900, rate=8000, lead_ms=0, tail_ms=400)
REPLY_PCM = audio.silence(700, 24000)
SERVER_ID = re.compile(r'"((?:event|item|resp|sess|conv|call)_[A-Za-z0-9]{16,})"')


class Loader:
    """Reply audio 'files' without a file system: records what the core asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    def __call__(self, path: str, rate: int) -> bytes:
        self.asked.append((path, rate))
        return REPLY_PCM if rate == 24000 else audio.resample(REPLY_PCM, 24000, rate)


def recogniser(pcm: bytes, rate: int) -> Recognition:
    """What a plug-in would hear in any unscripted turn (deterministic, no fixtures read)."""
    return Recognition("Is there anything else?", True, "callable", "test recogniser", audio.duration_ms(pcm, rate))


def wire(outputs: list[Output]) -> bytes:
    """The session's outputs as bytes: events as sent on the socket, side outputs by their fields."""
    lines = []
    for o in outputs:
        if isinstance(o, dict):
            lines.append(wire_json.dumps(o))  # the frame the socket sends
        elif isinstance(o, AudioOut):
            lines.append(f"AudioOut {o.response_id} {o.item_id} {o.rate} {o.voice} {o.corrupt} {o.pcm.hex()}")
        elif isinstance(o, Heard):
            lines.append(f"Heard {json.dumps(o.journal())}")
        else:
            lines.append(f"{type(o).__name__} {json.dumps(asdict(o), default=str)}")
    return "\n".join(lines).encode()


class Recorder(Driver):
    """A Driver that also keeps every output, in order, as the adapter would get it."""

    def __init__(self, **kw: Any) -> None:
        self.stream: list[Output] = []
        super().__init__(**kw)

    def _take(self, outs: list[Output]) -> list[dict[str, Any]]:
        self.stream.extend(outs)
        return super()._take(outs)


def websocket_session(seed: int, loader: Loader | None = None) -> Recorder:
    """Tool call, tool output, spoken reply, a barge-in with a file-backed reply, retrieve, an error."""
    d = Recorder(ids=IdSource(seed), wall=WALL, script=SCRIPT, recogniser=recogniser,
                 audio_loader=loader or Loader())
    d.send(UPDATE)
    d.append_pcm(TURN_24K)
    d.advance(2.0)
    (call,) = d.of("response.function_call_arguments.done")
    d.send({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call["call_id"],
                                                         "output": '{"eta_min": 5}'}})
    d.send({"type": "response.create"})
    d.advance(0.3)
    d.append_pcm(TURN_24K)  # talks over the reply: cancelled, then the second turn is answered
    d.advance(3.0)
    d.send({"type": "conversation.item.retrieve", "item_id": d.of("conversation.item.done")[-1]["item"]["id"]})
    d.send({"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"],
                                                    "instructions": "Say 'goodbye' to the caller."}})
    d.advance(1.0)
    d.send({"type": "conversation.item.delete", "item_id": "item_missing"})
    d.send("not json")
    return d


def sip_session(seed: int) -> Recorder:
    """Greeting on the media path, a caller who talks over it, DTMF, a clear, a turn from the media VAD."""
    d = Recorder(ids=IdSource(seed), wall=WALL, transport="sip", config={"type": "realtime"},
                 script={"greeting": "Welcome to the taxi line, where would you like to go?",
                         "turns": [{"hears": "The station, please.", "says": "Booked."}],
                         "response_latency_s": 0.0, "generation_speed": 1000},
                 recogniser=recogniser, audio_loader=Loader())
    d.send({"type": "response.create"})
    d.advance(0.5)
    d.feed(TURN_8K, rate=8000)
    d._take(d.session.dtmf("5", d.now))
    d.advance(5.0)
    d.send({"type": "output_audio_buffer.clear"})
    # a turn found by the media path's own VAD, its audio handed over before the end
    d._take(d.session.media_speech_started(9000, d.now))
    d._take(d.session.media_audio(TURN_8K, 8000, 8700.0, d.now))
    d._take(d.session.media_speech_stopped(9900, 10100, d.now))
    d.advance(5.0)
    return d


def ids_in(d: Driver) -> set[str]:
    """Every server-made id in the stream: event ids and the session, item, response and call ids."""
    return {m for e in d.events for m in SERVER_ID.findall(json.dumps(e))}


@pytest.mark.parametrize("build", [websocket_session, sip_session], ids=["websocket", "sip"])
def test_same_seed_same_clock_same_bytes(build: Any) -> None:
    first, second = build(7), build(7)
    assert len(first.events) > 40  # a whole session, not a greeting
    assert wire(first.stream) == wire(second.stream)


def test_the_streams_cover_what_a_session_does() -> None:
    """The replayed sessions exercise ids, padding, transcription, tools, barge-in and the media path."""
    ws, sip = websocket_session(3), sip_session(3)
    types = set(ws.types())
    assert {"conversation.item.input_audio_transcription.delta", "response.function_call_arguments.delta",
            "response.output_audio.delta", "conversation.item.retrieved", "response.output_text.delta",
            "error"} <= types
    assert [r["response"]["status"] for r in ws.of("response.done")].count("cancelled") == 1
    assert all(e.get("obfuscation") for e in ws.events if e["type"].endswith(".delta"))
    assert any(isinstance(o, AudioOut) for o in sip.stream)
    assert any(isinstance(o, ClearAudio) for o in sip.stream)
    assert not any(isinstance(o, LimitHit) for o in ws.stream + sip.stream)
    assert "input_audio_buffer.dtmf_event_received" in sip.types()
    assert len(sip.of("input_audio_buffer.committed")) == 2


def test_a_different_seed_gives_different_ids() -> None:
    a, b = websocket_session(7), websocket_session(8)
    assert a.types() == b.types()  # the same conversation ...
    ids_a, ids_b = ids_in(a), ids_in(b)
    assert len(ids_a) > 40
    assert not ids_a & ids_b  # ... with none of the same ids
    pads = [(x.get("obfuscation"), y.get("obfuscation")) for x, y in zip(a.events, b.events, strict=True)
            if "obfuscation" in x]
    assert pads and any(x != y for x, y in pads)


def test_reply_audio_files_come_through_the_injected_loader() -> None:
    loader = Loader()
    d = websocket_session(1, loader)
    assert loader.asked == [("replies/anything_else.wav", 24000)]  # the path was never opened by the core
    (item,) = [e["item"] for e in d.of("conversation.item.retrieved")]
    assert item["role"] == "assistant" and item["content"][0]["transcript"] == "Of course, anything else?"
    got = audio.decode_wire(base64.b64decode(item["content"][0]["audio"]), "audio/pcm")[0]
    assert got == REPLY_PCM


def test_expiry_comes_from_the_injected_wall_clock() -> None:
    d = websocket_session(1)
    assert d.events[0]["session"]["expires_at"] == int(WALL) + 3600
