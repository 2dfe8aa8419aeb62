"""The fake model hears what it can and never invents: fingerprints, plug-in recognisers, placeholders.

Known clips (``audio_fixtures/`` and a user's own clips with a JSON sidecar) are recognised by
fingerprint after G.711, resampling, 20 ms frame loss and the VAD cutting them into turns;
anything else is transcribed as ``[unrecognised audio, N s]`` unless a plugged-in recogniser
(a command or a Python callable) knows better. Sessions run over the sans-I/O core, a real
WebSocket, and a real SIP call (the worker hands each turn's audio over; both media paths).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from audio_fixtures import Fixture, fixture, list_fixtures
from harness.softphone import Softphone
from mock_api import audio
from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.fingerprint import FingerprintIndex, library_index, telephone_line
from mock_api.http import create_app
from mock_api.realtime.session import Heard
from mock_api.realtime.vad import committed_turns
from mock_api.recognisers import (
    CallableRecogniser,
    Chain,
    CommandRecogniser,
    FingerprintRecogniser,
    Recognition,
    build_recogniser,
    load_callable,
    unrecognised_text,
)
from mock_api.running import RunningMock
from mock_api.server import MockServer
from tests.helpers import until
from tests.realtime_fixtures import Driver, recv_until
from tests.sip_helpers import App, Receiver

SPEECH = [f for f in list_fixtures() if f.has_speech]
FAST = {"transcription_delay_s": 0.05, "response_latency_s": 0.01, "generation_speed": 50}
TRANSCRIBE_MANUAL = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"},
                                                             "turn_detection": None}}}
UNKNOWN_TEXT = "Please water the orange plants on the balcony every Tuesday."


def espeak(text: str, path: Path, voice: str = "en-us") -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True, timeout=30)
    return path


def joined(texts: list[str]) -> str:
    """Turn texts back into one sentence (a spelled word's hyphen joins without a space)."""
    out = ""
    for t in texts:
        out += ("" if not out or out.endswith("-") else " ") + t
    return out


# ---- the fingerprint --------------------------------------------------------------------------


@pytest.mark.parametrize("fx", SPEECH, ids=lambda f: f.name)
def test_every_fixture_recognised_through_the_line(fx: Fixture) -> None:
    index = library_index()
    for law, rate, seed in (("ulaw", 24000, 1), ("alaw", 16000, 2), ("ulaw", 8000, 3)):
        pcm = telephone_line(fx.pcm(), fx.rate, law=law, out_rate=rate, loss=0.01, seed=seed,
                             lead_ms=137 * seed, tail_ms=600)
        m = index.match(pcm, rate)
        assert m is not None, (law, rate, index.closest(pcm, rate))
        assert (m.clip, m.text, m.whole) == (fx.name, fx.text, True), (law, rate, m)
        assert m.score >= 0.3 and m.coverage >= 0.9, m


@pytest.mark.parametrize("fx", SPEECH, ids=lambda f: f.name)
def test_jitter_buffer_shifts_along_a_fixture_do_not_lose_it(fx: Fixture) -> None:
    """A busy receiver's jitter buffer drops or inserts frames, moving the rest of the audio 20-60 ms
    each time; three shifts every two seconds still give the whole clip (one offset for the whole
    query explained as little as 40 % of it, and a CI run heard "[unrecognised audio, 6.0 s]")."""
    index = library_index()
    shifts = round(1.5 * audio.duration_ms(fx.pcm(), fx.rate) / 1000)
    for seed in range(4):
        pcm = telephone_line(fx.pcm(), fx.rate, out_rate=24000, loss=0.01, seed=seed, lead_ms=300, tail_ms=600,
                             shifts=shifts)
        m = index.match(pcm, 24000)
        assert m is not None, (seed, index.closest(pcm, 24000))
        assert (m.clip, m.text, m.whole) == (fx.name, fx.text, True), (seed, m)


def test_drift_does_not_let_shared_words_pass_for_a_clip(tmp_path: Path) -> None:
    """Drift lets the same words line up at another offset; a sentence that shares only some of them
    with a clip in the same voice still is not that clip."""
    greeting = fixture("caller_greeting")
    pcm = audio.load_audio(espeak("Hi, this is Perry. I'm calling about my car.", tmp_path / "p.wav", "en-us"), 8000)
    m = library_index().closest(telephone_line(pcm, 8000, loss=0.01, seed=1), 8000)
    assert m is not None and m.clip == greeting.name and not m.accepted, m
    assert m.steady_coverage < 0.7 and m.coverage < 0.85, m


@pytest.mark.parametrize("fx", SPEECH, ids=lambda f: f.name)
def test_vad_turns_of_a_fixture_get_their_own_words(fx: Fixture) -> None:
    """The default server_vad (200 ms) cuts most fixtures at their sentence pauses: each turn is
    recognised as the same clip and gets the words it holds, which add back up to the sidecar text."""
    index = library_index()
    pcm = telephone_line(fx.pcm(), fx.rate, law="ulaw", out_rate=24000, loss=0.01, seed=7, lead_ms=410, tail_ms=800)
    turns = committed_turns(pcm, 24000)
    matches = [index.match(t, 24000) for t in turns]
    assert len(turns) >= 1
    if fx.name == "caller_spell_name":  # spelled letters are 250 ms turns: most, not all, are placed
        assert sum(1 for m in matches if m is not None and m.clip == fx.name) >= len(turns) - 1
        return
    assert all(m is not None and m.clip == fx.name for m in matches), matches
    assert joined([m.text for m in matches if m is not None]) == fx.text
    two = fixture("caller_two_utterances")
    if fx.name == two.name:  # per-segment sidecar text: each utterance is its own segment
        assert {s for m in matches if m is not None for s in m.segments} == {0, 1}


def test_users_clip_with_a_sidecar_recognised(tmp_path: Path) -> None:
    lib = tmp_path / "my_clips"
    lib.mkdir()
    text = "I would like to move my appointment to Friday afternoon."
    wav = espeak(text, lib / "move_appointment.wav", voice="en-gb")
    (lib / "move_appointment.json").write_text(json.dumps({"text": text, "language": "en"}))
    (lib / "notes.json").write_text("{}")  # a JSON file without audio beside it is not a clip
    index = library_index([lib])
    assert "move_appointment" in [c.name for c in index.clips] and not index.skipped
    pcm = telephone_line(audio.load_audio(wav, 16000), 16000, law="alaw", out_rate=24000, loss=0.01, seed=5,
                         lead_ms=250, tail_ms=500)
    m = index.match(pcm, 24000)
    assert m is not None and (m.clip, m.text, m.path) == ("move_appointment", text, wav), m
    # the fixtures stay in the same index, and a bad sidecar is reported, not fatal
    bad = tmp_path / "bad"
    bad.mkdir()
    espeak("Hello there.", bad / "broken.wav")
    (bad / "broken.json").write_text('{"words": "no text key"}')
    index2 = library_index([bad])
    assert [p.name for p, _ in index2.skipped] == ["broken.json"]
    assert index2.match(fixture("caller_confirm").pcm(), 8000) is not None


def test_sidecar_segments_give_per_segment_text(tmp_path: Path) -> None:
    first, second = "The parcel arrived broken.", "I want a refund please."
    a = audio.load_audio(espeak(first, tmp_path / "a.wav"), 8000)
    b = audio.load_audio(espeak(second, tmp_path / "b.wav"), 8000)
    gap = audio.silence(1500, 8000)
    pcm = gap[:2400] + a + gap + b + gap[:4800]
    start_b = audio.duration_ms(gap[:2400] + a + gap, 8000)
    index = FingerprintIndex()
    index.add("parcel", pcm, 8000, {"text": f"{first} {second}", "segments": [
        {"start_ms": 150, "end_ms": start_b - 1500, "text": first},
        {"start_ms": start_b, "end_ms": start_b + audio.duration_ms(b, 8000), "text": second}]})
    turns = committed_turns(telephone_line(pcm, 8000, loss=0.01, seed=3), 8000, silence_ms=500)
    got = [index.match(t, 8000) for t in turns]
    assert [(m.text, m.segments) for m in got if m is not None] == [(first, (0,)), (second, (1,))]


def test_unknown_audio_is_not_recognised(tmp_path: Path) -> None:
    pcm = audio.load_audio(espeak(UNKNOWN_TEXT, tmp_path / "unknown.wav", voice="en-us"), 8000)
    line = telephone_line(pcm, 8000, out_rate=24000, loss=0.01, seed=1)
    result = FingerprintRecogniser().recognise(line, 24000)
    ms = audio.duration_ms(line, 24000)
    assert not result.recognised and result.source == "none"
    assert result.text == unrecognised_text(ms) == f"[unrecognised audio, {ms / 1000:.1f} s]"
    assert result.reason.startswith("fingerprint: "), result.reason
    silent = FingerprintRecogniser().recognise(audio.silence(1000, 8000), 8000)
    assert not silent.recognised and "silence" in silent.reason


# ---- plug-in recognisers ----------------------------------------------------------------------


def fake_asr(pcm: bytes, rate: int) -> str:
    """A stand-in for a user's model: says how much audio it got."""
    return f"{len(pcm) // 2} samples at {rate} Hz"


def broken_asr(pcm: bytes, rate: int) -> str:
    raise RuntimeError("model file missing")


def test_command_recogniser_gets_a_wav_or_pcm_on_stdin(tmp_path: Path) -> None:
    pcm = audio.tone(1000, 24000, freq=500)
    script = tmp_path / "asr.py"
    script.write_text("import sys, wave\nw = wave.open(sys.argv[1])\n"
                      "print(f'  {w.getnframes()} frames\\n at {w.getframerate()} Hz  ')\n")
    by_file = CommandRecogniser([sys.executable, str(script), "{wav}"]).recognise(pcm, 24000)
    assert (by_file.text, by_file.recognised, by_file.source) == ("16000 frames at 16000 Hz", True, "command")
    stdin = [sys.executable, "-c", "import os, sys; print(len(sys.stdin.buffer.read()) // 2, os.environ["
             "'RTSIP_AUDIO_RATE'], sys.argv[1])", "{rate}"]
    assert CommandRecogniser(stdin, rate=8000).recognise(pcm, 24000).text == "8000 8000 8000"
    failing = CommandRecogniser([sys.executable, "-c", "import sys; sys.exit('no model')"]).recognise(pcm, 24000)
    assert not failing.recognised and failing.reason.endswith("exited with 1: no model")
    assert failing.text == "[unrecognised audio, 1.0 s]"
    silent = CommandRecogniser([sys.executable, "-c", "pass"]).recognise(pcm, 24000)
    assert not silent.recognised and "printed nothing" in silent.reason
    hung = CommandRecogniser([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=0.5)
    timed_out = hung.recognise(pcm, 24000)
    assert not timed_out.recognised and "timed out after 0.5 s" in timed_out.reason
    missing = CommandRecogniser(["/nonexistent/asr"]).recognise(pcm, 24000)
    assert not missing.recognised and "could not start" in missing.reason


def test_python_callable_recogniser() -> None:
    assert load_callable("tests.test_fingerprint:fake_asr") is fake_asr
    for bad in ("tests.test_fingerprint", "no_such_module_xyz:f", "tests.test_fingerprint:nope"):
        with pytest.raises(ValueError, match="recogniser"):
            load_callable(bad)
    pcm = audio.tone(500, 8000)
    ok = CallableRecogniser("tests.test_fingerprint:fake_asr").recognise(pcm, 8000)
    assert (ok.text, ok.source) == ("8000 samples at 16000 Hz", "callable")
    broken = CallableRecogniser(broken_asr).recognise(pcm, 8000)
    assert not broken.recognised and "raised RuntimeError: model file missing" in broken.reason


def test_chain_prefers_the_fingerprint_then_asks_the_plugin() -> None:
    chain = build_recogniser(python="tests.test_fingerprint:fake_asr")
    known = chain(fixture("caller_confirm").pcm(), 8000)
    assert isinstance(known, Recognition) and known.source == "fingerprint"  # inline: no thread needed
    unknown = chain(audio.tone(1000, 8000, freq=700), 8000)
    assert isinstance(unknown, Future)
    result = unknown.result(timeout=20)
    assert (result.text, result.source) == ("16000 samples at 16000 Hz", "callable")
    nobody = Chain([FingerprintRecogniser(), CallableRecogniser(lambda pcm, rate: None)])(audio.tone(500, 8000), 8000)
    assert isinstance(nobody, Future)
    reason = nobody.result(timeout=20).reason
    assert reason.startswith("fingerprint: ") and "returned no text" in reason


# ---- sessions ---------------------------------------------------------------------------------


def commit_turn(d: Driver, pcm: bytes, rate: int) -> None:
    d.send({"type": "session.update", "session": TRANSCRIBE_MANUAL})
    d.append_pcm(pcm, rate)
    d.send({"type": "input_audio_buffer.commit"})
    wait(d.session.pending_recognitions(), timeout=20)  # a plug-in's thread, not the session clock
    d.advance(1.0)


def heard(d: Driver) -> list[Recognition]:
    return [o.recognition for o in d.other if isinstance(o, Heard)]


def test_session_transcribes_a_fixture_from_its_audio_without_a_script() -> None:
    fx = fixture("caller_accident_claim")
    d = Driver(script=FAST)
    commit_turn(d, telephone_line(fx.pcm(), fx.rate, out_rate=24000, loss=0.01, seed=4), 24000)
    [done] = d.of("conversation.item.input_audio_transcription.completed")
    assert done["transcript"] == fx.text
    [h] = heard(d)
    assert (h.source, h.clip, h.recognised, h.language) == ("fingerprint", fx.name, True, "en")
    assert [o.item_id for o in d.other if isinstance(o, Heard)] == [done["item_id"]]


def test_session_says_plainly_when_it_did_not_recognise(tmp_path: Path) -> None:
    pcm = audio.load_audio(espeak(UNKNOWN_TEXT, tmp_path / "unknown.wav"), 24000)
    d = Driver(script=FAST)
    commit_turn(d, pcm, 24000)
    [done] = d.of("conversation.item.input_audio_transcription.completed")
    ms = audio.duration_ms(pcm, 24000)
    assert done["transcript"] == f"[unrecognised audio, {ms / 1000:.1f} s]"
    [h] = heard(d)
    assert not h.recognised and h.source == "none" and h.reason.startswith("fingerprint: ")
    entry = next(o for o in d.other if isinstance(o, Heard)).journal()
    assert entry["recognised"] is False and entry["text"] == done["transcript"] and entry["reason"]
    # the model "hears" the same: an out-of-band transcription repeats the placeholder
    d.send({"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"],
                                                    "instructions": "Transcribe the user's last turn."}})
    d.advance(2.0)
    assert d.of("response.output_text.done")[-1]["text"] == done["transcript"]


