"""The committed audio fixtures: every clip loads and its sidecar tells the truth about it."""

from __future__ import annotations

import json
import re
import shutil
import wave
from pathlib import Path

import pytest

from audio_fixtures import FIXTURE_DIR, Fixture, FixtureNotFound, fixture, fixture_names, list_fixtures
from audio_fixtures.generate import committed_turns
from harness.audio_compare import VadSettings, speech_segments
from mock_api.audio import duration_ms, load_audio

ALL = list_fixtures()
SIDECAR_KEYS = {"text", "language", "voice", "duration_ms", "rate", "speech_segments", "role"}


def test_enough_fixtures_and_every_wav_has_a_sidecar() -> None:
    assert len(ALL) >= 12
    wavs = {p.stem for p in FIXTURE_DIR.glob("*.wav")}
    jsons = {p.stem for p in FIXTURE_DIR.glob("*.json")}
    assert wavs == jsons == set(fixture_names())
    assert {f.role for f in ALL} == {"caller", "assistant", "noise", "silence"}
    assert len(list_fixtures("assistant")) >= 3


def test_seed_cases_are_covered() -> None:
    callers = list_fixtures("caller")
    texts = {f.name: f.text for f in callers}
    assert any(re.search(r"accident", t) and re.search(r"claim", t) for t in texts.values())
    assert re.search(r"\b\d{4}-\d{4}\b", fixture("caller_policy_number").text)
    assert re.search(r"\b(?:[A-Z]-){2,}[A-Z]\b", fixture("caller_spell_name").text)  # spelled out
    assert any(f.language == "es" for f in callers)
    assert re.search(r"\bhuman\b", fixture("caller_ask_human").text)
    assert len(fixture("caller_two_utterances").speech_segments) == 2
    assert fixture("silence_3s").speech_segments == ()
    assert fixture("line_noise_3s").speech_segments == ()


@pytest.mark.parametrize("fx", ALL, ids=lambda f: f.name)
def test_sidecar_matches_audio(fx: Fixture) -> None:
    raw = json.loads(fx.sidecar.read_text(encoding="utf-8"))
    assert raw.keys() >= SIDECAR_KEYS
    assert raw["vad"]["engine"] == "webrtcvad"
    with wave.open(str(fx.path), "rb") as w:  # committed format: 8 kHz mono 16-bit
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
    pcm = load_audio(fx.path, fx.rate)
    assert fx.rate == 8000
    assert abs(duration_ms(pcm, fx.rate) - fx.duration_ms) <= 1
    measured = speech_segments(pcm, fx.rate, VadSettings(**fx.vad_settings()))
    assert len(measured) == len(fx.speech_segments)
    for (a0, a1), (b0, b1) in zip(measured, fx.speech_segments, strict=True):
        assert abs(a0 - b0) <= 30 and abs(a1 - b1) <= 30
    # committed_turns is what the mock's own turn detection makes of the clip today
    assert raw["committed_turns"] == committed_turns(fx.name, pcm, fx.rate, raw)
    if fx.role in ("caller", "assistant"):
        assert fx.committed_turns["semantic_vad"][-1].text.endswith(fx.utterances[-1])
        assert 2000 <= fx.duration_ms <= 8000
        assert fx.text and fx.language in ("en", "es") and fx.voice
        assert len(fx.utterances) == len(fx.speech_segments) == len(fx.placed_ms)
        for (p0, p1), (s0, s1) in zip(fx.placed_ms, fx.speech_segments, strict=True):
            assert abs(p0 - s0) <= 60 and 0 <= s1 - p1 <= 200  # VAD runs a little past the audio
        assert fx.speech_segments[0][0] > 0  # leading silence, so speech_started has a time
        assert fx.duration_ms - fx.speech_segments[-1][1] >= 200  # trailing silence
    else:
        assert fx.speech_segments == () and fx.text == ""


def test_fixture_lookup() -> None:
    fx = fixture("caller_greeting.wav")
    assert fx.name == "caller_greeting" and fx.path.exists()
    assert fixture("caller_greeting") is fx
    with pytest.raises(FixtureNotFound, match=r"known: .*caller_greeting"):
        fixture("no_such_clip")
    assert len(fx.pcm(24000)) == 3 * len(fx.pcm())


def test_story_is_deterministic() -> None:
    from audio_fixtures.generate import clips, make_story

    assert make_story(7) == make_story(7)
    assert make_story(7) != make_story(8)
    texts = [(c.name, [u.text for u in c.utterances]) for c in clips(make_story(7))]
    assert texts == [(c.name, [u.text for u in c.utterances]) for c in clips(make_story(7))]
    assert {c.name for c in clips(make_story(7))} == set(fixture_names())


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng needed only to regenerate")
def test_generator_rebuilds_a_clip(tmp_path: Path) -> None:
    from audio_fixtures.generate import generate

    assert generate(tmp_path, only=["caller_confirm", "line_noise_3s"]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "caller_confirm.json",
        "caller_confirm.wav",
        "line_noise_3s.json",
        "line_noise_3s.wav",
    ]
    # same seed, same bytes as the committed noise clip
    assert (tmp_path / "line_noise_3s.wav").read_bytes() == (FIXTURE_DIR / "line_noise_3s.wav").read_bytes()
