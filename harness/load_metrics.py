"""Load-test metrics, read from a call's journal only: latencies, failure reasons, percentiles.

The call's timing figures (turn latency, answer to first audio, dead air, barge-in, overlap) are
:mod:`.timing`'s, the same the run report shows. Nothing here looks at private state of the mock or
the app: every number comes from the journal entries of ``GET /_mock/calls/{call_id}`` (times are ms
since the call began, plus the call's wall-clock anchor), so a user can recompute each figure from the JSON report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mock_api import journal_entries as je
from mock_api.control_models import CallView

from .journal_view import TRANSCRIPTION_EVENTS, JournalView, Logged
from .timing import DEAD_AIR_MS, Timing, percentile, timing

TRANSCRIPTS = (*TRANSCRIPTION_EVENTS, "session.input_transcript.delta")  # Realtime's, then GPT-Live's

# metric name → what it measures (the order is the order of every table and report)
METRICS: dict[str, str] = {
    "webhook_to_accept_ms": "webhook sent → accept received",
    "accept_to_ws_ms": "accept → WebSocket attached",
    "invite_to_180_ms": "INVITE → 180 Ringing (sip)",
    "invite_to_200_ms": "INVITE → 200 OK (sip)",
    "speech_end_to_transcript_ms": "caller speech end → first transcription event",
    "speech_end_to_audio_ms": "caller speech end → first reply audio",
    "answer_to_audio_ms": "answer → first reply audio",
    "dead_air_ms": f"dead air over {DEAD_AIR_MS / 1000:g} s (each)",
    "barge_in_ms": "barge-in → reply audio stopped",
    "overlap_ms": "caller and reply audio overlapping (each)",
}
MAIN_METRICS = ("webhook_to_accept_ms", "accept_to_ws_ms", "speech_end_to_audio_ms")
PERCENTILES = (50, 95, 99)


@dataclass
class CallRecord:
    """One placed call: when, how it ended, its metrics (each sample as [wall time s, value ms])."""

    index: int
    call_id: str | None = None
    worker: int = 0
    start: float = 0.0  # wall clock, unix seconds, when the driver placed the call
    end: float = 0.0  # when the driver was done with it
    ok: bool = False
    reason: str | None = None
    metrics: dict[str, list[list[float]]] = field(default_factory=dict)
    rtp: dict[str, int] = field(default_factory=dict)
    turns: int = 0
    state: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "call_id": self.call_id, "worker": self.worker, "start": round(self.start, 4),
                "end": round(self.end, 4), "ok": self.ok, "reason": self.reason, "state": self.state,
                "turns": self.turns, "metrics": self.metrics, "rtp": self.rtp}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CallRecord:
        return cls(index=d["index"], call_id=d.get("call_id"), worker=d.get("worker", 0), start=d["start"],
                   end=d["end"], ok=d["ok"], reason=d.get("reason"), metrics=d.get("metrics", {}),
                   rtp=d.get("rtp", {}), turns=d.get("turns", 0), state=d.get("state"))


def extract(view: CallView) -> dict[str, list[list[float]]]:
    """Every latency sample of one call, as metric → [[wall time of the later event, ms], ...]."""
    anchor = view.started_at or view.created_at
    journal = JournalView.of_call(view)
    out: dict[str, list[list[float]]] = {}

    def add(name: str, a: Logged[je.EntryData] | float | None, b: Logged[je.EntryData] | None) -> None:
        if a is None or b is None:
            return
        ta = a if isinstance(a, float) else a.t_ms
        out.setdefault(name, []).append([round(anchor + b.t_ms / 1000, 4), round(b.t_ms - ta, 3)])

    accepts = journal.accepts()
    accept = accepts[0] if accepts else None
    attempts = journal.of(je.WebhookAttempt)
    if accept is not None and attempts:
        # the attempt the app answered with the accept: the last one sent before the accept arrived
        sent = [journal.webhook_sent_ms(a) for a in attempts]
        before = [s for s in sent if s <= accept.t_ms] or sent[:1]
        add("webhook_to_accept_ms", float(before[-1]), accept)
    if accept is not None:  # the Realtime socket, or a Live call's sideband
        add("accept_to_ws_ms", accept, journal.first(je.WsConnect, after=accept.t_ms)
            or journal.first(je.LiveConnect, after=accept.t_ms))
    invite = journal.first(je.SipInvite)
    if invite is not None:
        responses = journal.of(je.SipSent)
        for status in (180, 200):
            add(f"invite_to_{status}_ms", invite, next((r for r in responses if r.entry.status == status), None))
    figures = timing(journal)
    # where each turn ended: the VAD's stop (SIP, Realtime), else the turn ends timing placed (GPT-Live)
    stops = [float(s.t_ms) for s in journal.speech_stops()] or [t.end_ms for t in figures.turns]
    for stop_ms in stops:
        add("speech_end_to_transcript_ms", stop_ms, journal.first_event(TRANSCRIPTS, stop_ms))
    _timing_samples(figures, anchor, out)
    return out


def _timing_samples(figures: Timing, anchor: float, out: dict[str, list[list[float]]]) -> None:
    """The figures of :mod:`.timing` as samples, each stamped with the wall time it ended at."""

    def add(name: str, at_ms: float, value: float) -> None:
        out.setdefault(name, []).append([round(anchor + at_ms / 1000, 4), round(value, 3)])

    for turn in figures.turns:
        add("speech_end_to_audio_ms", turn.reply_ms, turn.latency_ms)
    if figures.first_audio_ms is not None and figures.answered_ms is not None:
        add("answer_to_audio_ms", figures.answered_ms + figures.first_audio_ms, figures.first_audio_ms)
    for span in figures.dead_air:
        add("dead_air_ms", span.end, span.ms)
    for b in figures.barge_ins:
        add("barge_in_ms", b.stopped_ms, b.reaction_ms)
    for span in figures.overlaps:
        add("overlap_ms", span.end, span.ms)


def ingress_rtp(view: CallView) -> dict[str, int]:
    """RTP counters of the mock's side of a SIP call (its worker's stream stats, in ``sip.ended``)."""
    ended = JournalView.of_call(view).first(je.SipEnded, lambda e: isinstance(e.rtp, dict))
    if ended is None or ended.entry.rtp is None:
        return {}
    return {f"ingress_{k}": int(v) for k, v in ended.entry.rtp.items() if isinstance(v, int | float)}


def speech_stops(view: CallView) -> list[Logged[je.EntryData]]:
    """Where the caller's turns ended: the SIP leg's VAD (sip mode) or the session's speech_stopped."""
    return JournalView.of_call(view).speech_stops()


