"""Opus on real SIP calls: the softphone's and the mock's pjsua2 workers load the Opus codec (sipworker/opus)
and negotiate ``opus/48000/2`` over TLS + SDES-SRTP, as GPT-Live's SIP side does.

A caller that prefers Opus is answered Opus (pjsip answers in the offerer's order, whatever the answerer's own
order), the mock hears its words through Opus and the caller hears the reply; a G.711-only caller still gets
PCMU; a worker whose Opus cannot load runs G.711 and says why, and an outbound leg that goes out without Opus
is journaled. Needs ``sipworker/opus/build.sh`` to have run (CI runs it; without it these tests skip, or fail
under RTSIP_REQUIRE_SIP=1)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from harness.audio_compare import speech_segments, windowed_correlation
from harness.softphone import Softphone, SoftphoneError
from mock_api import audio
from mock_api.certs import ensure_certs
from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.running import RunningMock, running_mock
from mock_api.sip import SipIngress
from sipworker import codecs, opus
from sipworker.codecs import OPUS_FIRST
from sipworker.ipc import WorkerConfig
from sipworker.supervisor import WorkerPool, pool_configs
from sipworker.testing import Action, TestUas
from tests.helpers import until
from tests.sip_helpers import CALLER, REPLY, App, Receiver
from tests.test_live_sideband import Sideband
from tests.test_live_sip import live_app

_MISSING = opus.unavailable_reason()
pytestmark = [pytest.mark.sip]
if _MISSING and not os.environ.get("RTSIP_REQUIRE_SIP"):
    pytestmark.append(pytest.mark.skip(reason=f"Opus: {_MISSING}"))

# Opus is a perceptual codec: the waveform it gives back is close to, not equal to, what went in (G.711 scores
# > 0.99). Measured through Opus 48 kHz at 32 kbit/s and the 8 kHz bridge on both sides: median 0.88, windows
# 0.83-0.91; unrelated speech stays below 0.5.
OPUS_MIN_MEDIAN = 0.75
# The caller's turn detector (its energy floor, after Opus) spans the reply 270-310 ms shorter than
# speech_segments spans the clean fixture: measured 6,660-6,700 of 6,970 ms over 9 runs, one 20 ms sub-frame
# apart at each end. The slack covers that with room; what is cut from the tail still shows in the correlation.
HEARD_SPAN_SLACK_MS = 600


def test_opus_is_built_where_sip_is_required() -> None:
    assert _MISSING is None, _MISSING


async def media_entry(control: MockClient, call_id: str) -> dict[str, Any]:
    [media] = (await control.call(call_id)).of_kind("sip.media")
    return media.data


async def test_an_opus_caller_is_answered_opus_over_srtp_and_hears_the_reply(
        sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    assert all(w.codecs == list(OPUS_FIRST) and w.opus_unavailable is None for w in mock.sip.pool.workers)
    app = receiver.app = App(mock, action="hangup")
    async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone", srtp="mandatory",
                         codecs=OPUS_FIRST) as phone:
        call = await phone.call(mock.sip.uri(), audio=[CALLER.path])
        assert call.offered == list(OPUS_FIRST) and call.opus_unavailable is None
        assert await call.answered(timeout=15)
        await call.ended(timeout=30)
    await asyncio.wait_for(app.closed.wait(), 10)
    assert (call.codec, call.srtp) == ("opus", True)
    [d] = receiver.deliveries
    assert d.event.data.sip_media_security == "srtp"
    media = await media_entry(control, d.event.data.call_id)
    assert (media["codec"], media["srtp"], media["clock_rate"]) == ("opus", True, 48000)
    # the mock heard the caller through Opus...
    completed = app.of("conversation.item.input_audio_transcription.completed")
    assert completed and completed[0].transcript == CALLER.text
    # ...and the caller heard the model's reply through Opus
    assert call.recording
    heard = await asyncio.to_thread(audio.load_audio, call.recording, 8000)
    corr = windowed_correlation(REPLY.pcm(8000), heard, 8000)
    assert len(corr.scores) >= 2 and corr.median >= OPUS_MIN_MEDIAN, corr


async def test_a_live_app_hears_an_opus_caller_and_the_caller_hears_it(
        sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> None:
    """GPT-Live's own combination: SRTP required, Opus first."""
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(webhook_events=["live.transport.incoming"], script={
        "turns": [{"hears": "policy number", "says": REPLY.text, "audio": str(REPLY.path)}],
        "response_latency_s": 0.05})
    segments = speech_segments(REPLY.pcm(8000), 8000)
    reply_span_ms = segments[-1][1] - segments[0][0]
    async with live_app(mock, receiver, control) as live, Softphone(
            ca=mock.sip.certs.ca, state_dir=tmp_path / "phone", srtp="mandatory", codecs=OPUS_FIRST) as phone:
        # the caller's own turn detection tells when the reply has been heard to its end (a gap in a slow
        # stream may split it: the heard turns must span the reply's speech)
        call = await phone.call(mock.sip.uri(), audio=[CALLER.path], vad={"silence_duration_ms": 500})
        assert await call.answered(timeout=15)
        await asyncio.wait_for(live.attached.wait(), 15)
        sb = live.sideband
        assert sb is not None
        await sb.text_of("session.input_transcript.delta", CALLER.text)
        await sb.text_of("session.output_transcript.delta", REPLY.text)
        try:
            await until(lambda: heard_span_ms(call) >= reply_span_ms - HEARD_SPAN_SLACK_MS, timeout=30,
                        what="the caller hearing the whole reply")
        except AssertionError as exc:
            turns = [(e.kind, e.data["audio_ms"]) for e in call.events if e.kind.startswith("speech_")]
            raise AssertionError(f"{exc}: the reply spans {reply_span_ms} ms, the caller's turns {turns}") from None
        await call.hangup()
        await sb.until("session.closed")
    assert (call.codec, call.srtp) == ("opus", True)
    [view] = [v for v in await control.calls() if v.surface == "live"]
    [media] = view.of_kind("sip.media")
    assert (media.data["codec"], media.data["srtp"]) == ("opus", True)
    await call.ended(timeout=10)
    assert call.recording
    heard = await asyncio.to_thread(audio.load_audio, call.recording, 8000)
    corr = windowed_correlation(REPLY.pcm(8000), heard, 8000)
    assert len(corr.scores) >= 2 and corr.median >= OPUS_MIN_MEDIAN, corr


