"""Turn detection on the session's input audio, by the rules of :mod:`sipworker.turns`.

The SIP worker decides turns on its calls with the same rules, so the same audio gives the same
turns over WebSocket and over SIP.  This adapter feeds the session's audio to them at 8 kHz (the SIP
rate; G.711 arrives at it): other rates, 24 kHz PCM above all, are resampled to 8 kHz first, as a
stream, so the boundaries come from the same decisions as on a SIP call (to within the resampler's
rounding, see ``tests/test_turn_detector.py``).

Events are at audio milliseconds, the clock the real events use: ``audio_start_ms`` includes
``prefix_padding_ms``; ``audio_end_ms`` includes the silence that ended the turn, as the SDK
docstrings say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipworker import turns

from .. import audio

FRAME_MS = turns.FRAME_MS
MIN_SPEECH_MS = turns.MIN_SPEECH_MS
EAGERNESS_SILENCE_MS = turns.EAGERNESS_SILENCE_MS
RESAMPLE_PIECE_MS = 500  # the most audio resampled in one call


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["start", "stop"]
    ms: int  # audio ms since the session's first input sample


class TurnDetector:
    """The session's turn detection: ``process`` the input audio in order, get speech start/stop."""

    def __init__(
        self,
        *,
        vad_type: str = "server_vad",
        threshold: float = turns.DEFAULT_THRESHOLD,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 200,
        eagerness: str | None = None,
    ) -> None:
        self.vad_type = vad_type
        self.threshold = max(0.0, min(1.0, threshold))
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = turns.silence_ms_for(vad_type, silence_duration_ms, eagerness)
        self._frames = turns.FrameClassifier(turns.vad_mode(self.threshold), turns.floor_dbfs(self.threshold))
        self._turns = turns.TurnTracker(silence_ms=self.silence_duration_ms)
        self._rate: int | None = None  # the input rate of the current stream
        self._resampler: audio.Resampler | None = None
        self._pending = b""  # 8 kHz audio short of a whole frame
        self._next_ms = 0  # audio ms of the start of self._pending

    @property
    def in_speech(self) -> bool:
        return self._turns.speaking

    def _restart(self, rate: int, start_ms: float) -> None:
        """A new 8 kHz stream from ``start_ms`` (the first audio, or a new input rate): the 8 kHz
        frames are then placed by count, so the resampler's lookahead never shifts them."""
        self._rate = rate
        self._resampler = None if rate == turns.RATE else audio.Resampler(rate, turns.RATE)
        self._pending = b""
        self._next_ms = round(start_ms)

    def _to_8k(self, pcm: bytes, rate: int) -> bytes:
        if self._resampler is None:
            return pcm
        # a long append is resampled a piece at a time (the stream gives the same bytes however it is cut):
        # one libsoxr call over a minute of audio would hold the GIL, and so the server's loop, for tens of ms
        step = audio.frame_bytes(rate, RESAMPLE_PIECE_MS)
        if len(pcm) <= step:
            return self._resampler.process(pcm)
        return b"".join(self._resampler.process(pcm[i:i + step]) for i in range(0, len(pcm), step))

    def process(self, pcm: bytes, rate: int, start_ms: float) -> list[VadEvent]:
        """Feed audio that begins at ``start_ms`` (the session's input, in order); returns the
        transitions it caused."""
        if not pcm:
            return []
        if rate != self._rate:
            self._restart(rate, start_ms)
        self._pending += self._to_8k(pcm, rate)
        size = self._frames.frame_bytes
        n = len(self._pending) // size
        if not n:
            return []
        block, self._pending = self._pending[: n * size], self._pending[n * size :]
        at, self._next_ms = self._next_ms, self._next_ms + n * FRAME_MS
        return [self._event(b) for b in self._turns.feed(self._frames.classify(block), at)]

    def _event(self, b: turns.Boundary) -> VadEvent:
        """A boundary as the session reports it: a padded start, the stop when the silence ran out."""
        if b.kind == "start":
            return VadEvent("start", turns.padded_start(b.audio_ms, self.prefix_padding_ms))
        return VadEvent("stop", b.detected_ms)

    def reset(self) -> None:
        """Forget a turn in progress (input_audio_buffer.clear, manual commit)."""
        self._turns.reset()


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
