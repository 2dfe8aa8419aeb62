"""Media faults at the RTP layer, seen where a caller would notice them: in the softphone's recording.

Real SIP/TLS calls over 127.0.0.1 from the softphone to the mock's SIP ingress, an SDK app answering. The
caller says one utterance; the scripted reply is a steady tone, so any hole the fault cuts into what the caller
heard shows as a run of silent frames inside the tone. Windows count from the 200 the mock sent: the caller's
recording starts with its media, within a frame or two of that.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.audio_compare import rms_dbfs
from harness.softphone import Softphone, SoftphoneCall
from mock_api import audio
from mock_api.client import MockClient
from mock_api.fault_script import FaultScript, FrameLoss, silence_lost
from mock_api.faults import Fault
from mock_api.running import RunningMock
from tests.helpers import until
from tests.sip_helpers import CALLER, App, Receiver

FRAME = 320  # one 20 ms frame of 8 kHz L16
TONE_MS = 8000
QUIET_DBFS = -50.0  # the tone is at -20 dBFS; a hole in it is digital silence


def tone_script(tmp_path: Path) -> dict[str, Any]:
    """The caller's utterance answered by a steady tone (reply starts about 6 s after the answer)."""
    wav = audio.write_wav(tmp_path / "tone.wav", audio.tone(TONE_MS, 8000, freq=440.0, dbfs=-20.0), 8000)
    return {"turns": [{"hears": CALLER.text, "says": "A long tone.", "audio": str(wav)}],
            "transcription_delay_s": 0.1}


def loud_frames(recording: str) -> list[bool]:
    """Per 20 ms frame of the caller's recording: did the tone play in it."""
    pcm = audio.load_audio(recording, 8000)
    return [rms_dbfs(pcm[i:i + FRAME]) > QUIET_DBFS for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def tone_span(loud: list[bool]) -> tuple[int, int]:
    first = loud.index(True)
    return first, len(loud) - loud[::-1].index(True)


def longest_hole(loud: list[bool]) -> tuple[int, int]:
    """(start frame, length in frames) of the longest quiet run inside the tone."""
    lo, hi = tone_span(loud)
    best, start = (lo, 0), None
    for i in range(lo, hi + 1):
        if i < hi and not loud[i]:
            start = i if start is None else start
        elif start is not None:
            best = max(best, (start, i - start), key=lambda b: b[1])
            start = None
    return best


async def answered_tone_call(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone, tmp_path: Path,
                             faults: list[dict[str, Any]], audio: list[str | os.PathLike[str]] | None = None
                             ) -> SoftphoneCall:
    """A call under ``faults``, answered: its app hangs up once the reply tone has played; the caller plays
    ``audio`` from the start (or says its part later)."""
    mock, receiver, control = stack
    assert mock.sip is not None
    await control.configure(script=tone_script(tmp_path), faults=faults)
    receiver.app = App(mock, action="hangup")
    call = await phone.call(mock.sip.uri(), audio=audio)
    assert await call.answered(timeout=10)
    return call


async def leg_ended(control: MockClient) -> Any:
    """The last call's view once its SIP leg's end is journaled (a fault's summary goes with it, sip.ended)."""

    async def ended() -> Any:
        view = (await control.calls())[-1]
        return view if view.of_kind("sip.ended") else None

    return await until(ended, what="the SIP leg's end in the mock's journal")


async def tone_call(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone, tmp_path: Path,
                    faults: list[dict[str, Any]]) -> tuple[SoftphoneCall, Any]:
    """One call: the caller speaks, the reply tone plays, the app hangs up when the reply has played."""
    call = await answered_tone_call(stack, phone, tmp_path, faults, audio=[CALLER.path])
    await call.ended(timeout=60)
    assert stack[1].app is not None
    await asyncio.wait_for(stack[1].app.closed.wait(), 10)
    assert call.recording
    return call, await leg_ended(stack[2])


def fired(view: Any, name: str) -> list[str]:
    return [e.data["detail"] for e in view.of_kind("fault.fired") if e.data["fault"] == name]


# ---- the sans-I/O part: what the script asks, and when ----------------------------------------------------


def test_media_faults_read_into_timed_steps() -> None:
    script = FaultScript.of(Fault.model_validate(f) for f in (
        {"name": "media_hold", "at_s": 3, "duration_s": 2}, {"name": "media_one_way", "direction": "to_model"},
        {"name": "media_silence", "at_s": 1, "duration_s": 0.5}))
    steps = [(s.at_s, s.fault, s.action, dict(s.gate), s.end) for s in script.media_steps]
    assert steps == [
        (1.0, "media_silence", "gate", {"silent": True}, False),
        (1.5, "media_silence", "gate", {"silent": False}, True),
        (2.0, "media_one_way", "gate", {"to_model": False}, False),
        (3.0, "media_hold", "hold", {}, False),
        (5.0, "media_hold", "unhold", {}, True),  # at one time, in the registry's order
        (5.0, "media_one_way", "gate", {"to_model": True}, True),
    ]


@pytest.mark.parametrize("bad", [{"name": "media_loss", "rate": 1.5}, {"name": "media_hold", "at_s": -1},
                                 {"name": "media_one_way", "direction": "both"},
                                 {"name": "media_silence", "duration_s": "long"}])
def test_media_fault_parameters_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=repr(bad["name"])):
        Fault.model_validate(bad)


