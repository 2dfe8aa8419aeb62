"""The mock's SIP ingress under bad input and failure: each ends with a clear SIP status and a
journal entry, and the mock keeps serving. Real peers only: the softphone, and SIPp for SDP
offers the softphone would never send.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from audio_fixtures import fixture
from harness.audio_compare import windowed_correlation
from harness.softphone import Softphone
from mock_api import audio
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.helpers import until
from tests.sip_helpers import App, Receiver, rejected_in_journal, still_answers

REPLY = fixture("assistant_confirm_policy")


PHONE_WORKERS = 3  # the slot test fills 8 calls


SIPP_INVITE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="one INVITE with a chosen SDP offer">
  <send retrans="500"><![CDATA[
INVITE sip:proj_sipp@[remote_ip]:[remote_port];transport=tcp SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:proj_sipp@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port];transport=tcp>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="{status}" rrs="true"/>
  <send><![CDATA[
ACK sip:proj_sipp@[remote_ip]:[remote_port];transport=tcp SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:proj_sipp@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
</scenario>
"""
NO_COMMON_CODEC = """v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 97
a=rtpmap:97 AMR-WB/16000"""
MALFORMED = """v=0
this is not an SDP body"""


@pytest.mark.parametrize(("sdp", "status"), [(NO_COMMON_CODEC, 488), (MALFORMED, 400)])
async def test_bad_sdp_offers_get_a_clear_status(sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path,
                                                 sip_phone: Softphone, sdp: str, status: int) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None and shutil.which("sipp"), "SIPp (Debian: sip-tester) is needed"
    scenario = tmp_path / "invite.xml"
    scenario.write_text(SIPP_INVITE.replace("{sdp}", sdp).replace("{status}", str(status)))
    port = mock.sip.pool.workers[0].ports["tcp"]
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(scenario), "-t", "t1", "-m", "1", "-timeout", "10s", "-nostdin", "-nd",
        "-i", "127.0.0.1", "-p", "0", f"127.0.0.1:{port}", cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-2000:]  # SIPp got exactly the expected final status
    rejected = await until(rejected_in_journal(control), what="sip.rejected in the journal")
    assert rejected[-1]["data"]["status"] == status
    assert await control.calls() == []
    await still_answers(mock, receiver, sip_phone)  # the mock keeps serving real calls