def test_session_uses_a_plugged_in_command_and_callable(tmp_path: Path) -> None:
    script = tmp_path / "asr.py"
    script.write_text("import sys, wave\nprint('caller said', wave.open(sys.argv[1]).getnframes(), 'frames')\n")
    pcm = audio.tone(800, 24000, freq=600)
    d = Driver(script=FAST, recogniser=build_recogniser(command=[sys.executable, str(script), "{wav}"]))
    commit_turn(d, pcm, 24000)
    [done] = d.of("conversation.item.input_audio_transcription.completed")
    assert done["transcript"] == "caller said 12800 frames"
    assert [h.source for h in heard(d)] == ["command"]
    d2 = Driver(script=FAST, recogniser=build_recogniser(python="tests.test_fingerprint:fake_asr"))
    commit_turn(d2, pcm, 24000)
    assert d2.of("conversation.item.input_audio_transcription.completed")[0]["transcript"] == \
        "12800 samples at 16000 Hz"


def test_the_script_still_wins_and_default_hears_still_works() -> None:
    fx = fixture("caller_greeting")
    d = Driver(script={**FAST, "turns": [{"hears": "Scripted words."}]})
    commit_turn(d, fx.pcm(24000), 24000)
    assert d.of("conversation.item.input_audio_transcription.completed")[0]["transcript"] == "Scripted words."
    assert [(h.source, h.text) for h in heard(d)] == [("script", "Scripted words.")]
    d2 = Driver(script={**FAST, "default_hears": "Hello, I have a question."})
    commit_turn(d2, fx.pcm(24000), 24000)
    assert d2.of("conversation.item.input_audio_transcription.completed")[0]["transcript"] == \
        "Hello, I have a question."


