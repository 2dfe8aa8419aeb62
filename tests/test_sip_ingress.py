"""Real SIP/TLS calls from the softphone to the mock's SIP ingress, with an SDK app answering.

Everything crosses real sockets on 127.0.0.1: SIP/TLS and RTP between the softphone's and the
mock's worker processes, the signed webhook to an app-like receiver, REST accept and the
sideband WebSocket through the official SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from audio_fixtures import fixture
from harness.audio_compare import windowed_correlation
from harness.softphone import Softphone
from mock_api import audio
from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.running import RunningMock, SipOptions, running_mock
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


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[RunningMock, Receiver, MockClient]]:
    config = MockConfig(script=SCRIPT, ring_timeout_s=10)
    async with running_mock(config, sip=SipOptions(tmp_path / "mock", port=0, workers=2)) as mock:
        receiver = await Receiver(secret=mock.server.config.webhook_secret or "").start()
        mock.server.config = mock.server.config.model_copy(update={"webhook_url": receiver.url})
        async with MockClient(mock.url) as control:
            yield mock, receiver, control
        await receiver.stop()


@pytest.fixture
async def phone(stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> AsyncIterator[Softphone]:
    mock = stack[0]
    assert mock.sip is not None
    async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone") as p:
        yield p


async def test_happy_path_tls_call(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone) -> None:
    mock, receiver, control = stack
    assert mock.sip is not None
    app = receiver.app = App(mock, action="hangup")
    call = await phone.call(mock.sip.uri("proj_claims"), headers={"X-Claim-Id": "CLM-77"}, audio=[CALLER.path])
    assert await call.answered(timeout=10)
    await call.ended(timeout=30)
    await asyncio.wait_for(app.closed.wait(), 10)
    # the webhook carried the INVITE's headers, custom X- header included, auth headers dropped
    [d] = receiver.deliveries
    names = {h.name: h.value for h in d.event.data.sip_headers}
    assert names["X-Claim-Id"] == "CLM-77" and "Via" in names and "Call-ID" in names
    assert d.event.data.sip_media_security in ("rtp", "srtp")
    # the app heard the caller: VAD turn and the scripted transcript
    completed = app.of("conversation.item.input_audio_transcription.completed")
    assert completed and completed[0].transcript == CALLER.text
    assert app.of("output_audio_buffer.started") and app.of("output_audio_buffer.stopped")
    assert not app.of("response.output_audio.delta"), "SIP sidebands get no audio deltas by default"
    # the caller heard the reply fixture (windowed correlation, not one global score)
    assert call.recording and Path(call.recording).exists()
    heard = audio.load_audio(call.recording, 8000)
    corr = windowed_correlation(REPLY.pcm(8000), heard, 8000)
    assert corr.scores and corr.median >= 0.9, corr
    # the app hung up: the caller saw the BYE
    assert call.ended_by == "remote"
    view = await control.call(d.event.data.call_id)
    assert view.state == "ended" and view.end_reason == "hangup"
    kinds = view.kinds()
    for kind in ("sip.invite", "sip.sent", "webhook.attempt", "rest.request", "ws.connect", "sip.speech_started",
                 "sip.speech_stopped", "audio.out", "sip.ended"):
        assert kind in kinds, kind
    assert call.time_to_first_audio_ms is not None


async def test_vad_boundaries_follow_the_fixture(stack: tuple[RunningMock, Receiver, MockClient],
                                                 phone: Softphone) -> None:
    mock, receiver, _control = stack
    assert mock.sip is not None
    two = fixture("caller_two_utterances")
    app = receiver.app = App(mock)
    app.accept["audio"]["input"]["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 500,
                                                      "create_response": False}
    call = await phone.call(mock.sip.uri(), audio=[two.path])
    assert await call.answered(timeout=10)
    await asyncio.sleep(two.duration_ms / 1000 + 1.5)
    await call.hangup()
    await call.ended(timeout=10)
    started = app.of("input_audio_buffer.speech_started")
    stopped = app.of("input_audio_buffer.speech_stopped")
    assert len(started) == len(stopped) == len(two.speech_segments) == 2
    # audio ms count from the answer; the real API pads the start (300 ms) and ends after the silence (500 ms)
    for (seg_start, seg_end), s, e in zip(two.speech_segments, started, stopped, strict=True):
        assert abs((s.audio_start_ms + 300) - seg_start) <= 150 or s.audio_start_ms == 0
        assert abs((e.audio_end_ms - 500) - seg_end) <= 150


async def test_reject_codes_reach_the_caller(stack: tuple[RunningMock, Receiver, MockClient],
                                             phone: Softphone) -> None:
    mock, receiver, _control = stack
    assert mock.sip is not None
    receiver.app = App(mock, action="reject:486")
    busy = await phone.call(mock.sip.uri())
    assert not await busy.answered(timeout=10)
    assert busy.final_status == 486
    receiver.app = App(mock, action="reject")
    declined = await phone.call(mock.sip.uri())
    assert not await declined.answered(timeout=10)
    assert declined.final_status == 603


async def test_refer_reaches_the_caller(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone) -> None:
    mock, receiver, control = stack
    assert mock.sip is not None
    app = receiver.app = App(mock, action="refer:sip:agent@example.com")
    call = await phone.call(mock.sip.uri(), audio=[fixture("caller_ask_human").path])
    assert await call.answered(timeout=10)
    await call.ended(timeout=30)
    assert call.refer_target is not None and "sip:agent@example.com" in call.refer_target
    await asyncio.wait_for(app.closed.wait(), 10)
    views = await control.calls()
    assert views[-1].state == "referred" and views[-1].refer_target == "sip:agent@example.com"


async def test_caller_hangup_closes_the_websocket(stack: tuple[RunningMock, Receiver, MockClient],
                                                  phone: Softphone) -> None:
    mock, receiver, control = stack
    assert mock.sip is not None
    app = receiver.app = App(mock)
    call = await phone.call(mock.sip.uri())
    assert await call.answered(timeout=10)
    await asyncio.sleep(0.5)
    await call.hangup()
    await asyncio.wait_for(app.closed.wait(), 10)
    view = (await control.calls())[-1]
    assert view.state == "ended" and view.end_reason == "caller_hangup"
    assert "ws.close" in view.kinds()


async def test_unknown_user_gets_404(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone) -> None:
    mock, _receiver, control = stack
    assert mock.sip is not None
    call = await phone.call(mock.sip.uri("someone_else"))
    assert not await call.answered(timeout=10)
    assert call.final_status == 404
    assert await control.calls() == []
    assert any(e["kind"] == "sip.rejected" for e in await control.server_journal())
