"""The one turn detector: the rules that turn caller audio into speech start/stop, for every path.

The session core's own VAD (WebSocket audio, ``mock_api/realtime/vad.py``), the SIP worker's
media path (``sipworker/media.py``, and its C mirror ``_rtport.c`` that makes the same frame
decisions on the clock thread) and the fixture measurements (``harness.audio_compare``) all use
this module, so the same audio gives the same turns whichever way it arrives.  It needs only
numpy and webrtcvad: ``sipworker`` is the lowest floor and importing it never loads pjsua2.

The rules, in order:

1. **Rate.**  Turns are decided on 8 kHz audio, the SIP and G.711 rate: webrtcvad works at 8 kHz
   inside whatever rate it is given, so classifying the 24 kHz WebSocket stream after resampling it
   to 8 kHz (the caller's job: this module does no resampling) gives SIP's decisions to within the
   resampler's rounding.
2. **Frame classification.**  A 20 ms frame is voiced when webrtcvad says so *and* its mean square
   is above the energy floor.  webrtcvad sees every frame, quiet ones too: it adapts its noise model
   on each call, so skipping quiet frames (the session core's rule until both paths shared this one)
   makes its later decisions depend on the floor; on the fixtures it moved one turn start by 20 ms.
3. **Threshold.**  The API's ``threshold`` (0..1) picks webrtcvad's mode (``int(4 t)``, at most 3)
   and the energy floor (``-55 + 30 t`` dBFS, -40 at the default 0.5): a higher threshold needs
   louder sound, as the real server_vad does.  At -50 dBFS the committed line-noise fixture already
   counts as speech.
4. **Onset.**  ``MIN_SPEECH_MS`` of consecutive voiced frames start a turn (clicks are not turns);
   the start is the run's first voiced ms, and the session reports it ``prefix_padding_ms`` earlier.
5. **End.**  ``silence_ms`` of unvoiced audio after the last voiced frame ends it: the stop carries
   the last voiced ms and the audio ms the silence ran out (what the session reports as its end).
6. **semantic_vad** has no silence knob: its ``eagerness`` picks the silence (a stand-in for the
   model judging whether the user is done).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import webrtcvad

try:  # webrtcvad's C extension: Vad.is_speech is a Python wrapper around its process(), one frame each
    import _webrtcvad as webrtcvad_ext

    _vad_process = webrtcvad_ext.process
except ImportError:  # pragma: no cover - other webrtcvad builds
    webrtcvad_ext = None
    _vad_process = None

RATE = 8000  # the rate turns are decided at (rule 1)
FRAME_MS = 20  # the unit of every decision
MIN_SPEECH_MS = 60  # voiced run needed before a turn starts (rule 4)
DEFAULT_THRESHOLD = 0.5
EAGERNESS_SILENCE_MS = {"high": 300, "medium": 700, "auto": 700, "low": 1500}
NO_FLOOR_DBFS = -121.0  # below -120 dBFS: no energy floor at all
_DB_FULL_SCALE = 20 * np.log10(32768.0)


def vad_mode(threshold: float) -> int:
    """webrtcvad's aggressiveness (0..3) for the API's ``threshold`` (rule 3)."""
    return max(0, min(3, int(threshold * 4)))


def floor_dbfs(threshold: float) -> float:
    """The energy floor in dBFS for the API's ``threshold`` (rule 3)."""
    return -55.0 + 30.0 * max(0.0, min(1.0, threshold))


def power_of_dbfs(dbfs: float) -> float:
    """The mean square above which a frame is louder than ``dbfs`` (-1 below -120 dBFS: no floor)."""
    return -1.0 if dbfs < -120 else float(10 ** ((dbfs + _DB_FULL_SCALE) / 10))


def silence_ms_for(vad_type: str, silence_duration_ms: int, eagerness: str | None = None) -> int:
    """The trailing silence that ends a turn: the knob for server_vad, eagerness for semantic_vad (rule 6)."""
    if vad_type == "semantic_vad":
        return EAGERNESS_SILENCE_MS.get(eagerness or "auto", EAGERNESS_SILENCE_MS["auto"])
    return silence_duration_ms