def heard_span_ms(call: Any) -> int:
    """From the first speech the caller's worker detected to the end of its last finished turn."""
    started = [int(e.data["audio_ms"]) for e in call.events if e.kind == "speech_started"]
    stopped = [int(e.data["audio_ms"]) for e in call.events if e.kind == "speech_stopped"]
    return stopped[-1] - started[0] if started and stopped else 0


async def test_a_g711_caller_still_gets_pcmu(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                            sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock, action="hangup")
    call = await sip_phone.call(mock.sip.uri(), audio=[CALLER.path])
    assert call.offered == ["PCMU", "PCMA"]
    assert await call.answered(timeout=15)
    await call.ended(timeout=30)
    await asyncio.wait_for(app.closed.wait(), 10)
    assert call.codec == "PCMU"
    [d] = receiver.deliveries
    media = await media_entry(control, d.event.data.call_id)
    assert (media["codec"], media["clock_rate"]) == ("PCMU", 8000)
    completed = app.of("conversation.item.input_audio_transcription.completed")
    assert completed and completed[0].transcript == CALLER.text


def m_audio(raw_invite: str) -> list[str]:
    """The offer's audio payload types by rtpmap name, in the offer's order (telephone-event left out)."""
    lines = raw_invite.splitlines()
    [m_line] = [line for line in lines if line.startswith("m=audio")]
    names = {}
    for line in lines:
        if line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:"):].partition(" ")
            names[pt] = rest.split("/")[0]
    return [names.get(pt, pt) for pt in m_line.split()[3:] if names.get(pt) != "telephone-event"]


async def test_the_answer_follows_the_offerers_order(tmp_path: Path) -> None:
    """The answerer prefers PCMU; each call's offer order (per call, else the phone's) decides the codec."""
    certs = ensure_certs(tmp_path / "uas")
    async with TestUas(tmp_path / "uas", certs=certs, srtp="optional", codecs=["PCMU", "PCMA", "opus"],
                       policy=lambda c: Action()) as uas, \
            Softphone(ca=certs.ca, state_dir=tmp_path / "phone", srtp="mandatory", codecs=OPUS_FIRST) as phone:
        for order, offer, codec in ((None, ["opus", "PCMU", "PCMA"], "opus"),
                                    (["PCMU", "opus"], ["PCMU", "opus"], "PCMU"),
                                    (["PCMA"], ["PCMA"], "PCMA")):
            call = await phone.call(uas.uri(), codecs=order)
            assert await call.answered(timeout=10)
            await call.wait_event("media_active", 10)
            incoming = next(c for c in uas.calls.values() if c.data["sip_call_id"] == call.sip_call_id)
            assert m_audio(incoming.data["raw"]) == offer
            assert (call.codec, call.srtp) == (codec, True)
            await call.hangup()
            await call.ended(10)


async def test_a_phone_without_opus_refuses_an_opus_call_before_dialling(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path / "uas")
    async with Softphone(ca=certs.ca, state_dir=tmp_path / "phone") as phone:
        with pytest.raises(SoftphoneError, match="codecs"):
            await phone.call("sip:x@127.0.0.1:5061;transport=tls", codecs=["opus", "PCMU"])
        with pytest.raises(ValueError, match="unknown codec 'G729'"):
            await phone.call("sip:x@127.0.0.1:5061;transport=tls", codecs=["G729"])


