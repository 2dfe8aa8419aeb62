"""One self-contained HTML page per run: for people reading what a call did and why a check failed.

For every scenario the page shows its verdict and checks (failed ones highlighted), and for
every call:

- a ladder timeline (sequence diagram) across the lanes caller · SIP · webhook · REST ·
  WebSocket · app, one row per journal entry (streaming bursts folded), plus the app's own
  output lines, aligned to the journal clock; each row expands to its JSON payload;
- what the caller sent and heard, drawn as inline SVG on the journal clock: from a WAV
  recording when the call carries one (true waveform), otherwise an activity strip built from
  what the journal knows (``caller.say`` spans, VAD, ``audio.out`` chunks);
- the transcripts (caller: input transcription; assistant: output transcript or text).

Everything is inline (CSS, a few lines of script, SVG); the page loads nothing from anywhere
and says so in its Content-Security-Policy. Every string from a run is escaped.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..runner import ScenarioResult
from .html_assets import CSS, JS

# ---- lanes of the ladder ----------------------------------------------------------------------

LANES: list[tuple[str, str, float]] = [  # key, shown name, x in the row's SVG
    ("caller", "caller", 46),
    ("sip", "SIP", 164),
    ("webhook", "webhook", 282),
    ("rest", "REST", 400),
    ("ws", "WebSocket", 518),
    ("app", "app", 862),
]
LANE_X = {key: x for key, _, x in LANES}
LADDER_W = 910
ROW_H = 24
GAP_MS = 1000.0  # a quiet stretch longer than this gets its own separator row
WAVE_POINTS = 800

_CALL_ID = re.compile(r"rtc_[0-9A-Za-z]+")


def write_html(results: list[ScenarioResult], path: Path) -> None:
    """Write the run's report to ``path`` (one file, nothing else)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")


def render_html(results: list[ScenarioResult], title: str = "rtsip run report") -> str:
    docs = [_result_doc(r) for r in results]
    passed = sum(1 for d in docs if d.get("passed"))
    failed = len(docs) - passed
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    body = [
        '<header class="top">',
        f"<h1>{_e(title)}</h1>",
        f'<div class="sub">{passed} passed · {failed} failed · {len(docs)} scenario runs · written {_e(created)}</div>',
        "</header><main>",
        '<div class="toolbar"><button type="button" id="expand-all">expand all</button>'
        '<button type="button" id="collapse-all">collapse all</button>'
        '<label><input type="checkbox" id="only-failed"> failed only</label></div>',
        _summary_table(docs),
        *(_scenario(i, d, expanded=len(docs) == 1) for i, d in enumerate(docs)),
        "</main>",
        '<footer>rtsip · times are seconds on the mock\'s journal clock since each call began; '
        "app output lines are placed approximately (marked ≈).</footer>",
    ]
    csp = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}: {passed}/{len(docs)} passed</title>",
        f"<style>{CSS}</style></head><body>",
        *body,
        f"<script>{JS}</script>",
        "</body></html>",
    ])


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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(text: str, px: float, char_px: float = 6.4) -> str:
    n = max(4, int(px / char_px))
    return text if len(text) <= n else text[: n - 1] + "…"


def _sec(ms: float) -> str:
    return f"{ms / 1000:.3f}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _event(entry: dict[str, Any]) -> dict[str, Any]:
    return _dict(_dict(entry.get("data")).get("event"))


# ---- page parts ---------------------------------------------------------------------------------


def _verdict_class(doc: dict[str, Any]) -> str:
    if doc.get("passed"):
        return "pass"
    return "error" if str(doc.get("verdict", "")).startswith("error") else "fail"


def _badge(doc: dict[str, Any]) -> str:
    cls = _verdict_class(doc)
    text = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[cls]
    return f'<span class="badge {cls}">{text}</span>'


def _summary_table(docs: list[dict[str, Any]]) -> str:
    rows = ['<table class="summary"><tr><th></th><th>scenario</th><th>s</th><th>checks</th><th>why</th></tr>']
    for i, d in enumerate(docs):
        checks = d.get("checks", [])
        ok = sum(1 for c in checks if c.get("ok"))
        why = "" if d.get("passed") else _short(d.get("verdict", ""), 200)
        rows.append(f'<tr><td>{_badge(d)}</td><td><a class="jump" href="#s{i}">{_e(d.get("name"))}</a></td>'
                    f'<td>{float(d.get("seconds", 0)):.1f}</td><td>{ok}/{len(checks)}</td>'
                    f'<td class="why">{_e(why)}</td></tr>')
    rows.append("</table>")
    return "".join(rows)


