"""The ladder (sequence diagram) of one call: journal entries as rows, each drawn as a small inline SVG.

Rows come from the journal alone (``ladder_rows``); the app's output lines are placed on the
journal clock approximately (``app_offset``/``app_rows``). The page template lays the rows out;
this module draws the arrows and marks, whose geometry is the lanes' x positions below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from markupsafe import Markup

from .fmt import as_dict, esc, event_of, fit, pretty_json, sec, short

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
LEGEND: list[tuple[str, str]] = [  # shown name, CSS colour variable
    ("caller / SIP", "sip"), ("webhook", "webhook"), ("REST", "rest"), ("app → WebSocket", "wsc"),
    ("WebSocket → app", "wss"), ("reply audio", "audio"), ("app output", "app"), ("problem", "fail")]

_CALL_ID = re.compile(r"rtc_[0-9A-Za-z]+")


def looks_bad(line: str) -> bool:
    """An app output line worth showing in red."""
    return bool(re.search(r"\b(error|exception|traceback|failed)\b", line, re.IGNORECASE))


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
    return entry.get("kind") == "ws.server" and str(event_of(entry).get("type", "")).endswith(_STREAM_SUFFIX)


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
            ev = event_of(e)
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
            text = "".join(str(event_of(x).get("delta", "")) for x in items)
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
        return row("sip", None, f"effect {eff}", short(d), "sip")
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
        return row("rest", "app", f"{status}", short(d.get("body") or "", 200), "err" if bad else "rest",
                   "err" if bad else "")
    if kind.startswith("ws."):
        return _ws_row(kind, d, row)
    if kind.startswith("caller."):
        return _caller_row(kind, d, row)
    if kind.startswith("sip."):
        return _sip_row(kind, d, row)
    if kind == "audio.out":  # only reached for a lone chunk outside a run
        return row("sip", "caller", f"reply audio {d.get('ms')} ms", short(d), "audio")
    return row("sip", None, kind, short(d), "app")


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
            detail += f"; body {short(d['response_body'], 80)}"
        return row("webhook", "app", label, detail, "webhook" if ok else "err", "" if ok else "err")
    if kind == "webhook.delivered":
        return row("webhook", None, "delivered", f"after {d.get('attempts')} attempt(s)", "webhook")
    if kind == "webhook.delayed":
        return row("webhook", None, f"delayed {d.get('seconds')} s", short(d), "warn", "warn")
    if kind in ("webhook.gave_up", "webhook.dropped"):
        why = f"last status {d.get('last_status')}" if kind == "webhook.gave_up" else f"fault {d.get('fault')}"
        return row("webhook", None, kind.split(".", 1)[1].replace("_", " "),
                   f"{kind}: after {d.get('attempts', 0)} attempt(s), {why}", "err", "err")
    return row("webhook", None, kind.split(".", 1)[1], short(d), "webhook")


def _ws_row(kind: str, d: dict[str, Any], row: Any) -> Row:
    if kind == "ws.connect":
        q = d.get("query") or {}
        qs = "&".join(f"{k}={v}" for k, v in q.items()) if isinstance(q, dict) else str(q)
        return row("app", "ws", "connect" + (" (beta header)" if d.get("beta") else ""), f"?{qs}", "wsc",
                   "warn" if d.get("beta") else "")
    if kind in ("ws.client", "ws.server"):
        ev = as_dict(d.get("event"))
        etype = str(ev.get("type") or d.get("type") or "?")
        level = "err" if (etype == "error" or etype.endswith(".failed") or d.get("error")) else ""
        resp = as_dict(ev.get("response"))
        if etype == "response.done" and resp.get("status") in ("cancelled", "incomplete"):
            level = level or "warn"
        if etype == "response.done" and resp.get("status") == "failed":
            level = "err"
        if etype == "output_audio_buffer.cleared":
            level = level or "warn"
        summary = _event_summary(ev) or (short(d.get("error")) if d.get("error") else "")
        if kind == "ws.client":
            return row("app", "ws", etype, summary, "err" if level == "err" else "wsc", level)
        return row("ws", "app", etype, summary, "err" if level == "err" else "wss", level)
    if kind == "ws.close":
        if d.get("dropped"):
            return row("ws", "app", "dropped at hang-up", "no close frame (the real service's way)", "wss",
                       dashed=True)
        return row("ws", "app", f"close {d.get('code', '')}".strip(), short(d), "wss", dashed=True)
    if kind == "ws.refused":
        return row("ws", "app", f"refused {d.get('status', '')}".strip(), short(d), "err", "err")
    if kind == "ws.drop":
        return row("ws", None, "dropped (no close frame)", short(d), "err", "err")
    return row("ws", None, kind, short(d), "wss")


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
        return row("caller", "sip", f"DTMF {d.get('digit')}", short(d), "caller")
    return row("caller", None, kind, short(d), "caller")


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
        return row("sip", "caller", label, short(d), "err" if bad else "sip", "err" if bad else "")
    if kind == "sip.dtmf":
        return row("caller", "sip", f"DTMF {d.get('digit')}", f"method {d.get('method')}", "sip")
    if kind == "sip.refer_status":
        return row("caller", "sip", f"NOTIFY {d.get('code')}", "final" if d.get("final") else "progress", "sip")
    if kind == "sip.ended":
        bad = d.get("kind") == "call_failed"
        return row("sip", None, "SIP leg ended", short({k: v for k, v in d.items() if v is not None}),
                   "err" if bad else "sip", "err" if bad else "")
    if kind in ("sip.command_failed", "sip.rejected"):
        return row("sip", None, kind.split(".", 1)[1].replace("_", " "), short(d), "err", "err")
    if kind in ("sip.speech_started", "sip.speech_stopped"):
        return row("sip", None, "VAD " + kind.split("_", 1)[1], short(d), "sip")
    return row("sip", None, kind.split(".", 1)[1].replace("_", " "), short(d), "sip")


def _event_summary(ev: dict[str, Any]) -> str:
    if not ev:
        return ""
    err = ev.get("error")
    if isinstance(err, dict):
        return short(" ".join(str(x) for x in (err.get("code") or err.get("type"), err.get("message")) if x))
    for key in ("transcript", "text", "delta"):
        if isinstance(ev.get(key), str) and ev[key]:
            return repr(short(ev[key], 200))
    resp = ev.get("response")
    if isinstance(resp, dict):
        bits = [str(resp.get("status") or "")]
        details = resp.get("status_details")
        if isinstance(details, dict) and details.get("reason"):
            bits.append(f"({details['reason']})")
        if resp.get("instructions"):
            bits.append(short(resp["instructions"], 100))
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


def app_offset(call: dict[str, Any], entries: list[dict[str, Any]], app_lines: list[tuple[float, str]],
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


def app_rows(cid: str, call_ids: list[str], app_lines: list[tuple[float, str]], offset: float | None,
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
        level = "err" if looks_bad(line) else ""
        rows.append(Row(at, "app", None, text, text, {"t": t, "line": line, "t_ms_approx": round(at, 1)},
                        "err" if level else "app", level, approx=True, order=k))
    return rows


# ---- ladder drawing -------------------------------------------------------------------------------


def _lanes_svg() -> str:
    parts = [f'<line class="lane" x1="{x}" y1="0" x2="{x}" y2="{ROW_H}"/>' for _, _, x in LANES]
    return "".join(parts)


def row_svg(r: Row) -> str:
    x1 = LANE_X[r.src]
    parts = [f'<svg width="{LADDER_W}" height="{ROW_H}" viewBox="0 0 {LADDER_W} {ROW_H}" '
             f'data-src="{r.src}" data-dst="{r.dst or ""}">', _lanes_svg()]
    title = f"<title>{esc(r.label)}</title>"
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
        text = fit(r.label, abs(x2 - x1) - 10)
        parts.append(f'<text class="lbl {c}" x="{mid}" y="{y - 5}" text-anchor="middle">{esc(text)}</text>')
    else:
        y = ROW_H / 2 + 1.0
        if r.src == "app":
            parts.append(f'<rect class="mark {c}" x="{x1 - 4}" y="{y - 4}" width="8" height="8" rx="1">{title}</rect>')
            text = fit(r.label, x1 - LANE_X["rest"] - 20)
            parts.append(f'<text class="lbl {c}" x="{x1 - 10}" y="{y + 4}" text-anchor="end">{esc(text)}</text>')
        else:
            parts.append(f'<circle class="mark {c}" cx="{x1}" cy="{y}" r="4.5">{title}</circle>')
            room = LANE_X["app"] - x1 - 30 if r.src == "ws" else 2.2 * (LANE_X["webhook"] - LANE_X["sip"])
            text = fit(r.label, room)
            parts.append(f'<text class="lbl {c}" x="{x1 + 9}" y="{y + 4}">{esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def lanes_head_svg() -> Markup:
    """The lane names across the top of a ladder."""
    head = [f'<svg width="{LADDER_W}" height="30" viewBox="0 0 {LADDER_W} 30" class="lanes">']
    for key, name, x in LANES:
        w = max(52, 8 * len(name) + 14)
        head.append(f'<g class="lanehead" data-lane="{key}">'
                    f'<rect x="{x - w / 2}" y="4" width="{w}" height="22" rx="4"/>'
                    f'<text x="{x}" y="19.5" text-anchor="middle">{esc(name)}</text></g>')
    head.append("</svg>")
    return Markup("".join(head))


def gap_svg() -> Markup:
    """The dashed lanes of a separator row (a quiet stretch between two rows)."""
    lanes = "".join(f'<line class="lane" x1="{x}" y1="0" x2="{x}" y2="12" stroke-dasharray="2 2"/>'
                    for _, _, x in LANES)
    return Markup(f'<svg width="{LADDER_W}" height="12" viewBox="0 0 {LADDER_W} 12">{lanes}</svg>')


@dataclass
class LadderItem:
    """One line of the ladder as the template shows it: a row (with its payload) or a quiet gap."""

    kind: Literal["row", "gap"]
    t: str  # the time column: "0.123", "≈0.456" (app line) or "+1.50 s" (gap)
    cls: str = ""
    approx: bool = False
    svg: Markup = field(default_factory=Markup)
    title: str = ""
    detail: str = ""
    payload: str = ""


def ladder_items(entries: list[dict[str, Any]], app_lines: list[Row], transport: str) -> list[LadderItem]:
    """Journal rows and app lines merged on the journal clock, with a gap line wherever it goes quiet."""
    rows = ladder_rows(entries, transport)
    merged = sorted([*((r.t_ms, 0, r.order, n, r) for n, r in enumerate(rows)),
                     *((r.t_ms, 1, r.order, n, r) for n, r in enumerate(app_lines))], key=lambda x: x[:4])
    out: list[LadderItem] = []
    prev: float | None = None
    for *_, r in merged:
        if prev is not None and r.t_ms - prev > GAP_MS:
            out.append(LadderItem("gap", f"+{(r.t_ms - prev) / 1000:.2f} s"))
        prev = r.t_ms if prev is None else max(prev, r.t_ms)
        out.append(LadderItem("row", ("≈" if r.approx else "") + sec(r.t_ms),
                              cls=" ".join(x for x in ("ev", r.level, "app-line" if r.approx else "") if x),
                              approx=r.approx, svg=Markup(row_svg(r)), title=short(r.detail, 600),
                              detail=short(r.detail, 240), payload=pretty_json(r.payload)))
    return out
