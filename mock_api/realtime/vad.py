"""Turn detection on the actual audio, with webrtcvad as the speech classifier.

The detector sees the session's input audio in order and reports speech start/stop at
audio milliseconds, the clock the real events use (``audio_start_ms`` includes
``prefix_padding_ms``; ``audio_end_ms`` includes the silence that ended the turn, as the
SDK docstrings say).

Mapping of the API knobs onto webrtcvad:
- ``threshold`` (0..1) picks the aggressiveness (0..3) and an energy floor, so a higher
  threshold ignores quieter sound, like the real server_vad;
- ``silence_duration_ms`` is the trailing silence that ends a turn;
- ``semantic_vad`` has no silence knob: ``eagerness`` sets it (high 300 ms, medium/auto
  700 ms, low 1500 ms) — a stand-in for the model judging whether the user is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import webrtcvad

from .. import audio

FRAME_MS = 20
MIN_SPEECH_MS = 60  # voiced run needed before speech_started: clicks and pops are not turns
EAGERNESS_SILENCE_MS = {"high": 300, "medium": 700, "auto": 700, "low": 1500}
RESAMPLE_PIECE_MS = 500  # the most audio resampled in one call


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["start", "stop"]
    ms: int  # audio ms since the session's first input sample


class TurnDetector:
    def __init__(
        self,
        *,
        vad_type: str = "server_vad",
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 200,
        eagerness: str | None = None,
    ) -> None:
        self.vad_type = vad_type
        self.threshold = max(0.0, min(1.0, threshold))
        self.prefix_padding_ms = prefix_padding_ms
        if vad_type == "semantic_vad":
            self.silence_duration_ms = EAGERNESS_SILENCE_MS.get(eagerness or "auto", 700)
        else:
            self.silence_duration_ms = silence_duration_ms
        self._vad = webrtcvad.Vad(min(3, int(self.threshold * 4)))
        self._floor_dbfs = -55.0 + 30.0 * self.threshold  # 0.5 → -40 dBFS
        self._floor_rms = max(1e-9, 32768.0 * 10 ** (self._floor_dbfs / 20))
        self._rate: int | None = None
        self._resampler: audio.Resampler | None = None
        self._pending = b""
        self._pos_ms = 0.0  # audio ms of the start of self._pending
        self.in_speech = False
        self._run_start: float | None = None  # first voiced frame of the current voiced run
        self._last_voiced_end = 0.0

    def _prepare(self, pcm: bytes, rate: int) -> tuple[bytes, int]:
        if rate in (8000, 16000, 32000, 48000):
            return pcm, rate
        if self._resampler is None or self._rate != rate:
            self._resampler = audio.Resampler(rate, 16000)
            self._rate = rate
        # a long append is resampled a piece at a time (the stream gives the same bytes however it is cut):
        # one libsoxr call over a minute of audio would hold the GIL, and so the server's loop, for tens of ms
        step = audio.frame_bytes(rate, RESAMPLE_PIECE_MS)
        if len(pcm) <= step:
            return self._resampler.process(pcm), 16000
        return b"".join(self._resampler.process(pcm[i:i + step]) for i in range(0, len(pcm), step)), 16000

    def process(self, pcm: bytes, rate: int, start_ms: float) -> list[VadEvent]:
        """Feed audio that begins at ``start_ms``; returns the transitions it caused."""
        if not pcm:
            return []
        if not self._pending:
            self._pos_ms = start_ms
        data, vrate = self._prepare(pcm, rate)
        self._pending += data
        size = audio.frame_bytes(vrate, FRAME_MS)
        n = len(self._pending) // size
        if not n:
            return []
        block, self._pending = self._pending[: n * size], self._pending[n * size :]
        # loudness of every frame in one numpy pass; webrtcvad only sees frames above the floor
        arr = np.frombuffer(block, dtype="<i2").astype(np.float32).reshape(n, size // 2)
        power = np.add.reduce(arr * arr, axis=1)  # np.mean's own steps without its per-call overhead
        np.true_divide(power, np.intp(size // 2), out=power, casting="unsafe")
        loud = np.sqrt(power) >= self._floor_rms
        out: list[VadEvent] = []
        for i in range(n):
            frame_start = self._pos_ms
            self._pos_ms += FRAME_MS
            voiced = bool(loud[i]) and self._vad.is_speech(block[i * size : (i + 1) * size], vrate)
            ev = self._frame(voiced, frame_start)
            if ev:
                out.append(ev)
        return out

    def _frame(self, voiced: bool, t: float) -> VadEvent | None:
        end = t + FRAME_MS
        if voiced:
            if self._run_start is None:
                self._run_start = t
            self._last_voiced_end = end
            if not self.in_speech and end - self._run_start >= MIN_SPEECH_MS:
                self.in_speech = True
                return VadEvent("start", int(max(0.0, self._run_start - self.prefix_padding_ms)))
            return None
        if not self.in_speech:
            self._run_start = None
            return None
        if end - self._last_voiced_end >= self.silence_duration_ms:
            self.in_speech = False
            self._run_start = None
            return VadEvent("stop", int(end))
        return None

    def reset(self) -> None:
        """Forget a turn in progress (input_audio_buffer.clear, manual commit)."""
        self.in_speech = False
        self._run_start = None


def committed_spans(pcm: bytes, rate: int, *, vad_type: str = "server_vad", silence_ms: int = 200,
                    eagerness: str | None = None) -> list[tuple[int, int]]:
    """The (start, end) audio ms of each turn the session's turn detection commits from ``pcm``: the
    padded start (never before the previous turn's end, as the session slices its buffer) to the end
    of the silence that closed it.  A turn still open when the audio ends is not committed."""
    detector = TurnDetector(vad_type=vad_type, silence_duration_ms=silence_ms, eagerness=eagerness)
    spans: list[tuple[int, int]] = []
    start = prev_end = 0
    for e in detector.process(pcm, rate, 0):
        if e.kind == "start":
            start = max(e.ms, prev_end)
        else:
            spans.append((start, e.ms))
            prev_end = e.ms
    return spans


def committed_turns(pcm: bytes, rate: int, silence_ms: int = 200) -> list[bytes]:
    """The audio of each turn server_vad commits from ``pcm`` (see :func:`committed_spans`): what tests
    and benchmarks feed a recogniser to stand for one committed turn."""
    return [pcm[audio.samples_for_ms(a, rate) * 2:audio.samples_for_ms(b, rate) * 2]
            for a, b in committed_spans(pcm, rate, silence_ms=silence_ms)]
