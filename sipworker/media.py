"""Per-call audio state that runs inside frame callbacks: playback queue, recorder, VAD, turn audio.

Everything here is pure Python on L16 8 kHz audio and never imports pjsua2, so it can be
unit-tested without a SIP stack.  The frame port hands over *chunks* of ``frame_ms`` (a multiple
of 20 ms, see :class:`~sipworker.ipc.WorkerConfig`): fewer Python callbacks per second is what
makes a worker cheap.  Inside a chunk, VAD, first-audio detection and playback keep the 20 ms
sub-frame (``FRAME_MS``) granularity and report exact audio times.  The callbacks run on
pjmedia's clock thread, which all calls of a process share (docs/architecture.md, 'What the
pjsua2 wheel imposes', item 6): per-chunk work is a few numpy reductions over all sub-frames at
once, a slice of the playback queue and one webrtcvad call per sub-frame; file I/O happens
elsewhere.  The clock thread runs briefly every 20 ms and finds its caches cold, so touching few
Python objects per callback matters more than what hot-loop microbenchmarks suggest.
"""

from __future__ import annotations

import collections
import ctypes
import threading
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import turns
from .ipc import VadParams

SAMPLE_RATE = turns.RATE
FRAME_MS = turns.FRAME_MS  # the sub-frame: unit of VAD, of the playback queue and of rx/tx frame counters
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = bytes(FRAME_BYTES)
_DB_FULL_SCALE = 20 * np.log10(32768.0)

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


def _subframes(chunk: bytes) -> np.ndarray:
    """The chunk's whole 20 ms sub-frames as an (n, 160) int16 view (a partial tail is ignored)."""
    n = len(chunk) // FRAME_BYTES
    return np.frombuffer(chunk, dtype="<i2", count=n * FRAME_SAMPLES).reshape(n, FRAME_SAMPLES)


def subframe_power(chunk: bytes) -> np.ndarray:
    """Mean square sample value of every 20 ms sub-frame, in one numpy pass."""
    return turns.frame_power(chunk, FRAME_SAMPLES)


def subframe_dbfs(chunk: bytes) -> np.ndarray:
    """RMS level in dBFS of every 20 ms sub-frame (-120 for digital silence)."""
    mean_sq = subframe_power(chunk)
    out = np.full(len(mean_sq), -120.0)
    loud = mean_sq > 0
    out[loud] = 10 * np.log10(mean_sq[loud].astype(np.float64)) - _DB_FULL_SCALE
    return out


def webrtcvad_entry_points() -> tuple[int, int, int]:
    """Addresses of WebRtcVad_Process, _Init and _set_mode in the loaded webrtcvad extension, for
    the native port's clock-thread analysis (``_rtport.vad_setup``)."""
    ext = turns.webrtcvad_ext
    if ext is None or not hasattr(ext, "__file__"):
        raise OSError("the webrtcvad C extension is not a loadable file")
    lib = ctypes.CDLL(ext.__file__)  # already loaded: the same handle and symbols
    return tuple(  # type: ignore[return-value]
        ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
        for name in ("WebRtcVad_Process", "WebRtcVad_Init", "WebRtcVad_set_mode")
    )


def first_loud_subframe(chunk: bytes, peak: int) -> int | None:
    """Index of the first sub-frame whose absolute peak reaches ``peak``, or None."""
    a = _subframes(chunk)
    if not a.size:
        return None
    loud = (a.max(axis=1) >= peak) | (a.min(axis=1) <= -peak)  # min ≤ -peak: no int16 abs overflow
    idx = np.flatnonzero(loud)
    return int(idx[0]) if idx.size else None