def test_recognised_clip_language_drives_the_asr_language_check() -> None:
    fx = fixture("caller_spanish")
    d = Driver(script=FAST)
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "transcription": {"model": "gpt-transcribe", "language": "en"}, "turn_detection": None}}}})
    d.append_pcm(fx.pcm(24000), 24000)
    d.send({"type": "input_audio_buffer.commit"})
    d.advance(1.0)
    [done] = d.of("conversation.item.input_audio_transcription.completed")
    assert done["transcript"] != fx.text and len(done["transcript"].split()) == len(fx.text.split())
    assert done["languages"] == [{"code": "en"}]  # forced to English: the Spanish clip is mis-heard


def test_media_path_hands_over_a_turns_audio() -> None:
    """A SIP session holds silence for caller audio unless the media path hands the turn over."""
    fx = fixture("caller_policy_number")
    d = Driver(transport="sip", script=FAST, config={"type": "realtime", "audio": {"input": {
        "transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad"}}}})
    start, stop = fx.speech_segments[0]
    d._take(d.session.media_speech_started(start, d.now))
    d._take(d.session.media_audio(telephone_line(fx.pcm(), fx.rate, loss=0.01, seed=2), 8000, 0, d.now))
    d._take(d.session.media_speech_stopped(stop, stop + 500, d.now))
    d.advance(1.0)
    assert d.of("conversation.item.input_audio_transcription.completed")[0]["transcript"] == fx.text
    # without the audio the committed turn is silence: said so, not invented
    d2 = Driver(transport="sip", script=FAST, config=d.session.config)
    d2._take(d2.session.media_speech_started(start, d2.now))
    d2._take(d2.session.media_speech_stopped(stop, stop + 500, d2.now))
    d2.advance(1.0)
    text = d2.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert text.startswith("[unrecognised audio, ") and "silence" in heard(d2)[0].reason


