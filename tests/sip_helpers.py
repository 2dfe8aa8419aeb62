"""Shared pieces of the SIP ingress tests: an SDK app answering calls and its webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from openai import AsyncOpenAI

from audio_fixtures import fixture
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.helpers import WebhookReceiver

CALLER = fixture("caller_policy_number")
REPLY = fixture("assistant_confirm_policy")
SCRIPT = {"turns": [{"hears": CALLER.text, "says": REPLY.text, "audio": str(REPLY.path)}],
          "transcription_delay_s": 0.1}


@dataclass
class App:
    """What a voice app does: verify, accept with the SDK, drive the call's WebSocket."""

    mock: RunningMock
    accept: dict[str, Any] = field(default_factory=lambda: {
        "type": "realtime", "model": "gpt-realtime", "instructions": "You are Alex.",
        "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
    action: str = "accept"  # accept | reject:<code> | refer:<uri> after the first reply | hangup after reply
    events: list[Any] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.client = AsyncOpenAI(api_key="sk-app", base_url=self.mock.base_url, max_retries=0)

    async def on_webhook(self, event: Any) -> None:
        call_id = event.data.call_id
        if self.action.startswith("reject"):
            code = self.action.partition(":")[2]
            await (self.client.realtime.calls.reject(call_id, status_code=int(code)) if code
                   else self.client.realtime.calls.reject(call_id))
            return
        await self.client.realtime.calls.accept(call_id, **self.accept)
        task = asyncio.create_task(self.drive(call_id))
        self.tasks.add(task)

    async def drive(self, call_id: str) -> None:
        try:
            async with self.client.realtime.connect(call_id=call_id) as conn:
                async for event in conn:
                    self.events.append(event)
                    if event.type == "response.done" and self.action.startswith("refer"):
                        await self.client.realtime.calls.refer(call_id, target_uri=self.action.partition(":")[2])
                    if event.type == "output_audio_buffer.stopped" and self.action == "hangup":
                        await self.client.realtime.calls.hangup(call_id)
        except Exception as exc:
            self.events.append(exc)
        finally:
            self.closed.set()

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if getattr(e, "type", None) == kind]


class Receiver(WebhookReceiver):
    app: App | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        d = self.deliveries[-1]
        if d.error is None and self.app is not None:
            await self.app.on_webhook(d.event)
        return response


async def still_answers(mock: RunningMock, receiver: Receiver, phone: Any, timeout: float = 15) -> None:
    """The mock keeps serving after a failure: a fresh call is accepted by a fresh app and hung up."""
    assert mock.sip is not None
    receiver.app = App(mock)
    call = await phone.call(mock.sip.uri())
    assert await call.answered(timeout=timeout)
    await call.hangup()


def rejected_in_journal(control: MockClient) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """A probe for ``until``: the server journal's ``sip.rejected`` entries (empty until the worker tells)."""
    async def probe() -> list[dict[str, Any]]:
        return [e for e in await control.server_journal() if e["kind"] == "sip.rejected"]
    return probe
