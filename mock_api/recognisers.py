"""What the caller said, decided from the audio: the recognisers the fake model hears with.

Why: without a script turn saying what the caller said (``Turn.hears``), the mock used to
invent a sentence. Now a committed user turn is handed to a :data:`Recogniser`, and what comes
back is either words really found in the audio or a plain "not recognised":

- :class:`FingerprintRecogniser` (always on): audio from ``audio_fixtures/`` or a user's own
  clip with a JSON sidecar is recognised by its fingerprint (:mod:`mock_api.fingerprint`) and
  the sidecar's words are used. Fast, so it runs inline.
- :class:`CommandRecogniser`: a user's program, e.g. a local whisper.cpp. It gets the audio as
  a WAV file (a ``{wav}`` argument) or raw PCM16 mono on stdin (no ``{wav}``; the rate is in
  ``{rate}`` and ``$RTSIP_AUDIO_RATE``), and prints the text.
- :class:`CallableRecogniser`: a Python function named ``module:function`` that takes
  ``(pcm: bytes, rate: int)`` and returns the text (or ``None``).

Plug-ins can be slow, so they run on worker threads with a timeout and the session gets a
``concurrent.futures.Future``; :class:`Chain` tries the fingerprint first (the sidecar is the
truth about a known clip), then the plug-ins in order. Nothing recognised gives
``[unrecognised audio, 2.4 s]`` (:func:`unrecognised_text`) and a reason saying why.

    ear = build_recogniser(library=["/my/clips"], command="whisper-cli -m ggml-base.en.bin -nt -np -f {wav}")
    result = ear(pcm, 24000)        # a Recognition, or a Future of one when a plug-in has to run
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shlex
import signal
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from . import audio
from .fingerprint import FingerprintIndex, library_index

__all__ = [
    "CallableRecogniser",
    "Chain",
    "CommandRecogniser",
    "FingerprintRecogniser",
    "Recogniser",
    "Recognition",
    "build_recogniser",
    "default_recogniser",
    "unrecognised",
    "unrecognised_text",
]

Source = Literal["script", "fingerprint", "command", "callable", "none"]

PLUGIN_RATE = 16000
"""Rate plug-ins get the audio at: what whisper and most ASR models take."""
DEFAULT_TIMEOUT_S = 10.0
MAX_OUTPUT_CHARS = 4000  # of a plug-in's text: a runaway program must not flood the journal
WORKERS = 4  # plug-in recognitions running at once, for the whole process


@dataclass(frozen=True)
class Recognition:
    """What was heard in one user turn, and why the mock believes it."""

    text: str  # the transcript: words found in the audio, or the unrecognised_text placeholder
    recognised: bool
    source: Source  # who decided: the script, the fingerprint, a plug-in, or nobody ("none")
    reason: str  # one line for the journal: the match, or why nothing was recognised
    audio_ms: float
    language: str | None = None  # ISO-639-1 of the words, when known (a clip's sidecar)
    clip: str | None = None  # the fingerprinted clip
    score: float | None = None
    segments: tuple[int, ...] = ()  # sidecar segments the words came from
    span_ms: tuple[float, float] | None = None  # the clip time the turn covers
    ends_utterance: bool | None = None  # a clip utterance ends here (False: more follows); None: unknown

    def journal(self) -> dict[str, Any]:
        """The fields of an ``audio.heard`` journal entry (Nones left out)."""
        out: dict[str, Any] = {"text": self.text, "recognised": self.recognised, "source": self.source,
                               "reason": self.reason, "audio_ms": round(self.audio_ms, 1)}
        for key in ("language", "clip", "score", "span_ms", "ends_utterance"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        if self.segments:
            out["segments"] = list(self.segments)
        return out


def unrecognised_text(audio_ms: float | None) -> str:
    """The transcript of audio nobody recognised: says so, with its length, and invents nothing."""
    if audio_ms is None:
        return "[unrecognised audio]"
    return f"[unrecognised audio, {audio_ms / 1000.0:.1f} s]"


def unrecognised(audio_ms: float, reason: str) -> Recognition:
    return Recognition(unrecognised_text(audio_ms), False, "none", reason, audio_ms)


class Recogniser(Protocol):
    """PCM16 mono at ``rate`` in; a :class:`Recognition` out, or a Future of one if it takes time."""

    def __call__(self, pcm: bytes, rate: int) -> Recognition | Future[Recognition]: ...


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="rtsip-recognise")
        return _executor


class _Member:
    """One recogniser of a :class:`Chain`; ``blocking`` ones run on a worker thread."""

    blocking = False

    def recognise(self, pcm: bytes, rate: int) -> Recognition:
        raise NotImplementedError

    def __call__(self, pcm: bytes, rate: int) -> Recognition | Future[Recognition]:
        if self.blocking:
            return _pool().submit(self.recognise, pcm, rate)
        return self.recognise(pcm, rate)


# ---- the fingerprint ------------------------------------------------------------------------


def _cache_key(pcm: bytes, rate: int) -> bytes:
    return hashlib.blake2b(pcm, digest_size=16, person=rate.to_bytes(4, "little")).digest()


class FingerprintRecogniser(_Member):
    """Known clips (``audio_fixtures/`` plus ``library`` directories) recognised by fingerprint.

    The index is built on first use (about half a second for the committed fixtures) unless
    :meth:`warm` was called; results are cached by the audio's bytes, since load tests play
    the same clips thousands of times.
    """

    def __init__(self, library: Iterable[str | Path] = (), index: FingerprintIndex | None = None,
                 cache_size: int = 256) -> None:
        self.library = tuple(library)
        self._index = index
        self._cache: OrderedDict[bytes, Recognition] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def index(self) -> FingerprintIndex:
        with self._lock:
            if self._index is None:
                self._index = library_index(self.library)
            return self._index

    def warm(self) -> FingerprintRecogniser:
        """Build the index now (at server start) rather than at the first unscripted turn."""
        _ = self.index
        return self

    def cached(self, pcm: bytes, rate: int) -> Recognition | None:
        """The answer for this exact audio if it was recognised before (cheap: a hash, no spectrogram)."""
        key = _cache_key(pcm, rate)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def recognise(self, pcm: bytes, rate: int) -> Recognition:
        hit = self.cached(pcm, rate)
        if hit is not None:
            return hit
        key = _cache_key(pcm, rate)
        result = self._recognise(pcm, rate)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def _recognise(self, pcm: bytes, rate: int) -> Recognition:
        ms = audio.duration_ms(pcm, rate)
        index = self.index
        best = index.closest(pcm, rate)
        if best is None:
            why = "no sound to fingerprint (silence)" if not pcm.strip(b"\0") else "matches no known clip"
            return unrecognised(ms, f"fingerprint: {why} ({len(index)} clips indexed)")
        if not best.accepted:
            return unrecognised(ms, f"fingerprint: closest clip {best.clip!r} too weak (score {best.score:.2f}, "
                                f"{best.hits} landmarks, covers {best.steady_coverage:.0%} of the sound at one offset, "
                                f"{best.coverage:.0%} drifting)")
        part = "whole clip" if best.whole else f"{best.span_ms[0]:.0f}-{best.span_ms[1]:.0f} ms"
        drift = f", drifted {best.drift_ms:+.0f} ms" if best.drift_ms else ""
        return Recognition(best.text, True, "fingerprint",
                           f"fingerprint: {best.clip} ({part}, score {best.score:.2f}, {best.hits} landmarks{drift})",
                           ms, language=best.language, clip=best.clip, score=best.score,
                           segments=best.segments, span_ms=best.span_ms, ends_utterance=best.ends_utterance)


# ---- plug-ins -------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return " ".join(text.split())[:MAX_OUTPUT_CHARS]


class CommandRecogniser(_Member):
    """A program that prints what it heard: ``{wav}`` in its arguments gets a WAV file's path,
    otherwise raw PCM16 mono comes on stdin (rate in ``{rate}`` and ``$RTSIP_AUDIO_RATE``).

    It runs on a worker thread in its own process group; past ``timeout_s`` the whole group is
    killed and the turn is not recognised.
    """

    blocking = True

    def __init__(self, command: str | Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                 rate: int = PLUGIN_RATE) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("recogniser command is empty")
        self.timeout_s = timeout_s
        self.rate = rate

    def recognise(self, pcm: bytes, rate: int) -> Recognition:
        ms = audio.duration_ms(pcm, rate)
        pcm = audio.resample(pcm, rate, self.rate)
        with tempfile.TemporaryDirectory(prefix="rtsip-heard-") as tmp:
            wav = str(audio.write_wav(Path(tmp) / "turn.wav", pcm, self.rate))
            wants_file = any("{wav}" in a for a in self.argv)
            argv = [a.replace("{wav}", wav).replace("{rate}", str(self.rate)) for a in self.argv]
            env = {**os.environ, "RTSIP_AUDIO_RATE": str(self.rate)}
            try:
                code, out, err = self._run(argv, None if wants_file else pcm, env)
            except OSError as exc:
                return unrecognised(ms, f"command {self.argv[0]!r} could not start: {exc}")
        if code is None:
            return unrecognised(ms, f"command {self.argv[0]!r} timed out after {self.timeout_s:g} s")
        if code != 0:
            last = (err.strip().splitlines() or [""])[-1][:200]
            return unrecognised(ms, f"command {self.argv[0]!r} exited with {code}" + (f": {last}" if last else ""))
        text = _clean(out)
        if not text:
            return unrecognised(ms, f"command {self.argv[0]!r} printed nothing")
        return Recognition(text, True, "command", f"command {self.argv[0]!r}", ms)

    def _run(self, argv: list[str], stdin: bytes | None, env: dict[str, str]) -> tuple[int | None, str, str]:
        """Exit code (None on timeout), stdout and stderr of one run."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own group: the program and what it started
            proc.communicate()
            return None, "", ""
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def load_callable(spec: str) -> Callable[[bytes, int], Any]:
    """``"package.module:function"`` (or ``module:Class.method``) → the function; ValueError if not found."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"recogniser {spec!r}: expected 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"recogniser {spec!r}: cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"recogniser {spec!r}: {module_name!r} has no {attr!r}")
    if not callable(target):
        raise ValueError(f"recogniser {spec!r}: {attr!r} is not callable")
    fn: Callable[[bytes, int], Any] = target
    return fn


class CallableRecogniser(_Member):
    """A Python function ``(pcm: bytes, rate: int) -> str | None`` (``None`` or "" = not recognised).

    It runs on its own daemon thread, so one that never returns costs a thread, not the call:
    past ``timeout_s`` the turn is reported not recognised.
    """

    blocking = True

    def __init__(self, target: str | Callable[[bytes, int], Any], timeout_s: float = DEFAULT_TIMEOUT_S,
                 rate: int = PLUGIN_RATE) -> None:
        self.name = target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
        self.fn = load_callable(target) if isinstance(target, str) else target
        self.timeout_s = timeout_s
        self.rate = rate

    def recognise(self, pcm: bytes, rate: int) -> Recognition:
        ms = audio.duration_ms(pcm, rate)
        pcm = audio.resample(pcm, rate, self.rate)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["text"] = self.fn(pcm, self.rate)
            except Exception as exc:  # the user's code: report it, never raise into the session
                box["error"] = f"{type(exc).__name__}: {exc}"

        worker = threading.Thread(target=run, name="rtsip-recogniser-callable", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            return unrecognised(ms, f"callable {self.name!r} timed out after {self.timeout_s:g} s")
        if "error" in box:
            return unrecognised(ms, f"callable {self.name!r} raised {box['error']}"[:300])
        text = box.get("text")
        if text is not None and not isinstance(text, str):
            return unrecognised(ms, f"callable {self.name!r} returned {type(text).__name__}, not str")
        if not text or not _clean(text):
            return unrecognised(ms, f"callable {self.name!r} returned no text")
        return Recognition(_clean(text), True, "callable", f"callable {self.name!r}", ms)


# ---- composition ----------------------------------------------------------------------------


@dataclass
class Chain:
    """Recognisers tried in order; the first that recognises wins, else every reason is kept.

    Quick members run inline; from the first blocking member on, the rest runs on a worker
    thread and the caller gets a Future.
    """

    members: list[_Member] = field(default_factory=list)
    offload: bool = False  # a fingerprint not in the cache is computed on a worker thread (a Future)

    def warm(self) -> Chain:
        """Build the fingerprint index now: call at server start, so the first unscripted turn
        does not pay for it on the event loop."""
        for member in self.members:
            if isinstance(member, FingerprintRecogniser):
                member.warm()
        return self

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """Library sidecars (or directories) that could not be used, with why (builds the index)."""
        return [s for m in self.members if isinstance(m, FingerprintRecogniser) for s in m.index.skipped]

    def offloading(self) -> Chain:
        """This chain (same members, same cache) computing a new sound's fingerprint on a worker thread:
        for a session on the event loop, where it could hold every other session for a second."""
        return Chain(self.members, offload=True)

    def __call__(self, pcm: bytes, rate: int) -> Recognition | Future[Recognition]:
        reasons: list[str] = []
        for i, member in enumerate(self.members):
            if self.offload and isinstance(member, FingerprintRecogniser) and member.cached(pcm, rate) is None:
                return _pool().submit(self._rest, i, pcm, rate, reasons)
            if member.blocking:
                return _pool().submit(self._rest, i, pcm, rate, reasons)
            result = member.recognise(pcm, rate)
            if result.recognised:
                return result
            reasons.append(result.reason)
        return self._none(pcm, rate, reasons)

    def _rest(self, start: int, pcm: bytes, rate: int, reasons: list[str]) -> Recognition:
        for member in self.members[start:]:
            try:
                result = member.recognise(pcm, rate)
            except Exception as exc:
                result = unrecognised(audio.duration_ms(pcm, rate), f"{type(member).__name__} failed: {exc!r}")
            if result.recognised:
                return result
            reasons.append(result.reason)
        return self._none(pcm, rate, reasons)

    @staticmethod
    def _none(pcm: bytes, rate: int, reasons: list[str]) -> Recognition:
        return unrecognised(audio.duration_ms(pcm, rate), "; ".join(reasons) or "no recogniser configured")


def build_recogniser(library: Iterable[str | Path] = (), command: str | Sequence[str] | None = None,
                     python: str | Callable[[bytes, int], Any] | None = None,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> Chain:
    """The fingerprint over ``audio_fixtures/`` + ``library``, then the plug-ins that are given.

    Raises ValueError for a ``python`` target that cannot be imported, so a typo fails at start.
    """
    members: list[_Member] = [FingerprintRecogniser(library)]
    if command:
        members.append(CommandRecogniser(command, timeout_s))
    if python:
        members.append(CallableRecogniser(python, timeout_s))
    return Chain(members)


_default: Chain | None = None
_default_lock = threading.Lock()


def default_recogniser() -> Chain:
    """The recogniser of sessions nobody gave one: fingerprints of ``audio_fixtures/`` only."""
    global _default
    with _default_lock:
        if _default is None:
            _default = build_recogniser()
        return _default