# ---- over a real WebSocket --------------------------------------------------------------------


@pytest.fixture
async def ws_mock() -> AsyncIterator[tuple[MockServer, AsyncOpenAI]]:
    server = MockServer(MockConfig(script=FAST))
    http = TestServer(create_app(server), host="127.0.0.1", port=0)
    await http.start_server()
    client = AsyncOpenAI(api_key="sk-test", base_url=f"http://127.0.0.1:{http.port}/v1", max_retries=0)
    try:
        yield server, client
    finally:
        await client.close()
        await http.close()


async def speak_over_ws(conn: Any, pcm8: bytes, silence_ms: int) -> None:
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "transcription": {"model": "gpt-4o-mini-transcribe"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms, "create_response": False}}}})
    await recv_until(conn, "session.updated")
    wire = audio.pcm_to_ulaw(pcm8)
    for i in range(0, len(wire), 800):  # 100 ms appends, as a browser or SIP bridge sends them
        await conn.input_audio_buffer.append(audio=base64.b64encode(wire[i:i + 800]).decode())


async def test_websocket_session_transcribes_a_fixture_without_a_script(
        ws_mock: tuple[MockServer, AsyncOpenAI]) -> None:
    server, client = ws_mock
    fx = fixture("caller_greeting")
    line = telephone_line(fx.pcm(), fx.rate, loss=0.01, seed=9, lead_ms=300, tail_ms=900)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        await speak_over_ws(conn, line, 500)
        got = await recv_until(conn, "conversation.item.input_audio_transcription.completed")
    assert got[-1]["transcript"] == fx.text
    journaled = [e.data["event"] for e in ws_server_entries(server)
                 if e.data["event"]["type"].endswith("input_audio_transcription.completed")]
    assert [e["transcript"] for e in journaled] == [fx.text]


