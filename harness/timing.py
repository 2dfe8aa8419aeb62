"""Timing figures a voice team watches, per call: a pure function of the call's journal entries.

Rules (every time is ms on the call's journal clock):

1. The call is up from its answer (the first ``state`` entry to ``active``) to its end (the first
   terminal state after it, else its last entry). Before the answer nothing counts.
2. Reply audio at the caller: each ``audio.out`` chunk plays after whatever is queued before it, at
   real time (queue end = max(queue end, chunk time) + chunk ms), as the SIP leg plays it. A clear
   (``output_audio_buffer.cleared``, ``sip.clear_playback``, ``live.media_cleared``) drops what is
   still queued at its time.
3. Caller speech: the SIP leg's VAD (``sip.speech_started``/``stopped``), else the session's
   (``input_audio_buffer.speech_started``/``stopped``), else a GPT-Live call's heard turns
   (``live.heard`` spans placed from ``session.started``), else the virtual caller's feed
   (``caller.say`` to ``caller.said``/``caller.say_cut``). A start without a stop runs to the call's end.
4. ``first_audio_ms``: from the answer to the first reply audio playing.
5. ``turn_latency_ms``: from each caller turn's end (where turn detection put it, the same turn end
   the load metric "caller speech end → first reply audio" uses) to the first reply audio playing
   after it; a turn with no reply after it has no latency.
6. Silence: the call is up and neither the caller speaks nor reply audio plays. Dead air is a
   silence longer than a threshold (:data:`DEAD_AIR_MS` unless given).
7. Barge-in: caller speech starting while reply audio plays; its reaction time runs to where that
   audio stopped (a clear, or the queue running out). ``cleared`` says whether a clear cut it.
8. Overlap: caller speech and reply audio at the same time; each stretch counts once.
9. A delayed path (``sip.media_delay``: the faults ``media_delay``, ``media_jitter``) moves everything onto the
   caller's clock: reply audio plays ``to_caller_ms`` after rule 2 puts it, and the SIP leg's caller speech
   (with the turn ends) happened ``to_model_ms`` before the mock journaled it; what comes from the mock's own
   order (which reply answers which turn, which audio a clear cut) does not move.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mock_api import journal_entries as je
from mock_api.control_models import JournalEntry

from .journal_view import JournalView, event_type

DEAD_AIR_MS = 3000.0  # a silence longer than this is dead air (rule 6)
TERMINAL = frozenset({"ended", "rejected", "referred", "failed", "no_answer"})
CLEARED_EVENT = "output_audio_buffer.cleared"


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of time on the journal clock, in ms."""

    start: float
    end: float

    @property
    def ms(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, float]:
        return {"start_ms": round(self.start, 1), "end_ms": round(self.end, 1), "ms": round(self.ms, 1)}


