"""The WAV files bench_sip plays: speech-like noise, near-silence after speech, and µ-law for SIPp.

Made once per comparison and shared by every stack, so no stack gets easier audio than another.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # G.711 for the SIPp WAV (3.11; the project pins it)

from mock_api.audio import load_audio, write_wav


def noise_wav(path: Path, seconds: float, seed: int) -> Path:
    """Speech-like noise at 8 kHz: smoothed, its level swinging 3 times a second as syllables do."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    x = np.convolve(rng.normal(0, 1, n), np.ones(3) / 3, mode="same")
    x *= 0.55 + 0.45 * np.sin(2 * np.pi * 3 * np.arange(n) / 8000)
    return write_wav(path, (x / np.max(np.abs(x)) * 9000).astype("<i2").tobytes(), 8000)


def quiet_wav(path: Path, speech: Path | None, seconds: float) -> Path:
    """``speech`` (if any) then near-silence (±2 LSB dither, below any VAD) for ``seconds``."""
    pcm = load_audio(speech, 8000) if speech is not None else b""
    rng = np.random.default_rng(11)
    tail = rng.integers(-2, 3, int(8000 * seconds)).astype("<i2").tobytes()
    return write_wav(path, pcm + tail, 8000)


def ulaw_wav(src: Path, dst: Path) -> Path:
    """A G.711 µ-law WAV (format 7) for SIPp's rtp_stream."""
    pcm = load_audio(src, 8000)
    u = audioop.lin2ulaw(pcm, 2)
    fmt = struct.pack("<IHHIIHHH", 18, 7, 1, 8000, 8000, 1, 8, 0)
    dst.write_bytes(b"RIFF" + struct.pack("<I", 4 + 26 + 8 + len(u)) + b"WAVE" + b"fmt " + fmt + b"data"
                    + struct.pack("<I", len(u)) + u)
    return dst
