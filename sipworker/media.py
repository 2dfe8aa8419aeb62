"""Per-call audio state that runs inside frame callbacks: playback queue, recorder, VAD.

Everything here is pure Python on 20 ms / 320-byte L16 8 kHz frames and never imports pjsua2,
so it can be unit-tested without a SIP stack.  The frame callbacks run on pjmedia's clock thread,
which all calls of a process share (notes §4): every method used per frame is O(1) and cheap
(deque ops, one webrtcvad call, a numpy reduction); file I/O happens elsewhere.
"""

from __future__ import annotations

import collections
import math
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import webrtcvad

from .ipc import VadParams

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = bytes(FRAME_BYTES)

Emit = Callable[[str, dict[str, object]], None]


def read_wav_8k(path: str) -> bytes:
    """PCM of an 8 kHz mono 16-bit WAV.  Other formats are refused: the parent converts at the edge."""
    with wave.open(path, "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise ValueError(
                f"{path}: need 8000 Hz mono 16-bit WAV, got {w.getframerate()} Hz "
                f"{w.getnchannels()} ch {8 * w.getsampwidth()} bit"
            )
        return w.readframes(w.getnframes())


def write_wav_8k(path: str, pcm: bytes) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)


def frame_peak(frame: bytes) -> int:
    a = np.frombuffer(frame, dtype="<i2")
    return int(max(int(a.max()), -int(a.min()))) if a.size else 0


def frame_dbfs(frame: bytes) -> float:
    a = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    if not a.size:
        return -120.0
    rms = float(np.sqrt(np.mean(a * a)))
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -120.0


class Playback:
    """FIFO of outgoing frames.  Written by the pj/command thread, read by the clock thread.

    ``collections.deque`` append/popleft are atomic under the GIL, so no lock is needed on the
    per-frame path; ``clear`` may race with one in-flight frame, which is harmless.
    """

    def __init__(self) -> None:
        self._frames: collections.deque[bytes] = collections.deque()
        self._active = False

    def push(self, pcm: bytes, clear: bool = False) -> int:
        """Queue PCM (any length; the tail is padded with silence).  Returns frames queued."""
        if clear:
            self._frames.clear()
        n = 0
        for off in range(0, len(pcm), FRAME_BYTES):
            chunk = pcm[off : off + FRAME_BYTES]
            if len(chunk) < FRAME_BYTES:
                chunk = chunk + bytes(FRAME_BYTES - len(chunk))
            self._frames.append(chunk)
            n += 1
        if n:
            self._active = True
        return n

    def clear(self) -> int:
        n = len(self._frames)
        self._frames.clear()
        return n

    def next_frame(self) -> tuple[bytes | None, bool]:
        """(frame or None for silence, True once when a non-empty queue has just drained)."""
        try:
            return self._frames.popleft(), False
        except IndexError:
            if self._active:
                self._active = False
                return None, True
            return None, False

    @property
    def pending_ms(self) -> int:
        return len(self._frames) * FRAME_MS


class Recorder:
    """Collects received frames in memory (16 kB/s); written to WAV once, off the clock thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()

    def add(self, frame: bytes) -> None:
        self._chunks.append(frame)

    def write(self) -> int:
        """Write the WAV; returns its duration in ms.  Idempotent."""
        with self._lock:
            pcm = b"".join(self._chunks)
            write_wav_8k(self.path, pcm)
            return len(pcm) * 1000 // (2 * SAMPLE_RATE)


@dataclass
class _VadState:
    speaking: bool = False
    run_start: int | None = None
    run_ms: int = 0
    last_voiced_end: int = 0


class TurnDetector:
    """Speech start/stop on received audio, reported in audio milliseconds since media start.

    ``speech_started.audio_ms`` is the first voiced frame of the onset run; ``speech_stopped.audio_ms``
    is the end of the last voiced frame, ``detected_ms`` the audio time the silence hangover ran out.
    """

    def __init__(self, params: VadParams, emit: Emit, ref: str) -> None:
        self.params = params
        self._vad = webrtcvad.Vad(params.mode)
        self._emit = emit
        self._ref = ref
        self._st = _VadState()

    def configure(self, params: VadParams) -> None:
        self.params = params
        self._vad.set_mode(params.mode)
        if not params.enabled:
            self._st = _VadState()

    def feed(self, frame: bytes, audio_ms: int) -> None:
        p = self.params
        if not p.enabled:
            return
        voiced = self._vad.is_speech(frame, SAMPLE_RATE) and frame_dbfs(frame) > p.energy_floor_dbfs
        st = self._st
        end = audio_ms + FRAME_MS
        if not st.speaking:
            if voiced:
                if st.run_start is None:
                    st.run_start, st.run_ms = audio_ms, 0
                st.run_ms += FRAME_MS
                if st.run_ms >= p.min_speech_ms:
                    st.speaking, st.last_voiced_end = True, end
                    self._emit("speech_started", {"ref": self._ref, "audio_ms": st.run_start})
                    st.run_start = None
            else:
                st.run_start = None
        elif voiced:
            st.last_voiced_end = end
        elif end - st.last_voiced_end >= p.silence_duration_ms:
            st.speaking = False
            self._emit("speech_stopped", {"ref": self._ref, "audio_ms": st.last_voiced_end, "detected_ms": end})
