"""What the caller sent and heard, drawn as inline SVG on the journal clock.

From a WAV recording when the call carries one (the true waveform, as a min/max envelope),
otherwise an activity strip built from what the journal knows (``caller.say`` spans, VAD,
``audio.out`` chunks), so a report always shows when there was sound on the line.
"""

from __future__ import annotations

import itertools
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from mock_api import journal_entries as je

from ..journal_view import JournalView
from ..timing import Span, Timing
from .fmt import as_dict, esc, fit, sec

WAVE_POINTS = 800
LEGEND: list[tuple[str, str]] = [  # colour, what it marks
    ("#b7dfc0", "caller audio fed"), ("#2f6f3e", "speech detected (VAD)"), ("#1b7c83", "reply audio chunks"),
    ("#cf222e", "corrupt audio"), ("#8250df", "DTMF")]


def wav_envelope(path: str | Path, points: int = WAVE_POINTS) -> tuple[float, np.ndarray, np.ndarray]:
    """A WAV file as (duration in s, per-bucket minimum, per-bucket maximum), samples scaled to [-1, 1]."""
    with wave.open(str(path), "rb") as w:
        channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:
        raise ValueError(f"unsupported sample width {width}")
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    duration = len(x) / rate if rate else 0.0
    if len(x) == 0:
        return duration, np.zeros(0), np.zeros(0)
    k = min(points, len(x))
    starts = np.linspace(0, len(x), k + 1).astype(np.int64)[:-1]
    return duration, np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)


def audio_paths(call: dict[str, Any]) -> dict[str, str]:
    """WAV files a call carries: {'sent': …, 'heard': …}.

    ``sent_audio`` is what the caller sent; ``recording``/``heard_audio`` on the call is what the
    caller heard (the softphone's recording). The ``recording`` of a ``sip.ended`` journal entry is the
    mock's recording of the caller's leg, so it counts as what the caller sent.
    """
    out: dict[str, str] = {}
    for key, role in (("sent_audio", "sent"), ("heard_audio", "heard"), ("recording", "heard")):
        if isinstance(call.get(key), str) and call[key]:
            out.setdefault(role, call[key])
    for e in JournalView(call.get("entries", [])).of(je.SipEnded):
        if isinstance(e.entry.recording, str) and e.entry.recording:
            out.setdefault("sent", e.entry.recording)
    return out


@dataclass
class _Span:
    start: float
    end: float
    label: str = ""
    cls: str = ""


@dataclass
class _Activity:
    """Sound on the line as the journal tells it, gathered entry by entry."""

    says: list[_Span] = field(default_factory=list)
    vad: list[_Span] = field(default_factory=list)
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    marks: list[tuple[float, str, str]] = field(default_factory=list)
    open_say: dict[str, list[_Span]] = field(default_factory=dict)
    vad_start: float | None = None
    by_resp: dict[str, list[tuple[float, float, bool]]] = field(default_factory=dict)
    faults: list[_Span] = field(default_factory=list)  # media fault windows (hold, silence, one-way)
    open_fault: dict[str, _Span] = field(default_factory=dict)

    def add(self, t: float, entry: je.EntryData) -> None:
        match entry:
            case je.CallerSay(label=label, ms=ms, speed=speed):
                span = _Span(t, t + float(ms or 0) / (float(speed or 1) or 1.0), str(label or ""))
                self.says.append(span)
                self.open_say.setdefault(span.label, []).append(span)
            case je.CallerSaid(label=label) | je.CallerSayCut(label=label):
                pending = self.open_say.get(str(label or ""))
                if pending:
                    pending.pop(0).end = t
            case je.CallerDtmf(digit=digit) | je.SipDtmf(digit=digit):
                self.dtmf.append((t, str(digit)))
            case je.AudioOut(response_id=rid, ms=ms, corrupt=corrupt):
                self.by_resp.setdefault(str(rid or ""), []).append((t, float(ms or 0), bool(corrupt)))
            case je.State(after="active"):
                self.marks.append((t, "answered", "mark"))
            case je.State(after="ended" | "failed" | "rejected" | "referred" as after):
                self.marks.append((t, after, "mark"))
            case je.WsServer(event=event):
                self.voice(t, str(as_dict(event).get("type", "")))
            case je.SipSpeechStarted() | je.SipSpeechStopped():
                self.voice(t, entry.journal_kind)
            case je.FaultFired(fault=fault, detail=detail, edge="start"):
                self.open_fault[fault] = _Span(t, t, f"{fault}: {detail}", "fault")
                self.faults.append(self.open_fault[fault])
            case je.FaultFired(fault=fault, edge="end"):
                opened = self.open_fault.pop(fault, None)
                if opened is not None:
                    opened.end = t
            case je.FaultFired(fault=fault):
                self.marks.append((t, fault, "warn"))
            case je.SipSsrc(old=int()):  # the caller's RTP under a new SSRC (not the first one heard)
                self.marks.append((t, "new SSRC", "warn"))

    def voice(self, t: float, etype: str) -> None:
        """VAD edges (the session's or the SIP leg's) and cleared playback."""
        if etype.endswith("speech_started") and self.vad_start is None:
            self.vad_start = t
        elif etype.endswith("speech_stopped") and self.vad_start is not None:
            self.vad.append(_Span(self.vad_start, t, "speech"))
            self.vad_start = None
        elif etype == "output_audio_buffer.cleared":
            self.marks.append((t, "cleared", "warn"))


