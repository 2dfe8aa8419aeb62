"""``rtsip demo``: one real SIP/TLS call through the whole stack, narrated as it happens.

It runs ``scenarios/demo.yaml``: the mock with its SIP ingress, the example SDK app, and the
softphone calling with fixture audio. The timeline prints live, then both transcripts, and
an HTML report is written, while the softphone's recording of what the caller heard still
exists so the report draws it. ``live=True`` (``rtsip demo --live``) runs ``scenarios/demo_live.yaml``
instead: the same call answered by the GPT-Live app (``examples/live_sip_app.py``), its sideband's
events in a lane of their own.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from mock_api import journal_entries as je
from mock_api.control_models import JournalEntry
from mock_api.state import state_dir
from sipworker import sip_available, sip_missing

from .commands import UsageError
from .journal_view import JournalView, logged
from .report.html import write_html
from .runner import ScenarioResult, run_scenario
from .scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "demo.yaml"
DEMO_LIVE = ROOT / "scenarios" / "demo_live.yaml"
APPS = {DEMO: "example SDK app (examples/sdk_app.py)", DEMO_LIVE: "GPT-Live app (examples/live_sip_app.py)"}
LIVE_QUIET = {"session.input_audio.append", "session.output_audio.delta", "session.input_transcript.delta",
              "session.output_transcript.delta", "session.usage.updated"}  # streams, told as whole lines instead
QUIET = {"response.output_audio_transcript.delta", "conversation.item.input_audio_transcription.delta",
         "response.output_text.delta", "response.output_audio.delta", "rate_limits.updated",
         "response.content_part.added", "response.content_part.done", "response.output_item.added",
         "response.output_item.done", "conversation.item.added", "conversation.item.done"}


def describe(entry: JournalEntry, webhook_types: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(lane, text) for one journal entry, or None for entries the narration skips. ``webhook_types``
    (webhook id to event type) is filled from ``webhook.queued`` entries, so each attempt names its event."""
    e = logged(entry).entry
    if isinstance(e, je.WsClient | je.WsServer):
        return _socket_event(e)
    live = _live_entry(e)
    if live is not None:
        return live
    match e:
        case je.WebhookQueued():
            if webhook_types is not None and e.event_type:
                webhook_types[e.webhook_id] = e.event_type
            return None
        case je.SipInvite():
            return "SIP", f"INVITE {e.request_uri} over {e.transport}"
        case je.SipSent():
            return "SIP", f"→ caller: {e.status or e.request}" + (f" Refer-To {e.refer_to}" if e.refer_to else "")
        case je.SipSpeechStarted() | je.SipSpeechStopped():
            verb = "starts" if isinstance(e, je.SipSpeechStarted) else "stops"
            return "SIP", f"caller {verb} speaking at {e.audio_ms} ms"
        case je.SipDtmf():
            return "SIP", f"caller pressed {e.digit}"
        case je.SipEnded():
            return "SIP", f"call ended ({e.by or e.kind}, {e.code} {e.reason or ''})"
        case je.WebhookAttempt():
            event_type = (webhook_types or {}).get(e.webhook_id, "realtime.call.incoming")
            return "webhook", (f"POST {event_type} → {e.status or e.error} "
                               f"in {float(e.latency_ms or 0):.1f} ms")
        case je.RestRequest():
            return "REST", f"app → {e.op}"
        case je.RestResponse():
            return "REST", f"← {e.status}"
        case je.State():
            return "call", f"{e.before or 'incoming'} → {e.after}"
        case je.WsConnect():
            return "WebSocket", "app connected"
        case je.WsClose():
            if e.dropped:
                return "WebSocket", "dropped at hang-up (no close frame, as the real service does)"
            return "WebSocket", f"closed ({e.code})"
    return None


def _live_entry(e: je.EntryData) -> tuple[str, str] | None:
    """A GPT-Live sideband's side of the call: attach, commands, events worth reading, close; what the model
    heard; keys it sent. None for any other entry (and for the streams, told as whole lines)."""
    match e:
        case je.LiveConnect():
            return "sideband", "app attached (/attach)"
        case je.LiveClose():
            return "sideband", "dropped (no close frame)" if e.dropped else f"closed ({e.code})"
        case je.LiveHeard():
            why = "" if e.recognised else f" ({e.reason})"  # a failed run says why, not only that
            return "Live", f"model heard “{e.text}”{why}"
        case je.LiveDtmfOut():
            return "Live", f"key {e.digit} sent to the caller"
        case je.LiveClient() if isinstance(e.event, dict):
            t = str(e.event.get("type"))
            extra = f" {e.event['event']}" if t == "transport.dtmf.send" else ""
            extra += f": “{e.event['content']}”" if isinstance(e.event.get("content"), str) else ""
            return "sideband", f"app → {t}{extra}"
        case je.LiveServer():
            t = str(e.event.get("type"))
            if t in LIVE_QUIET:
                return None
            extra = ""
            if t == "session.closed":
                extra = f" ({e.event.get('reason')})"
            elif t.startswith("transport.dtmf"):
                extra = f" {e.event.get('event')}"
            elif t == "error":
                extra = f": {(e.event.get('error') or {}).get('message')}"
            return "sideband", f"← mock {t}{extra}" + ("" if e.to else " (nobody attached)")
    return None


