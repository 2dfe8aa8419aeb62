"""mock_api.audio: G.711, resampling, files, framing, generators."""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mock_api import audio as A

RATE_PAIRS = [(s, d) for s in A.SUPPORTED_RATES for d in A.SUPPORTED_RATES if s != d]


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    err = ref.astype(np.float64) - got.astype(np.float64)
    return 10 * math.log10(float(np.mean(ref.astype(np.float64) ** 2)) / max(float(np.mean(err**2)), 1e-12))


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


# --------------------------------------------------------------------------- G.711


def test_g711_matches_audioop_bit_for_bit() -> None:
    audioop = pytest.importorskip("audioop")  # gone in 3.13; the tables stay the reference
    pcm = ALL_INT16.tobytes()
    codes = bytes(range(256))
    assert A.pcm_to_ulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    assert A.pcm_to_alaw(pcm) == audioop.lin2alaw(pcm, 2)
    assert A.ulaw_to_pcm(codes) == audioop.ulaw2lin(codes, 2)
    assert A.alaw_to_pcm(codes) == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize(("enc", "dec"), [(A.pcm_to_ulaw, A.ulaw_to_pcm), (A.pcm_to_alaw, A.alaw_to_pcm)])
def test_g711_round_trip_error_bounds(enc: Callable[[bytes], bytes], dec: Callable[[bytes], bytes]) -> None:
    pcm = ALL_INT16.tobytes()
    coded = enc(pcm)
    assert len(coded) == len(ALL_INT16)  # one byte per sample
    back = A.to_array(dec(coded)).astype(np.int32)
    x = ALL_INT16.astype(np.int32)
    err = np.abs(back - x)
    # logarithmic quantizer: error at most ~1/16 of the magnitude (3% typical), small absolute near zero
    assert np.all(err <= np.maximum(np.abs(x) // 16, 32) + 1), int(np.max(err - np.abs(x) // 16))
    # decoding is a fixed point: decode(encode(decode(c))) == decode(c) for every code
    codes = bytes(range(256))
    once = dec(codes)
    assert dec(enc(once)) == once


def test_g711_speech_level_snr() -> None:
    pcm = A.white_noise(1000, 8000, dbfs=-20, seed=7)
    ref = A.to_array(pcm)
    assert _snr_db(ref, A.to_array(A.ulaw_to_pcm(A.pcm_to_ulaw(pcm)))) > 35
    assert _snr_db(ref, A.to_array(A.alaw_to_pcm(A.pcm_to_alaw(pcm)))) > 35


def test_g711_silence_codes() -> None:
    assert A.pcm_to_ulaw(A.silence(20)) == b"\xff" * 160
    assert A.pcm_to_alaw(A.silence(20)) == b"\xd5" * 160


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("ms", [20, 1000, 2437])
def test_resample_preserves_duration(src: int, dst: int, ms: int) -> None:
    pcm = A.white_noise(ms, src, seed=1)
    out = A.resample(pcm, src, dst)
    n_in = len(pcm) // 2
    assert len(out) // 2 == math.ceil(n_in * dst / src)
    assert abs(A.duration_ms(out, dst) - A.duration_ms(pcm, src)) <= 1000 / dst


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resample_keeps_in_band_tone(src: int, dst: int) -> None:
    out = A.resample(A.tone(1000, src, freq=1000), src, dst)
    ref = A.to_array(A.tone(1000, dst, freq=1000))
    got = A.to_array(out)
    assert _snr_db(ref[50:-50], got[50:-50]) > 50  # zero delay, unity gain


def test_resample_rejects_aliases() -> None:
    out = A.resample(A.tone(1000, 24000, freq=6000, dbfs=-10), 24000, 8000)
    steady = A.to_array(out)[50:-50]  # the tone's abrupt ends leak through any filter; judge the middle
    rms = float(np.sqrt(np.mean(steady.astype(np.float64) ** 2)))
    assert 20 * math.log10(max(rms, 1e-9) / 32768) < -60


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_streaming_resampler_equals_one_shot(src: int, dst: int) -> None:
    pcm = A.white_noise(750, src, dbfs=-15, seed=3)
    rng = np.random.default_rng(0)
    r = A.Resampler(src, dst)
    out, pos = b"", 0
    while pos < len(pcm):
        step = int(rng.integers(1, 700))  # odd sizes too: half samples carry over
        out += r.process(pcm[pos : pos + step])
        pos += step
    out += r.flush()
    assert out == A.resample(pcm, src, dst)


def test_to_rate_keeps_one_stream_per_source_rate() -> None:
    """Chunks at two rates, interleaved: each rate's output is what one stream of its chunks gives."""
    a24, a16 = A.white_noise(400, 24000, seed=1), A.white_noise(400, 16000, seed=2)
    to8 = A.ToRate(8000)
    ref24, ref16 = A.Resampler(24000, 8000), A.Resampler(16000, 8000)
    for k in range(0, 400, 20):
        c24, c16 = a24[k * 48:(k + 20) * 48], a16[k * 32:(k + 20) * 32]
        assert to8.convert(c24, 24000) == ref24.process(c24)
        assert to8.convert(c16, 16000) == ref16.process(c16)
    same = A.white_noise(20, 8000)
    assert to8.convert(same, 8000) == same


def test_resample_same_rate_is_identity() -> None:
    pcm = A.white_noise(100, 8000)
    assert A.resample(pcm, 8000, 8000) == pcm


# --------------------------------------------------------------------------- framing, base64, wire


def test_frames_and_durations() -> None:
    pcm = A.silence(1010, 8000)
    assert A.duration_ms(pcm, 8000) == 1010
    fr = list(A.frames(pcm, 8000, 20))
    assert len(fr) == 51 and all(len(f) == 320 for f in fr)
    assert len(list(A.frames(pcm, 8000, 20, pad=False))) == 50
    assert A.frame_bytes(24000, 20) == 960


def test_base64_round_trip_and_strict() -> None:
    pcm = A.white_noise(40, 24000, seed=2)
    text = A.pcm_to_b64(pcm)
    assert isinstance(text, str) and A.b64_to_pcm(text) == pcm
    with pytest.raises(ValueError, match="base64"):
        A.b64decode("not base64!!")


@pytest.mark.parametrize(
    ("fmt", "rate", "width"), [("audio/pcm", 24000, 2), ("audio/pcmu", 8000, 1), ("g711_alaw", 8000, 1)]
)
def test_wire_formats(fmt: A.WireFormat, rate: int, width: int) -> None:
    pcm = A.tone(200, 8000, freq=440)
    wire = A.encode_wire(pcm, 8000, fmt)
    assert len(wire) == A.samples_for_ms(200, rate) * width
    back, back_rate = A.decode_wire(wire, fmt)
    assert back_rate == rate
    assert abs(A.duration_ms(back, back_rate) - 200) < 1


# --------------------------------------------------------------------------- files


def _write_raw_wav(path: Path, raw: bytes, rate: int, channels: int, width: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def test_write_and_load_wav_round_trip(tmp_path: Path) -> None:
    pcm = A.tone(500, 8000)
    p = A.write_wav(tmp_path / "sub" / "x.wav", pcm, 8000)
    assert A.load_audio(p, 8000) == pcm
    assert len(A.load_audio(p, 24000)) == 3 * len(pcm)


def test_load_stereo_and_other_rates_without_ffmpeg(tmp_path: Path) -> None:
    mono = A.to_array(A.tone(500, 16000, freq=500))
    stereo = np.stack([mono, mono], axis=1).astype("<i2").tobytes()
    p = tmp_path / "stereo16k.wav"
    _write_raw_wav(p, stereo, 16000, 2, 2)
    out = A.to_array(A.load_audio(p, 8000))
    ref = A.to_array(A.tone(500, 8000, freq=500))
    assert len(out) == len(ref) and _snr_db(ref[20:-20], out[20:-20]) > 40
    # 8-bit unsigned WAV
    u8 = ((mono.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()
    p8 = tmp_path / "u8.wav"
    _write_raw_wav(p8, u8, 16000, 1, 1)
    assert _snr_db(mono[100:-100], A.to_array(A.load_audio(p8, 16000))[100:-100]) > 25


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg needed for non-WAV input")
def test_load_non_wav_through_pydub(tmp_path: Path) -> None:
    src = A.write_wav(tmp_path / "x.wav", A.tone(1000, 8000, freq=700), 8000)
    flac = tmp_path / "x.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(src), str(flac)], check=True)
    out = A.load_audio(flac, 8000)
    assert abs(A.duration_ms(out, 8000) - 1000) <= 1
    assert _snr_db(A.to_array(A.tone(1000, 8000, freq=700)), A.to_array(out)) > 60


# --------------------------------------------------------------------------- generators


def test_generators_are_seeded_and_levelled() -> None:
    assert A.white_noise(100, seed=5) == A.white_noise(100, seed=5)
    assert A.white_noise(100, seed=5) != A.white_noise(100, seed=6)
    assert A.line_noise(500, seed=1) == A.line_noise(500, seed=1)
    for pcm, level in [
        (A.white_noise(2000, dbfs=-30), -30),
        (A.line_noise(2000, dbfs=-45), -45),
        (A.tone(1000, dbfs=-20), -20),
    ]:
        rms = float(np.sqrt(np.mean(A.to_array(pcm).astype(np.float64) ** 2)))
        assert abs(20 * math.log10(rms / 32768) - level) < 0.5
    assert A.silence(20, 16000) == b"\x00" * 640


def test_scale_and_mix() -> None:
    loud = A.scale_to_dbfs(A.white_noise(500, dbfs=-40), -20, peak_dbfs=0)
    rms = float(np.sqrt(np.mean(A.to_array(loud).astype(np.float64) ** 2)))
    assert abs(20 * math.log10(rms / 32768) + 20) < 0.5
    m = A.mix(A.tone(100, dbfs=-6), A.tone(50, dbfs=-6))
    assert len(m) == len(A.tone(100)) and int(np.max(np.abs(A.to_array(m)))) <= 32767
