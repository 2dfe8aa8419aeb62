"""A phone agent on the SDK's Azure client (``AsyncAzureOpenAI``), written the way Azure's SIP guide shows.

It reads what an ``AzureOpenAI`` app reads: ``AZURE_OPENAI_ENDPOINT`` (an ``https://`` origin),
``OPENAI_API_VERSION``, ``AZURE_OPENAI_API_KEY`` (sent as ``api-key``), and ``OPENAI_WEBHOOK_SECRET``;
``AZURE_OPENAI_DEPLOYMENT`` names the deployment. It trusts TLS through ``SSL_CERT_FILE`` like any Python
client: the Azure client always opens its socket as ``wss://``.

Per call: verify the webhook, accept with what Azure requires (``type``, ``model`` = the deployment,
``instructions``), open the call's socket, ask for a greeting with ``response.create``, and hang up once
the greeting has played to the caller. It prints each step; the webhook listens on an OS-chosen port,
printed as ``azure_sip_app listening on http://127.0.0.1:PORT``.

    python tests/apps/azure_sip_app.py
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web
from openai import AsyncAzureOpenAI, InvalidWebhookSignatureError
from websockets.exceptions import ConnectionClosedError

DEPLOYMENT = os.environ.get("AZURE_OPENAI_DEPLOYMENT", "my-gpt-realtime")
INSTRUCTIONS = "You are the Contoso claims line. Keep answers short."
GREETING = "Say to the caller 'Welcome to Contoso claims, how can I help'"

client = AsyncAzureOpenAI(webhook_secret=os.environ["OPENAI_WEBHOOK_SECRET"], max_retries=0)
tasks: set[asyncio.Task[None]] = set()


def say(call_id: str, text: str) -> None:
    print(f"[{call_id}] {text}", flush=True)


async def webhook(request: web.Request) -> web.Response:
    try:
        event = client.webhooks.unwrap(await request.read(), request.headers)
    except InvalidWebhookSignatureError as exc:
        print(f"webhook rejected: {exc}", flush=True)
        return web.json_response({"error": "invalid signature"}, status=400)
    if event.type != "realtime.call.incoming":
        return web.json_response({"ignored": event.type})
    call_id = event.data.call_id
    say(call_id, "incoming call")
    await client.realtime.calls.accept(call_id, type="realtime", model=DEPLOYMENT, instructions=INSTRUCTIONS)
    say(call_id, f"accepted as deployment {DEPLOYMENT}")
    task = asyncio.create_task(drive(call_id))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return web.json_response({"ok": True})


async def drive(call_id: str) -> None:
    """The call's socket: greet, then hang up when the caller has heard the greeting."""
    try:
        async with client.realtime.connect(call_id=call_id, model=DEPLOYMENT) as conn:
            say(call_id, "websocket connected")
            await conn.send({"type": "response.create", "response": {"instructions": GREETING}})
            async for event in conn:
                await on_event(call_id, event)
    except ConnectionClosedError:  # the call ended: the socket drops without a close frame
        say(call_id, "websocket closed (dropped at hang-up)")
    except Exception as exc:  # the app logs and carries on with other calls
        say(call_id, f"websocket closed: {type(exc).__name__}: {exc}")
    else:
        say(call_id, "websocket closed")


async def on_event(call_id: str, event: Any) -> None:
    if event.type == "error":
        say(call_id, f"ERROR {event.error.code}: {event.error.message}")
    elif event.type == "response.output_audio_transcript.done":
        say(call_id, f"ASSISTANT: {event.transcript}")
    elif event.type == "output_audio_buffer.started":
        say(call_id, "audio started")
    elif event.type == "output_audio_buffer.stopped":
        say(call_id, "audio stopped")
        await client.realtime.calls.hangup(call_id)
        say(call_id, "hung up")


async def main() -> None:
    app = web.Application()
    app.router.add_post("/webhook", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"azure_sip_app listening on http://127.0.0.1:{port} endpoint={client.base_url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