def _scenario(i: int, d: dict[str, Any], expanded: bool = False) -> str:
    """Failed scenarios (and a run's only scenario) start open."""
    failed = not d.get("passed")
    calls = d.get("calls", [])
    out = [f'<details class="scenario{" failed" if failed else ""}" id="s{i}"{" open" if failed or expanded else ""}>',
           f'<summary>{_badge(d)}<h2>{_e(d.get("name"))}</h2>'
           f'<span class="meta">{_e(d.get("file", ""))} · seed {_e(d.get("seed", 0))} · '
           f'{float(d.get("seconds", 0)):.1f} s · {len(calls)} call{"s" if len(calls) != 1 else ""}</span></summary>',
           '<div class="scenario-body">']
    if d.get("description"):
        out.append(f'<div class="desc">{_e(d["description"])}</div>')
    if failed and (str(d.get("verdict", "")).startswith("error") or all(c.get("ok") for c in d.get("checks", []))):
        out.append(f'<div class="verdict fail">{_e(d.get("verdict", ""))}</div>')
    if d.get("notes"):
        out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in d["notes"]) + "</ul>")
    if d.get("warnings"):
        out.append('<ul class="warnings">' + "".join(f"<li>warning: {_e(n)}</li>" for n in d["warnings"]) + "</ul>")
    out.append(_checks(d.get("checks", [])))
    call_ids = [str(c.get("call_id", "")) for c in calls]
    app_lines = [(float(x.get("t", 0)), str(x.get("line", ""))) for x in d.get("app_output", [])]
    ready = next((float(m.group(1)) for n in d.get("notes", []) if (m := re.search(r"app ready in ([\d.]+) s", n))),
                 None)
    for n, call in enumerate(calls):
        out.append(_call(n, call, app_lines, call_ids, d.get("app_started_at"), ready if len(calls) == 1 else None))
    if not calls:
        out.append('<p class="empty">no call reached the mock</p>')
    out.append(_app_log(app_lines))
    out.append("</div></details>")
    return "\n".join(out)


