"""An example phone agent on GPT-Live, written the way an SDK user writes one.

It takes ``live.transport.incoming`` (verified with ``client.webhooks.unwrap``), accepts the call with
``client.live.sessions.accept``, attaches to the session with the SDK's sideband, prints what the caller
and the model say, answers the caller's keypresses and stops when ``session.closed`` arrives. It reads
``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_WEBHOOK_SECRET`` and ``PORT`` like any SDK app, so it
talks to the real OpenAI or to ``rtsip mock`` unchanged.

    python examples/live_sip_app.py --port 8000

``live.call.incoming`` (Live's deprecated name, still sent to old subscriptions) is handled like
``live.transport.incoming``, each session once. ``realtime.call.incoming`` (the same call, offered on the
Realtime surface) is ignored: one handler owns the accept decision, and it is this one.
``GET /transcripts/{session_id}`` serves what a call said.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import openai
from aiohttp import web
from openai import AsyncOpenAI, InvalidWebhookSignatureError

MODEL = "gpt-live-1.1"
INSTRUCTIONS = "You are Alex, a friendly claims assistant for Example Insurance. Keep answers short."
MENU = {  # what each key tells the model to say (its reply is spoken to the caller)
    "1": "The caller pressed 1: tell them their claim is open and being reviewed.",
    "0": "The caller pressed 0: tell them an agent will call back within the hour.",
}
UNKNOWN_KEY = "The caller pressed {key}, which is not a menu option: offer 1 for claim status or 0 for an agent."


@dataclass
class CallLog:
    """One Live session's transcripts; deltas arrive in timeline order and have no done event."""

    caller: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    closed_reason: str | None = None
    _who: str | None = None  # whose words are being gathered
    _words: list[str] = field(default_factory=list)

    def add(self, who: str, delta: str) -> str | None:
        """Gather a delta; returns a finished line when the speaker changed."""
        done = self.flush() if who != self._who else None
        self._who = who
        self._words.append(delta)
        return done

    def flush(self) -> str | None:
        """The words gathered so far as one line (kept in its speaker's list), or None."""
        text = "".join(self._words).strip()
        who, self._who, self._words = self._who, None, []
        if not text or who is None:
            return None
        (self.caller if who == "CALLER" else self.model).append(text)
        return f"{who}: {text}"


BUGS = ("closed_means_hangup",)


class App:
    def __init__(self, *, model: str, voice: str, bugs: frozenset[str] = frozenset()) -> None:
        self.bugs = bugs
        self.client = AsyncOpenAI(max_retries=0)
        self.model, self.voice = model, voice
        self.calls: dict[str, CallLog] = {}
        self.claimed: set[str] = set()  # session ids: deliveries are retried, and a call is handled once
        self.tasks: set[asyncio.Task[None]] = set()

    def say(self, session_id: str, text: str) -> None:
        print(f"[{session_id}] {text}", flush=True)

    # ---- webhook -------------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = self.client.webhooks.unwrap(raw, request.headers)
        except InvalidWebhookSignatureError as exc:
            print(f"webhook rejected: {exc}", flush=True)
            return web.json_response({"error": "invalid signature"}, status=400)
        if event.type not in ("live.transport.incoming", "live.call.incoming"):
            print(f"ignored {event.type}", flush=True)  # e.g. the Realtime offer of the same call
            return web.json_response({"ignored": event.type})
        session_id = event.data.session_id
        if session_id in self.claimed:  # a retried delivery, or the same call under Live's deprecated name
            return web.json_response({"ok": True, "duplicate": True})
        self.claimed.add(session_id)
        headers = {h.name: h.value for h in event.data.sip_headers}
        self.say(session_id, f"incoming live call from {headers.get('From')}")
        try:
            await self.client.live.sessions.accept(session_id, session={
                "type": "live", "model": self.model, "instructions": INSTRUCTIONS,
                "audio": {"output": {"voice": self.voice}}})  # SIP negotiates the format: no audio.format
        except openai.NotFoundError:
            self.say(session_id, "call already gone (404 on accept); nothing to do")
            return web.json_response({"ok": True})
        self.say(session_id, "accepted")
        self.calls[session_id] = CallLog()
        task = asyncio.create_task(self.drive(session_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response({"ok": True})

    # ---- the session's sideband -------------------------------------------------------------------

    async def drive(self, session_id: str) -> None:
        log = self.calls[session_id]
        try:
            async with self.client.live.sideband.connect(session_id=session_id, graceful_close=True) as conn:
                self.say(session_id, "sideband attached")
                async for event in conn:
                    if await self.on_event(conn, session_id, log, event):
                        break
        except Exception as exc:  # the app logs and carries on with other calls
            self.say(session_id, f"sideband closed: {type(exc).__name__}: {exc}")
        else:
            self.say(session_id, "sideband closed")

    async def on_event(self, conn: Any, session_id: str, log: CallLog, event: Any) -> bool:
        """Handle one sideband event; True once the session is over."""
        kind = event.type
        line = None
        if kind == "session.input_transcript.delta":
            line = log.add("CALLER", event.delta)
        elif kind == "session.output_transcript.delta":
            line = log.add("MODEL", event.delta)
        elif kind == "transport.dtmf.received":
            if (last := log.flush()) is not None:
                self.say(session_id, last)
            await self.on_key(conn, session_id, log, event.event)
        elif kind == "error":
            self.say(session_id, f"ERROR {event.error.code}: {event.error.message}")
        elif kind == "session.closed":
            if (last := log.flush()) is not None:
                self.say(session_id, last)
            log.closed_reason = event.reason
            self.say(session_id, f"session closed: {event.reason}")
            self.say(session_id, self.ending(event.reason))
            return True
        if line is not None:
            self.say(session_id, line)
        return False

    def ending(self, reason: str) -> str:
        """What the call's end means for the business: only a hang-up is the caller's choice."""
        if "closed_means_hangup" in self.bugs or reason == "remote_hangup":
            return "call ended: the caller hung up"
        if reason == "close_requested":
            return "call ended: the app closed it"
        return f"CALL LOST ({reason}): the caller was cut off; follow up with them"

    async def on_key(self, conn: Any, session_id: str, log: CallLog, key: str) -> None:
        """A keypress: confirm it with a tone and tell the model what to say about it."""
        log.keys.append(key)
        self.say(session_id, f"DTMF from caller: {key}")
        await conn.send({"type": "transport.dtmf.send", "event": key, "event_id": f"ack_{len(log.keys)}"})
        await conn.send({"type": "session.commentary.append", "delegation_id": None,
                         "content": MENU.get(key, UNKNOWN_KEY.format(key=key))})

    # ---- HTTP -----------------------------------------------------------------------------------

    async def transcripts(self, request: web.Request) -> web.Response:
        log = self.calls.get(request.match_info["session_id"])
        if log is None:
            return web.json_response({"error": "unknown session"}, status=404)
        return web.json_response({"caller": log.caller, "model": log.model, "keys": log.keys,
                                  "closed_reason": log.closed_reason})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="listen port (env PORT)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--voice", default="marin")
    ap.add_argument("--bug", action="append", default=[], choices=BUGS,
                    help="reproduce a known app bug (closed_means_hangup: every session.closed read as a hang-up)")
    args = ap.parse_args(argv)
    app = App(model=args.model, voice=args.voice, bugs=frozenset(args.bug))
    web_app = web.Application()
    web_app.router.add_post("/webhook", app.webhook)
    web_app.router.add_get("/transcripts/{session_id}", app.transcripts)
    web_app.router.add_get("/healthz", app.healthz)
    print(f"live_sip_app listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(web_app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
