"""Audio fingerprints: which known clip, and which part of it, a caller's audio is.

Why: the fake model must only "hear" what was really said. A clip whose words are known (a
committed fixture, or a user's recording with a JSON sidecar) is recognised from its sound,
however it reached the mock: G.711 µ-law or A-law, resampled to 8/16/24 kHz, cut into 20 ms
RTP frames with a few lost, padded with silence, or split into several turns by the VAD.

The fingerprint is a set of spectral landmarks, computed with numpy only:

1. the audio is analysed on the 8 kHz grid (every path into the mock carries at most the
   telephone band; 16/24 kHz input is read with proportionally longer windows, not resampled);
2. a log-magnitude spectrogram (32 ms Hann windows every 8 ms, 156-3500 Hz, a band G.711 and
   the resamplers keep intact); frames touching a dropout (a lost RTP frame played as zeros)
   are blanked so its hard edges do not pass for peaks;
3. peaks: cells that are the loudest of their neighbourhood and above an absolute floor (so
   silence and the G.711 quantisation floor give none), the strongest few per frame;
4. landmarks: each peak paired with the next few peaks close by in time and frequency, hashed as
   (frequency, frequency step, time step). A hash holds no absolute time, so any fragment of a
   clip, shifted anywhere, yields the clip's own hashes. Known clips are indexed on four grids
   2 ms apart, so a query starting anywhere meets peaks on its own grid;
5. matching: the query's hashes are looked up in one sorted table for the whole library; a true
   match piles its votes on one (clip, time offset), chance hits spread over many;
6. drift: a receiver's jitter buffer drops or inserts frames when packets come in bursts (a busy
   host does this), so the offset steps by 20-100 ms a few times along a call. Each half-second
   of the query may take its own offset near the winning one (:func:`_drifting`).

A match must clear three bars (:data:`MIN_HITS`, :data:`MIN_SCORE`, :data:`MIN_COVERAGE`): enough
agreeing landmarks, a large enough share of the query's landmarks, and agreement all along the
query's sound, at one offset or, more strictly (:data:`MIN_DRIFT_COVERAGE`), drifting. The last
one rejects audio that merely shares a few words with a clip, which the deterministic TTS of the
fixtures makes common ("Thank you" in the same voice is the same audio).

Which words a turn holds comes from the sidecar: per-segment text (``utterances`` with
``placed_ms`` or ``speech_segments``, or a ``segments`` list of ``{start_ms, end_ms, text}``)
when it has it, else the whole ``text``. Each segment's text is split at punctuation (and at the
hyphens of spelled words) into phrases placed on the clip's own pauses, and each phrase's words
share its time by characters, because the Realtime VAD (200 ms of silence by default) ends turns
at sentence pauses: a turn gets the words whose middle its sound covers, and a turn covering the
whole clip gets the sidecar ``text`` exactly.

    index = library_index(["/my/clips"])   # audio_fixtures/ plus these directories, built once
    m = index.match(pcm, 8000)             # Match(clip="caller_greeting", text=..., score=0.62) or None
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import audio

__all__ = [
    "AUDIO_SUFFIXES",
    "MIN_COVERAGE",
    "MIN_DRIFT_COVERAGE",
    "MIN_HITS",
    "MIN_SCORE",
    "Clip",
    "FingerprintIndex",
    "Landmarks",
    "Match",
    "Piece",
    "landmarks",
    "library_index",
    "read_sidecar",
    "telephone_line",
]

RATE = 8000
N_FFT = 256  # 32 ms window
HOP = 64  # 8 ms step
HOP_MS = HOP * 1000.0 / RATE
LOW_BIN, HIGH_BIN = 5, 112  # 156 Hz .. 3500 Hz at 31.25 Hz per bin
PEAK_DT, PEAK_DF = 3, 4  # neighbourhood half-size of a peak: +-24 ms, +-125 Hz
PEAKS_PER_FRAME = 3
FLOOR_DB = 20.0  # absolute floor of a peak: 20 dB above one quantisation step of a full-scale window
FAN_OUT = 6  # partners per anchor peak
MAX_DT = 40  # partner at most 320 ms later
MAX_DF = 40  # and at most 1250 Hz away
REFERENCE_SHIFTS = 4  # known clips are indexed on this many sub-step grids (2 ms apart)
LOUD_DB = 30.0  # the part of a query that must be explained: frames this close to its loudest
EXPLAIN_FRAMES = 12  # a landmark vouches for the sound 96 ms either side of it
GAP_MS = 2  # a run of zeros this long inside sound is a dropout, not silence
OFFSET_BIN = 2  # offsets are compared in 16 ms bins; two adjacent bins count together (20 ms frame loss)
DRIFT_BINS = 32  # the offset may drift this far (+-512 ms) from the winning one along a query (jitter buffer)
WINDOW = 64  # frames (512 ms) of query over which the offset is taken as fixed
LOCAL_MIN = 4  # agreeing landmarks that set a window's own offset
END_LANDMARKS = 5  # the offset at either end of a query is that of its first (last) few agreeing landmarks
SPAN_SLACK_MS = 40  # a word whose middle is this close outside the sound still counts (an offset's error)
STEP_BINS = 12  # and it is at most this far (192 ms) from the next window's towards the strongest one

MIN_HITS = 10
"""Fewest agreeing landmarks for a match (one VAD turn of a known clip, even one word, has 12 or more)."""
MIN_SCORE = 0.08
"""Smallest share of the query's landmarks that must agree (true matches, even a single word after
G.711 and frame loss, score above 0.2)."""
MIN_COVERAGE = 0.7
"""Share of the query's loud frames that agreeing landmarks must vouch for (true matches: 0.79 and
up). A clip sharing only some words with the query, as the same TTS voice saying "Thank you" or
"calling about my" in both does, explains 0.56 at most and is not a match."""

MIN_DRIFT_COVERAGE = 0.85
"""The share to clear when the offset drifts (a jitter buffer's shifts; even 16 in 5 s leave 0.89 and
up). Higher than MIN_COVERAGE because drift also lets the same words in another order line up: the
same voice saying "Hi, this is Perry. I'm calling about my car" against "Hi, this is Michelle. I'm
calling about my car insurance" explains 0.75 that way."""

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a")
"""Audio files a sidecar may sit beside, tried in this order (non-WAV needs ffmpeg)."""