class Playback:
    """FIFO of outgoing audio, handed out in whole 20 ms sub-frames.  Written by the pj thread,
    read by the clock thread.

    Each push is padded to whole sub-frames and kept as one block, so a port frame is usually one
    slice of one block (few objects touched per callback: the clock thread runs cache-cold).  A
    (never contended for long) lock makes push/clear/take atomic, so a push racing with the drain
    can neither lose its ``playback_done`` nor report one early.
    """

    def __init__(self) -> None:
        self._blocks: collections.deque[bytes] = collections.deque()
        self._off = 0  # bytes of the head block already handed out
        self._queued = 0  # bytes queued, whole sub-frames
        self._active = False
        self._lock = threading.Lock()
        self.sent = 0  # sub-frames handed to the call by fill(), silence included: the tx audio clock

    def push(self, pcm: bytes, clear: bool = False) -> int:
        """Queue PCM (any length; the tail is padded with silence).  Returns sub-frames queued."""
        tail = len(pcm) % FRAME_BYTES
        if tail:
            pcm = pcm + bytes(FRAME_BYTES - tail)
        with self._lock:
            if clear:
                self._drop()
            if pcm:
                self._blocks.append(pcm)
                self._queued += len(pcm)
                self._active = True
        return len(pcm) // FRAME_BYTES

    def clear(self) -> int:
        """Drop everything queued; returns the sub-frames dropped."""
        with self._lock:
            return self._drop()

    def _drop(self) -> int:
        n = self._queued // FRAME_BYTES
        self._blocks.clear()
        self._off = self._queued = 0
        return n

    def _take(self, size: int) -> bytes:
        """``size`` queued bytes (lock held, ``size <= _queued``)."""
        blocks = self._blocks
        head, off = blocks[0], self._off
        self._queued -= size
        if len(head) - off > size:
            self._off = off + size
            return head[off : off + size]
        parts = []
        while size:
            head = blocks[0]
            piece = head[off : off + size]
            parts.append(piece)
            size -= len(piece)
            off += len(piece)
            if off == len(head):
                blocks.popleft()
                off = 0
        self._off = off
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def next_chunk(self, n: int) -> tuple[bytes | None, int, bool]:
        """Take up to ``n`` sub-frames for one port frame.

        Returns ``(pcm, real, done)``: ``pcm`` is ``n`` sub-frames (real audio then silence
        padding) or None when nothing was queued; ``real`` how many were real audio; ``done`` is
        True once, on the take that found the queue running dry (its audio ends ``real``
        sub-frames into this chunk).
        """
        size = n * FRAME_BYTES
        with self._lock:
            if self._queued >= size:
                return self._take(size), n, False
            done, self._active = self._active, False
            if not self._queued:
                return None, 0, done
            real = self._queued // FRAME_BYTES
            data = self._take(self._queued)
        return data + bytes(size - len(data)), real, done

    def fill(self, n: int) -> tuple[bytes | None, int | None]:
        """One port frame of ``n`` sub-frames for the clock thread.

        Returns ``(pcm or None for silence, playback_done audio_ms or None)``; the audio_ms is
        where the queued audio ended on the tx audio clock (:attr:`sent`), exact to the sub-frame
        even when it ends inside the frame.
        """
        data, real, done = self.next_chunk(n)
        start = self.sent
        self.sent = start + n
        return data, (start + real) * FRAME_MS if done else None

    def next_frame(self) -> tuple[bytes | None, bool]:
        """One 20 ms sub-frame (or None for silence), and True once when the queue has just drained."""
        data, _real, done = self.next_chunk(1)
        return data, done

    @property
    def pending_ms(self) -> int:
        return self._queued // FRAME_BYTES * FRAME_MS


class Recorder:
    """Collects received audio in memory (16 kB/s); written to WAV once, off the clock thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()

    def add(self, pcm: bytes) -> None:
        self._chunks.append(pcm)

    def write(self) -> int:
        """Write the WAV; returns its duration in ms.  Idempotent."""
        with self._lock:
            pcm = b"".join(self._chunks)
            write_wav_8k(self.path, pcm)
            return len(pcm) * 1000 // (2 * SAMPLE_RATE)


BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
TURN_AUDIO_MAX_MS = 60_000  # the most caller audio one turn hands over (960 kB at 8 kHz)


@dataclass
class TurnClip:
    """A finished turn's caller audio: ``pcm`` from audio time ``start_ms``; ``clipped_ms`` of its
    oldest audio were dropped to keep the turn within the keeper's bound."""

    pcm: bytes
    start_ms: int
    clipped_ms: int = 0


