"""harness.audio_compare: windowed correlation, VAD segments, levels (on committed fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

from audio_fixtures import fixture
from harness.audio_compare import VadSettings, best_lag_ms, rms_dbfs, speech_segments, windowed_correlation
from mock_api import audio as A

RATE = 8000


def _through_g711(pcm: bytes) -> bytes:
    return A.ulaw_to_pcm(A.pcm_to_ulaw(pcm))


@pytest.fixture(scope="module")
def reply() -> bytes:
    return fixture("assistant_ask_policy").pcm()


def test_identical_but_shifted_signal_matches(reply: bytes) -> None:
    recording = A.silence(437) + _through_g711(reply) + A.silence(300)
    res = windowed_correlation(reply, recording, RATE)
    assert res.lag_ms == pytest.approx(437, abs=1)
    assert res.matches(0.99, min_threshold=0.99), (res.median, res.min)
    assert len(res.scores) >= 5


def test_jitter_buffer_shift_fails_global_but_passes_windowed(reply: bytes) -> None:
    # The caller hears the reply, but the jitter buffer drops two 20 ms frames mid-call
    # and later inserts 60 ms: every second is intact, the timeline is not.
    x = A.to_array(A.silence(250) + _through_g711(reply))
    cut = 8000 * 3
    shifted = np.concatenate([x[:cut], x[cut + 320 :]])
    ins = 8000 * 5
    shifted = np.concatenate([shifted[:ins], np.zeros(480, dtype=np.int16), shifted[ins:]])
    recording = A.from_array(shifted)
    res = windowed_correlation(reply, recording, RATE)
    assert res.median > 0.99
    assert res.matches(0.95)
    assert len(set(res.lags_ms)) >= 2  # the windows saw the shift

    # a single global correlation at the best lag is misleadingly low
    lag = round(best_lag_ms(reply, recording, RATE) * RATE / 1000)
    a = A.to_array(reply).astype(np.float64)
    b = A.to_array(recording).astype(np.float64)[lag : lag + len(a)]
    b = np.pad(b, (0, len(a) - len(b)))
    global_ncc = float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))
    assert global_ncc < res.median - 0.1


def test_different_clip_does_not_match(reply: bytes) -> None:
    other = fixture("assistant_confirm_policy").pcm()  # same voice, different words
    res = windowed_correlation(reply, A.silence(200) + other, RATE)
    assert not res.matches(0.9)
    assert res.median < 0.5


def test_truncated_recording_fails_worst_window(reply: bytes) -> None:
    half = reply[: len(reply) // 2]
    res = windowed_correlation(reply, A.silence(100) + half, RATE)
    assert res.min < 0.3
    assert not res.matches(0.9, min_threshold=0.9)


def test_noise_and_silence_do_not_match(reply: bytes) -> None:
    assert not windowed_correlation(reply, fixture("line_noise_3s").pcm(), RATE).matches()
    assert not windowed_correlation(reply, A.silence(3000), RATE).matches()
    assert windowed_correlation(A.silence(1000), reply, RATE).scores == []  # nothing to look for


def test_works_at_24k_after_resampling(reply: bytes) -> None:
    ref24 = A.resample(reply, RATE, 24000)
    rec24 = A.resample(A.silence(120) + reply, RATE, 24000)
    assert windowed_correlation(ref24, rec24, 24000).matches(0.99)


def test_speech_segments_two_utterances() -> None:
    fx = fixture("caller_two_utterances")
    segs = speech_segments(fx.pcm(), RATE, VadSettings(**fx.vad_settings()))
    assert len(segs) == 2
    gap = segs[1][0] - segs[0][1]
    assert 1200 <= gap <= 1600  # ~1.5 s of silence between the utterances
    # a lower hangover than the gap still splits; a longer one merges
    assert len(speech_segments(fx.pcm(), RATE, VadSettings(hangover_ms=2000))) == 1


def test_speech_segments_at_other_rates_agree() -> None:
    fx = fixture("caller_greeting")
    s8 = speech_segments(fx.pcm(), 8000)
    s24 = speech_segments(fx.pcm(24000), 24000)  # resampled to 16 kHz for webrtcvad
    assert len(s8) == len(s24) == 1
    assert abs(s8[0][0] - s24[0][0]) <= 30 and abs(s8[0][1] - s24[0][1]) <= 60


def test_no_speech_in_silence_or_noise() -> None:
    assert speech_segments(A.silence(2000), RATE) == []
    assert speech_segments(fixture("line_noise_3s").pcm(), RATE) == []


def test_rms_dbfs() -> None:
    assert rms_dbfs(A.tone(1000, dbfs=-20)) == pytest.approx(-20, abs=0.1)
    assert rms_dbfs(A.silence(100)) == float("-inf")
    assert rms_dbfs(b"") == float("-inf")
    assert -35 < rms_dbfs(fixture("caller_greeting").pcm()) < -10