def failure(view: CallView, *, sip_status: int | None = None) -> str | None:
    """Why a call failed, from its journal (None: it went through). The most specific cause wins."""
    if sip_status not in (None, 200):
        return f"SIP {sip_status}" if sip_status else "SIP no final response"
    journal = JournalView.of_call(view)
    if journal.first(je.SipEnded, lambda e: e.kind == "call_failed") is not None:
        return "SIP worker died"
    if not journal.accepts():
        return _no_accept(journal)
    refused = journal.first(je.RestResponse, lambda r: int(r.status or 0) >= 400)
    if refused is not None:
        return _rest_failure(refused.entry)
    if journal.has(je.WsRefused):
        return "WebSocket 404"
    if not journal.has(je.WsConnect) and not journal.has(je.LiveConnect):  # Realtime's socket, Live's sideband
        return "no WebSocket"
    errors = journal.server_events("error")
    if errors:
        ev_err: dict[str, Any] = errors[0].entry.event.get("error") or {}
        return f"WebSocket error event ({ev_err.get('code') or ev_err.get('type') or 'error'})"
    closed = journal.first(je.WsClose, lambda c: c.code not in (None, 1000, 1001))
    if closed is not None:
        return f"WebSocket closed {closed.entry.code}"
    if view.state not in ("ended", "active"):
        return f"call {view.state}" + (f" ({view.end_reason})" if view.end_reason else "")
    audio = [e.t_ms for e in journal.of(je.AudioOut)]
    for stop in journal.speech_stops():
        if not any(t >= stop.t_ms for t in audio):
            return "turn without reply"
    return None


def _no_accept(journal: JournalView) -> str:
    """Why the app never accepted: its webhook's fate."""
    attempts = journal.of(je.WebhookAttempt)
    bad = [a.entry for a in attempts if not a.entry.ok]
    if bad and not any(a.entry.ok for a in attempts):
        last = bad[-1]
        if isinstance(last.status, int):
            return f"webhook {last.status}"
        return f"webhook {str(last.error or 'error').split(':')[0]}"
    if journal.has(je.WebhookQueued) and not attempts:
        return "webhook never delivered"
    return "no accept"


def _rest_failure(response: je.RestResponse) -> str:
    """A refused call control, with the API's error code."""
    status = int(response.status)
    detail: Any = response.body.get("error") if isinstance(response.body, dict) else None
    code = detail.get("code") if isinstance(detail, dict) else None
    label = {404: "REST 404", 429: "REST 429 rate limited"}.get(status, f"REST {status}")
    return f"{label} ({code})" if code else label


# ---- percentiles and summaries ------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {"count": len(values)}
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(values, p)
    out["max"] = max(values) if values else None
    out["mean"] = round(sum(values) / len(values), 3) if values else None
    return out


def metric_values(records: Iterable[CallRecord], name: str) -> list[float]:
    return [v for r in records for _, v in r.metrics.get(name, [])]


def summary(records: Sequence[CallRecord]) -> dict[str, dict[str, float | int | None]]:
    return {name: summarize(metric_values(records, name)) for name in METRICS}


def reasons(records: Iterable[CallRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = r.reason or "unknown"
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass
class Interval:
    start: float  # seconds since the run began
    end: float
    created: int = 0
    completed: int = 0
    failed: int = 0
    active: int = 0  # calls in flight at the end of the interval
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # process → % of one core over the interval


def intervals(records: Sequence[CallRecord], t0: float, t_end: float, step: float) -> list[Interval]:
    """Per-interval counts and latency samples (each sample goes where its later event happened)."""
    n = max(1, math.ceil((t_end - t0) / step))
    out = [Interval(i * step, (i + 1) * step) for i in range(n)]

    def slot(t: float) -> Interval:
        return out[min(n - 1, max(0, int((t - t0) // step)))]

    for r in records:
        slot(r.start).created += 1
        end = slot(r.end)
        if r.ok:
            end.completed += 1
        else:
            end.failed += 1
        for name, samples in r.metrics.items():
            for at, v in samples:
                slot(at).samples.setdefault(name, []).append(v)
    for iv in out:
        edge = t0 + iv.end
        iv.active = sum(1 for r in records if r.start <= edge < r.end)
    return out
