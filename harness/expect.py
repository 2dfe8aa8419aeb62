"""Expectations checked against the journal and the app's output: pure functions, no I/O.

Each check returns a :class:`Check` saying what was expected and what the journal showed,
so a failing scenario explains itself in every report.

Surface rules: a call is read on the surface that owns it (``CallView.surface``, else Realtime).
Checks that mean the same on both read both: the app's errors (Realtime ``error`` events, GPT-Live
``error`` events to a sideband), the commands it sent (Realtime client events, Live sideband
commands), the session in effect (``session.created/updated`` or Live's ``session.started/updated``),
what was said (:meth:`JournalView.lines`), the caller's keys, the first reply's latency (the caller's
turn end to the first reply audio) and who ended the call. The Live-only checks (``live_events``,
``closed_reason``, ``dtmf_sent``) read the ``live.*`` journal kinds. ``timing`` bounds the figures of
:mod:`.timing` (either surface): each bound given is one check naming the figure, the bound and the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from mock_api import journal_entries as je
from mock_api.control_models import CallView

from .journal_view import JournalView
from .scenario import CountRange, Expectations, TimingExpect, TimingRange, TimingSpread
from .timing import Timing, percentile, timing

_MISSING = object()


@dataclass
class Check:
    name: str
    ok: bool
    expected: Any
    actual: Any
    detail: str = ""

    def describe(self) -> str:
        return f"{self.name}: expected {self.expected!r}, got {self.actual!r}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "expected": self.expected, "actual": self.actual,
                "detail": self.detail}


def dotted(data: Any, path: str) -> Any:
    """``audio.input.transcription.model`` into a nested dict; ``_MISSING`` when absent."""
    cur = data
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _journal(view: CallView | JournalView) -> JournalView:
    return view if isinstance(view, JournalView) else JournalView.of_call(view)


def client_event_types(view: CallView | JournalView) -> list[str]:
    return _journal(view).client_event_types()


def server_events(view: CallView | JournalView, type_: str | None = None) -> list[dict[str, Any]]:
    return [e.entry.event for e in _journal(view).server_events(type_)]


def time_to_first_audio_ms(view: CallView | JournalView) -> float | None:
    """From the caller's end of speech (speech_stopped; on GPT-Live its first turn's end) to the first reply
    audio sent to the caller."""
    journal = _journal(view)
    stopped = journal.server_events("input_audio_buffer.speech_stopped")
    if not stopped:
        latencies = journal.turn_latencies() if journal.has(je.LiveServer) else []
        return latencies[0] if latencies else None
    first_audio = journal.first_audio_after(stopped[0].t_ms)
    return None if first_audio is None else first_audio.t_ms - stopped[0].t_ms


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` occurs in ``seen`` in this order, other items allowed between."""
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


class _Add(Protocol):
    """evaluate's `add`: records one check."""

    def __call__(self, name: str, ok: bool, expected: Any, actual: Any, detail: str = "") -> None: ...


def evaluate(exp: Expectations, view: CallView | None, app_output: str,
             http_results: list[tuple[str, int | None, str]]) -> list[Check]:
    """All checks of one scenario. ``view`` is the (first) call; None when no call was created."""
    checks: list[Check] = []

    def add(name: str, ok: bool, expected: Any, actual: Any, detail: str = "") -> None:
        checks.append(Check(name, ok, expected, actual, detail))

    if view is None:
        add("call created", False, "a call", None, "no call reached the mock")
        return checks
    journal = JournalView.of_call(view)
    _call_checks(exp, view, journal, add)
    _client_event_checks(exp, journal, add)
    _server_checks(exp, journal, add)
    _output_checks(exp, app_output, http_results, add)
    _late_checks(exp, journal, add)
    _conversation_checks(exp, view, journal, add)
    _live_checks(exp, journal, add)
    if exp.timing is not None:
        _timing_checks(exp.timing, timing(journal), add)
    return checks


