"""An example phone agent built on the official ``openai`` SDK, with the forum's bugs behind flags.

It is the "app under test" for rtsip's scenarios and demo: it verifies the webhook,
accepts the call, drives the call's Realtime WebSocket, prints the conversation, and
serves the user transcripts at ``GET /transcripts/{call_id}``. It reads
``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_WEBHOOK_SECRET`` and ``PORT`` like any
SDK app, so it talks to the real OpenAI or to ``rtsip mock`` unchanged.

    python examples/sdk_app.py --port 8000                       # the fixed app
    python examples/sdk_app.py --port 8000 --bug no_transcription  # a forum bug

Each ``--bug`` reproduces one failure mode of docs/failure-modes.md, whose number opens its
description; ``--list-bugs`` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import openai
from aiohttp import web
from openai import AsyncOpenAI, InvalidWebhookSignatureError
from websockets.exceptions import ConnectionClosedError

BUGS = {
    "no_transcription": "failure mode 1: accepts without audio.input.transcription, so user transcripts stay null",
    "transcript_from_item_done": "failure mode 2: reads the user transcript from conversation.item.done (always null)",
    "update_without_type": "failure mode 3: sends session.update without session.type",
    "beta_update": "failure mode 4: sends beta field names (input_audio_transcription) in session.update",
    "beta_accept": "failure mode 5: accepts with a beta-shaped body; the call hangs up right after the 200",
    "no_failed_handler": "failure mode 6: ignores transcription.failed instead of falling back to out-of-band "
                         "transcription",
    "tools_update_no_formats": "failure mode 7: sends session.update with tools but without the G.711 audio formats",
    "beta_header": "failure mode 10: sends OpenAI-Beta: realtime=v1 on the call's WebSocket",
    "accept_404_fatal": "failure mode 11: answers the webhook 500 when accept gets 404 (caller already gone)",
    "reserialized_body": "failure mode 13: verifies a re-serialized body instead of the raw bytes",
    "greeting_before_voice": "failure mode 17: sends the greeting before the voice is set; the first reply has the "
                             "wrong voice",
    "response_on_speech_stopped": "failure mode 18: sends response.create on speech_stopped, colliding with the VAD "
                                  "response",
    "default_vad": "failure mode 30: keeps the 200 ms server_vad default, so the model answers half a sentence",
}

INSTRUCTIONS = "You are Alex, a friendly claims assistant for Example Insurance. Keep answers short."
GREETING = "Say to the user 'Thank you for calling, how can I help you'"
TRANSCRIBE_PROMPT = "Return a verbatim transcript of the user's latest turn, nothing else."
TOOLS = [{"type": "function", "name": "lookup_policy", "description": "Find a policy by its number.",
          "parameters": {"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]}}]


@dataclass
class CallLog:
    user: list[str | None] = field(default_factory=list)
    oob: list[str] = field(default_factory=list)
    assistant: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    voice_at_first_reply: str | None = None


class App:
    def __init__(self, bugs: set[str]) -> None:
        self.bugs = bugs
        self.client = AsyncOpenAI(max_retries=0)
        self.calls: dict[str, CallLog] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def say(self, call_id: str, text: str) -> None:
        print(f"[{call_id}] {text}", flush=True)

    # ---- webhook -------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: bytes | str = raw
        if "reserialized_body" in self.bugs:
            body = json.dumps(json.loads(raw))  # middleware habit: parse, then dump again
        try:
            event = self.client.webhooks.unwrap(body, request.headers)
        except InvalidWebhookSignatureError as exc:
            print(f"webhook rejected: {exc}", flush=True)
            return web.json_response({"error": "invalid signature"}, status=400)
        if event.type != "realtime.call.incoming":
            return web.json_response({"ignored": event.type})
        call_id = event.data.call_id
        self.calls[call_id] = CallLog()
        headers = {h.name: h.value for h in event.data.sip_headers}
        self.say(call_id, f"incoming call from {headers.get('From')}")
        try:
            await self.accept(call_id)
        except openai.NotFoundError:
            if "accept_404_fatal" in self.bugs:
                self.say(call_id, "accept failed: 404")
                return web.json_response({"error": "accept failed"}, status=500)
            self.say(call_id, "call already gone (404 on accept); nothing to do")
            return web.json_response({"ok": True})
        task = asyncio.create_task(self.drive(call_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response({"ok": True})

    async def accept(self, call_id: str) -> None:
        if "beta_accept" in self.bugs:
            await self.client.realtime.calls.accept(
                call_id, type="realtime", model="gpt-4o-mini-realtime-preview-2024-12-17", instructions=INSTRUCTIONS,
                extra_body={"input_audio_transcription": {"model": "whisper-1"}},
            )
            self.say(call_id, "accepted (beta-shaped body)")
            return
        # 600 ms of silence ends a turn: callers pause between the digits of a policy number
        audio: dict[str, Any] = {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 600}},
                                 "output": {}}
        if "default_vad" in self.bugs:
            del audio["input"]["turn_detection"]
        if "no_transcription" not in self.bugs:
            audio["input"]["transcription"] = {"model": "gpt-4o-transcribe"}
        if "greeting_before_voice" not in self.bugs:
            audio["output"]["voice"] = "marin"
        await self.client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime-2.1",
                                                instructions=INSTRUCTIONS, audio=audio)  # type: ignore[arg-type]
        self.say(call_id, "accepted")

    # ---- the call's WebSocket ----------------------------------------------------------------

    async def drive(self, call_id: str) -> None:
        log = self.calls[call_id]
        extra = {"OpenAI-Beta": "realtime=v1"} if "beta_header" in self.bugs else {}
        try:
            async with self.client.realtime.connect(call_id=call_id, extra_headers=extra) as conn:
                self.say(call_id, "websocket connected")
                await self.configure(conn, call_id)
                async for event in conn:
                    await self.on_event(conn, call_id, log, event)
        except ConnectionClosedError:  # the call ended: the service drops the socket without a close frame
            self.say(call_id, "websocket closed (dropped at hang-up)")
        except Exception as exc:  # the app logs and carries on with other calls
            self.say(call_id, f"websocket closed: {type(exc).__name__}: {exc}")
        else:
            self.say(call_id, "websocket closed")

    async def configure(self, conn: Any, call_id: str) -> None:
        if "update_without_type" in self.bugs:
            await conn.send({"type": "session.update",
                             "session": {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}})
        if "beta_update" in self.bugs:
            await conn.send({"type": "session.update",
                             "session": {"type": "realtime", "input_audio_transcription": {"model": "whisper-1"}}})
        if "tools_update_no_formats" in self.bugs:
            await conn.send({"type": "session.update", "session": {"type": "realtime", "tools": TOOLS}})
        else:
            # The fix: say the negotiated G.711 formats whenever the audio config is sent.
            await conn.send({"type": "session.update", "session": {
                "type": "realtime", "tools": TOOLS,
                "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}},
            }})
        if "greeting_before_voice" in self.bugs:
            await conn.send({"type": "response.create", "response": {"instructions": GREETING}})
            await conn.send({"type": "session.update",
                             "session": {"type": "realtime", "audio": {"output": {"voice": "marin"}}}})
        else:
            await conn.send({"type": "response.create", "response": {"instructions": GREETING}})

    async def on_event(self, conn: Any, call_id: str, log: CallLog, event: Any) -> None:
        kind = event.type
        log.events.append(kind)
        if kind == "error":
            err = event.error
            log.errors.append({"code": err.code, "message": err.message, "param": err.param})
            self.say(call_id, f"ERROR {err.code}: {err.message}")
        elif kind == "conversation.item.input_audio_transcription.completed":
            if "transcript_from_item_done" not in self.bugs:
                log.user.append(event.transcript)
                self.say(call_id, f"USER: {event.transcript}")
        elif kind == "conversation.item.done" and "transcript_from_item_done" in self.bugs:
            item = event.item
            if getattr(item, "role", None) == "user" and item.content:
                text = item.content[0].transcript
                log.user.append(text)
                self.say(call_id, f"USER: {text}")
        elif kind == "conversation.item.input_audio_transcription.failed":
            self.say(call_id, f"transcription failed: {event.error.message}")
            if "no_failed_handler" not in self.bugs:
                await conn.send({"type": "response.create", "response": {
                    "conversation": "none", "output_modalities": ["text"], "instructions": TRANSCRIBE_PROMPT,
                    "metadata": {"topic": "transcription"},
                    "input": [{"type": "item_reference", "id": event.item_id}],
                }})
        elif kind == "response.done":
            resp = event.response
            if (resp.metadata or {}).get("topic") == "transcription":
                text = "".join(c.text or "" for item in resp.output or [] for c in getattr(item, "content", []) or [])
                log.oob.append(text)
                log.user.append(text)
                self.say(call_id, f"USER (out-of-band): {text}")
        elif kind == "response.output_audio_transcript.done":
            log.assistant.append(event.transcript)
            self.say(call_id, f"ASSISTANT: {event.transcript}")
        elif kind == "response.created" and log.voice_at_first_reply is None:
            audio = getattr(event.response, "audio", None)
            voice = audio.output.voice if audio and audio.output else None
            log.voice_at_first_reply = str(voice)
            self.say(call_id, f"first reply voice: {voice}")
        elif kind == "input_audio_buffer.speech_stopped" and "response_on_speech_stopped" in self.bugs:
            await conn.send({"type": "response.create"})
        elif kind == "response.function_call_arguments.done":
            self.say(call_id, f"tool call {event.name}({event.arguments})")
            await conn.send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": event.call_id,
                "output": json.dumps({"status": "active", "holder": "on file"})}})
            await conn.send({"type": "response.create"})

    # ---- HTTP ------------------------------------------------------------------------------------

    async def transcripts(self, request: web.Request) -> web.Response:
        log = self.calls.get(request.match_info["call_id"])
        if log is None:
            return web.json_response({"error": "unknown call"}, status=404)
        return web.json_response({"user": log.user, "out_of_band": log.oob, "assistant": log.assistant,
                                  "errors": log.errors, "voice_at_first_reply": log.voice_at_first_reply})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "bugs": sorted(self.bugs)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="listen port (env PORT)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--bug", action="append", default=[], choices=sorted(BUGS), help="turn on a forum bug")
    ap.add_argument("--list-bugs", action="store_true", help="list the bugs and exit")
    args = ap.parse_args(argv)
    if args.list_bugs:
        for name, text in BUGS.items():
            print(f"{name:28} {text}")
        return 0
    app = App(set(args.bug))
    web_app = web.Application()
    web_app.router.add_post("/webhook", app.webhook)
    web_app.router.add_get("/transcripts/{call_id}", app.transcripts)
    web_app.router.add_get("/healthz", app.healthz)
    print(f"sdk_app listening on http://{args.host}:{args.port} bugs={sorted(app.bugs) or 'none'}", flush=True)
    web.run_app(web_app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
