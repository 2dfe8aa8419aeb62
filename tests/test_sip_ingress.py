"""Real SIP/TLS calls from the softphone to the mock's SIP ingress, with an SDK app answering.

Everything crosses real sockets on 127.0.0.1: SIP/TLS and RTP between the softphone's and the
mock's worker processes, the signed webhook to an app-like receiver, REST accept and the
sideband WebSocket through the official SDK.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from audio_fixtures import fixture
from harness.audio_compare import windowed_correlation
from harness.softphone import Softphone
from mock_api import audio
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.helpers import until
from tests.sip_helpers import CALLER, REPLY, App, Receiver, rejected_in_journal


async def test_happy_path_tls_call(sip_stack: tuple[RunningMock, Receiver, MockClient],
        sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock, action="hangup")
    call = await sip_phone.call(mock.sip.uri("proj_claims"), headers={"X-Claim-Id": "CLM-77"}, audio=[CALLER.path])
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
    assert call.recording
    assert await asyncio.to_thread(Path(call.recording).exists)
    heard = audio.load_audio(call.recording, 8000)
    corr = windowed_correlation(REPLY.pcm(8000), heard, 8000)
    assert corr.scores and corr.median >= 0.9, corr
    # the app hung up: the caller saw the BYE
    assert call.ended_by == "remote"
    # the mock's worker reports the leg's end over its own pipe, maybe after the caller saw the BYE
    view = await control.wait_for(d.event.data.call_id, lambda v: "sip.ended" in v.kinds(), timeout=15)
    assert view.state == "ended" and view.end_reason == "hangup"
    kinds = view.kinds()
    for kind in ("sip.invite", "sip.sent", "webhook.attempt", "rest.request", "ws.connect", "sip.speech_started",
                 "sip.speech_stopped", "audio.out", "sip.ended"):
        assert kind in kinds, kind
    assert call.time_to_first_audio_ms is not None


async def test_vad_boundaries_follow_the_fixture(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                 sip_phone: Softphone) -> None:
    mock, receiver, _control = sip_stack
    assert mock.sip is not None
    two = fixture("caller_two_utterances")
    app = receiver.app = App(mock)
    app.accept["audio"]["input"]["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 500,
                                                      "create_response": False}
    call = await sip_phone.call(mock.sip.uri(), audio=[two.path])
    assert await call.answered(timeout=10)
    await call.wait_event("playback_done", two.duration_ms / 1000 + 15)
    # the last turn ends 500 ms of silence after the caller's last word
    await until(lambda: len(app.of("input_audio_buffer.speech_stopped")) >= 2, what="the second speech_stopped")
    await call.hangup()
    await call.ended(timeout=10)
    started = app.of("input_audio_buffer.speech_started")
    stopped = app.of("input_audio_buffer.speech_stopped")
    assert len(started) == len(stopped) == len(two.speech_segments) == 2
    # audio ms count from the answer; the real API pads the start (300 ms) and ends after the silence (500 ms)
    for (seg_start, seg_end), s, e in zip(two.speech_segments, started, stopped, strict=True):
        assert abs(s.audio_start_ms - max(0, seg_start - 300)) <= 150
        assert abs((e.audio_end_ms - 500) - seg_end) <= 150


async def test_reject_codes_reach_the_caller(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                             sip_phone: Softphone) -> None:
    mock, receiver, _control = sip_stack
    assert mock.sip is not None
    receiver.app = App(mock, action="reject:486")
    busy = await sip_phone.call(mock.sip.uri())
    assert not await busy.answered(timeout=10)
    assert busy.final_status == 486
    receiver.app = App(mock, action="reject")
    declined = await sip_phone.call(mock.sip.uri())
    assert not await declined.answered(timeout=10)
    assert declined.final_status == 603


async def test_refer_reaches_the_caller(sip_stack: tuple[RunningMock, Receiver, MockClient],
        sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock, action="refer:sip:agent@example.com")
    call = await sip_phone.call(mock.sip.uri(), audio=[fixture("caller_ask_human").path])
    assert await call.answered(timeout=10)
    await call.ended(timeout=30)
    assert call.refer_target is not None and "sip:agent@example.com" in call.refer_target
    await asyncio.wait_for(app.closed.wait(), 10)
    # the softphone declines the transfer (603: it only reports the target) and hangs up: the REFER did not
    # transfer the call, so it went back to active and ended with the caller's BYE
    view = (await control.calls())[-1]
    assert view.state == "ended" and view.end_reason == "caller_hangup"
    assert view.refer_target == "sip:agent@example.com"
    assert [e.data["code"] for e in view.of_kind("sip.refer_status") if e.data["final"]] == [603]
    back = [e.data for e in view.of_kind("state") if e.data["event"] == "referdone"]
    assert back == [{**back[0], "before": "referring", "after": "active", "refer_status": 603}]


async def test_caller_hangup_closes_the_websocket(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                  sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock)
    call = await sip_phone.call(mock.sip.uri())
    assert await call.answered(timeout=10)
    status = await control.sip()  # the control API shows the live call on a live worker
    assert status["uri"] == mock.sip.uri() and status["calls"] == 1
    assert sum(w["calls"] for w in status["workers"]) == 1
    assert all(w["alive"] and w["pid"] and f":{w['ports']['tls']};transport=tls" in w["contact"]
               for w in status["workers"])
    await until(lambda: app.of("session.created"), what="the app's WebSocket")  # the socket is open
    await call.hangup()
    await asyncio.wait_for(app.closed.wait(), 10)
    view = (await control.calls())[-1]
    assert view.state == "ended" and view.end_reason == "caller_hangup"
    assert "ws.close" in view.kinds()
    assert (await control.sip())["calls"] == 0


async def test_unknown_user_gets_404(sip_stack: tuple[RunningMock, Receiver, MockClient],
        sip_phone: Softphone) -> None:
    mock, _receiver, control = sip_stack
    assert mock.sip is not None
    call = await sip_phone.call(mock.sip.uri("someone_else"))
    assert not await call.answered(timeout=10)
    assert call.final_status == 404
    assert await control.calls() == []
    # the worker refuses first and tells the mock after: wait for the journal, do not race it
    await until(rejected_in_journal(control), what="sip.rejected in the journal")