class TurnAudio:
    """Received audio of the caller's current turn, so the worker can hand it over with ``speech_stopped``.

    Why: the parent's Realtime session otherwise holds silence for the caller's words and its
    recogniser hears nothing.  While idle only a short ring is kept: ``prefix_ms`` (the session's
    ``prefix_padding_ms``) before the earliest frame an onset run still being fed could start at,
    which lies up to ``onset_ms`` (``min_speech_ms``) before the newest chunk.  From
    :meth:`start` everything is kept until :meth:`stop`, at most ``max_ms`` (the newest wins).

    Audio is placed by its audio time, so frames the media path lost leave silence in their place
    instead of shifting what follows.  Feed each chunk with :meth:`add` *before* the VAD sees it:
    a turn's end then always lies inside what is kept.  One thread at a time (the call's media thread).
    """

    def __init__(self, prefix_ms: int = 300, onset_ms: int = 60, max_ms: int = TURN_AUDIO_MAX_MS) -> None:
        self.prefix_ms = prefix_ms
        self.onset_ms = onset_ms
        self.max_ms = max_ms
        self._buf = bytearray()
        self._start = 0  # audio time (ms) of _buf[0]
        self._turn_from: int | None = None  # audio time the current turn's audio starts, None while idle
        self._clipped = 0  # ms of the current turn dropped for the bound

    @classmethod
    def for_vad(cls, params: VadParams) -> TurnAudio:
        return cls(params.prefix_padding_ms, params.min_speech_ms)

    def configure(self, params: VadParams) -> None:
        """New speech-detection settings; a disabled VAD ends no turn, so the one under way is dropped."""
        self.prefix_ms, self.onset_ms = params.prefix_padding_ms, params.min_speech_ms
        if not params.enabled:
            self.reset()

    def reset(self) -> None:
        self._buf.clear()
        self._turn_from, self._clipped = None, 0

    @property
    def in_turn(self) -> bool:
        return self._turn_from is not None

    @property
    def span_ms(self) -> tuple[int, int]:
        """The audio times kept, [start, end)."""
        return self._start, self._start + len(self._buf) // BYTES_PER_MS

    def add(self, pcm: bytes, start_ms: int) -> None:
        """Received audio from audio time ``start_ms`` (whole ms; the media path's 20 ms frames)."""
        end = self._start + len(self._buf) // BYTES_PER_MS
        if not self._buf or start_ms > end + self.max_ms:
            self._buf.clear()
            self._start = end = start_ms
        if start_ms > end:  # frames lost on the way: silence keeps later audio at its time
            self._buf.extend(bytes((start_ms - end) * BYTES_PER_MS))
        elif start_ms < end:  # already kept (never expected): only the new part
            pcm = pcm[(end - start_ms) * BYTES_PER_MS :]
        self._buf.extend(pcm)
        if self._turn_from is None:
            self._drop_before(start_ms - self.prefix_ms - self.onset_ms)
        else:
            self._bound()

    def start(self, audio_ms: int) -> None:
        """Speech started at ``audio_ms`` (first voiced ms): the turn keeps ``prefix_ms`` before it."""
        if self._turn_from is not None:
            return
        self._turn_from = max(self._start, audio_ms - self.prefix_ms)
        self._clipped = 0
        self._drop_before(self._turn_from)
        self._bound()

    def stop(self, end_ms: int) -> TurnClip:
        """The turn ended at ``end_ms`` (when the silence ran out): its audio, and back to idle.
        Audio after ``end_ms`` stays for the next turn's ring."""
        start = self._start if self._turn_from is None else max(self._start, self._turn_from)
        a = (start - self._start) * BYTES_PER_MS
        b = max(a, (end_ms - self._start) * BYTES_PER_MS)
        clip = TurnClip(bytes(self._buf[a:b]), start, self._clipped)
        self._turn_from, self._clipped = None, 0
        return clip

    def _drop_before(self, ms: int) -> None:
        if ms > self._start:
            cut = min(len(self._buf), (ms - self._start) * BYTES_PER_MS)
            del self._buf[:cut]  # bytearray drops a head cheaply (no copy of the rest)
            self._start += cut // BYTES_PER_MS

    def _bound(self) -> None:
        """Keep at most ``max_ms`` of a turn: the newest audio wins, and the loss is counted."""
        over = len(self._buf) // BYTES_PER_MS - self.max_ms
        if over > 0:
            self._drop_before(self._start + over)
            assert self._turn_from is not None
            self._clipped += max(0, self._start - self._turn_from)
            self._turn_from = self._start