async def test_websocket_vad_turns_and_unrecognised_audio(ws_mock: tuple[MockServer, AsyncOpenAI],
                                                         tmp_path: Path) -> None:
    server, client = ws_mock
    fx = fixture("caller_greeting")
    unknown = audio.load_audio(espeak(UNKNOWN_TEXT, tmp_path / "unknown.wav"), 8000)
    line = telephone_line(fx.pcm() + audio.silence(600) + unknown, fx.rate, loss=0.01, seed=3, tail_ms=900)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_until(conn, "session.created")
        await speak_over_ws(conn, line, 200)
        committed: list[str] = []
        said: dict[str, str] = {}
        async with asyncio.timeout(30):  # three turns; their transcripts may complete out of order
            while len(said) < 3:
                event = json.loads(await conn.recv_bytes())
                if event["type"] == "input_audio_buffer.committed":
                    committed.append(event["item_id"])
                elif event["type"] == "conversation.item.input_audio_transcription.completed":
                    said[event["item_id"]] = event["transcript"]
    texts = [said[i] for i in committed]
    assert joined(texts[:2]) == fx.text, texts  # "Hi, this is Michelle." + "I'm calling about my car insurance."
    placeholder = re.fullmatch(r"\[unrecognised audio, (\d+\.\d) s\]", texts[2])
    assert placeholder and 3.0 < float(placeholder.group(1)) < 5.0, texts
    journaled = [e.data["event"]["transcript"] for e in ws_server_entries(server)
                 if e.data["event"]["type"].endswith("input_audio_transcription.completed")]
    assert sorted(journaled) == sorted(texts)  # the journal holds the same three transcripts


