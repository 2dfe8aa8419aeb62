"""A phone agent as many are written: Flask + requests + websockets, OpenAI's URLs hard-coded.

It never reads OPENAI_BASE_URL: only the interception proxy (HTTPS_PROXY + the local CA) can bring
it to the mock. After each call it asks ``/v1/chat/completions`` for a summary and stores it, as
apps that keep a post-call summary table do.

    python hardcoded_flask_app.py PORT SUMMARIES.jsonl
"""

from __future__ import annotations

import json
import os
import sys
import threading

import requests
from flask import Flask, Response, request
from openai import OpenAI
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

API = "https://api.openai.com/v1"
WSS = "wss://api.openai.com/v1/realtime?call_id="
AUTH = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
verifier = OpenAI(api_key="unused", webhook_secret=os.environ["OPENAI_WEBHOOK_SECRET"])
app = Flask(__name__)
port, summaries = int(sys.argv[1]), sys.argv[2]


def drive(call_id: str) -> None:
    """Greet, collect the caller's transcript until the call ends, then store a summary."""
    heard: list[str] = []
    try:
        with connect(WSS + call_id, additional_headers=AUTH) as ws:
            ws.send(json.dumps({"type": "response.create"}))
            for raw in ws:
                event = json.loads(raw)
                if event["type"] == "conversation.item.input_audio_transcription.completed":
                    heard.append(event["transcript"])
    except ConnectionClosed:
        pass  # the call ended: the socket drops
    answer = requests.post(f"{API}/chat/completions", headers=AUTH, timeout=10, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise: " + " ".join(heard)}]})
    answer.raise_for_status()
    summary = answer.json()["choices"][0]["message"]["content"]
    with open(summaries, "a") as f:
        f.write(json.dumps({"call_id": call_id, "heard": heard, "summary": summary}) + "\n")


@app.post("/webhook")
def webhook() -> Response:
    event = verifier.webhooks.unwrap(request.get_data(), request.headers)
    if event.type == "realtime.call.incoming":
        call_id = event.data.call_id
        r = requests.post(f"{API}/realtime/calls/{call_id}/accept", headers=AUTH, timeout=10, json={
            "type": "realtime", "model": "gpt-realtime", "instructions": "Greet the caller.",
            "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}})
        r.raise_for_status()
        threading.Thread(target=drive, args=(call_id,), daemon=True).start()
    return Response(status=200)


@app.get("/healthz")
def healthz() -> str:
    return "ok"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=port)