VOICED_DBFS = -50.0  # a 10 ms frame louder than this is sound, for spans and pauses
PAUSE_MS = 120  # a silence inside a segment this long may end a phrase
_PHRASE_CUT = re.compile(r"[.,;:!?…](?=\s|$)|(?<=\w)-(?=\w)")  # phrase ends; hyphens of spelled words

Float = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


# ---- landmarks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Landmarks:
    """Hashes and the frame (8 ms steps) of each hash's anchor peak."""

    hashes: Ints
    times: Ints
    loud: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    """Per frame: within LOUD_DB of the loudest frame (the sound a match has to explain)."""

    def __len__(self) -> int:
        return len(self.hashes)


def _samples(pcm: bytes, rate: int) -> tuple[Float, int]:
    """PCM16 as float samples, and the rate they are at.

    A multiple of 8 kHz (16, 24, 48 kHz) is analysed as it is, with windows scaled to the same
    32 ms / 8 ms and the same 31.25 Hz bins, which is much cheaper than resampling first.
    """
    if rate % RATE:
        pcm, rate = audio.resample(pcm, rate, RATE), RATE
    return audio.to_array(pcm).astype(np.float64), rate


def _spectrogram(x: Float, rate: int) -> Float:
    """Log-magnitude (dB, relative to 8 kHz full scale) of the used band, frames x bins.

    Frames that touch a run of digital zeros inside sound (a lost RTP frame filled with silence)
    are blanked: the gap's hard edges would otherwise be the loudest "peaks" around and crowd
    out the real ones for 80 ms.
    """
    scale = rate // RATE
    n_fft, hop = N_FFT * scale, HOP * scale
    if len(x) < n_fft:
        return np.zeros((0, HIGH_BIN - LOW_BIN))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    mag = np.abs(np.fft.rfft(frames * _window(n_fft), axis=1))[:, LOW_BIN:HIGH_BIN] / scale
    spec = np.asarray(20.0 * np.log10(mag + 1.0))
    gaps = _gap_frames(x, len(spec), n_fft, hop)
    spec[gaps] = -np.inf
    return spec


