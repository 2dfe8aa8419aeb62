"""Synthetic "speech" for replies that the script gives only as text.

A harmonic buzz (150 Hz voice with overtones) shaped into syllables, so that a VAD on the
far end (the softphone measuring time-to-first-audio) hears speech, and with a length
proportional to the text (``ms_per_char``, ≈ 60 ms per character ≈ natural speaking
rate), so durations and usage come out plausible.
"""

from __future__ import annotations

import numpy as np

from .. import audio


def reply_ms(text: str, ms_per_char: float) -> float:
    return max(300.0, len(text.strip()) * ms_per_char)


def speech_like(ms: float, rate: int, *, pitch_hz: float = 150.0, dbfs: float = -22.0) -> bytes:
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