async def test_no_answer_in_time_fails_the_call(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                               sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(faults=[{"name": "no_answer_timeout", "seconds": 1.0}], no_answer_status=480)
    receiver.app = None  # the app takes the webhook and never accepts
    call = await sip_phone.call(mock.sip.uri())
    assert not await call.answered(timeout=10)
    assert call.final_status == 480
    [view] = await control.calls()
    assert view.state == "no_answer" and view.sip_final_status == 480


async def test_dtmf_reaches_the_app(sip_stack: tuple[RunningMock, Receiver, MockClient],
        sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock)
    call = await sip_phone.call(mock.sip.uri())
    assert await call.answered(timeout=10)
    await until(lambda: app.of("session.created"), what="the app's WebSocket")  # DTMF events need a listener
    await call.send_dtmf("12#")
    await until(lambda: len(app.of("input_audio_buffer.dtmf_event_received")) >= 3, what="three DTMF events")
    assert [e.event for e in app.of("input_audio_buffer.dtmf_event_received")] == ["1", "2", "#"]
    await call.hangup()
    view = (await control.calls())[-1]
    assert [e.data["digit"] for e in view.of_kind("sip.dtmf")] == ["1", "2", "#"]


async def test_static_audio_garbles_media_only(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                               sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(faults=["static_audio"])
    app = receiver.app = App(mock, action="hangup")
    call = await sip_phone.call(mock.sip.uri(), audio=[fixture("caller_policy_number").path])
    assert await call.answered(timeout=10)
    await call.ended(timeout=30)
    # the WebSocket looks perfectly normal...
    done = app.of("response.done")
    assert done and all(d.response.status == "completed" for d in done)
    assert app.of("output_audio_buffer.stopped")
    # ...but the caller heard noise, not the reply
    assert call.recording
    heard = audio.load_audio(call.recording, 8000)
    assert audio.duration_ms(heard, 8000) > 1000
    corr = windowed_correlation(REPLY.pcm(8000), heard, 8000)
    assert corr.median < 0.5, corr


@pytest.mark.parametrize("sip_stack", ["native", "python"], indirect=True)
async def test_barge_in_clears_playback(sip_stack: tuple[RunningMock, Receiver, MockClient],
        sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    media = mock.sip.pool.configs[0].media
    for pool in (mock.sip.pool, sip_phone.pool):
        assert all(w.media == media for w in pool.workers)
    two = fixture("caller_two_utterances")
    # Order made certain, not raced: the first turn ends at ~2.8 s of the caller's audio and its reply is
    # generated at real time for ~6 s, so the second utterance (from 3.66 s) always starts while that
    # response is still in progress and playing.  At the default 8x speed the first reply is done
    # before 3.66 s and only a short reply to "Actually," could be cancelled, a race of tens of ms.
    await control.configure(script={"default_reply": "Sure, I can look into your bill for you. " * 2,
                                    "generation_speed": 1.0, "transcription_delay_s": 0.1})
    app = receiver.app = App(mock)
    call = await sip_phone.call(mock.sip.uri(), audio=[two.path])
    assert await call.answered(timeout=10)
    await call.wait_event("playback_done", two.duration_ms / 1000 + 15)
    await until(lambda: app.of("output_audio_buffer.cleared")
                and any(d.response.status == "cancelled" for d in app.of("response.done")),
                what="the barge-in's cancelled response and cleared playback")
    await call.hangup()
    await asyncio.wait_for(app.closed.wait(), 10)
    first = app.of("response.done")[0].response  # the long first reply is the one the caller cut
    assert first.status == "cancelled" and first.status_details.reason == "turn_detected"
    assert app.of("output_audio_buffer.cleared")
    view = (await control.calls())[-1]
    assert "sip.clear_playback" in view.kinds()


async def test_worker_killed_mid_call(sip_stack: tuple[RunningMock, Receiver, MockClient],
        sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    receiver.app = App(mock)
    call = await sip_phone.call(mock.sip.uri())
    assert await call.answered(timeout=10)
    [view] = await control.calls()
    worker = next(e.data["worker"] for e in view.entries if e.kind == "sip.invite")
    mock.sip.pool.kill(worker)
    failed = await control.wait_for(view.call_id, lambda v: v.terminal, timeout=10)
    assert failed.state == "failed" and "worker died" in (failed.end_reason or "")
    assert "sip.ended" in failed.kinds()
    await mock.sip.pool.wait_worker_alive(worker)
    await still_answers(mock, receiver, sip_phone)


async def test_calls_beyond_every_slot_are_refused(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                   sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    receiver.app = App(mock)
    slots = sum(w.max_calls for w in mock.sip.pool.workers)  # 2 workers x 4
    calls = []
    for _ in range(slots):
        # one at a time: the front worker frees a redirected call's slot a moment after its 302, so a
        # burst faster than that can meet 486 at the front door, as it would at a real trunk
        calls.append(await sip_phone.call(mock.sip.uri()))
        assert await calls[-1].answered(timeout=15), (calls[-1].final_status, calls[-1].final_reason)
    extra = await sip_phone.call(mock.sip.uri())
    assert not await extra.answered(timeout=10)
    assert extra.final_status is not None and extra.final_status >= 400
    # the worker answers 486 first and tells the mock after: wait for the journal, do not race it
    await until(rejected_in_journal(control), what="sip.rejected in the journal")
    journal = await control.server_journal()
    assert any(e["kind"] == "sip.redirected" for e in journal)  # the front door spread the calls
    for c in calls:
        await c.hangup()
    assert len(await control.calls()) == slots


async def test_tls_with_a_wrong_ca_fails(sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> None:
    mock, _receiver, control = sip_stack
    assert mock.sip is not None
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with Softphone(ca=other, state_dir=tmp_path / "p2") as wrong:
        call = await wrong.call(mock.sip.uri())
        assert not await call.answered(timeout=10)
        assert call.final_status == 503
    assert await control.calls() == []