class TurnDetector:
    """Speech start/stop on received audio, reported in audio milliseconds since media start.

    The rules are :mod:`sipworker.turns`' (the session core's WebSocket VAD uses the same ones);
    this class feeds them the call's 8 kHz sub-frames and emits worker events.
    ``speech_started.audio_ms`` is the first voiced sub-frame of the onset run;
    ``speech_stopped.audio_ms`` is the end of the last voiced sub-frame, ``detected_ms`` the audio
    time the silence hangover ran out.  Both are computed per 20 ms sub-frame, so they do not
    depend on how large the chunks handed to :meth:`feed` are.
    """

    def __init__(self, params: VadParams, emit: Emit, ref: str) -> None:
        self.params = params
        self._frames = turns.FrameClassifier(self.mode, effective_floor_dbfs(params))
        self._turns = self._tracker(params)
        self._emit = emit
        self._ref = ref

    @staticmethod
    def _tracker(params: VadParams) -> turns.TurnTracker:
        return turns.TurnTracker(silence_ms=params.silence_duration_ms, min_speech_ms=params.min_speech_ms)

    def configure(self, params: VadParams) -> None:
        """New settings; a turn under way goes on under them unless the VAD is now disabled."""
        self.params = params
        self._frames.configure(self.mode, effective_floor_dbfs(params))
        if not params.enabled:
            self._turns = self._tracker(params)
        else:
            self._turns.silence_ms, self._turns.min_speech_ms = params.silence_duration_ms, params.min_speech_ms

    @property
    def mode(self) -> int:
        """webrtcvad's mode for the threshold (the native port is given the same)."""
        return turns.vad_mode(self.params.threshold)

    @property
    def busy(self) -> bool:
        """Mid-turn (speaking, or an onset run under way): unvoiced frames can change the state."""
        return self._turns.busy

    @property
    def power_floor(self) -> float:
        """The mean square a voiced sub-frame must exceed (-1: no floor)."""
        return self._frames.power_floor

    def feed(self, pcm: bytes, audio_ms: int) -> None:
        """Feed whole 20 ms sub-frames starting at ``audio_ms`` (one frame or a multi-frame chunk).

        A sub-frame is voiced when webrtcvad says so *and* it is above the energy floor
        (:class:`sipworker.turns.FrameClassifier`); webrtcvad sees every sub-frame, quiet ones too.
        """
        if self.params.enabled:
            self.feed_voiced(self._frames.classify(pcm), audio_ms)

    def feed_voiced(self, voiced: Sequence[int], audio_ms: int) -> None:
        """Feed per-sub-frame decisions (voiced and above the floor) from audio time ``audio_ms``:
        what the native port computed on the clock thread, or :meth:`feed`."""
        if not self.params.enabled:
            return
        for b in self._turns.feed(voiced, audio_ms):
            if b.kind == "start":
                self._emit("speech_started", {"ref": self._ref, "audio_ms": b.audio_ms})
            else:
                self._emit("speech_stopped", {"ref": self._ref, "audio_ms": b.audio_ms, "detected_ms": b.detected_ms})


def effective_floor_dbfs(params: VadParams) -> float:
    """The energy floor of a call: the threshold's (as on the WebSocket path), raised by an
    ``energy_floor_dbfs`` above it (a hissing line)."""
    return max(params.energy_floor_dbfs, turns.floor_dbfs(params.threshold))