def _timing_checks(exp: TimingExpect, figures: Timing, add: _Add) -> None:
    """Each bound of ``expect.timing`` against the call's figure: the check names the figure and the bound,
    shows the threshold as expected and the measured value as actual."""
    longest = figures.longest_silence_ms
    single: list[tuple[str, TimingRange | CountRange | None, float | None, str]] = [
        ("first_audio_ms", exp.first_audio_ms, figures.first_audio_ms, "no reply audio after the answer"),
        ("dead_air_ms", exp.dead_air_ms, longest, "the call was never answered"),
        ("overlap_ms", exp.overlap_ms, figures.overlap_ms, ""),
        ("overlaps", exp.overlaps, len(figures.overlaps), ""),
    ]
    for name, bounds, value, missing in single:
        if bounds is not None:
            _bound_checks(name, bounds, [] if value is None else [value], missing, add, _detail(name, figures))
    many: list[tuple[str, TimingSpread | None, list[float], str]] = [
        ("turn_latency_ms", exp.turn_latency_ms, figures.turn_latency_ms, "no caller turn got reply audio"),
        ("barge_in_ms", exp.barge_in_ms, figures.barge_in_ms, "the caller never spoke over reply audio"),
    ]
    for name, spread, values, missing in many:
        if spread is not None:
            _bound_checks(name, spread, values, missing, add, _detail(name, figures))


def _bound_checks(name: str, bounds: TimingRange | TimingSpread | CountRange, values: list[float], missing: str,
                  add: _Add, detail: str) -> None:
    """One check per bound given: ``max``/``min`` on the largest/smallest sample, percentiles and mean at most."""
    for stat, limit in bounds.model_dump(exclude_none=True).items():
        label = f"timing.{name} {stat}"
        if not values:
            add(label, False, _limit_text(stat, limit), missing, detail)
            continue
        value = _stat(stat, values)
        ok = value >= limit if stat == "min" else value <= limit
        add(label, ok, _limit_text(stat, limit), round(value, 1), detail)


def _stat(stat: str, values: list[float]) -> float:
    if stat == "max":
        return max(values)
    if stat == "min":
        return min(values)
    if stat == "mean":
        return sum(values) / len(values)
    return percentile(values, float(stat.removeprefix("p"))) or 0.0


def _limit_text(stat: str, limit: float) -> str:
    return f">= {limit:g}" if stat == "min" else f"<= {limit:g}"


def _detail(name: str, figures: Timing) -> str:
    """Where the figure came from, so a failed check points at the moment in the call."""
    if name == "turn_latency_ms":
        return "; ".join(f"turn ending at {t.end_ms / 1000:.2f} s: {t.latency_ms:g} ms" for t in figures.turns)
    if name == "barge_in_ms":
        return "; ".join(f"at {b.at_ms / 1000:.2f} s: {b.reaction_ms:g} ms ({'cleared' if b.cleared else 'ran out'})"
                         for b in figures.barge_ins)
    if name == "dead_air_ms" and figures.silences:
        s = max(figures.silences, key=lambda s: s.ms)
        return f"longest silence {s.start / 1000:.2f}-{s.end / 1000:.2f} s"
    if name in ("overlap_ms", "overlaps"):
        return "; ".join(f"{s.start / 1000:.2f}-{s.end / 1000:.2f} s" for s in figures.overlaps)
    return ""


def _conversation_checks(exp: Expectations, view: CallView, journal: JournalView, add: _Add) -> None:
    """What was said, heard and keyed, and how the call ended: the same questions on either surface."""
    if exp.surface is not None:
        add("surface", view.surface == exp.surface, exp.surface, view.surface)
    for who, wanted in (("caller", exp.caller_said), ("assistant", exp.assistant_said)):
        said = journal.said(who)
        for text in wanted:
            ok = any(text.lower() in line.lower() for line in said)
            add(f"{who} said {text!r}", ok, text, said)
    if exp.reply_heard is not None:
        heard = journal.has(je.AudioOut)
        add("reply heard by the caller", heard == exp.reply_heard, exp.reply_heard, heard)
    if exp.dtmf_received is not None:
        got = journal.dtmf_to_app()
        add("dtmf received by the app", got == exp.dtmf_received, exp.dtmf_received, got)
    if exp.ended_by is not None:
        by = journal.ended_by(view.end_reason)
        add("ended by", by == exp.ended_by, exp.ended_by, by, view.end_reason or "")


def _live_checks(exp: Expectations, journal: JournalView, add: _Add) -> None:
    """GPT-Live only: the sideband's events, the session's close reason, the keys sent to the caller."""
    if exp.live_events is not None:
        seen = journal.live_events()
        shown = [t for t in seen if t in set(exp.live_events)]
        add("live_events", in_order(seen, exp.live_events), exp.live_events, _squeeze(shown))
    if exp.closed_reason is not None:
        reason = journal.closed_reason()
        add("closed_reason", reason == exp.closed_reason, exp.closed_reason, reason)
    if exp.dtmf_sent is not None:
        sent = journal.dtmf_to_caller()
        add("dtmf sent to the caller", sent == exp.dtmf_sent, exp.dtmf_sent, sent)


