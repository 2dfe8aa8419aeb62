"""Checks on heard audio, for tests and reports.

* :func:`windowed_correlation` answers "did the caller hear this clip?". One global
  cross-correlation is misleading over a real call: when the jitter buffer drops or
  inserts a frame mid-call the rest of the audio shifts and the global score collapses (to
  0.37-0.75 in measured calls; docs/architecture.md, 'What the pjsua2 wheel imposes', item 8)
  although every second of it is intact. So the reference is cut into windows (1 s by
  default), each window finds its own best lag near the coarse alignment, and the result
  reports the median and the minimum.
* :func:`speech_segments` finds speech with the turn detector's rules (:mod:`sipworker.turns`:
  fixture sidecars, VAD boundary tests); :func:`rms_dbfs` measures level.

All inputs are mono PCM16 ``bytes`` with a rate, as everywhere in rtsip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mock_api.audio import resample, to_array
from sipworker import turns
from sipworker.turns import VAD_RATES, VadSettings  # re-exported: checks and tests measure with them

__all__ = [
    "VAD_RATES",
    "CorrelationResult",
    "VadSettings",
    "best_lag_ms",
    "rms_dbfs",
    "speech_segments",
    "windowed_correlation",
]

FloatArray = npt.NDArray[np.float64]


def _floats(pcm: bytes) -> FloatArray:
    return to_array(pcm).astype(np.float64)


def rms_dbfs(pcm: bytes) -> float:
    """RMS level in dBFS (full scale = 32768); ``-inf`` for empty or digital silence."""
    x = _floats(pcm)
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(x**2)))
    return 20.0 * float(np.log10(rms / 32768.0)) if rms > 0 else float("-inf")


# --------------------------------------------------------------------------- VAD


def speech_segments(pcm: bytes, rate: int, settings: VadSettings | None = None) -> list[tuple[int, int]]:
    """:func:`sipworker.turns.speech_segments` at any rate: rates webrtcvad does not take are
    resampled to 16 kHz first."""
    if rate not in VAD_RATES:
        pcm, rate = resample(pcm, rate, 16000), 16000
    return turns.speech_segments(pcm, rate, settings)


# --------------------------------------------------------------------------- correlation


@dataclass
class CorrelationResult:
    """Outcome of :func:`windowed_correlation`.

    ``scores`` has one normalized correlation (-1..1) per reference window that carries
    signal; ``lags_ms`` the lag at which each window matched best (recording time minus
    reference time). ``lag_ms`` is the coarse global alignment.
    """

    lag_ms: float
    scores: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.scores)) if self.scores else 0.0

    @property
    def min(self) -> float:
        return float(np.min(self.scores)) if self.scores else 0.0

    def matches(self, threshold: float = 0.9, *, min_threshold: float | None = None) -> bool:
        """True when the median window score reaches ``threshold`` (and the worst reaches ``min_threshold``)."""
        if not self.scores:
            return False
        return self.median >= threshold and (min_threshold is None or self.min >= min_threshold)


def _xcorr_full(a: FloatArray, b: FloatArray) -> FloatArray:
    """``c[k] = sum_n b[n + k - (len(a) - 1)] * a[n]`` for all overlaps, via FFT."""
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    # circular result: lag k >= 0 at index k, lag -m at index size - m; put lag -(len(a)-1) first
    return np.concatenate([c[size - (len(a) - 1) :], c[: len(b)]])


def best_lag_ms(reference: bytes, recording: bytes, rate: int, max_lag_ms: float | None = None) -> float:
    """Lag (ms) at which ``reference`` best lines up inside ``recording`` (positive: it starts later)."""
    a, b = _floats(reference), _floats(recording)
    if a.size == 0 or b.size == 0:
        return 0.0
    c = _xcorr_full(a, b)
    lags = np.arange(-(len(a) - 1), len(b))
    if max_lag_ms is not None:
        limit = int(max_lag_ms * rate / 1000)
        keep = np.abs(lags) <= limit
        c, lags = c[keep], lags[keep]
    return float(lags[int(np.argmax(c))]) * 1000.0 / rate


def _window_score(win: FloatArray, rec: FloatArray, start: int, search: int) -> tuple[float, int]:
    """Best normalized correlation of ``win`` against ``rec`` at offsets ``start ± search``."""
    w = len(win)
    lo = start - search
    seg_len = w + 2 * search
    seg = np.zeros(seg_len, dtype=np.float64)
    src_lo, src_hi = max(lo, 0), min(lo + seg_len, len(rec))
    if src_hi > src_lo:
        seg[src_lo - lo : src_hi - lo] = rec[src_lo:src_hi]
    dots = np.correlate(seg, win, mode="valid")  # len 2*search + 1
    sq = np.concatenate([[0.0], np.cumsum(seg**2)])
    energies = sq[w:] - sq[:-w]
    denom = np.sqrt(np.maximum(energies, 0.0) * float(np.dot(win, win)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ncc = np.where(denom > 0, dots / denom, 0.0)
    i = int(np.argmax(ncc))
    return float(ncc[i]), i - search


def windowed_correlation(
    reference: bytes,
    recording: bytes,
    rate: int,
    *,
    window_ms: int = 1000,
    search_ms: int = 120,
    max_lag_ms: float | None = None,
    min_window_dbfs: float = -50.0,
) -> CorrelationResult:
    """Is ``reference`` present in ``recording``? Windowed normalized cross-correlation.

    1. Coarse alignment: global cross-correlation peak (within ``max_lag_ms`` if given).
    2. For each ``window_ms`` window of the reference whose level is above
       ``min_window_dbfs`` (silent windows carry no evidence), search ``± search_ms``
       around the coarse lag for the best normalized correlation. Parts of the
       reference missing from the recording score about 0, so truncation fails.

    Both signals must have the same ``rate``. Matching audio through G.711 scores
    > 0.99; unrelated speech stays well below 0.5.
    """
    ref, rec = _floats(reference), _floats(recording)
    lag = best_lag_ms(reference, recording, rate, max_lag_ms)
    result = CorrelationResult(lag_ms=lag)
    if ref.size == 0 or rec.size == 0:
        return result
    lag_samples = round(lag * rate / 1000)
    w = max(1, round(window_ms * rate / 1000))
    search = round(search_ms * rate / 1000)
    floor = 32768.0 * 10 ** (min_window_dbfs / 20.0)
    for start in range(0, len(ref), w):
        win = ref[start : start + w]
        if len(win) < w // 2 and start > 0:
            break  # a short tail window is too noisy to judge
        if float(np.sqrt(np.mean(win**2))) < floor:
            continue
        score, extra = _window_score(win, rec, start + lag_samples, search)
        result.scores.append(score)
        result.lags_ms.append((lag_samples + extra) * 1000.0 / rate)
    return result
