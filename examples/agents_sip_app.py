"""A phone agent built on openai-agents (the Agents SDK): triage with a tool, then a handoff to claims.

Why it exists: OpenAI's own SIP sample accepts calls with the SDK's generic
``client.post(".../accept", cast_to=dict)`` and then attaches the Agents SDK's realtime SIP model
to the call. This app does the same with its own agents, so rtsip can prove that path end to end:

- ``POST /webhook`` verifies the signed ``realtime.call.incoming`` with ``client.webhooks.unwrap``,
  accepts with the generic ``client.post`` (session config built from the starting agent, G.711
  formats as the SIP leg negotiates), answers 200 and attaches a ``RealtimeSession`` in the background;
- the triage agent greets, looks policies up (``lookup_policy``) and hands off to the claims agent
  (the ``transfer_to_claims_agent`` tool), whose instructions reach the call in a ``session.update``;
- every event worth checking is one stdout line ``[call_id] ...``; a socket dropped at hang-up
  without a close frame (as the real service does) ends the call quietly.

Environment: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_WEBHOOK_SECRET`` and ``PORT`` as for any
SDK app. The Agents SDK does not derive its WebSocket URL from the client's base URL (it defaults to
``wss://api.openai.com/v1/realtime?call_id=...``), so the app passes one: ``OPENAI_REALTIME_URL``
(e.g. ``ws://127.0.0.1:8765/v1``) when set, else the base URL with a ``ws``/``wss`` scheme, as the
``openai`` SDK's own ``realtime.connect`` does.

    python examples/agents_sip_app.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import traceback
from typing import Any

from agents import function_tool
from agents.realtime import (
    OpenAIRealtimeSIPModel,
    RealtimeAgent,
    RealtimeModelConfig,
    RealtimeModelSendRawMessage,
    RealtimeRunConfig,
    RealtimeRunner,
    RealtimeSessionEvent,
    RealtimeSessionModelSettings,
)
from aiohttp import web
from openai import AsyncOpenAI, InvalidWebhookSignatureError, NotFoundError
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

GREETING = "Thank you for calling Example Insurance. How can I help you today?"
TRIAGE_INSTRUCTIONS = (
    "You are the front desk of Example Insurance on the phone. Greet callers, ask for their policy number "
    "and look it up with lookup_policy. When a caller wants to file a claim or asks for a person, transfer "
    "them to the claims agent. Keep answers short."
)
CLAIMS_INSTRUCTIONS = (
    "You are a claims specialist at Example Insurance on the phone. The caller was transferred to you. "
    "Introduce yourself as the claims desk and take the details of their claim. Keep answers short."
)

# What the back office knows; a real app would query its policy system here.
POLICIES: dict[str, dict[str, str]] = {
    "56652870": {"holder": "Michelle Perry", "status": "active", "product": "auto"},
}

# The SIP leg is G.711 mu-law both ways; transcription on, so user turns come back as text.
SIP_SETTINGS: RealtimeSessionModelSettings = {
    "voice": "marin",
    "input_audio_format": "g711_ulaw",
    "output_audio_format": "g711_ulaw",
    "input_audio_transcription": {"model": "gpt-4o-transcribe"},
    # 600 ms of silence ends a turn: callers pause between the digits of a policy number
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 600, "interrupt_response": True},
}


def say(call_id: str, text: str) -> None:
    print(f"[{call_id}] {text}", flush=True)


@function_tool
def lookup_policy(policy_number: str) -> str:
    """Find an insurance policy by the number the caller reads out.

    Args:
        policy_number: The policy number as spoken, digits with or without dashes.
    """
    found = POLICIES.get(re.sub(r"\D", "", policy_number))
    if found is None:
        return json.dumps({"found": False, "policy_number": policy_number})
    return json.dumps({"found": True, "policy_number": policy_number, **found})


def build_agents() -> RealtimeAgent[Any]:
    """The starting agent: triage, with the policy tool and a handoff to the claims agent."""
    claims = RealtimeAgent[Any](name="Claims Agent", instructions=CLAIMS_INSTRUCTIONS,
                                handoff_description="Files insurance claims and talks to callers who want a person.")
    return RealtimeAgent[Any](name="Triage Agent", instructions=TRIAGE_INSTRUCTIONS, tools=[lookup_policy],
                              handoffs=[claims])


def realtime_url(client: AsyncOpenAI) -> str:
    """The WebSocket base the SIP model connects to (it has no base-URL logic of its own)."""
    explicit = os.environ.get("OPENAI_REALTIME_URL")
    if explicit:
        return explicit.rstrip("/")
    if client.websocket_base_url is not None:
        return str(client.websocket_base_url).rstrip("/")
    base = str(client.base_url).rstrip("/")
    return re.sub(r"^http", "ws", base)


async def accept_body(agent: RealtimeAgent[Any]) -> dict[str, Any]:
    """The accept's session config, built from the same agent and settings the session attaches with.

    Its model is the SIP model's own default: attached by call_id, that model refuses a ``model_name`` and
    names its default in every ``session.update``, so accepting with another one would contradict them.
    """
    payload = await OpenAIRealtimeSIPModel.build_initial_session_payload(
        agent, run_config={"model_settings": SIP_SETTINGS})
    body: dict[str, Any] = payload.model_dump(exclude_none=True, mode="json")
    return body


class CallLogger:
    """Turns one call's session events into the stdout lines a test matches."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id

    def log(self, text: str) -> None:
        say(self.call_id, text)

    def on_event(self, event: RealtimeSessionEvent) -> None:
        if event.type == "agent_start":
            self.log(f"agent speaking: {event.agent.name}")
        elif event.type == "tool_start":
            self.log(f"tool call {event.tool.name}({event.arguments})")
        elif event.type == "tool_end":
            self.log(f"tool output {event.tool.name} -> {event.output}")
        elif event.type == "handoff":
            self.log(f"handoff {event.from_agent.name} -> {event.to_agent.name}")
        elif event.type == "error":
            self.log(f"session error: {event.error}")
        elif event.type == "raw_model_event" and event.data.type == "raw_server_event":
            self.on_server_event(event.data.data)

    def on_server_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "output_audio_buffer.started":
            self.log(f"assistant audio started ({data.get('response_id')})")
        elif kind == "output_audio_buffer.stopped":
            self.log(f"assistant audio stopped ({data.get('response_id')})")
        elif kind == "response.output_audio_transcript.done":
            self.log(f"ASSISTANT: {data.get('transcript')}")
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.log(f"USER: {data.get('transcript')}")
        elif kind == "session.updated":
            instructions = str((data.get("session") or {}).get("instructions") or "")
            self.log(f"session updated: instructions={instructions[:40]!r}")
        elif kind == "error":
            err = data.get("error") or {}
            self.log(f"ERROR {err.get('code')}: {err.get('message')}")


