"""An example phone agent built on the official ``openai`` SDK, with the forum's bugs behind flags.

It is the "app under test" for rtsip's scenarios and demo: it verifies the webhook,
accepts the call, drives the call's Realtime WebSocket, prints the conversation, and
serves the user transcripts at ``GET /transcripts/{call_id}``; the caller's key 0 transfers the call
to an operator (``OPERATOR``), and the app checks that the transfer happened. It reads
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

CALLER_SILENCE_S = 8.0  # no sign of a caller this long after the accept: a ghost call (failure mode 23)
CRM_LOOKUP_S = 3.0  # the slow_webhook_handler bug's lookup before the accept
IDLE_TIMEOUT_MS = 7000  # server_vad prompts the model after this much silence (failure mode 26)
CALLER_SIGNS = {"input_audio_buffer.speech_started", "input_audio_buffer.dtmf_event_received"}  # someone is there
OPERATOR = "tel:+15555550199"  # key 0 transfers the caller here
OPERATOR_KEY = "0"
REFER_WATCH_S = 3.0  # after refer's 200 the service ends the session; still connected after this: it did not
RETRYABLE = {"service_unavailable_error", "server_error"}  # a failed response worth creating again
MAX_RETRIES = 2
RETRY_BACKOFF_S = 0.5
TRANSFER_FAILED = "Say to the user 'Sorry, the transfer did not go through. Please stay on the line.'"

BUGS = {
    "no_transcription": "failure mode 1: accepts without audio.input.transcription, so user transcripts stay null",
    "transcript_from_item_done": "failure mode 2: reads the user transcript from conversation.item.done (always null)",
    "update_without_type": "failure mode 3: sends session.update without session.type",
    "beta_update": "failure mode 4: sends beta field names (input_audio_transcription) in session.update",
    "beta_accept": "failure mode 5: accepts with a beta-shaped body; the call hangs up right after the 200",
    "no_failed_handler": "failure mode 6: ignores transcription.failed instead of falling back to out-of-band "
                         "transcription",
    "tools_update_no_formats": "failure mode 7: sends session.update with tools but without the G.711 audio formats",
    "beta_output_format": "failure mode 9: asks for u-law with the beta output_audio_format (a Media Streams "
                          "bridge habit); the update is refused and the output stays what it was",
    "beta_header": "failure modes 10 and 21: sends OpenAI-Beta: realtime=v1 on the call's WebSocket",
    "accept_404_fatal": "failure mode 11: answers the webhook 500 when accept gets 404 (caller already gone)",
    "no_silence_watchdog": f"failure mode 23: trusts an accept's 200 to mean a caller is there; a call whose caller "
                           f"left while it rang runs on (the fixed app hangs up after {CALLER_SILENCE_S:g} s "
                           "without a word or key from the caller)",
    "slow_webhook_handler": f"failure modes 12 and 22: looks the caller up ({CRM_LOOKUP_S:g} s) before accepting, "
                            "so a late webhook leaves no time to accept",
    "reserialized_body": "failure mode 13: verifies a re-serialized body instead of the raw bytes",
    "trust_refer_200": "failure mode 14: trusts refer's 200 (key 0 transfers) and never checks that the call left; "
                       "when no REFER goes out the caller waits in silence",
    "refer_error_as_json": "failure mode 24: reads a failed refer's error as JSON; Azure's plain-text 500 crashes "
                           "the call's handler",
    "drop_looks_normal": "failure mode 16: logs a far-side drop in the middle of the caller's turn as an ordinary "
                         "hang-up, so unexplained drops go unnoticed",
    "greeting_before_voice": "failure mode 17: sends the greeting before the voice is set; the first reply has the "
                             "wrong voice",
    "response_on_speech_stopped": "failure mode 18: sends response.create on speech_stopped, colliding with the VAD "
                                  "response",
    "commit_before_response": "failure mode 19: commits the input buffer before its response.create (a manual-turn "
                              "habit) while server VAD commits the turns",
    "cancel_on_speech_started": "failure mode 20: sends response.cancel on every speech_started, also when no "
                                "response is active",
    "no_response_retry": "failure mode 25: ignores a response.done that failed (service unavailable); the bot "
                         "goes silent",
    "no_idle_timeout": f"failure mode 26: leaves server_vad idle_timeout_ms unset ({IDLE_TIMEOUT_MS} ms in the fixed "
                       "app), so a 'let me check' turn without a tool call leaves dead air",
    "accept_pcmu": "failure mode 27: forces audio/pcmu in the accept, which formats negotiated in SIP make "
                   "unnecessary (one report: silence or static)",
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
    ws_open: bool = False
    caller_speaking: bool = False  # between speech_started and speech_stopped
    caller_heard: bool = False  # the caller spoke or pressed a key at least once: someone is on the line
    closed: bool = False  # the call's WebSocket is over
    accepted_at: float | None = None  # loop time
    retries: int = 0  # failed responses created again in a row


class App:
    def __init__(self, bugs: set[str], caller_silence_s: float = CALLER_SILENCE_S) -> None:
        self.bugs = bugs
        self.caller_silence_s = caller_silence_s
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
            if "slow_webhook_handler" in self.bugs:
                await asyncio.sleep(CRM_LOOKUP_S)  # the caller's record first, the accept after it
            await self.accept(call_id)
        except openai.NotFoundError as exc:
            if "accept_404_fatal" in self.bugs:
                self.say(call_id, "accept failed: 404")
                return web.json_response({"error": "accept failed"}, status=500)
            # the request id is what OpenAI's support asks for when an accept was slow or lost (failure mode 22)
            self.say(call_id, f"call already gone (404 on accept); nothing to do (x-request-id {exc.request_id})")
            return web.json_response({"ok": True})
        self.spawn(self.drive(call_id))
        if "no_silence_watchdog" not in self.bugs:
            self.spawn(self.silence_watchdog(call_id))
        return web.json_response({"ok": True})

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def silence_watchdog(self, call_id: str) -> None:
        """A 200 to the accept does not prove a caller is there: one who hung up while it rang may leave a
        session that runs on with nobody on the line (failure mode 23), and no event says so. Not a word nor a
        key from the caller for ``caller_silence_s`` after the accept: hang the call up."""
        await asyncio.sleep(self.caller_silence_s)
        log = self.calls[call_id]
        if log.caller_heard or log.closed:
            return
        self.say(call_id, f"no caller audio {self.caller_silence_s:g} s after the accept; hanging up (ghost call?)")
        try:
            await self.client.realtime.calls.hangup(call_id)
        except openai.NotFoundError:  # it ended meanwhile
            self.say(call_id, "the call had already ended")

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
        elif "no_idle_timeout" not in self.bugs:  # dead air after a turn that promised more: prompt the model
            audio["input"]["turn_detection"]["idle_timeout_ms"] = IDLE_TIMEOUT_MS
        if "accept_pcmu" in self.bugs:
            audio["input"]["format"] = {"type": "audio/pcmu"}
            audio["output"]["format"] = {"type": "audio/pcmu"}
        if "no_transcription" not in self.bugs:
            audio["input"]["transcription"] = {"model": "gpt-4o-transcribe"}
        if "greeting_before_voice" not in self.bugs:
            audio["output"]["voice"] = "marin"
        await self.client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime-2.1",
                                                instructions=INSTRUCTIONS, audio=audio)  # type: ignore[arg-type]
        self.calls[call_id].accepted_at = asyncio.get_running_loop().time()
        self.say(call_id, "accepted")

    # ---- the call's WebSocket ----------------------------------------------------------------

    async def drive(self, call_id: str) -> None:
        log = self.calls[call_id]
        extra = {"OpenAI-Beta": "realtime=v1"} if "beta_header" in self.bugs else {}
        try:
            async with self.client.realtime.connect(call_id=call_id, extra_headers=extra) as conn:
                log.ws_open = True
                self.say(call_id, "websocket connected")
                await self.configure(conn, call_id)
                async for event in conn:
                    await self.on_event(conn, call_id, log, event)
        except ConnectionClosedError as exc:  # the call ended: the service drops the socket without a close frame
            if exc.rcvd is not None:  # a close frame: the service refused the socket (4000: the beta header)
                self.say(call_id, f"websocket closed by the server: {exc.rcvd.code} {exc.rcvd.reason}")
            elif log.caller_speaking and "drop_looks_normal" not in self.bugs:
                self.say(call_id, "call dropped by the far side while the caller was speaking, "
                         f"{self.since_accept(log)} after the accept; logged for support")
            else:
                self.say(call_id, "websocket closed (dropped at hang-up)")
        except Exception as exc:  # the app logs and carries on with other calls
            self.say(call_id, f"websocket closed: {type(exc).__name__}: {exc}")
        else:
            self.say(call_id, "websocket closed")
        finally:
            log.ws_open = False
            log.closed = True

    @staticmethod
    def since_accept(log: CallLog) -> str:
        if log.accepted_at is None:
            return "?"
        return f"{asyncio.get_running_loop().time() - log.accepted_at:.1f} s"

    async def configure(self, conn: Any, call_id: str) -> None:
        if "update_without_type" in self.bugs:
            await conn.send({"type": "session.update",
                             "session": {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}})
        if "beta_update" in self.bugs:
            await conn.send({"type": "session.update",
                             "session": {"type": "realtime", "input_audio_transcription": {"model": "whisper-1"}}})
        if "beta_output_format" in self.bugs:  # the beta name for the output format: refused, nothing applies
            await conn.send({"type": "session.update", "session": {
                "type": "realtime", "tools": TOOLS, "output_audio_format": "g711_ulaw"}})
        elif "tools_update_no_formats" in self.bugs:
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
            if "commit_before_response" in self.bugs:
                await conn.send({"type": "input_audio_buffer.commit"})
            await conn.send({"type": "response.create", "response": {"instructions": GREETING}})

    async def on_event(self, conn: Any, call_id: str, log: CallLog, event: Any) -> None:
        kind = event.type
        log.events.append(kind)
        log.caller_heard = log.caller_heard or kind in CALLER_SIGNS
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
            elif resp.status == "failed":
                await self.on_failed_response(conn, call_id, log, resp)
            elif resp.status == "completed":
                log.retries = 0
        elif kind == "response.output_audio_transcript.done":
            log.assistant.append(event.transcript)
            self.say(call_id, f"ASSISTANT: {event.transcript}")
        elif kind == "response.created" and log.voice_at_first_reply is None:
            audio = getattr(event.response, "audio", None)
            voice = audio.output.voice if audio and audio.output else None
            log.voice_at_first_reply = str(voice)
            self.say(call_id, f"first reply voice: {voice}")
        elif kind == "input_audio_buffer.speech_started":
            log.caller_speaking = True
            if "cancel_on_speech_started" in self.bugs:
                await conn.send({"type": "response.cancel"})
        elif kind == "input_audio_buffer.speech_stopped":
            log.caller_speaking = False
            if "response_on_speech_stopped" in self.bugs:
                await conn.send({"type": "response.create"})
        elif kind == "input_audio_buffer.dtmf_event_received" and event.event == OPERATOR_KEY:
            await self.transfer(conn, call_id, log)
        elif kind == "response.function_call_arguments.done":
            self.say(call_id, f"tool call {event.name}({event.arguments})")
            await conn.send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": event.call_id,
                "output": json.dumps({"status": "active", "holder": "on file"})}})
            await conn.send({"type": "response.create"})

    async def on_failed_response(self, conn: Any, call_id: str, log: CallLog, resp: Any) -> None:
        """A response the service could not run: create it again after a backoff, a few times at most."""
        err = resp.status_details.error if resp.status_details else None
        self.say(call_id, f"response failed: {err.code if err else None}: {err.message if err else ''}")
        if "no_response_retry" in self.bugs or err is None or err.type not in RETRYABLE or log.retries >= MAX_RETRIES:
            return
        log.retries += 1
        await asyncio.sleep(RETRY_BACKOFF_S * log.retries)
        self.say(call_id, f"retrying the response (attempt {log.retries})")
        await conn.send({"type": "response.create"})

    async def transfer(self, conn: Any, call_id: str, log: CallLog) -> None:
        """Key 0: refer the caller to the operator, then make sure the call really left."""
        self.say(call_id, f"transferring to {OPERATOR}")
        try:
            await self.client.realtime.calls.refer(call_id, target_uri=OPERATOR)
        except openai.APIStatusError as exc:  # the body may not be JSON (Azure answers plain text)
            if "refer_error_as_json" in self.bugs:
                self.say(call_id, f"transfer failed: {exc.body['error']['message']}")  # type: ignore[index]
            self.say(call_id, f"transfer failed: HTTP {exc.status_code} (x-request-id {exc.request_id})")
            await conn.send({"type": "response.create", "response": {"instructions": TRANSFER_FAILED}})
            return
        if "trust_refer_200" in self.bugs:
            return
        self.spawn(self.watch_transfer(conn, call_id, log))

    async def watch_transfer(self, conn: Any, call_id: str, log: CallLog) -> None:
        """A REFER that went out ends the session; one still connected after REFER_WATCH_S never did."""
        await asyncio.sleep(REFER_WATCH_S)
        if log.ws_open:
            self.say(call_id, f"transfer did not happen ({REFER_WATCH_S:g} s after refer's 200); telling the caller")
            await conn.send({"type": "response.create", "response": {"instructions": TRANSFER_FAILED}})

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
    ap.add_argument("--caller-silence-s", type=float, default=CALLER_SILENCE_S,
                    help="hang up a call whose caller has not spoken or keyed this long after the accept")
    args = ap.parse_args(argv)
    if args.list_bugs:
        for name, text in BUGS.items():
            print(f"{name:28} {text}")
        return 0
    app = App(set(args.bug), args.caller_silence_s)
    web_app = web.Application()
    web_app.router.add_post("/webhook", app.webhook)
    web_app.router.add_get("/transcripts/{call_id}", app.transcripts)
    web_app.router.add_get("/healthz", app.healthz)
    print(f"sdk_app listening on http://{args.host}:{args.port} bugs={sorted(app.bugs) or 'none'}", flush=True)
    web.run_app(web_app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
