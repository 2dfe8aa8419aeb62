"""One self-contained HTML page per run: for people reading what a call did and why a check failed.

For every scenario the page shows its verdict and checks (failed ones highlighted), and for
every call:

- a ladder timeline (sequence diagram) across the lanes caller · SIP · webhook · REST ·
  WebSocket · app, one row per journal entry (streaming bursts folded), plus the app's own
  output lines, aligned to the journal clock; each row expands to its JSON payload (``ladder``);
- what the caller sent and heard, drawn as inline SVG on the journal clock (``waveform``);
- its timing figures (``harness/timing.py``): answer to first audio, turn latency, dead air, barge-in
  reaction, overlaps, in a small table and a strip of who had the line when;
- the transcripts (caller: input transcription; assistant: output transcript or text);
- a highlighted line for each retiring or retired model it named (``model_notices``).

Above them, each ``compare: true`` scenario's variants side by side (``compare``), differing rows marked.

The page structure is the Jinja2 template ``templates/run.html.j2``; this module turns results
into the plain values it shows. Everything is inline (CSS, a few lines of script, SVG); the page
loads nothing from anywhere and says so in its Content-Security-Policy. Every string from a run
is escaped by the template's autoescape.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from mock_api import journal_entries as je

from ..journal_view import JournalView
from ..runner import ScenarioResult
from ..timing import Timing, percentile, timing
from .compare import comparisons
from .fmt import as_dict, pretty_json, sec, short
from .html_assets import CSS, JS
from .ladder import LEGEND as LADDER_LEGEND
from .ladder import LadderItem, app_offset, app_rows, gap_svg, ladder_items, ladder_rows, lanes_head_svg, looks_bad
from .model_notices import call_notices
from .render import render
from .waveform import LEGEND as WAVE_LEGEND
from .waveform import STRIP_LEGEND, WAVE_POINTS, audio_paths, timing_strip, wav_envelope, waveform

__all__ = ["WAVE_POINTS", "audio_paths", "ladder_rows", "render_html", "transcripts", "wav_envelope", "write_html"]

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
       "base-uri 'none'; form-action 'none'")


def write_html(results: list[ScenarioResult], path: Path) -> None:
    """Write the run's report to ``path`` (one file, nothing else)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")


def render_html(results: list[ScenarioResult], title: str = "rtsip run report") -> str:
    """The report as one HTML string: failed scenarios (and a run's only one) start open."""
    docs = [_result_doc(r) for r in results]
    scenarios = [_scenario(i, d, expanded=len(docs) == 1) for i, d in enumerate(docs)]
    passed = sum(1 for s in scenarios if s.passed)
    return render("run.html.j2", title=title, scenarios=scenarios, passed=passed, failed=len(docs) - passed,
                  comparisons=comparisons(results),
                  created=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()), csp=CSP, css=Markup(CSS),
                  js=Markup(JS), lanes_head=lanes_head_svg(), gap_svg=gap_svg(), ladder_legend=LADDER_LEGEND,
                  wave_legend=WAVE_LEGEND, strip_legend=STRIP_LEGEND)


# ---- input ------------------------------------------------------------------------------------


def _result_doc(r: ScenarioResult) -> dict[str, Any]:
    """The result as JSON data, plus what the renderer can use that ``to_json`` may not carry yet."""
    doc = r.to_json()
    for key in ("app_started_at",):
        value = getattr(r, key, None)
        if value is not None:
            doc.setdefault(key, value)
    for view, cdoc in zip(r.calls, doc["calls"], strict=False):
        for key in ("recording", "sent_audio", "heard_audio"):
            value = getattr(view, key, None) or (view.model_extra or {}).get(key)
            if value and key not in cdoc:
                cdoc[key] = value
    return doc


# ---- what the template shows ------------------------------------------------------------------


@dataclass
class FailedCheck:
    name: str
    expected: str
    actual: str
    detail: str


@dataclass
class Transcript:
    t: str  # seconds on the journal clock
    who: str  # "caller" or "assistant"
    text: str
    tag: str
    cls: str  # CSS classes of the line: user/assistant, err


@dataclass
class CallPart:
    number: int  # 1-based, in the scenario
    call_id: str
    facts: list[tuple[str, Any]]  # (name, value) shown in a row of key facts
    sip_headers: str
    accept_body: str | None
    wave_svg: Markup
    wave_notes: list[str]
    transcripts: list[Transcript]
    unheard_turns: int  # caller turns when the journal has assistant transcripts but no caller one, else 0
    entries: int
    alignment: str  # how the app's lines were placed on the journal clock
    ladder: list[LadderItem]
    model_notices: list[str] = field(default_factory=list)  # "gpt-realtime retires on ...: move to ..."
    timing: list[tuple[str, str]] = field(default_factory=list)  # (figure, value for people)
    timing_svg: Markup = field(default_factory=lambda: Markup(""))