class App:
    def __init__(self) -> None:
        self.client = AsyncOpenAI(max_retries=0)
        self.agent = build_agents()
        self.tasks: set[asyncio.Task[None]] = set()

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = self.client.webhooks.unwrap(raw, request.headers)
        except InvalidWebhookSignatureError as exc:
            print(f"webhook rejected: {exc}", flush=True)
            return web.json_response({"error": "invalid signature"}, status=400)
        if event.type != "realtime.call.incoming":
            return web.json_response({"ignored": event.type})
        call_id = event.data.call_id
        headers = {h.name: h.value for h in event.data.sip_headers}
        say(call_id, f"incoming call from {headers.get('From')}")
        # The generic post, as OpenAI's SIP sample accepts. The service answers 200 with no body and no
        # Content-Type, so the SDK hands back the body as text ('') whatever cast_to says; an error raises.
        try:
            answer = await self.client.post(f"/realtime/calls/{call_id}/accept", body=await accept_body(self.agent),
                                            cast_to=dict)
        except NotFoundError:  # the caller hung up while the webhook was on its way: nothing to attach to
            say(call_id, "call already gone (404 on accept)")
            return web.json_response({"ok": True})
        say(call_id, f"accepted via client.post: {answer!r}")
        task = asyncio.create_task(self.run_call(call_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response({"ok": True})

    async def run_call(self, call_id: str) -> None:
        """Attach to the call and log its events until it ends, however the socket goes away."""
        calllog = CallLogger(call_id)
        runner = RealtimeRunner(self.agent, model=OpenAIRealtimeSIPModel(),
                                config=RealtimeRunConfig(model_settings=SIP_SETTINGS))
        url = f"{realtime_url(self.client)}/realtime?call_id={call_id}"
        model_config: RealtimeModelConfig = {"call_id": call_id, "url": url, "api_key": self.client.api_key}
        try:
            async with await runner.run(model_config=model_config) as session:
                calllog.log(f"session attached: {url}")
                await session.model.send_event(RealtimeModelSendRawMessage(message={
                    "type": "response.create",
                    "other_data": {"response": {"instructions": f"Say to the caller: '{GREETING}'"}}}))
                async for event in session:
                    calllog.on_event(event)
        except ConnectionClosedOK as exc:
            calllog.log(f"call ended: socket closed ({exc.rcvd.code if exc.rcvd else 'no code'})")
        except ConnectionClosed:
            # The service drops the call's socket without a close frame at hang-up: that is the end of the call.
            calllog.log("call ended: socket dropped without a close frame")
        except Exception:
            calllog.log("session failed")
            traceback.print_exc()
        else:
            calllog.log("call ended: session stream finished")
        calllog.log("session closed")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="listen port (env PORT)")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    app = App()
    web_app = web.Application()
    web_app.router.add_post("/webhook", app.webhook)
    web_app.router.add_get("/healthz", app.healthz)
    print(f"agents_sip_app listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(web_app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