def _activity(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the journal says about sound on the line, as spans on its clock."""
    act = _Activity()
    for e in JournalView(entries):
        act.add(e.t_ms, e.entry)
    says, vad, dtmf, marks, vad_start, by_resp = act.says, act.vad, act.dtmf, act.marks, act.vad_start, act.by_resp
    for still in act.open_fault.values():  # a window the call ended inside: it lasts to the last entry
        still.end = max([still.start, *(e.t_ms for e in JournalView(entries))])
    chunks: list[_Span] = []
    if vad_start is not None:
        vad.append(_Span(vad_start, vad_start + 200, "speech…"))
    for rid, items in by_resp.items():
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(items) if b[0] > a[0]]
        step = float(np.median(gaps)) if gaps else 20.0
        total = sum(ms for _, ms, _ in items)
        for n, (t, _ms, bad) in enumerate(items):
            nxt = items[n + 1][0] if n + 1 < len(items) else t + step
            chunks.append(_Span(t, max(nxt, t + 1), rid if n == 0 else "", "bad" if bad else ""))
        if items:
            chunks[-len(items)].label = f"{total / 1000:.2f} s reply"
    return {"says": says, "vad": vad, "dtmf": dtmf, "chunks": chunks, "marks": marks, "faults": act.faults}


def _nice_step(span_ms: float, max_ticks: int = 12) -> float:
    for step in (100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 30000, 60000, 120000, 300000):
        if span_ms / step <= max_ticks:
            return float(step)
    return 600000.0


def _fault_windows(spans: list[_Span], x: Callable[[float], float], top: float, height: float) -> list[str]:
    """Media fault windows, shaded behind every track: what the caller heard should show a hole there."""
    return [f'<rect class="wf-fault" x="{x(s.start):.1f}" y="{top - 4}" '
            f'width="{max(1.5, x(s.end) - x(s.start)):.1f}" height="{height - 22 - top + 4:.1f}" '
            f'fill="#fff1e5" stroke="#bc4c00" stroke-dasharray="2 3"><title>{esc(s.label)} '
            f"({sec(s.start)}–{sec(s.end)} s)</title></rect>"
            f'<text x="{x(s.start) + 3:.1f}" y="{height - 25}" font-size="10" fill="#bc4c00">'
            f"{esc(fit(s.label.split(':')[0], max(40.0, x(s.end) - x(s.start)), 5.6))}</text>" for s in spans]


def waveform(call: dict[str, Any], entries: list[dict[str, Any]]) -> tuple[Markup, list[str]]:
    """The call's audio as one SVG on the journal clock, and notes on where each track came from."""
    act = _activity(entries)
    answered = next((t for t, label, _ in act["marks"] if label == "answered"), 0.0)
    tracks: list[tuple[str, str, Any]] = []  # (title, kind, data)
    notes: list[str] = []
    for role in ("sent", "heard"):
        p = audio_paths(call).get(role)
        if not p:
            continue
        try:
            dur, lo, hi = wav_envelope(p)
            tracks.append((f"{role} (recording)", "wave", (dur, lo, hi, answered)))
            notes.append(f"{role}: {Path(p).name}, {dur:.2f} s, drawn from answer at {sec(answered)} s")
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            notes.append(f"{role} recording {p} could not be read: {exc}")
    has_sent = any(k == "wave" and t.startswith("sent") for t, k, _ in tracks)
    has_heard = any(k == "wave" and t.startswith("heard") for t, k, _ in tracks)
    tracks.insert(0, ("caller sent", "sent", None))
    tracks.insert(2 if has_sent else 1, ("caller heard", "heard", None))
    if not (has_sent and has_heard):
        notes.append("activity from the journal (caller.say spans, VAD, audio.out chunks): this result carries no "
                     "audio samples" + (" for the other direction" if (has_sent or has_heard) else ""))

    end = max([float(e.get("t_ms", 0)) for e in entries] + [s.end for s in act["says"]] + [s.end for s in act["chunks"]]
              + [answered + d[0] * 1000 for _, k, d in tracks if k == "wave"] + [1000.0])
    end *= 1.02
    left, width = 118.0, 1060.0
    track_h = 58.0
    top = 30.0
    height = top + track_h * len(tracks) + 28

    def x(t: float) -> float:
        return left + max(0.0, min(t, end)) / end * width

    out = [f'<svg class="waveform" viewBox="0 0 {left + width + 16:.0f} {height:.0f}" '
           f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="audio the caller sent and heard">',
           '<rect x="0" y="0" width="100%" height="100%" fill="#fff"/>']
    step = _nice_step(end)
    tick = 0.0
    while tick <= end:
        out.append(f'<line x1="{x(tick):.1f}" y1="{top - 4}" x2="{x(tick):.1f}" y2="{height - 22}" stroke="#eaeef2"/>'
                   f'<text x="{x(tick):.1f}" y="{height - 8}" font-size="11" fill="#656d76" '
                   f'text-anchor="middle">{tick / 1000:g} s</text>')
        tick += step
    out += _fault_windows(act["faults"], x, top, height)
    row_end = [-1e9, -1e9]  # right edge of the last mark label on each of two label rows
    for t, label, cls in act["marks"]:
        color = "#9a6700" if cls == "warn" else "#8c959f"
        lx = x(t) + 3
        anchor = "start"
        if lx + 6 * len(label) > left + width + 14:
            lx, anchor = x(t) - 3, "end"
        level = 0 if lx > row_end[0] + 4 else (1 if lx > row_end[1] + 4 else 0)
        row_end[level] = lx + (6 * len(label) if anchor == "start" else 0)
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 14 + 10 * level}" x2="{x(t):.1f}" y2="{height - 22}" '
                   f'stroke="{color}" stroke-dasharray="3 3"/><text x="{lx:.1f}" y="{top - 16 + 10 * level}" '
                   f'font-size="10" fill="{color}" text-anchor="{anchor}">{esc(label)}</text>')
    for n, (title, kind, data) in enumerate(tracks):
        y0 = top + n * track_h
        mid = y0 + track_h / 2
        out.append(f'<text x="8" y="{mid + 4:.1f}" font-size="12" font-weight="bold" fill="#1f2328">'
                   f"{esc(title)}</text>")
        out.append(f'<line x1="{left}" y1="{mid:.1f}" x2="{left + width}" y2="{mid:.1f}" stroke="#d0d7de"/>')
        amp = track_h / 2 - 10
        empty = {"sent": not (act["says"] or act["vad"] or act["dtmf"]), "heard": not act["chunks"]}.get(kind)
        if empty:
            out.append(f'<text x="{left + 10}" y="{mid - 5:.1f}" font-size="11" fill="#8c959f" font-style="italic">'
                       f'no {"caller audio" if kind == "sent" else "reply audio"} in the journal</text>')
        if kind == "sent":
            for s in act["says"]:
                out.append(f'<rect class="wf-say" x="{x(s.start):.1f}" y="{mid - amp * 0.45:.1f}" '
                           f'width="{max(1.5, x(s.end) - x(s.start)):.1f}" height="{amp * 0.9:.1f}" rx="3" '
                           f'fill="#b7dfc0"><title>{esc(s.label)}: {sec(s.start)}–{sec(s.end)} s</title></rect>')
            for s in act["vad"]:
                out.append(f'<rect class="wf-vad" x="{x(s.start):.1f}" y="{mid - amp:.1f}" '
                           f'width="{max(1.5, x(s.end) - x(s.start)):.1f}" height="{amp * 2:.1f}" rx="2" '
                           f'fill="#2f6f3e" fill-opacity="0.55"><title>speech detected (VAD) {sec(s.start)}–'
                           f"{sec(s.end)} s</title></rect>")
            for s in act["says"]:
                out.append(f'<text x="{x(s.start) + 3:.1f}" y="{y0 + 8:.1f}" font-size="10" fill="#2f6f3e">'
                           f"{esc(fit(s.label, max(40.0, x(s.end) - x(s.start)), 5.6))}</text>")
            for t, digit in act["dtmf"]:
                out.append(f'<path d="M{x(t):.1f},{mid - 7:.1f} l6,7 l-6,7 l-6,-7 z" fill="#8250df">'
                           f"<title>DTMF {esc(digit)}</title></path>"
                           f'<text x="{x(t) + 7:.1f}" y="{mid - 6:.1f}" font-size="10" fill="#8250df">'
                           f"{esc(digit)}</text>")
        elif kind == "heard":
            for s in act["chunks"]:
                fill = "#cf222e" if s.cls == "bad" else "#1b7c83"
                h = amp * (1.0 if s.cls == "bad" else 0.7)
                out.append(f'<rect class="wf-chunk" x="{x(s.start):.1f}" y="{mid - h:.1f}" '
                           f'width="{max(1.0, x(s.end) - x(s.start)):.2f}" height="{2 * h:.1f}" fill="{fill}" '
                           f'fill-opacity="0.75"/>')
                if s.label:
                    out.append(f'<text x="{x(s.start) + 2:.1f}" y="{y0 + 8:.1f}" font-size="10" fill="#1b7c83">'
                               f"{esc(s.label)}</text>")
        else:
            dur, lo, hi, start = data
            if len(lo):
                peak = float(max(np.max(np.abs(lo)), np.max(np.abs(hi)), 1e-6))
                gain = min(1.0 / peak, 20.0)
                xs = [x(start + dur * 1000 * k / len(lo)) for k in range(len(lo))]
                top_pts = " ".join(f"{px:.1f},{mid - v * gain * amp:.1f}" for px, v in zip(xs, hi, strict=True))
                bot_pts = " ".join(f"{px:.1f},{mid - v * gain * amp:.1f}"
                                   for px, v in zip(reversed(xs), reversed(lo), strict=True))
                color = "#2f6f3e" if title.startswith("sent") else "#1b7c83"
                dbfs = 20 * np.log10(peak)
                out.append(f'<polygon class="wave-true" points="{top_pts} {bot_pts}" fill="{color}" '
                           f'stroke="{color}" stroke-width="0.5" data-points="{len(lo)}">'
                           f"<title>{esc(title)}: {dur:.2f} s, peak {dbfs:.1f} dBFS</title></polygon>")
    out.append("</svg>")
    return Markup("\n".join(out)), notes


