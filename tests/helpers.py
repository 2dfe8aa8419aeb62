"""Test helpers shared across test modules (real servers, no mocks of our own parts)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from openai import OpenAI


async def until(probe: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition",
                interval: float = 0.02) -> Any:
    """Wait until ``probe()`` returns something truthy (sync or async) and return it.

    Tests order themselves on observable state (the journal, a file, a process table), never on a
    sleep of a guessed length.  ``timeout`` only bounds a hang: a busy CI box may take long to get there.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    event: Any = None
    error: Exception | None = None


@dataclass
class WebhookReceiver:
    """An app-like webhook endpoint that verifies every delivery with the SDK's ``unwrap``."""

    secret: str
    port: int = 0
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200
    hang: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        d = Delivery(body, dict(request.headers))
        try:
            d.event = OpenAI(api_key="sk-unused", webhook_secret=self.secret).webhooks.unwrap(body, request.headers)
        except Exception as exc:
            d.error = exc
        self.deliveries.append(d)
        self.arrived.set()
        if self.hang:
            await asyncio.sleep(3600)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text=json.dumps({"received": True}), content_type="application/json")

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post("/webhook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait(self, n: int = 1, timeout: float = 5.0) -> list[Delivery]:
        async with asyncio.timeout(timeout):
            while len(self.deliveries) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.deliveries


