"""Synthetic "speech" for replies that the script gives only as text.

A harmonic buzz (a voice's pitch with overtones) shaped into syllables, so that a VAD on
the far end (the softphone measuring time-to-first-audio) hears speech, and with a length
proportional to the text (``ms_per_char``, ≈ 60 ms per character ≈ natural speaking
rate), so durations and usage come out plausible.

Each built-in voice speaks at its own pitch (:data:`VOICE_PITCH_HZ`; custom voices
``{"id": "voice_…"}`` get a stable pitch from their id), so which voice a reply used is
audible in the recording, as it is on the real service (failure mode 17: the greeting in
the old voice).

Synthesis is cached per (duration, rate, pitch): replies of the same length are the same
bytes, which keeps a busy mock from re-synthesising the same reply for every call.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from .. import audio

VOICE_PITCH_HZ = {"alloy": 150.0, "ash": 120.0, "ballad": 135.0, "coral": 210.0, "echo": 110.0, "sage": 190.0,
                  "shimmer": 225.0, "verse": 125.0, "marin": 200.0, "cedar": 105.0}


def voice_name(voice: Any) -> str:
    """``"ash"`` for ``"ash"``, ``"voice_…"`` for a custom ``{"id": "voice_…"}``."""
    if isinstance(voice, dict):
        return str(voice.get("id") or "custom")
    return str(voice) if voice is not None else "alloy"


def voice_pitch(voice: Any) -> float:
    name = voice_name(voice)
    if name in VOICE_PITCH_HZ:
        return VOICE_PITCH_HZ[name]
    return 100.0 + zlib.crc32(name.encode()) % 130


def reply_ms(text: str, ms_per_char: float) -> float:
    return max(300.0, len(text.strip()) * ms_per_char)


def speech_like(ms: float, rate: int, *, pitch_hz: float = 150.0, dbfs: float = -22.0) -> bytes:
    """``ms`` of speech-like audio at ``rate`` (cached; the bytes are immutable)."""
    return _speech_like(float(ms), int(rate), float(pitch_hz), float(dbfs))


@lru_cache(maxsize=128)
def _speech_like(ms: float, rate: int, pitch_hz: float, dbfs: float) -> bytes:
    n = audio.samples_for_ms(ms, rate)
    if n <= 0:
        return b""
    t = np.arange(n) / rate
    nyquist = rate / 2
    voice = np.zeros(n)
    k = 1
    while pitch_hz * k < min(nyquist, 3400):
        voice += np.sin(2 * np.pi * pitch_hz * k * t) / k
        k += 1
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)  # ~4 syllables a second
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms ramps, no clicks
    signal = voice * envelope * fade
    peak = float(np.max(np.abs(signal))) or 1.0
    amplitude = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)
    return audio.from_array(signal / peak * amplitude)
