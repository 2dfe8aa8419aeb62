"""A minimal phone agent for load tests: verify the webhook, accept, open the WebSocket, answer turns.

It is the cheapest app that still does everything a real one must (official ``openai`` SDK,
aiohttp): it checks the webhook signature on the raw body, accepts the call with server VAD
and transcription on, opens the call's Realtime WebSocket and reads it until the call ends.
The mock's server VAD creates a response at the end of each caller turn, as the real
service does, so the app answers turns without sending anything more.

    python examples/minimal_app.py --port 8000

It reads ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_WEBHOOK_SECRET`` and ``PORT``.
``GET /healthz`` answers with the number of calls handled, for probes and load reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import openai
from aiohttp import web
from openai import AsyncOpenAI, InvalidWebhookSignatureError
from websockets.exceptions import ConnectionClosed

INSTRUCTIONS = "You are a short-spoken test agent."
HANDLED = frozenset({"error", "conversation.item.input_audio_transcription.completed", "response.done"})


class App:
    def __init__(self, verbose: bool = False) -> None:
        self.client = AsyncOpenAI(max_retries=0)
        self.verbose = verbose
        self.tasks: set[asyncio.Task[None]] = set()
        self.seen: dict[str, None] = {}  # webhook-ids handled, oldest first (retries reuse the id)
        self.counts = {"webhooks": 0, "accepted": 0, "accept_failed": 0, "ws_closed": 0, "ws_errors": 0,
                       "server_errors": 0, "transcripts": 0, "responses": 0}

    def log(self, call_id: str, text: str) -> None:
        if self.verbose:
            print(f"[{call_id}] {text}", flush=True)

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = self.client.webhooks.unwrap(raw, request.headers)
        except InvalidWebhookSignatureError:
            return web.json_response({"error": "invalid signature"}, status=400)
        if event.type != "realtime.call.incoming":
            return web.json_response({"ignored": event.type})
        # A retry of a webhook we already took (ours was slow to answer): accepting again would get
        # 400 call_already_accepted. Standard Webhooks: deduplicate on the webhook-id header.
        webhook_id = request.headers.get("webhook-id", "")
        if webhook_id in self.seen:
            return web.json_response({"ok": True, "duplicate": True})
        self.seen[webhook_id] = None
        if len(self.seen) > 10_000:
            del self.seen[next(iter(self.seen))]
        self.counts["webhooks"] += 1
        call_id = event.data.call_id
        try:
            await self.client.realtime.calls.accept(
                call_id, type="realtime", model="gpt-realtime-2.1", instructions=INSTRUCTIONS,
                audio={"input": {"transcription": {"model": "gpt-4o-transcribe"},
                                 "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
            )
        except openai.APIStatusError as exc:
            # 404: the caller is gone; 429: over a limit. Either way this call is over for us.
            self.counts["accept_failed"] += 1
            print(f"[{call_id}] accept failed: {exc.status_code}", flush=True)
            return web.json_response({"ok": False, "status": exc.status_code})
        except openai.APIConnectionError as exc:
            self.counts["accept_failed"] += 1
            print(f"[{call_id}] accept failed: {type(exc).__name__}", flush=True)
            return web.json_response({"ok": False}, status=502)
        self.counts["accepted"] += 1
        task = asyncio.create_task(self.drive(call_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response({"ok": True})

    async def drive(self, call_id: str) -> None:
        """Read the call's socket until it closes. Only the events acted on are parsed into the SDK's
        models: building a model for every delta would make pydantic most of a load test's app CPU."""
        try:
            async with self.client.realtime.connect(call_id=call_id) as conn:
                while True:
                    try:
                        raw = await conn.recv_bytes()
                    except ConnectionClosed:  # at hang-up the socket drops without a close frame
                        break
                    if json.loads(raw).get("type") in HANDLED:
                        self.on_event(call_id, conn.parse_event(raw))
        except Exception as exc:  # one call's trouble never stops the others
            self.counts["ws_errors"] += 1
            print(f"[{call_id}] websocket closed: {type(exc).__name__}: {exc}", flush=True)
        else:
            self.counts["ws_closed"] += 1

    def on_event(self, call_id: str, event: Any) -> None:
        kind = event.type
        if kind == "error":
            self.counts["server_errors"] += 1
            print(f"[{call_id}] ERROR {event.error.code}: {event.error.message}", flush=True)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.counts["transcripts"] += 1
            self.log(call_id, f"USER: {event.transcript}")
        elif kind == "response.done":
            self.counts["responses"] += 1

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "active": len(self.tasks), **self.counts})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="listen port (env PORT)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each call's transcripts")
    args = ap.parse_args(argv)
    app = App(args.verbose)
    web_app = web.Application()
    web_app.router.add_post("/webhook", app.webhook)
    web_app.router.add_get("/healthz", app.healthz)
    print(f"minimal_app listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(web_app, host=args.host, port=args.port, print=None, access_log=None, backlog=4096)
    return 0


if __name__ == "__main__":
    sys.exit(main())