async def test_bad_media_fault_is_refused_in_the_control_api_shape(mock: RunningMock) -> None:
    body = {"faults": [{"name": "media_loss", "rate": 2}]}
    async with aiohttp.ClientSession() as http, http.put(mock.url + "/_mock/config", json=body) as resp:
        answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["error"]["param"].startswith("faults[0]")
    assert "'rate' is a number from 0 to 1, not 2" in answer["error"]["message"]
    assert mock.server.config.faults == []


def test_frame_loss_is_seeded_and_split_frames_are_judged_once() -> None:
    loss = FrameLoss(rate=0.3, seed=7, key="1")
    pcm = audio.tone(2000, 8000)
    whole, lost = silence_lost(pcm, 0, loss)
    # the same audio in uneven pieces loses the same frames
    pieces, offset, lost_pieces = [], 0, 0
    for size in (100, 1234, 3000, 7, len(pcm)):
        chunk = pcm[offset:offset + size]
        out, n = silence_lost(chunk, offset, loss)
        pieces.append(out)
        offset, lost_pieces = offset + len(chunk), lost_pieces + n
    assert b"".join(pieces) == whole and lost_pieces == lost
    expected = [n for n in range(len(pcm) // FRAME) if loss.lost(n)]
    assert lost == len(expected) and 0.15 < lost / (len(pcm) // FRAME) < 0.45
    assert all(whole[n * FRAME:(n + 1) * FRAME] == bytes(FRAME) for n in expected)
    assert FrameLoss(0.3, 8, "1").lost != loss.lost and silence_lost(pcm, 0, FrameLoss(0.3, 8, "1"))[0] != whole


# ---- real calls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sip_stack", ["native", "python"], indirect=True)
async def test_media_silence_cuts_a_silent_window_into_the_reply(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await tone_call(sip_stack, sip_phone, tmp_path,
                                 [{"name": "media_silence", "at_s": 8.5, "duration_s": 2.0}])
    loud = loud_frames(str(call.recording))
    start, length = longest_hole(loud)
    assert abs(length * 20 - 2000) <= 200, (start, length)  # the window, to a frame or few
    assert abs(start * 20 - 8500) <= 600, (start, length)
    assert fired(view, "media_silence") == ["digital silence to the caller for 2 s",
                                            "digital silence to the caller ended after 2 s"]
    rtp = next(e for e in reversed(call.events) if e.kind == "call_ended").data["rtp"]
    assert rtp["rx_pkt"] >= (call.marks["ended"] - call.marks["media"]) / 20 * 0.9  # RTP kept flowing


async def test_media_one_way_to_caller_loses_the_window_of_reply(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await tone_call(sip_stack, sip_phone, tmp_path,
                                 [{"name": "media_one_way", "at_s": 8.5, "duration_s": 2.0}])
    loud = loud_frames(str(call.recording))
    start, length = longest_hole(loud)
    assert abs(length * 20 - 2000) <= 200 and abs(start * 20 - 8500) <= 600, (start, length)
    lo, hi = tone_span(loud)
    assert abs((hi - lo - length) * 20 - (TONE_MS - 2000)) <= 300  # lost, not delayed: the tone ends on time
    assert fired(view, "media_one_way") == ["one-way audio, nothing to caller for 2 s",
                                            "one-way audio, nothing to caller ended after 2 s"]


async def test_media_one_way_to_model_the_model_hears_nothing(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(script=tone_script(tmp_path),
                            faults=[{"name": "media_one_way", "at_s": 0, "duration_s": 30, "direction": "to_model"}])
    app = receiver.app = App(mock)
    call = await sip_phone.call(mock.sip.uri(), audio=[CALLER.path])
    assert await call.answered(timeout=10)
    await call.wait_event("playback_done", CALLER.duration_ms / 1000 + 15)  # the caller said all of it
    view = await until(lambda: _with_media_fired(control), what="the one-way gate in the journal")
    await call.hangup()
    await call.ended(timeout=10)
    view = (await control.calls())[-1]
    assert "sip.speech_started" not in view.kinds() and not app.of("input_audio_buffer.speech_started")
    assert not any(loud_frames(str(call.recording))), "no reply: the model never heard the caller"
    assert fired(view, "media_one_way") == ["one-way audio, nothing to model for 30 s"]


async def _with_media_fired(control: MockClient) -> Any:
    view = (await control.calls())[-1]
    return view if fired(view, "media_one_way") else None


@pytest.mark.parametrize("sip_stack", ["native", "python"], indirect=True)
async def test_media_hold_reinvites_the_caller_on_hold_and_back(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await tone_call(sip_stack, sip_phone, tmp_path,
                                 [{"name": "media_hold", "at_s": 8.5, "duration_s": 2.0}])
    # the caller saw the re-INVITEs: its media went on hold (the far end holds it: remote_hold) and back
    states = [e.data["status"] for e in call.events if e.kind == "media_state"]
    assert states == ["active", "remote_hold", "active"], states
    start, length = longest_hole(loud_frames(str(call.recording)))
    assert abs(length * 20 - 2000) <= 300 and abs(start * 20 - 8500) <= 600, (start, length)
    # the journal: the fault's two steps, the two re-INVITEs, the ingress's media going on hold and back
    assert fired(view, "media_hold") == ["re-INVITE on hold (a=sendonly) for 2 s",
                                         "re-INVITE resumes (a=sendrecv) after 2 s"]
    edges = [e.data.get("edge") for e in view.of_kind("fault.fired") if e.data.get("fault") == "media_hold"]
    assert edges == ["start", "end"]  # the report shades the window between them
    assert [e.data.get("request") for e in view.of_kind("sip.sent")].count("INVITE") == 2
    media = [e.data["state"] for e in view.of_kind("sip.state") if str(e.data["state"]).startswith("media")]
    assert media == ["media active", "media local_hold", "media active"], media


async def test_media_loss_silences_a_seeded_share_of_reply_frames(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await tone_call(sip_stack, sip_phone, tmp_path, [{"name": "media_loss", "rate": 0.25, "seed": 3}])
    # 5 ms windows: a lost 20 ms frame need not line up with the recording's frames
    pcm = audio.load_audio(str(call.recording), 8000)
    quiet = [rms_dbfs(pcm[i:i + 80]) <= QUIET_DBFS for i in range(0, len(pcm) - 79, 80)]
    lo, hi = quiet.index(False), len(quiet) - quiet[::-1].index(False)
    share = sum(quiet[lo:hi]) / (hi - lo)
    assert 0.15 <= share <= 0.35, share
    first, summary = fired(view, "media_loss")
    assert first == "rate 0.25, seed 3: lost reply frames play as silence"
    lost, total = (int(w) for w in summary.split()[1:4:2])
    assert total == TONE_MS // 20 and lost == sum(FrameLoss(0.25, 3, "1").lost(n) for n in range(total))



async def test_media_loss_and_hold_reach_a_gpt_live_call_too(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone) -> None:
    """Live's reply audio takes its own path to the caller; the same faults apply on it."""
    from tests.test_live_sip import live_app

    mock, receiver, control = sip_stack
    assert mock.sip is not None
    await control.configure(webhook_events=["live.transport.incoming"],
                            script={"turns": [{"hears": "policy number", "says": "Thanks, I found your policy."}],
                                    "response_latency_s": 0.05},
                            faults=[{"name": "media_loss", "rate": 0.5, "seed": 9},
                                    {"name": "media_hold", "at_s": 1.0, "duration_s": 0.5}])
    async with live_app(mock, receiver, control) as live:
        call = await sip_phone.call(mock.sip.uri(), audio=[CALLER.path])
        assert await call.answered(timeout=15)
        await asyncio.wait_for(live.attached.wait(), 15)
        assert live.sideband is not None
        await live.sideband.until("session.output_transcript.delta")
        await until(lambda: [e.data["status"] for e in call.events if e.kind == "media_state"][-2:]
                    == ["remote_hold", "active"], what="the caller held and resumed")
        await until(lambda: any(e.kind == "playback_done" for e in call.events), what="the caller's audio played")
        await call.hangup()
        await call.ended(timeout=10)
        view = await until(lambda: _loss_summary(control), what="media_loss's summary in the journal")
    lost, total = view
    assert total > 0 and lost == sum(FrameLoss(0.5, 9, "1").lost(n) for n in range(total))


async def _loss_summary(control: MockClient) -> tuple[int, int] | None:
    view = (await control.calls())[-1]
    found = [d for d in fired(view, "media_loss") if d.startswith("lost ")]
    if not found:
        return None
    lost, total = (int(w) for w in found[0].split()[1:4:2])
    return lost, total


async def test_an_outbound_live_leg_is_held_and_resumed(
        sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> None:
    """The mock dials out (GPT-Live's outbound call): the hold's times count from the callee's 200."""
    from openai import AsyncOpenAI

    from tests.test_live_outbound import PASSWORD, USER, answerer, dialing

    mock, _, control = sip_stack
    await control.configure(faults=[{"name": "media_hold", "at_s": 0.5, "duration_s": 0.5}])
    app = AsyncOpenAI(api_key="sk-app", base_url=mock.base_url, max_retries=0)
    try:
        async with await answerer(mock, tmp_path, username=USER, password=PASSWORD) as callee, \
                dialing(app, callee.url) as (live_id, sb):
            await sb.until("transport.answered", session_id=live_id)
            view = await until(lambda: _media_states(control, live_id), what="the hold and the resume")
            await app.live.sessions.hangup(live_id)
            await sb.until("session.closed")
    finally:
        await app.close()
    assert view == ["media active", "media local_hold", "media active"]


async def _media_states(control: MockClient, live_id: str) -> list[str] | None:
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    states = [str(e.data["state"]) for e in view.of_kind("sip.state") if str(e.data["state"]).startswith("media")]
    return states if len(states) >= 3 and len(fired(view, "media_hold")) == 2 else None
