"""A GPT-Live app answering a real SIP/TLS call: the softphone (its own pjsua2 processes) calls the mock's
ingress, the app takes ``live.transport.incoming`` (verified with the SDK's ``unwrap``), accepts with
``client.live.sessions.accept``, attaches with the SDK's sideband, hears the caller's words, sends DTMF the
softphone receives over RTP, gets the caller's keys, and sees ``session.closed`` ``remote_hangup`` when the
caller hangs up. Every event on the sideband parses with the SDK's ``ConnectServerEvent``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from audio_fixtures import fixture
from harness.softphone import Softphone
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.helpers import until
from tests.sip_helpers import Receiver
from tests.test_live_sideband import LIVE_SESSION, Sideband

pytestmark = pytest.mark.sip

REPLY = "Thanks, I found your policy."
CALLER = fixture("caller_policy_number")


class LiveApp:
    """What a GPT-Live phone app does: take the webhook, accept through Live, drive the call on its sideband."""

    def __init__(self, mock: RunningMock) -> None:
        self.client = AsyncOpenAI(api_key="sk-app", base_url=mock.base_url, max_retries=0)
        self.webhooks: list[Any] = []
        self.sideband: Sideband | None = None
        self.attached = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def on_webhook(self, event: Any) -> None:
        self.webhooks.append(event)
        if event.type != "live.transport.incoming":
            return
        await self.client.live.sessions.accept(event.data.session_id, session=LIVE_SESSION)  # type: ignore[arg-type]
        self.task = asyncio.create_task(self.drive(event.data.session_id))

    async def drive(self, session_id: str) -> None:
        async with self.client.live.sideband.connect(session_id=session_id) as conn:
            self.sideband = Sideband(conn)
            self.attached.set()
            await asyncio.Event().wait()  # held open until the test is done with it


class LiveReceiver(Receiver):
    live: LiveApp | None = None

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)
        d = self.deliveries[-1]
        if d.error is None and self.live is not None:
            await self.live.on_webhook(d.event)
        return response


@contextlib.asynccontextmanager
async def live_app(mock: RunningMock, receiver: Receiver, control: MockClient) -> AsyncIterator[LiveApp]:
    """An SDK-based Live app taking the mock's webhooks (in place of the stack's plain receiver) for one test;
    its sideband, receiver and client are closed whatever the test does."""
    live = LiveApp(mock)
    receiver.app = None
    app_receiver = await LiveReceiver(secret=mock.server.config.webhook_secret or "").start()
    app_receiver.live = live
    await control.configure(webhook_url=app_receiver.url)
    try:
        yield live
    finally:
        if live.task is not None:
            live.task.cancel()
        await app_receiver.stop()
        await live.client.close()


async def test_a_live_app_takes_a_real_sip_call(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(webhook_events=["live.transport.incoming"],
                            script={"turns": [{"hears": "policy number", "says": REPLY}], "response_latency_s": 0.05})
    async with live_app(mock, receiver, control) as live:
        call = await sip_phone.call(mock.sip.uri(), audio=[CALLER.path])
        assert await call.answered(timeout=15)
        [incoming] = live.webhooks
        assert incoming.data.type == "sip" and incoming.data.session_id.startswith("live_")
        await asyncio.wait_for(live.attached.wait(), 15)
        sb = live.sideband
        assert sb is not None
        await sb.until("session.started")
        heard = await sb.text_of("session.input_transcript.delta", CALLER.text)
        said = await sb.text_of("session.output_transcript.delta", REPLY)
        assert heard[-1]["end_ms"] <= said[0]["start_ms"]
        await sb.conn.send({"type": "transport.dtmf.send", "event": "5", "event_id": "dtmf_1"})
        sent = await sb.until("transport.dtmf.sent")
        assert (sent["event"], sent.get("client_event_id")) == ("5", "dtmf_1")
        await until(lambda: "5" in call.dtmf_received, what="the softphone receiving the app's key over RTP")
        await call.send_dtmf("7")
        assert (await sb.until("transport.dtmf.received"))["event"] == "7"
        await call.hangup()
        closed = await sb.until("session.closed")
        assert closed["reason"] == "remote_hangup" and closed["usage"]["seconds"] >= 0
        view = (await control.calls())[-1]
        assert (view.surface, view.state) == ("live", "ended")
        kinds = view.kinds()
        assert "live.settings" in kinds and "live.heard" in kinds and "sip.dtmf" in kinds