def _squeeze(types: list[str]) -> list[str]:
    """Runs of one event type shown once (``session.output_audio.delta ×40``), so a failure stays readable."""
    out: list[str] = []
    n = 0
    for i, t in enumerate(types):
        n += 1
        if i + 1 == len(types) or types[i + 1] != t:
            out.append(t if n == 1 else f"{t} ×{n}")
            n = 0
    return out


def _call_checks(exp: Expectations, view: CallView, journal: JournalView, add: _Add) -> None:
    """The call's outcome on the SIP and REST side, and the accept body."""
    if exp.call_state is not None:
        add("call_state", view.state == exp.call_state, exp.call_state, view.state, view.end_reason or "")
    if exp.sip_final_status is not None:
        add("sip_final_status", view.sip_final_status == exp.sip_final_status, exp.sip_final_status,
            view.sip_final_status)
    if exp.refer_target is not None:
        add("refer_target", view.refer_target == exp.refer_target, exp.refer_target, view.refer_target)
    accepts = journal.accepts()
    if exp.accepted is not None:
        add("accepted", bool(accepts) == exp.accepted, exp.accepted, bool(accepts))
    if exp.accept:
        body = view.accept_body
        if body is None and accepts:  # the journal's copy, when the view has none
            body = je.given(accepts[0].entry.body)
        for path, want in exp.accept.items():
            got = dotted(body, path) if body is not None else _MISSING
            shown = "<absent>" if got is _MISSING else got
            ok = (got is _MISSING) if want == "<absent>" else (got == want)
            add(f"accept.{path}", ok, want, shown)


def _client_event_checks(exp: Expectations, journal: JournalView, add: _Add) -> None:
    """Which client events (Realtime) or sideband commands (GPT-Live) the app sent, and in what order."""
    sent = journal.client_event_types() + journal.live_client_types()
    if exp.client_events is not None:
        ce = exp.client_events
        for t in ce.sent:
            add(f"app sent {t}", t in sent, "sent", "sent" if t in sent else "not sent")
        for t in ce.not_sent:
            add(f"app did not send {t}", t not in sent, "not sent", "sent" if t in sent else "not sent")
        if ce.order:
            firsts = [sent.index(t) if t in sent else None for t in ce.order]
            ok = None not in firsts and firsts == sorted(firsts)  # type: ignore[type-var]
            add("client event order", ok, ce.order, [t for t in sent if t in ce.order])


def _server_checks(exp: Expectations, journal: JournalView, add: _Add) -> None:
    """The server's errors (either surface) and transcription events."""
    errors = server_events(journal, "error") + [e.entry.event for e in journal.live_server_events("error")
                                                if e.entry.to]
    if exp.server_errors is not None:
        if not exp.server_errors:
            add("no server errors", not errors, [], [e["error"].get("code") for e in errors])
        for want in exp.server_errors:
            match = next((e for e in errors if _error_matches(e["error"], want.code, want.message, want.param)), None)
            add(f"server error {want.code or want.message}", match is not None, want.model_dump(exclude_none=True),
                [{"code": e["error"].get("code"), "message": e["error"].get("message")} for e in errors])
    if exp.transcription_events is not None:
        kinds = {e["type"] for e in server_events(journal)}
        got = ("failed" if "conversation.item.input_audio_transcription.failed" in kinds else
               "completed" if "conversation.item.input_audio_transcription.completed" in kinds else "none")
        add("transcription events", got == exp.transcription_events, exp.transcription_events, got)


def _output_checks(exp: Expectations, app_output: str, http_results: list[tuple[str, int | None, str]],
                   add: _Add) -> None:
    """What the app printed and what its HTTP endpoints answered."""
    for pattern in exp.app_output:
        found = re.search(pattern, app_output, re.MULTILINE)
        add(f"app output /{pattern}/", found is not None, "match", found.group(0) if found else "no match")
    for pattern in exp.app_output_absent:
        found = re.search(pattern, app_output, re.MULTILINE)
        add(f"app output lacks /{pattern}/", found is None, "no match", found.group(0) if found else "no match")
    for check, (url, status, body) in zip(exp.http, http_results, strict=True):
        ok = status == check.status and all(s in body for s in check.contains) and (
            check.regex is None or re.search(check.regex, body) is not None)
        add(f"GET {check.path}", ok, {"status": check.status, "contains": check.contains, "regex": check.regex},
            {"status": status, "body": body[:500]}, url)