STRIP_LEGEND: list[tuple[str, str]] = [  # colour, what it marks on the timing strip
    ("#2f6f3e", "caller speaking"), ("#1b7c83", "reply audio playing"), ("#bc4c00", "both at once"),
    ("#cf222e", "dead air"), ("#8250df", "barge-in: until the reply stopped")]


def timing_strip(figures: Timing) -> Markup:
    """Who had the line when, from answer to end (harness/timing.py's spans): one bar, coloured per speaker,
    with dead air and overlaps on top and each barge-in's reaction as a bracket under it."""
    if figures.answered_ms is None or figures.ended_ms is None or figures.ended_ms <= figures.answered_ms:
        return Markup("")
    t0, t1 = figures.answered_ms, figures.ended_ms
    left, width, bar_y, bar_h = 118.0, 1060.0, 14.0, 22.0

    def x(t: float) -> float:
        return left + (min(max(t, t0), t1) - t0) / (t1 - t0) * width

    def rect(s: Span, color: str, title: str, y: float = bar_y, h: float = bar_h) -> str:
        return (f'<rect x="{x(s.start):.1f}" y="{y:.1f}" width="{max(1.0, x(s.end) - x(s.start)):.1f}" '
                f'height="{h:.1f}" fill="{color}" fill-opacity="0.8"><title>{esc(title)} {sec(s.start)}–'
                f"{sec(s.end)} s ({s.ms:.0f} ms)</title></rect>")

    out = [f'<svg class="timing-strip" viewBox="0 0 {left + width + 16:.0f} 64" preserveAspectRatio="xMinYMin meet" '
           'role="img" aria-label="who had the line when">',
           f'<text x="8" y="{bar_y + 15:.1f}" font-size="12" font-weight="bold" fill="#1f2328">the line</text>',
           f'<rect x="{left}" y="{bar_y}" width="{width}" height="{bar_h}" fill="#f6f8fa" stroke="#d0d7de"/>']
    out += [rect(s, "#2f6f3e", "caller speaking") for s in figures.speech]
    out += [rect(s, "#1b7c83", "reply audio") for s in figures.playback]
    out += [rect(s, "#bc4c00", "overlap") for s in figures.overlaps]
    out += [rect(s, "#cf222e", "dead air", bar_y + 4, bar_h - 8) for s in figures.dead_air]
    for b in figures.barge_ins:
        out.append(rect(Span(b.at_ms, b.stopped_ms), "#8250df", f"barge-in, {b.reaction_ms:g} ms:",
                        bar_y + bar_h + 4, 5))
    out.append(f'<text x="{left}" y="60" font-size="11" fill="#656d76">{sec(t0)} s answered</text>'
               f'<text x="{left + width}" y="60" font-size="11" fill="#656d76" text-anchor="end">{sec(t1)} s '
               "ended</text></svg>")
    return Markup("\n".join(out))