@dataclass
class ScenarioPart:
    index: int
    name: str
    file: str
    seed: Any
    seconds: float
    description: str
    verdict: str
    verdict_class: str  # pass, fail, error
    open: bool
    show_verdict: bool  # the verdict says more than the failed checks do
    why: str  # the summary table's reason for a failure
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed_checks: list[FailedCheck] = field(default_factory=list)
    passed_checks: list[tuple[str, str]] = field(default_factory=list)  # (name, what was expected, shortened)
    calls: list[CallPart] = field(default_factory=list)
    app_log: list[tuple[str, bool]] = field(default_factory=list)  # (line with its time, looks bad)

    @property
    def passed(self) -> bool:
        return self.verdict_class == "pass"

    @property
    def checks_total(self) -> int:
        return len(self.failed_checks) + len(self.passed_checks)


def _verdict_class(doc: dict[str, Any]) -> str:
    if doc.get("passed"):
        return "pass"
    return "error" if str(doc.get("verdict", "")).startswith("error") else "fail"


def _run_name(d: dict[str, Any]) -> str:
    """The scenario's name, and which run of it (with its fault seed) when ``--repeat`` ran it several times."""
    name = str(d.get("name"))
    if int(d.get("repeats", 1)) == 1:
        return name
    seed = "" if d.get("fault_seed") is None else f", fault seed {d['fault_seed']}"
    return f"{name} (run {int(d.get('repeat', 0)) + 1}/{d['repeats']}{seed})"


def _scenario(i: int, d: dict[str, Any], expanded: bool = False) -> ScenarioPart:
    """Failed scenarios (and a run's only scenario) start open."""
    cls = _verdict_class(d)
    checks = d.get("checks", [])
    verdict = str(d.get("verdict", ""))
    app_lines = [(float(x.get("t", 0)), str(x.get("line", ""))) for x in d.get("app_output", [])]
    part = ScenarioPart(
        index=i, name=_run_name(d), file=str(d.get("file", "")), seed=d.get("seed", 0),
        seconds=float(d.get("seconds", 0)), description=str(d.get("description") or ""), verdict=verdict,
        verdict_class=cls, open=cls != "pass" or expanded,
        show_verdict=cls != "pass" and (verdict.startswith("error") or all(c.get("ok") for c in checks)),
        why="" if cls == "pass" else short(verdict, 200), notes=[str(n) for n in d.get("notes", [])],
        warnings=[str(n) for n in d.get("warnings", [])],
        failed_checks=[FailedCheck(str(c.get("name")), _pretty(c.get("expected")), _pretty(c.get("actual")),
                                   str(c.get("detail") or "")) for c in checks if not c.get("ok")],
        passed_checks=[(str(c.get("name")), short(c.get("expected"), 300)) for c in checks if c.get("ok")],
        app_log=[(f"{t:8.3f}  {line}", looks_bad(line)) for t, line in app_lines])
    calls = d.get("calls", [])
    call_ids = [str(c.get("call_id", "")) for c in calls]
    ready = next((float(m.group(1)) for n in part.notes if (m := re.search(r"app ready in ([\d.]+) s", n))), None)
    part.calls = [_call(n, call, app_lines, call_ids, d.get("app_started_at"), ready if len(calls) == 1 else None)
                  for n, call in enumerate(calls)]
    return part


def _pretty(value: Any) -> str:
    """A check's value for people: strings as they are, JSON held in strings opened up."""

    def open_up(v: Any) -> Any:
        if isinstance(v, str) and v[:1] in "{[":
            try:
                return open_up(json.loads(v))
            except ValueError:
                return v
        if isinstance(v, dict):
            return {k: open_up(x) for k, x in v.items()}
        if isinstance(v, list):
            return [open_up(x) for x in v]
        return v

    return value if isinstance(value, str) else pretty_json(open_up(value))