async def test_a_worker_whose_opus_cannot_load_runs_g711_and_says_why(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path / "uas")
    missing = tmp_path / "nowhere" / "_rtopus.so"
    template = WorkerConfig(name="no-opus", tls_port=0, ca_file=str(certs.ca), codecs=list(OPUS_FIRST), opus=True,
                            opus_library=str(missing))
    async with TestUas(tmp_path / "uas", certs=certs, codecs=OPUS_FIRST, policy=lambda c: Action()) as uas, \
            WorkerPool(pool_configs(1, template)) as pool:
        [worker] = pool.workers
        assert worker.alive and worker.codecs == ["PCMU", "PCMA"]
        assert worker.opus_unavailable and str(missing) in worker.opus_unavailable
        ref, reply = await pool.make_call(uas.uri(), record=None)
        assert (reply["codecs"], reply["dropped"]) == (["PCMU", "PCMA"], ["opus"])
        assert reply["opus_unavailable"] == worker.opus_unavailable
        incoming = await uas.wait_call()
        assert m_audio(incoming.data["raw"]) == ["PCMU", "PCMA"]
        await pool.call_command(ref, "hangup")


async def dial_out(mock: RunningMock, control: MockClient, trunk: TestUas) -> list[Any]:
    """An outbound Live call to ``trunk`` through the SDK, answered then hung up; the call's journal entries."""
    async with AsyncOpenAI(api_key="sk-app", base_url=mock.base_url, max_retries=0) as app:
        transport = {"type": "sip", "destination": "+14155550123",
                     "trunk": {"provider_url": f"sips:127.0.0.1:{trunk.pool.workers[0].ports['tls']}",
                               "caller_number": "+18005550100"}}
        created = await app.live.create(session={"model": "gpt-live-1"}, transport=transport)  # type: ignore[arg-type]
        live_id = created.session.id
        async with app.live.sideband.connect(session_id=live_id) as conn:
            sb = Sideband(conn)
            await sb.until("transport.answered", session_id=live_id)
            await until(lambda: any(ev.kind == "media_active" for c in trunk.calls.values() for ev in c.events),
                        what="the trunk's media up")
            await app.live.sessions.hangup(live_id)
            await sb.until("session.closed")
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    return list(view.entries)


async def test_an_outbound_live_leg_offers_opus_first(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                      tmp_path: Path) -> None:
    mock, _, control = sip_stack
    assert mock.sip is not None
    async with TestUas(tmp_path / "trunk", certs=ensure_certs(mock.sip.state_dir), srtp="optional",
                       codecs=["PCMU", "opus"], policy=lambda c: Action()) as trunk:
        entries = await dial_out(mock, control, trunk)
        [incoming] = trunk.calls.values()
    assert m_audio(incoming.data["raw"]) == list(OPUS_FIRST)
    [media] = [e for e in entries if e.kind == "sip.media"]
    assert (media.data["codec"], media.data["srtp"]) == ("opus", True)
    assert not [e for e in entries if e.kind == "sip.opus_unavailable"]


async def test_an_outbound_leg_without_opus_goes_g711_with_a_journal_warning(tmp_path: Path) -> None:
    async with running_mock(MockConfig()) as mock, MockClient(mock.url) as control, \
            SipIngress(mock.server, tmp_path / "mock", port=0, workers=1, tcp=False, udp=False, opus=False) as sip, \
            TestUas(tmp_path / "trunk", certs=ensure_certs(sip.state_dir), srtp="optional", codecs=OPUS_FIRST,
                    policy=lambda c: Action()) as trunk:
        entries = await dial_out(mock, control, trunk)
        [incoming] = trunk.calls.values()
    assert m_audio(incoming.data["raw"]) == ["PCMU", "PCMA"]
    [warning] = [e for e in entries if e.kind == "sip.opus_unavailable"]
    assert warning.data["offered"] == ["PCMU", "PCMA"] and "opus=false" in warning.data["reason"]
    [media] = [e for e in entries if e.kind == "sip.media"]
    assert media.data["codec"] == "PCMU"


def test_codec_orders_become_priorities_and_say_what_is_missing() -> None:
    have = ["PCMU/8000/1", "PCMA/8000/1", "G722/16000/1", "speex/8000/1"]
    plan = codecs.plan(["Opus", "pcmu", "PCMU", "G722"], have)
    assert (plan.offered, plan.dropped) == (["PCMU", "G722"], ["opus"])
    assert plan.priorities == {"PCMU/8000/1": 255, "G722/16000/1": 254}  # every other codec: 0, never offered
    with pytest.raises(ValueError, match="none of the codecs"):
        codecs.plan(["opus"], have)
    with pytest.raises(ValueError, match="unknown codec 'G729'"):
        WorkerConfig(codecs=["G729"])
    with pytest.raises(ValueError, match="rate 44100 is not an Opus rate"):
        WorkerConfig(opus=True, opus_rate=44100)
    cfg = WorkerConfig.from_json(WorkerConfig(codecs=["OPUS", "pcma"], opus=True, opus_rate=16000).to_json())
    assert (cfg.codecs, cfg.opus_settings().rate) == (["opus", "PCMA"], 16000)