@dataclass(frozen=True, slots=True)
class Turn:
    """A caller turn's end and the reply audio it got (rule 5)."""

    end_ms: float
    reply_ms: float  # when the first reply audio after it played

    @property
    def latency_ms(self) -> float:
        return round(self.reply_ms - self.end_ms, 1)


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Caller speech over reply audio (rule 7)."""

    at_ms: float
    stopped_ms: float
    cleared: bool

    @property
    def reaction_ms(self) -> float:
        return round(self.stopped_ms - self.at_ms, 1)


@dataclass
class Timing:
    """One call's figures, and the spans they come from (for a picture)."""

    answered_ms: float | None
    ended_ms: float | None
    first_audio_ms: float | None
    turns: list[Turn] = field(default_factory=list)
    silences: list[Span] = field(default_factory=list)
    barge_ins: list[BargeIn] = field(default_factory=list)
    overlaps: list[Span] = field(default_factory=list)
    speech: list[Span] = field(default_factory=list)
    playback: list[Span] = field(default_factory=list)
    dead_air_over_ms: float = DEAD_AIR_MS

    @property
    def turn_latency_ms(self) -> list[float]:
        return [t.latency_ms for t in self.turns]

    @property
    def dead_air(self) -> list[Span]:
        return [s for s in self.silences if s.ms > self.dead_air_over_ms]

    @property
    def longest_silence_ms(self) -> float | None:
        return round(max(s.ms for s in self.silences), 1) if self.silences else None

    @property
    def barge_in_ms(self) -> list[float]:
        return [b.reaction_ms for b in self.barge_ins]

    @property
    def overlap_ms(self) -> float:
        return round(sum(s.ms for s in self.overlaps), 1)

    def to_json(self) -> dict[str, Any]:
        """What the run's JSON report carries per call."""
        return {
            "answered_ms": _ms(self.answered_ms), "ended_ms": _ms(self.ended_ms), "first_audio_ms": self.first_audio_ms,
            "turn_latency_ms": self.turn_latency_ms,
            "turns": [{"end_ms": round(t.end_ms, 1), "reply_ms": round(t.reply_ms, 1), "latency_ms": t.latency_ms}
                      for t in self.turns],
            "dead_air_over_ms": self.dead_air_over_ms, "dead_air": [s.to_json() for s in self.dead_air],
            "longest_silence_ms": self.longest_silence_ms,
            "barge_ins": [{"at_ms": round(b.at_ms, 1), "reaction_ms": b.reaction_ms, "cleared": b.cleared}
                          for b in self.barge_ins],
            "overlaps": len(self.overlaps), "overlap_ms": self.overlap_ms,
            "overlap_spans": [s.to_json() for s in self.overlaps],
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def timing(entries: Iterable[JournalEntry | Mapping[str, Any]] | JournalView,
           dead_air_over_ms: float = DEAD_AIR_MS) -> Timing:
    """Every figure of one call (rules 1-9) from its journal entries."""
    journal = entries if isinstance(entries, JournalView) else JournalView(entries)
    answered, ended = call_span(journal)
    out = Timing(answered_ms=answered, ended_ms=ended, first_audio_ms=None, dead_air_over_ms=dead_air_over_ms)
    to_caller, to_model = path_delay(journal)
    if not journal.of(je.SipSpeechStarted) and not journal.of(je.SipSpeechStopped):
        to_model = 0.0  # only the SIP leg's speech reached the mock late (rule 9)
    played = playback(journal).later(to_caller)
    out.playback = played.spans
    out.speech = [Span(s.start - to_model, s.end - to_model) for s in caller_speech(journal, ended)]
    out.turns = [Turn(t.end_ms - to_model, t.reply_ms) for t in turns(journal, played)]
    if answered is not None:
        first = played.first_after(answered)
        out.first_audio_ms = None if first is None else round(first - answered, 1)
        if ended is not None:
            out.silences = gaps(Span(answered, ended), out.speech + out.playback)
    out.barge_ins = barge_ins(out.speech, out.playback, played.cuts)
    out.overlaps = intersections(out.speech, out.playback)
    return out


def path_delay(journal: JournalView) -> tuple[float, float]:
    """Rule 9: (to the caller, to the model) in ms; (0, 0) on a path without delay."""
    found = journal.of(je.SipMediaDelay)
    return (found[0].entry.to_caller_ms, found[0].entry.to_model_ms) if found else (0.0, 0.0)


def call_span(journal: JournalView) -> tuple[float | None, float | None]:
    """Rule 1: (answer, end) in journal ms; None when the call was never answered."""
    states = journal.of(je.State)
    answered = next((s.t_ms for s in states if s.entry.after == "active"), None)
    if answered is None:
        return None, None
    end = next((s.t_ms for s in states if s.t_ms >= answered and s.entry.after in TERMINAL), None)
    if end is None:
        end = max((e.t_ms for e in journal), default=answered)
    return answered, end


@dataclass
class Played:
    """Rule 2's result: the stretches reply audio played, each chunk's (journal time, time it began to play),
    and the times a clear cut audio that was playing."""

    spans: list[Span] = field(default_factory=list)
    chunks: list[tuple[float, float]] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)

    def first_after(self, t_ms: float) -> float | None:
        """When the first chunk sent at or after ``t_ms`` began to play."""
        return next((plays for sent, plays in self.chunks if sent >= t_ms), None)

    def later(self, ms: float) -> Played:
        """The same audio heard ``ms`` later (rule 9): when it plays moves, when the mock sent it does not."""
        if not ms:
            return self
        return Played([Span(s.start + ms, s.end + ms) for s in self.spans],
                      [(sent, plays + ms) for sent, plays in self.chunks], [t + ms for t in self.cuts])