def padded_start(first_voiced_ms: int, prefix_padding_ms: int) -> int:
    """The turn start the session reports: ``prefix_padding_ms`` before the first voiced ms, never before 0."""
    return max(0, first_voiced_ms - prefix_padding_ms)


def frame_power(pcm: bytes, frame_samples: int) -> np.ndarray:
    """Mean square sample value of every whole frame of ``frame_samples``, in one numpy pass
    (float32, as the C port's decision is compared against it; a partial tail is ignored)."""
    n = len(pcm) // (2 * frame_samples)
    a = np.frombuffer(pcm, dtype="<i2", count=n * frame_samples).reshape(n, frame_samples).astype(np.float32)
    return np.einsum("ij,ij->i", a, a) / np.float32(frame_samples)


class FrameClassifier:
    """Voiced or not, per frame (rule 2): webrtcvad on every frame, gated by the energy floor.

    One instance per audio stream: webrtcvad keeps a noise model across calls.
    """

    def __init__(self, mode: int, floor: float = NO_FLOOR_DBFS, *, rate: int = RATE, frame_ms: int = FRAME_MS) -> None:
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_samples = rate * frame_ms // 1000
        self.frame_bytes = 2 * self.frame_samples
        self.vad = webrtcvad.Vad(mode)
        self.mode = mode
        self.power_floor = power_of_dbfs(floor)

    def configure(self, mode: int, floor: float) -> None:
        """New mode and floor, keeping the noise model webrtcvad has learnt."""
        self.vad.set_mode(mode)
        self.mode = mode
        self.power_floor = power_of_dbfs(floor)

    def classify(self, pcm: bytes) -> list[bool]:
        """Decisions for the whole frames of ``pcm`` (a partial tail is ignored).  The energy pass
        runs only when webrtcvad found speech: quiet streams cost one C call per frame."""
        size = self.frame_bytes
        offsets = range(0, len(pcm) // size * size, size)
        handle = getattr(self.vad, "_vad", None)
        if _vad_process is not None and handle is not None:
            speech = [bool(_vad_process(handle, self.rate, pcm[o : o + size], self.frame_samples)) for o in offsets]
        else:
            speech = [self.vad.is_speech(pcm[o : o + size], self.rate) for o in offsets]
        if True in speech and self.power_floor >= 0:
            loud = (frame_power(pcm, self.frame_samples) > self.power_floor).tolist()
            speech = [s and q for s, q in zip(speech, loud, strict=True)]
        return speech


@dataclass(frozen=True)
class Boundary:
    """A turn boundary.  ``audio_ms``: a start's first voiced ms, a stop's end of the last voiced
    frame; ``detected_ms``: the audio ms the decision was made (a stop: when the silence ran out)."""

    kind: Literal["start", "stop"]
    audio_ms: int
    detected_ms: int


class TurnTracker:
    """The turn state machine (rules 4 and 5) over per-frame decisions, in audio milliseconds.

    Pure: no audio, no clock; the same decisions give the same boundaries however they are chunked.
    """

    def __init__(self, *, silence_ms: int, min_speech_ms: int = MIN_SPEECH_MS, frame_ms: int = FRAME_MS) -> None:
        self.silence_ms = silence_ms
        self.min_speech_ms = min_speech_ms
        self.frame_ms = frame_ms
        self.speaking = False
        self.run_start: int | None = None  # first voiced ms of an onset run under way
        self.last_voiced_end = 0

    @property
    def busy(self) -> bool:
        """Mid-turn (speaking, or an onset run under way): unvoiced frames can change the state."""
        return self.speaking or self.run_start is not None

    def reset(self) -> None:
        """Forget a turn in progress (a cleared buffer, a manual commit, a disabled VAD)."""
        self.speaking = False
        self.run_start = None

    def feed(self, voiced: Sequence[int | bool], audio_ms: int) -> list[Boundary]:
        """Decisions for consecutive frames from audio time ``audio_ms``; returns the boundaries they
        caused.  Idle silence is skipped without stepping (the state cannot change)."""
        if not self.busy and not any(voiced):
            return []
        out: list[Boundary] = []
        for k, v in enumerate(voiced):
            b = self.step(bool(v), audio_ms + k * self.frame_ms)
            if b is not None:
                out.append(b)
        return out

    def step(self, voiced: bool, audio_ms: int) -> Boundary | None:
        """One frame starting at ``audio_ms``."""
        end = audio_ms + self.frame_ms
        if not self.speaking:
            if not voiced:
                self.run_start = None
                return None
            if self.run_start is None:
                self.run_start = audio_ms
            if end - self.run_start < self.min_speech_ms:
                return None
            start, self.run_start = self.run_start, None
            self.speaking, self.last_voiced_end = True, end
            return Boundary("start", start, end)
        if voiced:
            self.last_voiced_end = end
            return None
        if end - self.last_voiced_end < self.silence_ms:
            return None
        self.speaking = False
        return Boundary("stop", self.last_voiced_end, end)


def speech_spans(voiced: Sequence[int | bool], *, silence_ms: int, min_speech_ms: int = MIN_SPEECH_MS,
                 frame_ms: int = FRAME_MS) -> list[tuple[int, int]]:
    """(first voiced ms, last voiced end) of every turn in a whole clip's decisions; a turn still
    open at the end of the clip ends at its last voiced frame (a measurement, not a live stream)."""
    tracker = TurnTracker(silence_ms=silence_ms, min_speech_ms=min_speech_ms, frame_ms=frame_ms)
    spans: list[tuple[int, int]] = []
    start = 0
    for b in tracker.feed(voiced, 0):
        if b.kind == "start":
            start = b.audio_ms
        else:
            spans.append((start, b.audio_ms))
    if tracker.speaking:
        spans.append((start, tracker.last_voiced_end))
    return spans


VAD_RATES = (8000, 16000, 32000, 48000)
"""Rates webrtcvad accepts."""


@dataclass(frozen=True)
class VadSettings:
    """How :func:`speech_segments` measures a clip; stored in fixture sidecars so they can be re-measured.

    The turn rules with measurement settings: ``aggressiveness`` is webrtcvad's mode (no energy
    floor: fixtures are measured on what webrtcvad hears), ``start_frames`` voiced frames in a row
    open a segment (the onset), ``hangover_ms`` of non-speech ends it (shorter gaps are bridged),
    and ``min_speech_ms`` drops blips.
    """

    aggressiveness: int = 2
    frame_ms: int = 10
    hangover_ms: int = 500
    min_speech_ms: int = 100
    start_frames: int = 3

    def as_dict(self) -> dict[str, int]:
        return {
            "aggressiveness": self.aggressiveness,
            "frame_ms": self.frame_ms,
            "hangover_ms": self.hangover_ms,
            "min_speech_ms": self.min_speech_ms,
            "start_frames": self.start_frames,
        }


def speech_segments(pcm: bytes, rate: int, settings: VadSettings | None = None) -> list[tuple[int, int]]:
    """Speech segments ``[(start_ms, end_ms), ...]`` of a whole clip at a webrtcvad rate.

    Start is the first frame of ``start_frames`` voiced frames in a row; end is the end
    of the last voiced frame before a silence of at least ``hangover_ms`` (or the end
    of the audio). Times are milliseconds from the start of ``pcm``.
    """
    if rate not in VAD_RATES:
        raise ValueError(f"webrtcvad takes {VAD_RATES} Hz, not {rate}: resample first")
    s = settings or VadSettings()
    voiced = FrameClassifier(s.aggressiveness, rate=rate, frame_ms=s.frame_ms).classify(pcm)
    spans = speech_spans(voiced, silence_ms=max(1, s.hangover_ms // s.frame_ms) * s.frame_ms,
                         min_speech_ms=s.start_frames * s.frame_ms, frame_ms=s.frame_ms)
    return [(a, b) for a, b in spans if b - a >= s.min_speech_ms]
