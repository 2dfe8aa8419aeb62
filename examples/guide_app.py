"""A support agent written the way OpenAI's SIP guide shows it: Flask, requests, websockets, hard-coded URLs.

Nothing here knows about rtsip. The accept URL and the call's WebSocket URL are hard-coded to
``api.openai.com`` exactly as in the guide's sample, so this app reaches the mock only through
zero-change interception (``openai: intercept`` in a scenario: ``HTTPS_PROXY`` plus the local CA
in ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``). It reads ``OPENAI_API_KEY``,
``OPENAI_WEBHOOK_SECRET`` and ``PORT`` from the environment.

    PORT=8000 python examples/guide_app.py                        # the guide's app, fixed
    PORT=8000 python examples/guide_app.py --bug no_transcription  # a forum bug

Routes: ``POST /`` (the webhook, as in the guide), ``GET /transcripts/<call_id>`` (what the app
heard and said) and ``GET /healthz``. ``--list-bugs`` lists the forum variants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from typing import Any

import requests
import websockets
from flask import Flask, Response, jsonify, request
from openai import InvalidWebhookSignatureError, OpenAI

BUGS = {
    "no_transcription": "failure mode 1: accepts without audio.input.transcription (the guide's body), so user "
                        "transcripts never arrive",
    "beta_accept": "failure mode 5: accepts with the beta field input_audio_transcription at the top level; the "
                   "call hangs up right after the 200 and the WebSocket gets 404",
    "beta_header": "failure mode 10: sends OpenAI-Beta: realtime=v1 on the call's WebSocket, as older samples did",
    "transcript_from_item_done": "failure mode 2: reads the user transcript from conversation.item.done (always null)",
}

app = Flask(__name__)
client = OpenAI(webhook_secret=os.environ["OPENAI_WEBHOOK_SECRET"])
AUTH_HEADER = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
bugs: set[str] = set()

call_accept: dict[str, Any] = {
    "type": "realtime",
    "instructions": "You are a support agent.",
    "model": "gpt-realtime",
    "audio": {
        "input": {"transcription": {"model": "gpt-4o-transcribe"}},
        "output": {"voice": "marin"},
    },
}

response_create = {
    "type": "response.create",
    "response": {"instructions": "Say to the user 'Thank you for calling, how can I help you'"},
}

transcripts: dict[str, dict[str, list[Any]]] = {}
lock = threading.Lock()


def accept_body() -> dict[str, Any]:
    if "beta_accept" in bugs:
        # The forum's beta-shaped body: GA's accept answers 200 anyway, then the call drops.
        return {"type": "realtime", "instructions": "You are a support agent.",
                "model": "gpt-4o-realtime-preview-2024-12-17",
                "input_audio_transcription": {"model": "whisper-1"}}
    if "no_transcription" in bugs:
        return {k: v for k, v in call_accept.items() if k != "audio"}
    return call_accept


def record(call_id: str, kind: str, value: Any) -> None:
    with lock:
        transcripts.setdefault(call_id, {"user": [], "assistant": [], "errors": []})[kind].append(value)


def handle_event(call_id: str, event: dict[str, Any]) -> None:
    kind = event.get("type")
    if kind == "conversation.item.input_audio_transcription.completed" and "transcript_from_item_done" not in bugs:
        record(call_id, "user", event.get("transcript"))
        print(f"[{call_id}] USER: {event.get('transcript')}", flush=True)
    elif kind == "conversation.item.done" and "transcript_from_item_done" in bugs:
        item = event.get("item") or {}
        if item.get("role") == "user" and item.get("content"):
            text = item["content"][0].get("transcript")
            record(call_id, "user", text)
            print(f"[{call_id}] USER: {text}", flush=True)
    elif kind == "response.output_audio_transcript.done":
        record(call_id, "assistant", event.get("transcript"))
        print(f"[{call_id}] ASSISTANT: {event.get('transcript')}", flush=True)
    elif kind == "error":
        error = event.get("error") or {}
        record(call_id, "errors", error)
        print(f"[{call_id}] ERROR {error.get('code')}: {error.get('message')}", flush=True)


async def websocket_task(call_id: str) -> None:
    headers = dict(AUTH_HEADER)
    if "beta_header" in bugs:
        headers["OpenAI-Beta"] = "realtime=v1"
    try:
        async with websockets.connect(
            "wss://api.openai.com/v1/realtime?call_id=" + call_id,
            additional_headers=headers,
        ) as websocket:
            print(f"[{call_id}] websocket connected", flush=True)
            await websocket.send(json.dumps(response_create))
            while True:
                response = await websocket.recv()
                event = json.loads(response)
                print(f"[{call_id}] Received from WebSocket: {event.get('type')}", flush=True)
                handle_event(call_id, event)
    except Exception as e:
        print(f"[{call_id}] WebSocket error: {type(e).__name__}: {e}", flush=True)


@app.route("/", methods=["POST"])
def webhook() -> Response:
    try:
        event = client.webhooks.unwrap(request.data, request.headers)
        if event.type == "realtime.call.incoming":
            call_id = event.data.call_id
            with lock:
                transcripts.setdefault(call_id, {"user": [], "assistant": [], "errors": []})
            resp = requests.post(
                "https://api.openai.com/v1/realtime/calls/" + call_id + "/accept",
                headers={**AUTH_HEADER, "Content-Type": "application/json"},
                json=accept_body(),
                timeout=10,
            )
            print(f"[{call_id}] accept -> {resp.status_code} {resp.text}", flush=True)
            threading.Thread(
                target=lambda: asyncio.run(websocket_task(call_id)),
                daemon=True,
            ).start()
        return Response(status=200)
    except InvalidWebhookSignatureError as e:
        print("Invalid signature", e, flush=True)
        return Response("Invalid signature", status=400)


@app.route("/transcripts/<call_id>", methods=["GET"])
def get_transcripts(call_id: str) -> Response | tuple[Response, int]:
    with lock:
        found = transcripts.get(call_id)
        body = json.loads(json.dumps(found)) if found is not None else None
    if body is None:
        return jsonify({"error": "unknown call"}), 404
    return jsonify(body)


@app.route("/healthz", methods=["GET"])
def healthz() -> Response:
    return jsonify({"ok": True, "bugs": sorted(bugs)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="listen port (env PORT)")
    ap.add_argument("--bug", action="append", default=[], choices=sorted(BUGS), help="turn on a forum bug")
    ap.add_argument("--list-bugs", action="store_true", help="list the bugs and exit")
    args = ap.parse_args(argv)
    if args.list_bugs:
        for name, text in BUGS.items():
            print(f"{name:28} {text}")
        return 0
    bugs.update(args.bug)
    print(f"guide_app listening on http://127.0.0.1:{args.port} bugs={sorted(bugs) or 'none'}", flush=True)
    app.run(host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
