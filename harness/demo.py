"""``rtsip demo``: one real SIP/TLS call through the whole stack, narrated as it happens.

It runs ``scenarios/demo.yaml``: the mock with its SIP ingress, the example SDK app, and the
softphone calling with fixture audio. The timeline prints live, then both transcripts, and
an HTML report is written, while the softphone's recording of what the caller heard still
exists so the report draws it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mock_api.control_models import JournalEntry
from mock_api.state import state_dir
from sipworker import sip_available, sip_missing

from .commands import UsageError
from .report.html import write_html
from .runner import ScenarioResult, run_scenario
from .scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "demo.yaml"
QUIET = {"response.output_audio_transcript.delta", "conversation.item.input_audio_transcription.delta",
         "response.output_text.delta", "response.output_audio.delta", "rate_limits.updated",
         "response.content_part.added", "response.content_part.done", "response.output_item.added",
         "response.output_item.done", "conversation.item.added", "conversation.item.done"}


def describe(entry: JournalEntry) -> tuple[str, str] | None:
    """(lane, text) for one journal entry, or None for entries the narration skips."""
    d: dict[str, Any] = entry.data
    k = entry.kind
    if k == "sip.invite":
        return "SIP", f"INVITE {d.get('request_uri')} over {d.get('transport')}"
    if k == "sip.sent":
        return "SIP", f"→ caller: {d.get('status') or d.get('request')}" + (
            f" Refer-To {d['refer_to']}" if d.get("refer_to") else "")
    if k in ("sip.speech_started", "sip.speech_stopped"):
        return "SIP", f"caller {'starts' if k.endswith('started') else 'stops'} speaking at {d.get('audio_ms')} ms"
    if k == "sip.dtmf":
        return "SIP", f"caller pressed {d.get('digit')}"
    if k == "sip.ended":
        return "SIP", f"call ended ({d.get('by') or d.get('kind')}, {d.get('code')} {d.get('reason') or ''})"
    if k == "webhook.attempt":
        status = d.get("status") or d.get("error")
        return "webhook", f"POST realtime.call.incoming → {status} in {float(d.get('latency_ms') or 0):.1f} ms"
    if k == "rest.request":
        return "REST", f"app → {d.get('op')}"
    if k == "rest.response":
        return "REST", f"← {d.get('status')}"
    if k == "state":
        return "call", f"{d.get('before') or 'incoming'} → {d.get('after')}"
    if k == "ws.connect":
        return "WebSocket", "app connected"
    if k == "ws.close":
        if d.get("dropped"):
            return "WebSocket", "dropped at hang-up (no close frame, as the real service does)"
        return "WebSocket", f"closed ({d.get('code')})"
    if k in ("ws.client", "ws.server"):
        ev = d.get("event")
        if not isinstance(ev, dict):
            return None
        t = str(ev.get("type"))
        if t in QUIET:
            return None
        arrow = "app →" if k == "ws.client" else "← mock"
        extra = ""
        if t == "conversation.item.input_audio_transcription.completed" or t == "response.output_audio_transcript.done":
            extra = f": “{ev.get('transcript')}”"
        elif t == "error":
            extra = f": {(ev.get('error') or {}).get('message')}"
        elif t == "response.done":
            extra = f" ({(ev.get('response') or {}).get('status')})"
        return "WebSocket", f"{arrow} {t}{extra}"
    return None


def _transcripts(result: ScenarioResult) -> tuple[list[str], list[str]]:
    user: list[str] = []
    assistant: list[str] = []
    for view in result.calls:
        for e in view.entries:
            ev = e.data.get("event") if e.kind == "ws.server" else None
            if not isinstance(ev, dict):
                continue
            if ev.get("type") == "conversation.item.input_audio_transcription.completed":
                user.append(str(ev.get("transcript")))
            elif ev.get("type") == "response.output_audio_transcript.done":
                assistant.append(str(ev.get("transcript")))
    return user, assistant


def run_demo(html: Path | None = None, scenario_path: Path = DEMO) -> int:
    """Run the demo scenario; UsageError (exit 2, one line) when pjsua2 is missing, as its call is SIP."""
    if not sip_available():
        raise UsageError(sip_missing("without SIP, `rtsip mock --no-sip` and a virtual call show the same flow"))
    console = Console()
    scenario = load_scenario(scenario_path)
    out = html or state_dir() / "reports" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.html"
    console.print(f"[bold]rtsip demo[/]: {escape(scenario.description)}")
    console.print("mock + SIP/TLS ingress, example SDK app (examples/sdk_app.py), softphone calling with fixture "
                  "audio\n")

    def on_entry(call_id: str, entry: JournalEntry) -> None:
        line = describe(entry)
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