def _call(n: int, call: dict[str, Any], app_lines: list[tuple[float, str]], call_ids: list[str],
          app_started_at: Any, ready_s: float | None) -> CallPart:
    cid = str(call.get("call_id", "?"))
    facts = [("state", call.get("state")), ("end reason", call.get("end_reason")), ("transport", call.get("transport")),
             ("SIP final status", call.get("sip_final_status")), ("refer target", call.get("refer_target"))]
    entries = sorted(call.get("entries", []), key=lambda e: (float(e.get("t_ms", 0)), int(e.get("seq", 0))))
    offset, how = app_offset(call, entries, app_lines, app_started_at, ready_s)
    wave_svg, wave_notes = waveform(call, entries)
    journal = JournalView(entries)
    said = transcripts(journal)
    spoke = len(journal.of(je.CallerSay)) + len(journal.of(je.SipSpeechStopped))
    figures = timing(journal)
    return CallPart(
        number=n + 1, call_id=cid, facts=[(k, v) for k, v in facts if v is not None],
        sip_headers="; ".join(f'{h.get("name")}: {h.get("value")}' for h in call.get("sip_headers", [])),
        accept_body=pretty_json(call["accept_body"]) if call.get("accept_body") is not None else None,
        wave_svg=wave_svg, wave_notes=wave_notes, transcripts=[_transcript(t) for t in said],
        unheard_turns=spoke if said and not any(t["who"] == "caller" for t in said) else 0,
        entries=len(entries), alignment=how,
        ladder=ladder_items(entries, app_rows(cid, call_ids, app_lines, offset, entries),
                            str(call.get("transport", ""))),
        model_notices=[n.line for n in call_notices(cid, journal)],
        timing=timing_rows(figures), timing_svg=timing_strip(figures))


def timing_rows(t: Timing) -> list[tuple[str, str]]:
    """The call's timing figures as the report's small table shows them (empty: the call was never answered)."""
    if t.answered_ms is None:
        return []
    lat = t.turn_latency_ms
    turns = "no caller turn got reply audio" if not lat else (
        f"{lat[0]:g} ms" if len(lat) == 1 else
        f"p50 {percentile(lat, 50):g} · p95 {percentile(lat, 95):g} · max {max(lat):g} ms ({len(lat)} turns)")
    dead = "; ".join(f"{s.ms / 1000:.1f} s from {sec(s.start)} s" for s in t.dead_air) or "none"
    barge = "; ".join(f"{b.reaction_ms:g} ms at {sec(b.at_ms)} s ({'cleared' if b.cleared else 'played out'})"
                      for b in t.barge_ins) or "none"
    first = "no reply audio" if t.first_audio_ms is None else f"{t.first_audio_ms:g} ms"
    return [("answer → first reply audio", first), ("turn latency (caller's turn end → reply audio)", turns),
            (f"dead air (silences over {t.dead_air_over_ms / 1000:g} s)", dead),
            ("longest silence", "-" if t.longest_silence_ms is None else f"{t.longest_silence_ms:g} ms"),
            ("barge-in reaction", barge),
            ("overlaps (both speaking)", f"{len(t.overlaps)}, {t.overlap_ms:g} ms in all" if t.overlaps else "none")]


def _transcript(item: dict[str, Any]) -> Transcript:
    cls = "user" if item["who"] == "caller" else "assistant"
    cls += " err" if item["error"] else ""
    return Transcript(sec(item["t_ms"]), item["who"], item["text"], item["tag"], cls)


# ---- transcripts ----------------------------------------------------------------------------------


def transcripts(entries: list[dict[str, Any]] | JournalView) -> list[dict[str, Any]]:
    """Caller and assistant transcripts, in journal order: [{t_ms, who, text, error, tag}]. A GPT-Live call's are
    its sideband's transcript deltas, one line per run of a speaker."""
    journal = entries if isinstance(entries, JournalView) else JournalView(entries)
    if journal.has(je.LiveServer):
        return [{"t_ms": line.t_ms, "who": line.who, "text": line.text, "error": False, "tag": "GPT-Live"}
                for line in journal.lines()]
    events = journal.server_events()
    status: dict[str, str] = {}
    for e in events:
        ev = e.entry.event
        if ev.get("type") == "response.done" and isinstance(ev.get("response"), dict):
            resp = ev["response"]
            if resp.get("status") not in (None, "completed"):
                det = resp.get("status_details")
                reason = det.get("reason") if isinstance(det, dict) else None
                status[str(resp.get("id"))] = f"{resp.get('status')}" + (f": {reason}" if reason else "")
    out: list[dict[str, Any]] = []
    for e in events:
        ev = e.entry.event
        etype = ev.get("type")
        t = e.t_ms
        if etype == "conversation.item.input_audio_transcription.completed":
            out.append({"t_ms": t, "who": "caller", "text": str(ev.get("transcript") or ""), "error": False, "tag": ""})
        elif etype == "conversation.item.input_audio_transcription.failed":
            err = as_dict(ev.get("error"))
            out.append({"t_ms": t, "who": "caller", "text": f"transcription failed: {err.get('message', '')}",
                        "error": True, "tag": ""})
        elif etype in ("response.output_audio_transcript.done", "response.output_text.done"):
            text = ev.get("transcript") if etype == "response.output_audio_transcript.done" else ev.get("text")
            tag = status.get(str(ev.get("response_id")), "")
            out.append({"t_ms": t, "who": "assistant", "text": str(text or ""), "error": False,
                        "tag": f"response {tag}" if tag else ("text" if etype == "response.output_text.done" else "")})
    return out