def _checks(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return '<h3>expectations</h3><p class="empty">no checks were evaluated</p>'
    bad = [c for c in checks if not c.get("ok")]
    good = [c for c in checks if c.get("ok")]
    out = [f'<h3>expectations<span class="hint">{len(good)} passed, {len(bad)} failed</span></h3>']
    for c in bad:
        out.append(
            f'<div class="check fail"><div class="name">✗ {_e(c.get("name"))}</div><div class="cmp">'
            f'<span class="k">expected</span><pre>{_e(_pretty(c.get("expected")))}</pre>'
            f'<span class="k">actual</span><pre>{_e(_pretty(c.get("actual")))}</pre></div>'
            + (f'<div class="detail">{_e(c["detail"])}</div>' if c.get("detail") else "") + "</div>")
    if good:
        out.append('<div class="checks-pass">' + "".join(
            f'<span class="chip check ok" title="{_e(_short(c.get("expected"), 300))}">✓ {_e(c.get("name"))}</span>'
            for c in good) + "</div>")
    return "\n".join(out)


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

    return value if isinstance(value, str) else _json(open_up(value))


def _app_log(lines: list[tuple[float, str]]) -> str:
    if not lines:
        return ""
    body = "\n".join(
        (f'<span class="err">{_e(f"{t:8.3f}  {line}")}</span>' if _looks_bad(line) else _e(f"{t:8.3f}  {line}"))
        for t, line in lines)
    return (f'<details class="raw applog"><summary>app output ({len(lines)} lines, seconds since the app '
            f"started)</summary><pre>{body}</pre></details>")


def _looks_bad(line: str) -> bool:
    return bool(re.search(r"\b(error|exception|traceback|failed)\b", line, re.IGNORECASE))


def _call(n: int, call: dict[str, Any], app_lines: list[tuple[float, str]], call_ids: list[str],
          app_started_at: Any, ready_s: float | None) -> str:
    cid = str(call.get("call_id", "?"))
    kv = [("state", call.get("state")), ("end reason", call.get("end_reason")), ("transport", call.get("transport")),
          ("SIP final status", call.get("sip_final_status")), ("refer target", call.get("refer_target"))]
    headers = "; ".join(f'{h.get("name")}: {h.get("value")}' for h in call.get("sip_headers", []))
    out = [f'<section class="call" data-call-id="{_e(cid)}"><h3 class="callid">call {n + 1}: '
           f'<span class="mono">{_e(cid)}</span></h3>',
           '<div class="kv">' + "".join(f"<span><b>{_e(k)}</b> {_e(v)}</span>" for k, v in kv if v is not None)
           + "</div>"]
    if headers:
        out.append(f'<div class="kv"><span><b>SIP headers</b> <span class="mono">{_e(headers)}</span></span></div>')
    if call.get("accept_body") is not None:
        out.append(f'<details class="raw"><summary>accept body</summary><pre>{_e(_json(call["accept_body"]))}</pre>'
                   "</details>")
    entries = sorted(call.get("entries", []), key=lambda e: (float(e.get("t_ms", 0)), int(e.get("seq", 0))))
    offset, how = _app_offset(call, entries, app_lines, app_started_at, ready_s)
    out.append("<h3>audio<span class=\"hint\">what the caller sent and heard, on the journal clock</span></h3>")
    out.append(_waveform(call, entries))
    out.append("<h3>transcripts</h3>")
    out.append(_transcripts(entries))
    app_rows = _app_rows(cid, call_ids, app_lines, offset, entries)
    out.append(f'<h3>ladder<span class="hint">{len(entries)} journal entries; click a row for its payload; '
               f"{_e(how)}</span></h3>")
    out.append(_ladder(entries, app_rows, str(call.get("transport", ""))))
    out.append("</section>")
    return "\n".join(out)


# ---- ladder -------------------------------------------------------------------------------------


@dataclass
class Row:
    t_ms: float
    src: str
    dst: str | None  # None: a mark on the src lane
    label: str
    detail: str
    payload: Any
    color: str
    level: str = ""  # "", "warn", "err"
    dashed: bool = False
    approx: bool = False
    order: int = 0


_STREAM_SUFFIX = ".delta"


def _is_stream(entry: dict[str, Any]) -> bool:
    if entry.get("kind") == "audio.out":
        return True
    return entry.get("kind") == "ws.server" and str(_event(entry).get("type", "")).endswith(_STREAM_SUFFIX)


def ladder_rows(entries: list[dict[str, Any]], transport: str = "virtual") -> list[Row]:
    """The journal as ladder rows; runs of streaming entries (audio chunks, deltas) fold into one row each."""
    rows: list[Row] = []
    i = 0
    while i < len(entries):
        if _is_stream(entries[i]):
            j = i
            while j < len(entries) and _is_stream(entries[j]):
                j += 1
            rows += _stream_rows(entries[i:j])
            i = j
        else:
            row = _entry_row(entries[i], transport)
            if row is not None:
                rows.append(row)
            i += 1
    return rows


def _stream_rows(run: list[dict[str, Any]]) -> list[Row]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in run:
        if e.get("kind") == "audio.out":
            key = ("audio.out", str(e.get("data", {}).get("response_id", "")))
        else:
            ev = _event(e)
            key = (str(ev.get("type")), str(ev.get("item_id") or ev.get("response_id") or ""))
        groups.setdefault(key, []).append(e)
    rows = []
    for (kind, ref), items in groups.items():
        first = items[0]
        payload = items if len(items) > 1 else first
        if kind == "audio.out":
            ms = sum(float(x.get("data", {}).get("ms", 0) or 0) for x in items)
            bad = sum(1 for x in items if x.get("data", {}).get("corrupt"))
            detail = f"{len(items)} chunk{'s' if len(items) != 1 else ''}, {ms / 1000:.2f} s of reply audio ({ref})"
            if bad:
                detail += f"; {bad} corrupt (static)"
            rows.append(Row(float(first.get("t_ms", 0)), "sip", "caller", f"audio {ms / 1000:.2f} s",
                            detail, payload, "err" if bad else "audio", "err" if bad else "", order=int(first["seq"])))
        else:
            text = "".join(str(_event(x).get("delta", "")) for x in items)
            rows.append(Row(float(first.get("t_ms", 0)), "ws", "app",
                            f"{kind} ×{len(items)}" if len(items) > 1 else kind, repr(text) if text else "",
                            payload, "wss", order=int(first["seq"])))
    return rows


_EFFECT_ARROWS = {"AnswerSip": "200 OK (answer)", "SendSipFinal": "final", "SendRefer": "REFER", "SendBye": "BYE"}


def _entry_row(e: dict[str, Any], transport: str) -> Row | None:
    kind = str(e.get("kind", ""))
    d = e.get("data", {}) or {}
    t = float(e.get("t_ms", 0))
    seq = int(e.get("seq", 0))

    def row(src: str, dst: str | None, label: str, detail: str = "", color: str = "sip", level: str = "",
            dashed: bool = False) -> Row:
        return Row(t, src, dst, label, detail, e, color, level, dashed, order=seq)

    virtual = transport != "sip"
    if kind == "call.created":
        heads = "; ".join(f'{h.get("name")}: {h.get("value")}' for h in d.get("sip_headers", []) if isinstance(h, dict))
        if d.get("transport", transport) == "sip":
            return row("sip", None, "call created", heads)
        return row("caller", "sip", "INVITE (virtual)", heads, "caller", dashed=True)
    if kind == "state":
        after = str(d.get("after"))
        extra = ", ".join(f"{k} {d[k]}" for k in ("sip_final_status", "refer_target", "reason") if d.get(k))
        text = f"{d.get('before') or '∅'} → {after}"
        how = f"{d.get('event', '')}" + (f" via {d['source']}" if d.get("source") else "")
        return row("sip", None, text, f"call state {text} ({how})" + (f"; {extra}" if extra else ""), "sip",
                   "err" if after == "failed" else "")
    if kind == "call.effect":
        eff = str(d.get("effect"))
        if eff in ("StartSession", "EndSession"):
            return row("ws", None, "session started" if eff == "StartSession" else "session ended",
                       f"{eff} {d.get('reason') or ''}".strip(), "wss")
        if virtual and eff in _EFFECT_ARROWS:
            label = str(d.get("status_code")) if eff == "SendSipFinal" else _EFFECT_ARROWS[eff]
            if eff == "SendRefer":
                label += f" → {d.get('target_uri', '')}"
            return row("sip", "caller", label, f"effect {eff} (virtual leg)", "sip", dashed=True)
        return row("sip", None, f"effect {eff}", _short(d), "sip")
    if kind == "call.refused":
        return row("rest" if d.get("source") == "rest" else "sip", None, f"refused {d.get('event')}",
                   f"{d.get('event')} refused in state {d.get('state')} ({d.get('code')})", "err", "err")
    if kind.startswith("webhook."):
        return _webhook_row(kind, d, row)
    if kind == "rest.request":
        return row("app", "rest", f"POST {d.get('op', '')}".strip(), str(d.get("path", "")), "rest")
    if kind == "rest.response":
        status = d.get("status")
        bad = isinstance(status, int) and status >= 400
        return row("rest", "app", f"{status}", _short(d.get("body") or "", 200), "err" if bad else "rest",
                   "err" if bad else "")
    if kind.startswith("ws."):
        return _ws_row(kind, d, row)
    if kind.startswith("caller."):
        return _caller_row(kind, d, row)
    if kind.startswith("sip."):
        return _sip_row(kind, d, row)
    if kind == "audio.out":  # only reached for a lone chunk outside a run
        return row("sip", "caller", f"reply audio {d.get('ms')} ms", _short(d), "audio")
    return row("sip", None, kind, _short(d), "app")


def _webhook_row(kind: str, d: dict[str, Any], row: Any) -> Row:
    etype = str(d.get("event_type") or "")
    if kind == "webhook.queued":
        return row("webhook", None, f"queued {etype}", str(d.get("url", "")), "webhook")
    if kind == "webhook.attempt":
        ok = bool(d.get("ok"))
        status = d.get("status")
        result = f"{status}" if status is not None else str(d.get("error") or "no answer")
        lat = d.get("latency_ms")
        label = f"POST webhook #{d.get('attempt', '?')} → {result}"
        detail = f"attempt {d.get('attempt')} answered {result}" + (f" in {float(lat):.0f} ms" if lat else "")
        if d.get("duplicate"):
            detail += " (duplicate delivery)"
        if d.get("response_body"):
            detail += f"; body {_short(d['response_body'], 80)}"
        return row("webhook", "app", label, detail, "webhook" if ok else "err", "" if ok else "err")
    if kind == "webhook.delivered":
        return row("webhook", None, "delivered", f"after {d.get('attempts')} attempt(s)", "webhook")
    if kind == "webhook.delayed":
        return row("webhook", None, f"delayed {d.get('seconds')} s", _short(d), "warn", "warn")
    if kind in ("webhook.gave_up", "webhook.dropped"):
        why = f"last status {d.get('last_status')}" if kind == "webhook.gave_up" else f"fault {d.get('fault')}"
        return row("webhook", None, kind.split(".", 1)[1].replace("_", " "),
                   f"{kind}: after {d.get('attempts', 0)} attempt(s), {why}", "err", "err")
    return row("webhook", None, kind.split(".", 1)[1], _short(d), "webhook")


def _ws_row(kind: str, d: dict[str, Any], row: Any) -> Row:
    if kind == "ws.connect":
        q = d.get("query") or {}
        qs = "&".join(f"{k}={v}" for k, v in q.items()) if isinstance(q, dict) else str(q)
        return row("app", "ws", "connect" + (" (beta header)" if d.get("beta") else ""), f"?{qs}", "wsc",
                   "warn" if d.get("beta") else "")
    if kind in ("ws.client", "ws.server"):
        ev = _dict(d.get("event"))
        etype = str(ev.get("type") or d.get("type") or "?")
        level = "err" if (etype == "error" or etype.endswith(".failed") or d.get("error")) else ""
        resp = _dict(ev.get("response"))
        if etype == "response.done" and resp.get("status") in ("cancelled", "incomplete"):
            level = level or "warn"
        if etype == "response.done" and resp.get("status") == "failed":
            level = "err"
        if etype == "output_audio_buffer.cleared":
            level = level or "warn"
        summary = _event_summary(ev) or (_short(d.get("error")) if d.get("error") else "")
        if kind == "ws.client":
            return row("app", "ws", etype, summary, "err" if level == "err" else "wsc", level)
        return row("ws", "app", etype, summary, "err" if level == "err" else "wss", level)
    if kind == "ws.close":
        if d.get("dropped"):
            return row("ws", "app", "dropped at hang-up", "no close frame (the real service's way)", "wss",
                       dashed=True)
        return row("ws", "app", f"close {d.get('code', '')}".strip(), _short(d), "wss", dashed=True)
    if kind == "ws.refused":
        return row("ws", "app", f"refused {d.get('status', '')}".strip(), _short(d), "err", "err")
    if kind == "ws.drop":
        return row("ws", None, "dropped (no close frame)", _short(d), "err", "err")
    return row("ws", None, kind, _short(d), "wss")


def _caller_row(kind: str, d: dict[str, Any], row: Any) -> Row:
    if kind == "caller.say":
        speed = d.get("speed")
        return row("caller", "sip", f"say {d.get('label')}",
                   f"{d.get('label')}: {float(d.get('ms') or 0) / 1000:.2f} s of audio"
                   + (f" at {speed:g}× speed" if isinstance(speed, int | float) else ""), "caller")
    if kind == "caller.said":
        return row("caller", None, f"done: {d.get('label')}", f"{d.get('ms')} ms fed", "caller")
    if kind == "caller.say_cut":
        return row("caller", None, f"cut: {d.get('label')}", f"stopped after {d.get('sent_ms')} ms", "warn", "warn")
    if kind == "caller.dtmf":
        return row("caller", "sip", f"DTMF {d.get('digit')}", _short(d), "caller")
    return row("caller", None, kind, _short(d), "caller")


def _sip_row(kind: str, d: dict[str, Any], row: Any) -> Row:
    if kind == "sip.invite":
        return row("caller", "sip", "INVITE", f"{d.get('request_uri') or ''} from {d.get('src') or '?'} "
                   f"({d.get('transport') or ''})", "sip")
    if kind == "sip.sent":
        if d.get("request"):
            label = str(d["request"]) + (f" → {d['refer_to']}" if d.get("refer_to") else "")
        else:
            label = str(d.get("status"))
        status = d.get("status")
        bad = isinstance(status, int) and status >= 400
        return row("sip", "caller", label, _short(d), "err" if bad else "sip", "err" if bad else "")
    if kind == "sip.dtmf":
        return row("caller", "sip", f"DTMF {d.get('digit')}", f"method {d.get('method')}", "sip")
    if kind == "sip.refer_status":
        return row("caller", "sip", f"NOTIFY {d.get('code')}", "final" if d.get("final") else "progress", "sip")
    if kind == "sip.ended":
        bad = d.get("kind") == "call_failed"
        return row("sip", None, "SIP leg ended", _short({k: v for k, v in d.items() if v is not None}),
                   "err" if bad else "sip", "err" if bad else "")
    if kind in ("sip.command_failed", "sip.rejected"):
        return row("sip", None, kind.split(".", 1)[1].replace("_", " "), _short(d), "err", "err")
    if kind in ("sip.speech_started", "sip.speech_stopped"):
        return row("sip", None, "VAD " + kind.split("_", 1)[1], _short(d), "sip")
    return row("sip", None, kind.split(".", 1)[1].replace("_", " "), _short(d), "sip")


def _event_summary(ev: dict[str, Any]) -> str:
    if not ev:
        return ""
    err = ev.get("error")
    if isinstance(err, dict):
        return _short(" ".join(str(x) for x in (err.get("code") or err.get("type"), err.get("message")) if x))
    for key in ("transcript", "text", "delta"):
        if isinstance(ev.get(key), str) and ev[key]:
            return repr(_short(ev[key], 200))
    resp = ev.get("response")
    if isinstance(resp, dict):
        bits = [str(resp.get("status") or "")]
        details = resp.get("status_details")
        if isinstance(details, dict) and details.get("reason"):
            bits.append(f"({details['reason']})")
        if resp.get("instructions"):
            bits.append(_short(resp["instructions"], 100))
        if resp.get("id"):
            bits.append(str(resp["id"]))
        return " ".join(b for b in bits if b)
    session = ev.get("session")
    if isinstance(session, dict):
        return "session keys: " + ", ".join(sorted(session))
    item = ev.get("item")
    if isinstance(item, dict):
        return " ".join(str(x) for x in (item.get("type"), item.get("role"), item.get("status")) if x)
    for key in ("audio_start_ms", "audio_end_ms"):
        if key in ev:
            return f"{key} {ev[key]}"
    if isinstance(ev.get("rate_limits"), list):
        return ", ".join(f"{r.get('name')} {r.get('remaining')}/{r.get('limit')}" for r in ev["rate_limits"]
                         if isinstance(r, dict))
    return ""


# ---- app output on the journal clock --------------------------------------------------------------


def _app_offset(call: dict[str, Any], entries: list[dict[str, Any]], app_lines: list[tuple[float, str]],
                app_started_at: Any, ready_s: float | None = None) -> tuple[float | None, str]:
    """Milliseconds to add to ``app_output`` times (s since the app started) to land on this call's clock.

    Exact when the result knows the app's start on the wall clock; otherwise the app's first
    line about the call (or, for a scenario's only call, its first line after it became
    ready) is taken to be printed when the webhook reached it.
    """
    call_wall = call.get("started_at") or call.get("created_at")
    if isinstance(app_started_at, int | float) and isinstance(call_wall, int | float):
        return (float(app_started_at) - float(call_wall)) * 1000, "app lines placed by the wall clock"
    cid = str(call.get("call_id", ""))
    first_line = next((t for t, line in app_lines if cid and cid in line), None)
    about = "the app's first line about this call"
    if first_line is None and ready_s is not None:
        first_line = next((t for t, _ in app_lines if t >= ready_s), None)
        about = "the app's first line after it was ready"
    anchor: float | None = None
    what = ""
    hook = next((e for e in entries if e.get("kind") == "webhook.attempt"), None)
    if hook is not None:  # journaled when the answer came: the app saw the request latency_ms earlier
        anchor = float(hook.get("t_ms", 0)) - float((hook.get("data") or {}).get("latency_ms") or 0)
        what = "the webhook's delivery"
    else:
        first = next((e for e in entries if e.get("kind") in ("rest.request", "ws.connect")), None)
        if first is not None:
            anchor, what = float(first.get("t_ms", 0)), f"its first {first.get('kind')}"
    if first_line is None or anchor is None:
        return None, "app output could not be placed on this call's clock (see the app output below)"
    return anchor - first_line * 1000, f"app lines (≈) aligned by taking {about} to be at {what}"


def _app_rows(cid: str, call_ids: list[str], app_lines: list[tuple[float, str]], offset: float | None,
              entries: list[dict[str, Any]]) -> list[Row]:
    if offset is None:
        return []
    end = max((float(e.get("t_ms", 0)) for e in entries), default=0.0) + 2000
    rows = []
    others = {c for c in call_ids if c != cid}
    for k, (t, line) in enumerate(app_lines):
        ids = set(_CALL_ID.findall(line))
        if ids & others and cid not in ids:
            continue
        at = t * 1000 + offset
        if cid not in ids and not (0 <= at <= end):
            continue
        text = line.replace(f"[{cid}] ", "", 1)
        level = "err" if _looks_bad(line) else ""
        rows.append(Row(at, "app", None, text, text, {"t": t, "line": line, "t_ms_approx": round(at, 1)},
                        "err" if level else "app", level, approx=True, order=k))
    return rows


# ---- ladder drawing -------------------------------------------------------------------------------


def _lanes_svg() -> str:
    parts = [f'<line class="lane" x1="{x}" y1="0" x2="{x}" y2="{ROW_H}"/>' for _, _, x in LANES]
    return "".join(parts)


def _row_svg(r: Row) -> str:
    x1 = LANE_X[r.src]
    parts = [f'<svg width="{LADDER_W}" height="{ROW_H}" viewBox="0 0 {LADDER_W} {ROW_H}" '
             f'data-src="{r.src}" data-dst="{r.dst or ""}">', _lanes_svg()]
    title = f"<title>{_e(r.label)}</title>"
    c = f"c-{r.color}"
    if r.dst is not None and r.dst != r.src:
        x2 = LANE_X[r.dst]
        sign = 1 if x2 > x1 else -1
        y: float = ROW_H - 7
        tip = x2 - sign * 2
        parts.append(f'<line class="arrow {c}{" dashed" if r.dashed else ""}" x1="{x1}" y1="{y}" '
                     f'x2="{tip - sign * 7}" y2="{y}">{title}</line>')
        parts.append(f'<polygon class="{c}" points="{tip},{y} {tip - sign * 8},{y - 4} {tip - sign * 8},{y + 4}"/>')
        mid = (x1 + x2) / 2
        text = _fit(r.label, abs(x2 - x1) - 10)
        parts.append(f'<text class="lbl {c}" x="{mid}" y="{y - 5}" text-anchor="middle">{_e(text)}</text>')
    else:
        y = ROW_H / 2 + 1.0
        if r.src == "app":
            parts.append(f'<rect class="mark {c}" x="{x1 - 4}" y="{y - 4}" width="8" height="8" rx="1">{title}</rect>')
            text = _fit(r.label, x1 - LANE_X["rest"] - 20)
            parts.append(f'<text class="lbl {c}" x="{x1 - 10}" y="{y + 4}" text-anchor="end">{_e(text)}</text>')
        else:
            parts.append(f'<circle class="mark {c}" cx="{x1}" cy="{y}" r="4.5">{title}</circle>')
            room = LANE_X["app"] - x1 - 30 if r.src == "ws" else 2.2 * (LANE_X["webhook"] - LANE_X["sip"])
            text = _fit(r.label, room)
            parts.append(f'<text class="lbl {c}" x="{x1 + 9}" y="{y + 4}">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ladder(entries: list[dict[str, Any]], app_rows: list[Row], transport: str) -> str:
    rows = ladder_rows(entries, transport)
    merged = sorted([*((r.t_ms, 0, r.order, n, r) for n, r in enumerate(rows)),
                     *((r.t_ms, 1, r.order, n, r) for n, r in enumerate(app_rows))], key=lambda x: x[:4])
    head = [f'<svg width="{LADDER_W}" height="30" viewBox="0 0 {LADDER_W} 30" class="lanes">']
    for key, name, x in LANES:
        w = max(52, 8 * len(name) + 14)
        head.append(f'<g class="lanehead" data-lane="{key}">'
                    f'<rect x="{x - w / 2}" y="4" width="{w}" height="22" rx="4"/>'
                    f'<text x="{x}" y="19.5" text-anchor="middle">{_e(name)}</text></g>')
    head.append("</svg>")
    out = ['<div class="ladder">',
           f'<div class="head"><span class="t">t (s)</span>{"".join(head)}<span class="d">detail</span></div>']
    prev: float | None = None
    for *_, r in merged:
        if prev is not None and r.t_ms - prev > GAP_MS:
            out.append(f'<div class="gap"><span class="t">+{(r.t_ms - prev) / 1000:.2f} s</span>'
                       f'<svg width="{LADDER_W}" height="12" viewBox="0 0 {LADDER_W} 12">'
                       + "".join(f'<line class="lane" x1="{x}" y1="0" x2="{x}" y2="12" stroke-dasharray="2 2"/>'
                                 for _, _, x in LANES) + "</svg><span></span></div>")
        prev = r.t_ms if prev is None else max(prev, r.t_ms)
        cls = " ".join(x for x in ("ev", r.level, "app-line" if r.approx else "") if x)
        t = ("≈" if r.approx else "") + _sec(r.t_ms)
        out.append(f'<details class="{cls}"><summary><span class="t{" approx" if r.approx else ""}">{_e(t)}</span>'
                   f'{_row_svg(r)}<span class="d" title="{_e(_short(r.detail, 600))}">{_e(_short(r.detail, 240))}'
                   f'</span></summary><div class="payload"><pre>{_e(_json(r.payload))}</pre></div></details>')
    if not merged:
        out.append('<p class="empty">the journal has no entries for this call</p>')
    out.append("</div>")
    legend = [("caller / SIP", "sip"), ("webhook", "webhook"), ("REST", "rest"), ("app → WebSocket", "wsc"),
              ("WebSocket → app", "wss"), ("reply audio", "audio"), ("app output", "app"), ("problem", "err")]
    out.append('<div class="legend">' + "".join(
        f'<span><i style="background: var(--{"fail" if c == "err" else c})"></i>{_e(n)}</span>' for n, c in legend)
        + "<span>dashed: virtual leg / close</span></div>")
    return "\n".join(out)


# ---- transcripts ----------------------------------------------------------------------------------


def transcripts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Caller and assistant transcripts, in journal order: [{t_ms, who, text, error, tag}]."""
    status: dict[str, str] = {}
    for e in entries:
        ev = _event(e)
        if e.get("kind") == "ws.server" and ev.get("type") == "response.done" and isinstance(ev.get("response"), dict):
            resp = ev["response"]
            if resp.get("status") not in (None, "completed"):
                det = resp.get("status_details")
                reason = det.get("reason") if isinstance(det, dict) else None
                status[str(resp.get("id"))] = f"{resp.get('status')}" + (f": {reason}" if reason else "")
    out: list[dict[str, Any]] = []
    for e in entries:
        if e.get("kind") != "ws.server":
            continue
        ev = _event(e)
        etype = ev.get("type")
        t = float(e.get("t_ms", 0))
        if etype == "conversation.item.input_audio_transcription.completed":
            out.append({"t_ms": t, "who": "caller", "text": str(ev.get("transcript") or ""), "error": False, "tag": ""})
        elif etype == "conversation.item.input_audio_transcription.failed":
            err = _dict(ev.get("error"))
            out.append({"t_ms": t, "who": "caller", "text": f"transcription failed: {err.get('message', '')}",
                        "error": True, "tag": ""})
        elif etype in ("response.output_audio_transcript.done", "response.output_text.done"):
            text = ev.get("transcript") if etype == "response.output_audio_transcript.done" else ev.get("text")
            tag = status.get(str(ev.get("response_id")), "")
            out.append({"t_ms": t, "who": "assistant", "text": str(text or ""), "error": False,
                        "tag": f"response {tag}" if tag else ("text" if etype == "response.output_text.done" else "")})
    return out


def _transcripts(entries: list[dict[str, Any]]) -> str:
    items = transcripts(entries)
    if not items:
        return '<p class="empty">no transcripts in the journal (no transcription or response transcript events)</p>'
    rows = ['<div class="transcripts">']
    for it in items:
        cls = "user" if it["who"] == "caller" else "assistant"
        if it["error"]:
            cls += " err"
        tag = f'<span class="tag">{_e(it["tag"])}</span>' if it["tag"] else ""
        rows.append(f'<div class="tr {cls}"><span class="t">{_sec(it["t_ms"])} s</span>'
                    f'<span class="who">{_e(it["who"])}</span><span class="text">{_e(it["text"]) or "<i>(empty)</i>"}'
                    f"{tag}</span></div>")
    spoke = sum(1 for e in entries if e.get("kind") in ("caller.say", "sip.speech_stopped"))
    if spoke and not any(it["who"] == "caller" for it in items):
        rows.append(f'<div class="tr user"><span class="t"></span><span class="who">caller</span>'
                    f'<span class="empty">spoke {spoke} time{"s" if spoke != 1 else ""}, but no input transcription '
                    "event reached the app</span></div>")
    rows.append("</div>")
    return "\n".join(rows)


# ---- waveform -------------------------------------------------------------------------------------


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
    caller heard (the softphone's recording). A ``recording`` in a ``sip.*`` journal entry is the
    mock's recording of the caller's leg, so it counts as what the caller sent.
    """
    out: dict[str, str] = {}
    for key, role in (("sent_audio", "sent"), ("heard_audio", "heard"), ("recording", "heard")):
        if isinstance(call.get(key), str) and call[key]:
            out.setdefault(role, call[key])
    for e in call.get("entries", []):
        d = e.get("data", {}) or {}
        for key, role in (("sent_audio", "sent"), ("heard_audio", "heard")):
            if isinstance(d.get(key), str) and d[key]:
                out.setdefault(role, d[key])
        if isinstance(d.get("recording"), str) and d["recording"]:
            role = "sent" if str(e.get("kind", "")).startswith("sip.") else str(d.get("role") or "heard")
            out.setdefault("sent" if role == "sent" else "heard", d["recording"])
    return out


@dataclass
class _Span:
    start: float
    end: float
    label: str = ""
    cls: str = ""


def _activity(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the journal says about sound on the line, as spans on its clock."""
    says: list[_Span] = []
    vad: list[_Span] = []
    dtmf: list[tuple[float, str]] = []
    chunks: list[_Span] = []
    marks: list[tuple[float, str, str]] = []
    open_say: dict[str, list[_Span]] = {}
    vad_start: float | None = None
    by_resp: dict[str, list[tuple[float, float, bool]]] = {}
    for e in entries:
        kind, d, t = str(e.get("kind")), e.get("data", {}) or {}, float(e.get("t_ms", 0))
        if kind == "caller.say":
            speed = float(d.get("speed") or 1) or 1.0
            span = _Span(t, t + float(d.get("ms") or 0) / speed, str(d.get("label", "")))
            says.append(span)
            open_say.setdefault(span.label, []).append(span)
        elif kind in ("caller.said", "caller.say_cut"):
            pending = open_say.get(str(d.get("label", "")))
            if pending:
                pending.pop(0).end = t
        elif kind in ("caller.dtmf", "sip.dtmf"):
            dtmf.append((t, str(d.get("digit", ""))))
        elif kind == "audio.out":
            by_resp.setdefault(str(d.get("response_id", "")), []).append((t, float(d.get("ms") or 0),
                                                                         bool(d.get("corrupt"))))
        elif kind == "state" and d.get("after") == "active":
            marks.append((t, "answered", "mark"))
        elif kind == "state" and d.get("after") in ("ended", "failed", "rejected", "referred"):
            marks.append((t, str(d.get("after")), "mark"))
        elif kind in ("ws.server", "sip.speech_started", "sip.speech_stopped"):
            etype = str(_event(e).get("type", "")) if kind == "ws.server" else kind
            if etype.endswith("speech_started") and vad_start is None:
                vad_start = t
            elif etype.endswith("speech_stopped") and vad_start is not None:
                vad.append(_Span(vad_start, t, "speech"))
                vad_start = None
            elif etype == "output_audio_buffer.cleared":
                marks.append((t, "cleared", "warn"))
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
    return {"says": says, "vad": vad, "dtmf": dtmf, "chunks": chunks, "marks": marks}


def _nice_step(span_ms: float, max_ticks: int = 12) -> float:
    for step in (100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 30000, 60000, 120000, 300000):
        if span_ms / step <= max_ticks:
            return float(step)
    return 600000.0


def _waveform(call: dict[str, Any], entries: list[dict[str, Any]]) -> str:
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
            notes.append(f"{role}: {Path(p).name}, {dur:.2f} s, drawn from answer at {_sec(answered)} s")
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
                   f'font-size="10" fill="{color}" text-anchor="{anchor}">{_e(label)}</text>')
    for n, (title, kind, data) in enumerate(tracks):
        y0 = top + n * track_h
        mid = y0 + track_h / 2
        out.append(f'<text x="8" y="{mid + 4:.1f}" font-size="12" font-weight="bold" fill="#1f2328">{_e(title)}</text>')
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
                           f'fill="#b7dfc0"><title>{_e(s.label)}: {_sec(s.start)}–{_sec(s.end)} s</title></rect>')
            for s in act["vad"]:
                out.append(f'<rect class="wf-vad" x="{x(s.start):.1f}" y="{mid - amp:.1f}" '
                           f'width="{max(1.5, x(s.end) - x(s.start)):.1f}" height="{amp * 2:.1f}" rx="2" '
                           f'fill="#2f6f3e" fill-opacity="0.55"><title>speech detected (VAD) {_sec(s.start)}–'
                           f"{_sec(s.end)} s</title></rect>")
            for s in act["says"]:
                out.append(f'<text x="{x(s.start) + 3:.1f}" y="{y0 + 8:.1f}" font-size="10" fill="#2f6f3e">'
                           f"{_e(_fit(s.label, max(40.0, x(s.end) - x(s.start)), 5.6))}</text>")
            for t, digit in act["dtmf"]:
                out.append(f'<path d="M{x(t):.1f},{mid - 7:.1f} l6,7 l-6,7 l-6,-7 z" fill="#8250df">'
                           f"<title>DTMF {_e(digit)}</title></path>"
                           f'<text x="{x(t) + 7:.1f}" y="{mid - 6:.1f}" font-size="10" fill="#8250df">'
                           f"{_e(digit)}</text>")
        elif kind == "heard":
            for s in act["chunks"]:
                fill = "#cf222e" if s.cls == "bad" else "#1b7c83"
                h = amp * (1.0 if s.cls == "bad" else 0.7)
                out.append(f'<rect class="wf-chunk" x="{x(s.start):.1f}" y="{mid - h:.1f}" '
                           f'width="{max(1.0, x(s.end) - x(s.start)):.2f}" height="{2 * h:.1f}" fill="{fill}" '
                           f'fill-opacity="0.75"/>')
                if s.label:
                    out.append(f'<text x="{x(s.start) + 2:.1f}" y="{y0 + 8:.1f}" font-size="10" fill="#1b7c83">'
                               f"{_e(s.label)}</text>")
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
                           f"<title>{_e(title)}: {dur:.2f} s, peak {dbfs:.1f} dBFS</title></polygon>")
    out.append("</svg>")
    legend = ('<span><i style="background:#b7dfc0"></i>caller audio fed</span>'
              '<span><i style="background:#2f6f3e"></i>speech detected (VAD)</span>'
              '<span><i style="background:#1b7c83"></i>reply audio chunks</span>'
              '<span><i style="background:#cf222e"></i>corrupt audio</span>'
              '<span><i style="background:#8250df"></i>DTMF</span>')
    return ("\n".join(out) + f'<div class="legend">{legend}</div>'
            + "".join(f'<p class="wf-note">{_e(n)}</p>' for n in notes))