def _late_checks(exp: Expectations, journal: JournalView, add: _Add) -> None:
    """Reply timing, the webhook answer, the session in effect and the media."""
    if exp.time_to_first_audio_ms is not None:
        ttfa = time_to_first_audio_ms(journal)
        rng = exp.time_to_first_audio_ms
        ok = ttfa is not None and (rng.max is None or ttfa <= rng.max) and (rng.min is None or ttfa >= rng.min)
        add("time to first audio (ms)", ok, rng.model_dump(exclude_none=True), None if ttfa is None else round(ttfa))
    if exp.webhook_status is not None:
        attempts = journal.of(je.WebhookAttempt)
        last = je.given(attempts[-1].entry.status) if attempts else None
        add("webhook answer", last == exp.webhook_status, exp.webhook_status, last)
    if exp.effective_session:
        session_kinds = ("session.created", "session.updated", "session.started")
        sessions = [e["session"] for e in server_events(journal) if e.get("type") in session_kinds]
        sessions += [e.entry.event["session"] for e in journal.of(je.LiveServer)
                     if e.entry.event.get("type") in session_kinds and "session" in e.entry.event]
        current = sessions[-1] if sessions else None
        for path, want in exp.effective_session.items():
            got = dotted(current, path) if current is not None else _MISSING
            add(f"session.{path}", got == want, want, "<absent>" if got is _MISSING else got)
    if exp.media_corrupt is not None:
        outs = journal.of(je.AudioOut)
        corrupt = any(e.entry.corrupt for e in outs)
        add("reply audio garbled", corrupt == exp.media_corrupt and bool(outs), exp.media_corrupt,
            corrupt if outs else "no reply audio")
    if exp.ws_connected is not None:
        connected = journal.has(je.WsConnect)
        add("websocket connected", connected == exp.ws_connected, exp.ws_connected, connected)


MOCK_BUG = je.MockBug.KIND  # the journal kind of an exception inside the mock itself
MOCK_BUG_NOTE = "mock bug in "  # how a report note about one begins


@dataclass(frozen=True)
class MockBug:
    """An exception inside the mock (journal ``mock.bug``): never the app's fault, so it fails the run."""

    timeline: str  # whose: "call rtc_...", "session ..." (a socket without a call) or "the server"
    where: str
    error: str
    traceback: str

    def describe(self) -> str:
        """One report note: where, the error and its traceback."""
        return f"{MOCK_BUG_NOTE}{self.where} ({self.timeline}): {self.error}\n{self.traceback.rstrip()}"


def mock_bugs(views: list[CallView], server_entries: list[dict[str, Any]],
              sessions: dict[str, list[dict[str, Any]]] | None = None) -> list[MockBug]:
    """Every ``mock.bug`` in the calls' timelines, the server timeline and the call-less sessions'
    (``sessions``: id to entries), oldest first."""
    timelines: list[tuple[str, JournalView]] = [(f"call {v.call_id}", JournalView.of_call(v)) for v in views]
    timelines.append(("the server", JournalView(server_entries)))
    timelines += [(f"session {k}", JournalView(v)) for k, v in (sessions or {}).items()]
    found = [(e.seq, MockBug(name, e.entry.where, e.entry.error, e.entry.traceback))
             for name, journal in timelines for e in journal.mock_bugs()]
    return [bug for _, bug in sorted(found, key=lambda pair: pair[0])]


def mock_bug_verdict(bugs: list[MockBug]) -> str:
    """The verdict of a run the mock broke: its first bug, and how many more."""
    more = f" (and {len(bugs) - 1} more)" if len(bugs) > 1 else ""
    return f"mock bug (not your app): {bugs[0].error}{more}"


def _error_matches(err: dict[str, Any], code: str | None, message: str | None, param: str | None) -> bool:
    if code is not None and err.get("code") != code:
        return False
    if param is not None and err.get("param") != param:
        return False
    return message is None or re.search(message, str(err.get("message") or "")) is not None