def _socket_event(entry: je.WsClient | je.WsServer) -> tuple[str, str] | None:
    """A Realtime event the app sent or got, with the part worth reading (transcripts, errors, outcomes)."""
    ev = entry.event
    if not isinstance(ev, dict):
        return None
    t = str(ev.get("type"))
    if t in QUIET:
        return None
    arrow = "app →" if isinstance(entry, je.WsClient) else "← mock"
    extra = ""
    if t == "conversation.item.input_audio_transcription.completed" or t == "response.output_audio_transcript.done":
        extra = f": “{ev.get('transcript')}”"
    elif t == "error":
        extra = f": {(ev.get('error') or {}).get('message')}"
    elif t == "response.done":
        extra = f" ({(ev.get('response') or {}).get('status')})"
    return "WebSocket", f"{arrow} {t}{extra}"


def _transcripts(result: ScenarioResult) -> tuple[list[str], list[str]]:
    """What the caller said (as transcribed) and what the assistant said, in order, over every call, as the
    app received them on either surface."""
    user: list[str] = []
    assistant: list[str] = []
    for view in result.calls:
        journal = JournalView.of_call(view)
        user += journal.said("caller")
        assistant += journal.said("assistant")
    return user, assistant


def run_demo(html: Path | None = None, scenario_path: Path | None = None, *, live: bool = False) -> int:
    """Run the demo scenario (``live``: the GPT-Live one); UsageError (exit 2, one line) when pjsua2 is missing,
    as its call is SIP."""
    if not sip_available():
        raise UsageError(sip_missing("without SIP, `rtsip mock --no-sip` and a virtual call show the same flow"))
    console = Console()
    path = scenario_path or (DEMO_LIVE if live else DEMO)
    scenario = load_scenario(path)
    out = html or state_dir() / "reports" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.html"
    console.print(f"[bold]rtsip demo{' --live' if live else ''}[/]: {escape(scenario.description)}")
    console.print(f"mock + SIP/TLS ingress, {APPS.get(path, escape(' '.join(scenario.app.command)))}, softphone "
                  "calling with fixture audio\n")
    webhook_types: dict[str, str] = {}

    def on_entry(call_id: str, entry: JournalEntry) -> None:
        line = describe(entry, webhook_types)
        if line is not None:
            lane, text = line
            console.print(f"  [dim]{entry.t_ms / 1000:7.3f}s[/] [cyan]{lane:<9}[/] {escape(text)}")

    def on_step(msg: str) -> None:
        console.print(f"[dim]· {escape(msg)}[/]")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rtsip-demo-") as run_dir:
        result = asyncio.run(run_scenario(scenario, on_step=on_step, on_entry=on_entry, run_dir=Path(run_dir)))
        write_html([result], out)  # while the recording of what the caller heard is there to draw
    _summary(console, result)
    console.print(f"HTML report: {out}")
    mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    console.print(f"{mark} {escape(result.verdict)} in {time.monotonic() - started:.1f} s")
    return 0 if result.passed else 1


def _summary(console: Console, result: ScenarioResult) -> None:
    """Both transcripts and the caller's time to first audio."""
    user, assistant = _transcripts(result)
    console.print("\n[bold]Caller (transcribed by the mock, as the app received it)[/]")
    for line in user or ["(none)"]:
        console.print(f"  {escape(line)}")
    console.print("[bold]Assistant[/]")
    for line in assistant or ["(none)"]:
        console.print(f"  {escape(line)}")
    caller = result.calls[0].caller if result.calls else {}
    if caller.get("time_to_first_audio_ms") is not None:
        console.print(f"\ntime to first audio at the caller: {caller['time_to_first_audio_ms']} ms after the answer")
    view = result.calls[0] if result.calls else None
    if view is not None and view.surface == "live":
        journal = JournalView.of_call(view)
        console.print(f"GPT-Live session {view.live_id}: closed {journal.closed_reason() or '(never)'}, keys from "
                      f"the caller {journal.dtmf_to_app() or '(none)'}, keys to the caller "
                      f"{journal.dtmf_to_caller() or '(none)'}")