# ---- over a real SIP call -----------------------------------------------------------------------


@pytest.mark.parametrize("sip_stack", ["native", "python"], indirect=True)
async def test_sip_call_fixture_recognised_by_fingerprint(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone) -> None:
    mock, receiver, _control = sip_stack
    assert mock.sip is not None
    mock.server.config = mock.server.config.model_copy(update={"script": {"transcription_delay_s": 0.1}})
    fx = fixture("caller_accident_claim")
    app = receiver.app = App(mock)
    app.accept["audio"]["input"]["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 500,
                                                      "create_response": False}
    call = await sip_phone.call(mock.sip.uri(), audio=[fx.path])
    assert await call.answered(timeout=10)
    await until(lambda: app.of("conversation.item.input_audio_transcription.completed"), timeout=30,
                what="the caller's transcript")
    await call.hangup()
    await call.ended(timeout=10)
    assert app.of("conversation.item.input_audio_transcription.completed")[0].transcript == fx.text
    [call_id] = mock.server.journal.call_ids()
    started = next(mock.server.journal.entries(call_id, "sip.speech_started")).data
    stopped = next(mock.server.journal.entries(call_id, "sip.speech_stopped")).data
    # the worker handed over the turn from prefix_padding_ms (300) before its onset up to the decision
    assert stopped["turn_audio_ms"] == [max(0, started["audio_ms"] - 300), stopped["detected_ms"]]
    heard = next(mock.server.journal.entries(call_id, "audio.heard")).data
    assert heard["source"] == "fingerprint" and heard["clip"] == fx.name and heard["text"] == fx.text


def ws_server_entries(server: Any) -> list[Any]:
    """Every ``ws.server`` entry in every timeline (call-less sessions journal under their own id)."""
    return [e for key in server.journal.call_ids() for e in server.journal.entries(key, "ws.server")]