def _gap_frames(x: Float, n_frames: int, n_fft: int, hop: int) -> npt.NDArray[np.bool_]:
    """Frames whose window holds a dropout: GAP_MS or more of exact zeros with sound on both sides."""
    run = int(GAP_MS * RATE / 1000) * (n_fft // N_FFT)
    zero = np.concatenate([[0], (x == 0).astype(np.int64), [0]])
    edges = np.flatnonzero(np.diff(zero))
    starts, ends = edges[::2], edges[1::2]
    inside = (ends - starts >= run) & (starts > 0) & (ends < len(x))
    marks = np.zeros(len(x) + 1, np.int64)
    np.add.at(marks, starts[inside], 1)
    np.add.at(marks, ends[inside], -1)
    in_gap = np.cumsum(marks[:-1]) > 0
    count = np.concatenate([[0], np.cumsum(in_gap)])
    first = np.arange(n_frames) * hop
    return np.asarray(count[first + n_fft] - count[first] > 0)


@lru_cache(maxsize=8)
def _window(n: int) -> Float:
    return np.hanning(n)


def _running_max(a: Float, half: int, axis: int) -> Float:
    """Maximum over a window of ``2 * half + 1`` cells along ``axis`` (cells past the edges ignored)."""
    out = a.copy()
    n = a.shape[axis]
    for k in range(1, min(half, n - 1) + 1):
        lo = [slice(None), slice(None)]
        hi = [slice(None), slice(None)]
        lo[axis], hi[axis] = slice(0, n - k), slice(k, n)
        np.maximum(out[tuple(lo)], a[tuple(hi)], out=out[tuple(lo)])
        np.maximum(out[tuple(hi)], a[tuple(lo)], out=out[tuple(hi)])
    return out


def _peaks(spec: Float) -> tuple[Ints, Ints]:
    """(frame, bin) of the spectral peaks, sorted by frame."""
    if spec.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    local = _running_max(_running_max(spec, PEAK_DT, 0), PEAK_DF, 1)
    floor = FLOOR_DB + 20.0 * np.log10(N_FFT / 4.0)  # a full window of quantisation-sized samples
    is_peak = (spec == local) & (spec > floor)
    # the strongest few per frame: rank cells by level within each frame
    level = np.where(is_peak, spec, -np.inf)
    order = np.argsort(-level, axis=1)[:, :PEAKS_PER_FRAME]
    rows = np.repeat(np.arange(spec.shape[0]), order.shape[1])
    cols = order.ravel()
    keep = np.isfinite(level[rows, cols])
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def landmarks(pcm: bytes, rate: int) -> Landmarks:
    """The fingerprint of PCM16 mono audio at ``rate``."""
    spec = _spectrogram(*_samples(pcm, rate))
    t, f = _peaks(spec)
    n = len(t)
    hashes: list[Ints] = []
    anchors: list[Ints] = []
    if n < 2:
        return Landmarks(np.zeros(0, np.int64), np.zeros(0, np.int64))
    level = spec.max(axis=1)
    loud = level >= level.max() - LOUD_DB
    # partners: the next peaks in time order, skipping those too close, too late or too far in frequency
    for k in range(1, FAN_OUT * 4 + 1):
        a, b = np.arange(n - k), np.arange(k, n)
        if len(a) == 0:
            break
        dt = t[b] - t[a]
        df = f[b] - f[a]
        ok = (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
        if not ok.any():
            if (dt > MAX_DT).all():
                break
            continue
        hashes.append((f[a][ok] << 14) | ((df[ok] + 64) << 7) | dt[ok])
        anchors.append(a[ok])
    if not hashes:
        return Landmarks(np.zeros(0, np.int64), np.zeros(0, np.int64), loud)
    h, anchor = np.concatenate(hashes), np.concatenate(anchors)
    # at most FAN_OUT partners per anchor: the nearest ones (found first, smallest k)
    order = np.argsort(anchor, kind="stable")
    h, anchor = h[order], anchor[order]
    rank = np.arange(len(anchor)) - np.searchsorted(anchor, anchor, side="left")
    keep = rank < FAN_OUT
    return Landmarks(h[keep], t[anchor[keep]], loud)


def reference_landmarks(pcm: bytes, rate: int) -> Landmarks:
    """A known clip's landmarks, taken at REFERENCE_SHIFTS sub-step offsets.

    A query starts anywhere, not on the clip's 8 ms grid; its peaks can then fall one frame
    apart from the clip's and change a hash. Indexing the clip on a few shifted grids gives a
    query on any grid a close sibling to match.
    """
    x, rate = _samples(pcm, rate)
    data = audio.from_array(x)
    parts = []
    for k in range(REFERENCE_SHIFTS):
        shift = HOP * (rate // RATE) * k // REFERENCE_SHIFTS
        lm = landmarks(data[shift * 2:], rate)
        parts.append((lm.hashes, lm.times + (1 if 2 * k >= REFERENCE_SHIFTS else 0)))
    h = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    pairs = np.unique(np.stack([h, t]), axis=1)
    return Landmarks(pairs[0], pairs[1])


# ---- clips and sidecars --------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A word (or one spelled letter) of a clip's text and when it is spoken."""

    start_ms: float
    end_ms: float
    text: str
    segment: int  # index of the sidecar segment it belongs to
    glued: bool = False  # no space before it: it follows a hyphen ("P-" "E-" "R-")

    @property
    def middle_ms(self) -> float:
        return (self.start_ms + self.end_ms) / 2.0


@dataclass(frozen=True)
class Clip:
    """A known recording: its sidecar text and the timed words of that text."""

    name: str
    path: Path
    text: str
    duration_ms: float
    pieces: tuple[Piece, ...] = ()
    segment_texts: bool = False  # the sidecar gave text per segment
    language: str | None = None  # the sidecar's ISO-639-1 code, when it gives one

    def words(self, pieces: Sequence[Piece]) -> str:
        """The text of some of this clip's pieces; all of them give the sidecar text exactly."""
        if len(pieces) == len(self.pieces):
            return self.text
        return "".join(("" if i == 0 or p.glued else " ") + p.text for i, p in enumerate(pieces))


def _number_pairs(value: Any) -> list[tuple[float, float]] | None:
    if not isinstance(value, list):
        return None
    try:
        return [(float(a), float(b)) for a, b in value]
    except (TypeError, ValueError):
        return None


def read_sidecar(sidecar: Path) -> dict[str, Any]:
    """A sidecar's fields; only ``text`` (a string) is required. Raises ``ValueError`` if unusable."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{sidecar}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError(f"{sidecar}: no 'text' string")
    return data


def _segments(data: dict[str, Any]) -> list[tuple[float, float, str]]:
    """Per-segment text from a sidecar, when it has it (times in clip ms)."""
    segs = data.get("segments")
    if isinstance(segs, list):
        out = []
        for s in segs:
            if isinstance(s, dict) and isinstance(s.get("text"), str):
                out.append((float(s.get("start_ms", 0)), float(s.get("end_ms", 0)), str(s["text"])))
        if out:
            return out
    utterances = data.get("utterances")
    if isinstance(utterances, list) and all(isinstance(u, str) for u in utterances) and utterances:
        for key in ("placed_ms", "speech_segments"):
            spans = _number_pairs(data.get(key))
            if spans and len(spans) == len(utterances):
                return [(a, b, u) for (a, b), u in zip(spans, utterances, strict=True)]
    return []


def _frame_db(pcm: bytes, rate: int, frame_ms: int = 10) -> Float:
    """Level of each ``frame_ms`` frame in dBFS."""
    x = audio.to_array(pcm).astype(np.float64)
    n = max(1, rate * frame_ms // 1000)
    usable = len(x) - len(x) % n
    if usable == 0:
        return np.zeros(0)
    rms = np.sqrt(np.mean(x[:usable].reshape(-1, n) ** 2, axis=1))
    return np.asarray(20.0 * np.log10(rms / 32768.0 + 1e-9))


def _voiced_span(db: Float, frame_ms: int = 10) -> tuple[float, float] | None:
    loud = np.flatnonzero(db > VOICED_DBFS)
    if len(loud) == 0:
        return None
    return float(loud[0] * frame_ms), float((loud[-1] + 1) * frame_ms)


def _pauses(db: Float, start_ms: float, end_ms: float, frame_ms: int = 10) -> list[tuple[float, float]]:
    """The silences of at least PAUSE_MS strictly inside ``start_ms..end_ms`` (start, end in ms)."""
    a, b = int(start_ms // frame_ms), int(min(len(db), end_ms // frame_ms))
    quiet = db[a:b] <= VOICED_DBFS
    out: list[tuple[float, float]] = []
    run = 0
    for i, q in enumerate(quiet):
        if q:
            run += 1
            continue
        if run * frame_ms >= PAUSE_MS and i - run > 0:
            out.append(((a + i - run) * frame_ms, (a + i) * frame_ms))
        run = 0
    return out


def _cut_times(text: str, cuts: list[int], start_ms: float, end_ms: float,
               pauses: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """When each phrase cut (a character index) falls: the nearest later pause (its start and
    end), else a moment placed by characters."""
    span = max(1.0, end_ms - start_ms)
    tolerance = max(400.0, span * 0.25)
    times: list[tuple[float, float]] = []
    for c in cuts:
        guess = start_ms + span * c / max(1, len(text))
        free = [p for p in pauses if not times or p[0] >= times[-1][1]]
        near = min(free, key=lambda p: abs((p[0] + p[1]) / 2 - guess), default=None)
        if near is not None and abs((near[0] + near[1]) / 2 - guess) <= tolerance:
            times.append(near)
        else:
            t = max(guess, times[-1][1]) if times else guess
            times.append((t, t))
    return times


def _pieces(text: str, start_ms: float, end_ms: float, pauses: list[tuple[float, float]], segment: int) -> list[Piece]:
    """A segment's words, timed: phrases end at punctuation (and hyphens of spelled words) and
    are placed on the segment's pauses; words share their phrase's time by characters."""
    cuts = [m.end() for m in _PHRASE_CUT.finditer(text) if text[m.end():].strip()]
    gaps = _cut_times(text, cuts, start_ms, end_ms, pauses)
    starts = [start_ms, *(g[1] for g in gaps)]
    ends = [*(g[0] for g in gaps), end_ms]
    bounds = [0, *cuts, len(text)]
    out: list[Piece] = []
    for i, (c0, c1) in enumerate(itertools.pairwise(bounds)):
        t0, t1 = starts[i], max(starts[i], ends[i])
        words = list(re.finditer(r"\S+", text[c0:c1]))
        chars = max(1, sum(len(w.group()) for w in words))
        done = 0
        for j, w in enumerate(words):
            a = t0 + (t1 - t0) * done / chars
            done += len(w.group())
            glued = j == 0 and c0 > 0 and not text[c0].isspace()
            out.append(Piece(a, t0 + (t1 - t0) * done / chars, w.group(), segment, glued))
    return out


def describe_clip(name: str, path: Path, data: dict[str, Any], pcm: bytes, rate: int) -> Clip:
    """A clip's timed pieces from its sidecar ``data`` and its audio (pauses, voiced span)."""
    db = _frame_db(pcm, rate)
    duration = audio.duration_ms(pcm, rate)
    segs = _segments(data) or [(0.0, duration, str(data["text"]))]
    pieces: list[Piece] = []
    for i, (a, b, text) in enumerate(segs):
        # the words are spoken where there is sound: a segment's silent ends hold none of them
        lo = int(max(0.0, a) // 10)
        sound = _voiced_span(db[lo:int(b // 10)])
        if sound is not None:
            a, b = lo * 10 + sound[0], lo * 10 + sound[1]
        pieces.extend(_pieces(text, a, b, _pauses(db, a, b), i))
    language = data.get("language")
    return Clip(name, path, str(data["text"]), duration, tuple(pieces), segment_texts=bool(_segments(data)),
                language=language if isinstance(language, str) and language not in ("", "none") else None)


def _audio_beside(sidecar: Path) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        p = sidecar.with_suffix(suffix)
        if p.is_file():
            return p
    return None


# ---- the index -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """What a query was recognised as."""

    clip: str  # the clip's name (file stem)
    path: Path  # its audio file
    text: str  # the words of the part of the clip the query covers
    score: float  # share of the query's landmarks agreeing on this clip and offset (0..1)
    hits: int  # how many agreed
    coverage: float  # share of the query's loud frames near an agreeing landmark (offset free to drift)
    offset_ms: float  # clip time at the query's first sample
    span_ms: tuple[float, float]  # clip time covered by the query's sound
    segments: tuple[int, ...]  # sidecar segments the text came from
    whole: bool  # the query covers every piece of the clip: ``text`` is the sidecar text
    language: str | None = None  # the clip's language (sidecar), when known
    ends_utterance: bool = True  # its last word ends a sidecar segment: no more of that utterance follows
    steady_coverage: float = 0.0  # the same share with the one best offset for the whole query
    drift_ms: float = 0.0  # how far the offset moved from the query's start to its end (a jitter buffer's shifts)

    @property
    def accepted(self) -> bool:
        explained = self.steady_coverage >= MIN_COVERAGE or self.coverage >= MIN_DRIFT_COVERAGE
        return self.hits >= MIN_HITS and self.score >= MIN_SCORE and explained


@dataclass
class FingerprintIndex:
    """Landmarks of every known clip in one table sorted by hash."""

    clips: list[Clip] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # sidecars that could not be used
    _hashes: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    _clip_ids: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    _times: Ints = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def build(cls, directories: Iterable[str | Path]) -> FingerprintIndex:
        """Index every ``<name>.json`` with a ``text`` and an audio file beside it in ``directories``."""
        index = cls()
        parts: list[tuple[Ints, Ints, Ints]] = []
        for directory in directories:
            d = Path(directory)
            if not d.is_dir():
                index.skipped.append((d, "not a directory"))
                continue
            for sidecar in sorted(d.glob("*.json")):
                found = index._load(sidecar)
                if found is not None:
                    clip, lm = found
                    cid = len(index.clips)
                    index.clips.append(clip)
                    parts.append((lm.hashes, np.full(len(lm), cid, np.int64), lm.times))
        index._freeze(parts)
        return index

    def add(self, name: str, pcm: bytes, rate: int, sidecar: dict[str, Any], path: Path | None = None) -> Clip:
        """Index one clip given as PCM and sidecar data (tests, programmatic libraries)."""
        if not isinstance(sidecar.get("text"), str):
            raise ValueError("sidecar needs a 'text' string")
        clip = describe_clip(name, path or Path(name), sidecar, pcm, rate)
        lm = reference_landmarks(pcm, rate)
        cid = len(self.clips)
        self.clips.append(clip)
        self._freeze([(self._hashes, self._clip_ids, self._times),
                      (lm.hashes, np.full(len(lm), cid, np.int64), lm.times)])
        return clip

    def _load(self, sidecar: Path) -> tuple[Clip, Landmarks] | None:
        wav = _audio_beside(sidecar)
        if wav is None:
            return None  # a JSON file that is not a sidecar
        try:
            data = read_sidecar(sidecar)
            pcm = audio.load_audio(wav, RATE)
        except (ValueError, OSError, EOFError) as exc:
            self.skipped.append((sidecar, str(exc)))
            return None
        except Exception as exc:  # a decoder failing on a user's file must not stop the mock
            self.skipped.append((sidecar, f"{type(exc).__name__}: {exc}"))
            return None
        return describe_clip(sidecar.stem, wav, data, pcm, RATE), reference_landmarks(pcm, RATE)

    def _freeze(self, parts: Sequence[tuple[Ints, Ints, Ints]]) -> None:
        if not parts:
            return
        h = np.concatenate([p[0] for p in parts])
        order = np.argsort(h, kind="stable")
        self._hashes = h[order]
        self._clip_ids = np.concatenate([p[1] for p in parts])[order]
        self._times = np.concatenate([p[2] for p in parts])[order]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def landmark_count(self) -> int:
        return len(self._hashes)

    def match(self, pcm: bytes, rate: int) -> Match | None:
        """The clip ``pcm`` is (part of), when the evidence clears MIN_HITS and MIN_SCORE."""
        best = self.closest(pcm, rate)
        return best if best is not None and best.accepted else None

    def closest(self, pcm: bytes, rate: int) -> Match | None:
        """The best-scoring clip whatever its score (None when no landmark matched at all)."""
        if not self.clips:
            return None
        q = landmarks(pcm, rate)
        return self._best(q, pcm, rate)

    def _best(self, q: Landmarks, pcm: bytes, rate: int) -> Match | None:
        if len(q) == 0 or len(self._hashes) == 0:
            return None
        lo = np.searchsorted(self._hashes, q.hashes, side="left")
        counts = np.searchsorted(self._hashes, q.hashes, side="right") - lo
        total = int(counts.sum())
        if total == 0:
            return None
        which = np.repeat(np.arange(len(q)), counts)  # the query landmark of each hit
        pos = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
        shift = self._times[pos] - q.times[which]  # clip frame minus query frame
        bins = shift // OFFSET_BIN
        width = int(bins.max() - bins.min()) + 2
        key = self._clip_ids[pos] * width + (bins - bins.min())
        # one vote per query landmark per (clip, offset bin); a bin counts with its right neighbour,
        # so a lost frame that shifts the rest of the query by 20 ms still adds up
        voted = np.unique(key * len(q) + which)
        keys, votes = np.unique(voted // len(q), return_counts=True)
        pair = votes.copy()
        adjacent = np.flatnonzero(keys[1:] == keys[:-1] + 1)
        pair[adjacent] += votes[adjacent + 1]
        i = int(np.argmax(pair))
        cid, best_bin = int(keys[i]) // width, int(keys[i]) % width + int(bins.min())
        won = (key == keys[i]) | (key == keys[i] + 1)
        agree, first_ms, last_ms = _drifting(q, which, shift, bins, self._clip_ids[pos] == cid, best_bin)
        hits = len(agree)
        coverage = (_explained(q, np.unique(which[won])), _explained(q, agree))
        return self._describe(self.clips[cid], hits, hits / len(q), coverage, (first_ms, last_ms), pcm, rate)

    @staticmethod
    def _describe(clip: Clip, hits: int, score: float, coverage: tuple[float, float], offsets_ms: tuple[float, float],
                  pcm: bytes, rate: int) -> Match:
        """The match, with the words of the part of the clip the query's sound covers (its start read
        with the offset the query begins at, its end with the one it ends at: they differ by drift)."""
        voiced = _voiced_span(_frame_db(pcm, rate)) or (0.0, audio.duration_ms(pcm, rate))
        offset_ms = offsets_ms[0]
        a, b = offset_ms + voiced[0], offsets_ms[1] + voiced[1]
        chosen = [p for p in clip.pieces if a - SPAN_SLACK_MS <= p.middle_ms <= b + SPAN_SLACK_MS]
        if not chosen and clip.pieces:  # shorter than any word: the word it overlaps most
            chosen = [max(clip.pieces, key=lambda p: min(b, p.end_ms) - max(a, p.start_ms))]
        last = max(chosen, key=lambda p: p.end_ms) if chosen else None
        ends = last is None or all(p.end_ms <= last.end_ms for p in clip.pieces if p.segment == last.segment)
        return Match(clip=clip.name, path=clip.path, text=clip.words(chosen), score=round(score, 4), hits=hits,
                     coverage=round(min(1.0, coverage[1]), 4), steady_coverage=round(min(1.0, coverage[0]), 4),
                     offset_ms=round(offset_ms, 1), drift_ms=round(offsets_ms[1] - offsets_ms[0], 1),
                     span_ms=(round(a, 1), round(b, 1)), segments=tuple(sorted({p.segment for p in chosen})),
                     whole=len(chosen) == len(clip.pieces), language=clip.language, ends_utterance=ends)


def _drifting(q: Landmarks, which: Ints, shift: Ints, bins: Ints, same_clip: npt.NDArray[np.bool_],
              best_bin: int) -> tuple[Ints, float, float]:
    """The query landmarks that agree with the winning clip when its offset may drift, and the
    offsets (ms) the query starts and ends at.

    A receiver's jitter buffer drops or inserts a frame or a few whenever packets come in bursts,
    so after each such event the rest of the call sits 20-100 ms later or earlier against the
    clip, and one offset explains only the stretch between two events. Here the query is cut into
    WINDOWs (overlapping by half), and the offset is followed from the window where the winning
    offset is strongest, outwards both ways: each window takes the offset with the most agreeing
    landmarks (at least LOCAL_MIN) within STEP_BINS of its neighbour's and DRIFT_BINS of the
    winning one, else keeps its neighbour's.
    """
    n, low = len(q), best_bin - DRIFT_BINS
    near = same_clip & (np.abs(bins - best_bin) <= DRIFT_BINS)
    key, first = np.unique((bins[near] - low) * n + which[near], return_index=True)  # one vote per landmark per bin
    order = np.argsort(q.times[key % n], kind="stable")
    b, w, s = key[order] // n + low, key[order] % n, shift[near][first][order]
    t = q.times[w]
    won = np.flatnonzero((b == best_bin) | (b == best_bin + 1))
    starts = np.arange(t[0], t[-1] + 1, WINDOW // 2)
    edges = np.stack([np.searchsorted(t, starts), np.searchsorted(t, starts + WINDOW)], axis=1)
    chosen = [won]

    def follow(windows: Iterable[int]) -> None:
        ref = best_bin
        for k in windows:
            lo, hi = edges[k]
            here = b[lo:hi]
            cand = np.abs(here - ref) <= STEP_BINS
            if cand.sum() < LOCAL_MIN:
                continue
            votes = np.bincount(here[cand] - (ref - STEP_BINS), minlength=2 * STEP_BINS + 2)
            paired = votes[:-1] + votes[1:]
            tops = np.flatnonzero(paired == paired.max())
            top = int(tops[np.argmin(np.abs(tops - STEP_BINS))]) + ref - STEP_BINS  # a tie goes to the nearest
            if paired.max() < LOCAL_MIN:
                continue
            chosen.append(lo + np.flatnonzero(cand & ((here == top) | (here == top + 1))))
            ref = top

    won_count = np.concatenate([[0], np.cumsum((b == best_bin) | (b == best_bin + 1))])
    anchor = int(np.argmax(won_count[edges[:, 1]] - won_count[edges[:, 0]]))
    follow(range(anchor, len(starts)))
    follow(range(anchor, -1, -1))
    picked = np.unique(np.concatenate(chosen))  # in query time order, as the arrays are
    ends = s[picked]  # the offsets at the query's two ends: those of its first and last few agreeing landmarks
    return np.unique(w[picked]), float(np.median(ends[:END_LANDMARKS])) * HOP_MS, \
        float(np.median(ends[-END_LANDMARKS:])) * HOP_MS


def _explained(q: Landmarks, agreeing: Ints) -> float:
    """Share of the query's loud frames that lie within EXPLAIN_FRAMES of an agreeing landmark."""
    n = len(q.loud)
    if n == 0 or not q.loud.any():
        return 0.0
    points = np.concatenate([q.times[agreeing], q.times[agreeing] + (q.hashes[agreeing] & 127)])
    marks = np.zeros(n + 1, np.int64)
    np.add.at(marks, np.clip(points - EXPLAIN_FRAMES, 0, n), 1)
    np.add.at(marks, np.clip(points + EXPLAIN_FRAMES + 1, 0, n), -1)
    near = np.cumsum(marks[:-1]) > 0
    return float((near & q.loud).sum()) / float(q.loud.sum())


def telephone_line(pcm: bytes, rate: int, *, law: str = "ulaw", out_rate: int = 8000, loss: float = 0.0,
                   seed: int = 0, lead_ms: float = 0.0, tail_ms: float = 0.0, shifts: int = 0) -> bytes:
    """What a clip goes through on its way to the mock, to check it is still recognised: 8 kHz,
    G.711 (``"ulaw"``/``"alaw"``) both ways, 20 ms RTP frames of which a ``loss`` share (seeded)
    is lost and played as silence, ``shifts`` jitter-buffer shifts (at seeded frames, one to three
    frames dropped or silence inserted, as a receiver on a busy host does), silence before and
    after, then ``out_rate``."""
    encode, decode = {"ulaw": (audio.pcm_to_ulaw, audio.ulaw_to_pcm),
                      "alaw": (audio.pcm_to_alaw, audio.alaw_to_pcm)}[law]
    x = decode(encode(audio.resample(pcm, rate, RATE)))
    frame = audio.frame_bytes(RATE, 20)
    rng = np.random.default_rng(seed)
    count = -(-len(x) // frame)
    lost = rng.random(count) < loss
    frames = [bytes(len(x[i:i + frame])) if lost[k] else x[i:i + frame]
              for k, i in enumerate(range(0, len(x), frame))]
    for k in sorted(rng.choice(count, min(shifts, count), replace=False), reverse=True):
        n = int(rng.integers(1, 4))
        frames[k:k + n] = [] if rng.random() < 0.5 else [bytes(frame)] * n + frames[k:k + n]
    line = audio.silence(lead_ms, RATE) + b"".join(frames) + audio.silence(tail_ms, RATE)
    return audio.resample(line, RATE, out_rate)


@lru_cache(maxsize=8)
def _index_for(directories: tuple[Path, ...]) -> FingerprintIndex:
    return FingerprintIndex.build(directories)


def library_index(extra_dirs: Iterable[str | Path] = ()) -> FingerprintIndex:
    """The index of ``audio_fixtures/`` plus ``extra_dirs``, built once per process per set of dirs.

    Files added to a directory afterwards are not seen until the process restarts.
    """
    from audio_fixtures import FIXTURE_DIR  # lazy: the fixture package is only needed here

    dirs = [FIXTURE_DIR.resolve()]
    for d in extra_dirs:
        p = Path(d).expanduser().resolve()
        if p not in dirs:
            dirs.append(p)
    return _index_for(tuple(dirs))
