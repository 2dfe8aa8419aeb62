"""The ladder (sequence diagram) of one call: journal entries as rows, each drawn as a small inline SVG.

Rows come from the journal alone (``ladder_rows``); the app's output lines are placed on the
journal clock approximately (``app_offset``/``app_rows``). The page template lays the rows out;
this module draws the arrows and marks, whose geometry is the lanes' x positions below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from markupsafe import Markup

from mock_api import journal_entries as je

from ..journal_view import JournalView, Logged, logged
from .fmt import as_dict, esc, fit, pretty_json, sec, short

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
Item = tuple[dict[str, Any], Logged[je.EntryData]]  # an entry as the report keeps it, and typed


_LIVE_STREAMS = ("session.input_audio.append",)  # GPT-Live's reflected caller audio: a stream without .delta


def _is_stream(entry: je.EntryData) -> bool:
    if isinstance(entry, je.AudioOut):
        return True
    if isinstance(entry, je.LiveServer):
        t = str(entry.event.get("type", ""))
        return t.endswith(_STREAM_SUFFIX) or t in _LIVE_STREAMS
    return isinstance(entry, je.WsServer) and str(as_dict(entry.event).get("type", "")).endswith(_STREAM_SUFFIX)


def ladder_rows(entries: list[dict[str, Any]], transport: str = "virtual") -> list[Row]:
    """The journal as ladder rows; runs of streaming entries (audio chunks, deltas) fold into one row each."""
    items: list[Item] = [(e, logged(e)) for e in entries]
    rows: list[Row] = []
    i = 0
    while i < len(items):
        if _is_stream(items[i][1].entry):
            j = i
            while j < len(items) and _is_stream(items[j][1].entry):
                j += 1
            rows += _stream_rows(items[i:j])
            i = j
        else:
            row = _entry_row(*items[i], transport)
            if row is not None:
                rows.append(row)
            i += 1
    return rows


def _stream_rows(run: list[Item]) -> list[Row]:
    groups: dict[tuple[str, str], list[Item]] = {}
    for raw, item in run:
        if isinstance(item.entry, je.AudioOut):
            key = ("audio.out", str(item.entry.response_id or ""))
        else:
            ev = _event(item.entry)
            key = (str(ev.get("type")), str(ev.get("item_id") or ev.get("response_id") or ""))
        groups.setdefault(key, []).append((raw, item))
    rows = []
    for (kind, ref), members in groups.items():
        first = members[0][1]
        payload = [raw for raw, _ in members] if len(members) > 1 else members[0][0]
        if kind == "audio.out":
            chunks = [m.entry for _, m in members if isinstance(m.entry, je.AudioOut)]
            ms = sum(float(c.ms or 0) for c in chunks)
            bad = sum(1 for c in chunks if c.corrupt)
            detail = f"{len(members)} chunk{'s' if len(members) != 1 else ''}, {ms / 1000:.2f} s of reply audio ({ref})"
            if bad:
                detail += f"; {bad} corrupt (static)"
            rows.append(Row(first.t_ms, "sip", "caller", f"audio {ms / 1000:.2f} s",
                            detail, payload, "err" if bad else "audio", "err" if bad else "", order=first.seq))
        else:
            text = "".join(str(_event(m.entry).get("delta", "")) for _, m in members)
            rows.append(Row(first.t_ms, "ws", "app",
                            f"{kind} ×{len(members)}" if len(members) > 1 else kind, repr(text) if text else "",
                            payload, "wss", order=first.seq))
    return rows


def _event(entry: je.EntryData) -> dict[str, Any]:
    """The event a ``ws.client``/``ws.server`` (Realtime) or ``live.client``/``live.server`` (a GPT-Live
    sideband) entry carries ({} for other entries)."""
    socket = je.WsServer | je.WsClient | je.LiveServer | je.LiveClient
    return as_dict(entry.event) if isinstance(entry, socket) else {}


_EFFECT_ARROWS = {"AnswerSip": "200 OK (answer)", "SendSipFinal": "final", "SendRefer": "REFER", "SendBye": "BYE"}


class _RowMaker(Protocol):
    def __call__(self, src: str, dst: str | None, label: str, detail: str = "", color: str = "sip",
                 level: str = "", dashed: bool = False) -> Row: ...


def _entry_row(raw: dict[str, Any], item: Logged[je.EntryData], transport: str) -> Row | None:
    entry = item.entry

    def row(src: str, dst: str | None, label: str, detail: str = "", color: str = "sip", level: str = "",
            dashed: bool = False) -> Row:
        return Row(item.t_ms, src, dst, label, detail, raw, color, level, dashed, order=item.seq)

    for draw in (_call_row, _webhook_row, _rest_row, _ws_row, _caller_row, _sip_row):
        drawn = draw(entry, row, transport != "sip")
        if drawn is not None:
            return drawn
    d = entry.to_data()
    kind = item.kind
    lane = next((lane for lane in ("webhook", "ws", "caller", "sip") if kind.startswith(lane + ".")), None)
    if lane == "webhook":
        return row("webhook", None, kind.split(".", 1)[1], short(d), "webhook")
    if lane == "ws":
        return row("ws", None, kind, short(d), "wss")
    if lane == "caller":
        return row("caller", None, kind, short(d), "caller")
    if lane == "sip":
        return row("sip", None, kind.split(".", 1)[1].replace("_", " "), short(d), "sip")
    return row("sip", None, kind, short(d), "app")


def _header_text(headers: list[Any]) -> str:
    """INVITE headers as ``name: value``; the journal keeps them as pairs, the call view as objects."""
    pairs = [(h.get("name"), h.get("value")) if isinstance(h, dict) else tuple(h) for h in headers
             if isinstance(h, dict) or (isinstance(h, list | tuple) and len(h) == 2)]
    return "; ".join(f"{name}: {value}" for name, value in pairs)


def _call_row(entry: je.EntryData, row: _RowMaker, virtual: bool) -> Row | None:
    match entry:
        case je.CallCreated(transport=transport, sip_headers=headers):
            heads = _header_text(headers if isinstance(headers, list) else [])
            if transport == "sip" or (transport is je.ABSENT and not virtual):
                return row("sip", None, "call created", heads)
            return row("caller", "sip", "INVITE (virtual)", heads, "caller", dashed=True)
        case je.State(before=before, after=after, event=event, source=source):
            extra = ", ".join(f"{k} {v}" for k in ("sip_final_status", "refer_target", "reason")
                              if (v := getattr(entry, k)))
            text = f"{before or '∅'} → {after}"
            how = f"{event}" + (f" via {source}" if source else "")
            return row("sip", None, text, f"call state {text} ({how})" + (f"; {extra}" if extra else ""), "sip",
                       "err" if after == "failed" else "")
        case je.CallEffect(effect=eff):
            if eff in ("StartSession", "EndSession"):
                return row("ws", None, "session started" if eff == "StartSession" else "session ended",
                           f"{eff} {entry.reason or ''}".strip(), "wss")
            if virtual and eff in _EFFECT_ARROWS:
                label = str(entry.status_code) if eff == "SendSipFinal" else _EFFECT_ARROWS[eff]
                if eff == "SendRefer":
                    label += f" → {entry.target_uri or ''}"
                return row("sip", "caller", label, f"effect {eff} (virtual leg)", "sip", dashed=True)
            return row("sip", None, f"effect {eff}", short(entry.to_data()), "sip")
        case je.CallRefused(event=event, source=source, state=state, code=code):
            return row("rest" if source == "rest" else "sip", None, f"refused {event}",
                       f"{event} refused in state {state} ({code})", "err", "err")
    return None


def _rest_row(entry: je.EntryData, row: _RowMaker, virtual: bool) -> Row | None:
    match entry:
        case je.RestRequest(op=op, path=path):
            return row("app", "rest", f"POST {op}".strip(), str(path), "rest")
        case je.RestResponse(status=status, body=body):
            bad = isinstance(status, int) and status >= 400
            return row("rest", "app", f"{status}", short(body or "", 200), "err" if bad else "rest",
                       "err" if bad else "")
    return None


def _webhook_row(entry: je.EntryData, row: _RowMaker, virtual: bool) -> Row | None:
    match entry:
        case je.WebhookQueued(event_type=etype, url=url):
            return row("webhook", None, f"queued {etype or ''}", str(url), "webhook")
        case je.WebhookAttempt(ok=ok, status=status, attempt=attempt, latency_ms=lat):
            result = f"{status}" if status is not None else str(entry.error or "no answer")
            label = f"POST webhook #{attempt} → {result}"
            detail = f"attempt {attempt} answered {result}" + (f" in {float(lat):.0f} ms" if lat else "")
            if entry.duplicate:
                detail += " (duplicate delivery)"
            if entry.response_body:
                detail += f"; body {short(entry.response_body, 80)}"
            return row("webhook", "app", label, detail, "webhook" if ok else "err", "" if ok else "err")
        case je.WebhookDelivered(attempts=attempts):
            return row("webhook", None, "delivered", f"after {attempts} attempt(s)", "webhook")
        case je.WebhookDelayed(seconds=seconds):
            return row("webhook", None, f"delayed {seconds} s", short(entry.to_data()), "warn", "warn")
        case je.WebhookGaveUp(attempts=attempts, last_status=last):
            return row("webhook", None, "gave up", f"webhook.gave_up: after {attempts} attempt(s), last status {last}",
                       "err", "err")
        case je.WebhookDropped(fault=fault):
            return row("webhook", None, "dropped", f"webhook.dropped: after 0 attempt(s), fault {fault}", "err", "err")
    return None


def _ws_row(entry: je.EntryData, row: _RowMaker, virtual: bool) -> Row | None:
    match entry:
        case je.WsConnect(query=q, beta=beta):
            q = q or {}
            qs = "&".join(f"{k}={v}" for k, v in q.items()) if isinstance(q, dict) else str(q)
            return row("app", "ws", "connect" + (" (beta header)" if beta else ""), f"?{qs}", "wsc",
                       "warn" if beta else "")
        case je.WsClient() | je.WsServer():
            return _event_row(entry, row)
        case je.WsClose(dropped=dropped, code=code):
            if dropped:
                return row("ws", "app", "dropped at hang-up", "no close frame (the real service's way)", "wss",
                           dashed=True)
            return row("ws", "app", f"close {code}", short(entry.to_data()), "wss", dashed=True)
        case je.WsRefused(status=status):
            return row("ws", "app", f"refused {status}".strip(), short(entry.to_data()), "err", "err")
        case je.WsDrop():
            return row("ws", None, "dropped (no close frame)", short(entry.to_data()), "err", "err")
    return _live_row(entry, row)


def _live_row(entry: je.EntryData, row: _RowMaker) -> Row | None:
    """A GPT-Live sideband on the WebSocket lane (it is one), and what the Live model heard and keyed."""
    match entry:
        case je.LiveConnect(path=path):
            return row("app", "ws", "attach (sideband)", path, "wsc")
        case je.LiveClient() | je.LiveServer():
            ev = as_dict(entry.event)
            etype = str(ev.get("type") or "?")
            level = "err" if etype == "error" else ""
            summary = _event_summary(ev)
            if isinstance(entry, je.LiveClient):
                return row("app", "ws", etype, summary, "err" if level else "wsc", level)
            if not entry.to:
                summary = ("nobody attached; " + summary).rstrip("; ")
            return row("ws", "app", etype, summary, "err" if level else "wss", level)
        case je.LiveClose(dropped=dropped, code=code):
            return row("ws", "app", "dropped" if dropped else f"close {code}", short(entry.to_data()), "wss",
                       dashed=True)
        case je.LiveRefused(status=status):
            return row("ws", "app", f"attach refused {status}", short(entry.to_data()), "err", "err")
        case je.LiveHeard(text=text):
            return row("ws", None, "model heard", repr(text), "wss")
        case je.LiveDtmfOut(digit=digit):
            return row("sip", "caller", f"DTMF {digit}", "sent by the app (transport.dtmf.send)", "sip")
    return None


def _event_row(entry: je.WsClient | je.WsServer, row: _RowMaker) -> Row:
    ev = as_dict(entry.event)
    etype = str(ev.get("type") or "?")
    level = "err" if (etype == "error" or etype.endswith(".failed")) else ""
    resp = as_dict(ev.get("response"))
    if etype == "response.done" and resp.get("status") in ("cancelled", "incomplete"):
        level = level or "warn"
    if etype == "response.done" and resp.get("status") == "failed":
        level = "err"
    if etype == "output_audio_buffer.cleared":
        level = level or "warn"
    summary = _event_summary(ev)
    if isinstance(entry, je.WsClient):
        return row("app", "ws", etype, summary, "err" if level == "err" else "wsc", level)
    return row("ws", "app", etype, summary, "err" if level == "err" else "wss", level)


def _caller_row(entry: je.EntryData, row: _RowMaker, virtual: bool) -> Row | None:
    match entry:
        case je.CallerSay(label=label, ms=ms, speed=speed):
            return row("caller", "sip", f"say {label}", f"{label}: {float(ms or 0) / 1000:.2f} s of audio"
                       + (f" at {speed:g}× speed" if isinstance(speed, int | float) else ""), "caller")
        case je.CallerSaid(label=label, ms=ms):
            return row("caller", None, f"done: {label}", f"{ms} ms fed", "caller")
        case je.CallerSayCut(label=label, sent_ms=sent):
            return row("caller", None, f"cut: {label}", f"stopped after {sent} ms", "warn", "warn")
        case je.CallerDtmf(digit=digit):
            return row("caller", "sip", f"DTMF {digit}", short(entry.to_data()), "caller")
    return None


def _sip_row(entry: je.EntryData, row: _RowMaker, virtual: bool) -> Row | None:
    match entry:
        case je.SipInvite(request_uri=uri, src=src, transport=transport):
            return row("caller", "sip", "INVITE", f"{uri or ''} from {src or '?'} ({transport or ''})", "sip")
        case je.SipSent(status=status, request=request, refer_to=refer_to):
            if isinstance(request, str) and request:
                label = request + (f" → {refer_to}" if refer_to else "")
            else:
                label = str(None if status is je.ABSENT else status)
            bad = isinstance(status, int) and status >= 400
            return row("sip", "caller", label, short(entry.to_data()), "err" if bad else "sip", "err" if bad else "")
        case je.SipDtmf(digit=digit, method=method):
            return row("caller", "sip", f"DTMF {digit}", f"method {method}", "sip")
        case je.SipReferStatus(code=code, final=final):
            return row("caller", "sip", f"NOTIFY {code}", "final" if final else "progress", "sip")
        case je.SipEnded(kind=how):
            bad = how == "call_failed"
            return row("sip", None, "SIP leg ended", short({k: v for k, v in entry.to_data().items() if v is not None}),
                       "err" if bad else "sip", "err" if bad else "")
        case je.SipCommandFailed() | je.SipRejected():
            name = entry.journal_kind.split(".", 1)[1].replace("_", " ")
            return row("sip", None, name, short(entry.to_data()), "err", "err")
        case je.SipSsrc(ssrc=int() as ssrc, old=int() as old):  # a change (the first SSRC heard is no event)
            return row("caller", "sip", "RTP: new SSRC", f"SSRC {old:#010x} → {ssrc:#010x}", "warn", "warn")
        case je.SipSpeechStarted() | je.SipSpeechStopped():
            return row("sip", None, "VAD " + entry.journal_kind.split("_", 1)[1], short(entry.to_data()), "sip")
    return None


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
    journal = JournalView(entries)
    hook = journal.first(je.WebhookAttempt)
    if hook is not None:  # journaled when the answer came: the app saw the request latency_ms earlier
        anchor = journal.webhook_sent_ms(hook)
        what = "the webhook's delivery"
    else:
        first = next((e for e in journal if isinstance(e.entry, je.RestRequest | je.WsConnect)), None)
        if first is not None:
            anchor, what = first.t_ms, f"its first {first.kind}"
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