def playback(journal: JournalView) -> Played:
    """Rule 2: reply audio as the caller hears it."""
    out = Played()
    start: float | None = None
    queued_to = -math.inf
    for e in journal:
        ms = float(je.given(e.entry.ms) or 0) if isinstance(e.entry, je.AudioOut) else 0.0
        if ms > 0:
            if start is None or e.t_ms > queued_to:
                if start is not None:
                    out.spans.append(Span(start, queued_to))
                start, queued_to = e.t_ms, e.t_ms
            out.chunks.append((e.t_ms, queued_to))
            queued_to += ms
        elif _is_clear(e.entry) and start is not None and e.t_ms < queued_to:
            out.spans.append(Span(start, e.t_ms))
            out.cuts.append(e.t_ms)
            start, queued_to = None, -math.inf
    if start is not None:
        out.spans.append(Span(start, queued_to))
    out.spans = [s for s in out.spans if s.ms > 0]
    return out


def _is_clear(entry: je.EntryData) -> bool:
    return isinstance(entry, je.SipClearPlayback | je.LiveMediaCleared) or (
        isinstance(entry, je.WsServer) and event_type(entry) == CLEARED_EVENT)


def caller_speech(journal: JournalView, ended: float | None) -> list[Span]:
    """Rule 3: the caller's speech, from the best source the journal has."""
    end_of_call = ended if ended is not None else max((e.t_ms for e in journal), default=0.0)
    sip = [(e.t_ms, isinstance(e.entry, je.SipSpeechStarted))
           for e in journal if isinstance(e.entry, je.SipSpeechStarted | je.SipSpeechStopped)]
    if sip:
        return _pair(sip, end_of_call)
    vad = [(e.t_ms, event_type(e.entry) == "input_audio_buffer.speech_started") for e in journal
           if isinstance(e.entry, je.WsServer)
           and event_type(e.entry) in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped")]
    if vad:
        return _pair(vad, end_of_call)
    started = journal.live_server_events("session.started")
    heard = journal.of(je.LiveHeard)
    if started and heard:
        t0 = started[0].t_ms
        return [Span(t0 + h.entry.start_ms, t0 + h.entry.end_ms) for h in heard if h.entry.end_ms > h.entry.start_ms]
    fed = [(e.t_ms, isinstance(e.entry, je.CallerSay)) for e in journal
           if isinstance(e.entry, je.CallerSay | je.CallerSaid | je.CallerSayCut)]
    return _pair(fed, end_of_call)


def _pair(edges: Sequence[tuple[float, bool]], end_of_call: float) -> list[Span]:
    """(time, is a start) edges as spans; a repeated start keeps the first, a stop without a start is dropped."""
    out: list[Span] = []
    start: float | None = None
    for t, is_start in edges:
        if is_start and start is None:
            start = t
        elif not is_start and start is not None:
            out.append(Span(start, t))
            start = None
    if start is not None and end_of_call > start:
        out.append(Span(start, end_of_call))
    return out


def turns(journal: JournalView, played: Played) -> list[Turn]:
    """Rule 5: each caller turn end with the first reply audio sent at or after it, as it began to play."""
    out = []
    for end in journal.turn_ends():
        reply = played.first_after(end)
        if reply is not None:
            out.append(Turn(end, reply))
    return out


def gaps(window: Span, busy: Iterable[Span]) -> list[Span]:
    """Rule 6: the parts of ``window`` no span of ``busy`` covers."""
    out = []
    at = window.start
    for s in sorted(busy, key=lambda s: s.start):
        if s.start > at:
            out.append(Span(at, min(s.start, window.end)))
        at = max(at, s.end)
        if at >= window.end:
            break
    if at < window.end:
        out.append(Span(at, window.end))
    return [g for g in out if g.ms > 0]


def barge_ins(speech: Sequence[Span], played: Sequence[Span], cuts: Sequence[float]) -> list[BargeIn]:
    """Rule 7: caller speech that starts inside a stretch of reply audio, and where that audio stopped."""
    out = []
    for s in speech:
        hit = next((p for p in played if p.start <= s.start < p.end), None)
        if hit is not None:
            out.append(BargeIn(s.start, hit.end, cleared=hit.end in cuts))
    return out


def intersections(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Rule 8: where a span of ``a`` and one of ``b`` both run."""
    out = [Span(max(x.start, y.start), min(x.end, y.end)) for x in a for y in b]
    return sorted((s for s in out if s.ms > 0), key=lambda s: s.start)


# ---- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (what SIPp and most load tools report); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(1, math.ceil(p / 100 * len(s)))
    return float(s[k - 1])
