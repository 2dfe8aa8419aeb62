"""Network delay and jitter on a SIP call's audio (media_delay, media_jitter), heard in the caller's recording.

Real SIP/TLS calls over 127.0.0.1 from the softphone to the mock's SIP ingress, an SDK app answering; the caller
says one utterance and the scripted reply is a steady tone (tests/test_rtp_faults.py). Times are read on one
clock where they can be: the caller's recording and the worker's speech detection both count from the call's
media start, so "the tone began at least 2 × delay after the caller's turn was detected" needs no sleeping.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from harness.audio_compare import rms_dbfs
from harness.softphone import Softphone
from harness.timing import timing
from mock_api import audio
from mock_api.client import MockClient
from mock_api.fault_script import FaultScript, FrameLoss, MediaDelay
from mock_api.faults import Fault
from mock_api.media_delay import DelayLane
from mock_api.running import RunningMock
from tests.helpers import until
from tests.sip_helpers import Receiver
from tests.test_rtp_faults import QUIET_DBFS, TONE_MS, fired, loud_frames, tone_call

DELAY_S = 1.0
ORIGIN_MS = 150  # the journal's 200 and the worker's first received frame: the two origins, this close


def script_of(*faults: dict[str, Any]) -> FaultScript:
    return FaultScript.of((Fault.model_validate(f) for f in faults), key="1")


def test_delay_and_jitter_read_into_each_direction() -> None:
    assert script_of().media_delay is None and script_of().jitter_loss is None
    assert script_of({"name": "media_delay"}).media_delay == MediaDelay(0.3, 0.3)
    assert script_of({"name": "media_delay", "delay_s": 2, "direction": "to_model"}).media_delay == MediaDelay(0, 2)
    both = script_of({"name": "media_delay", "delay_s": 0.5, "direction": "to_caller"},
                     {"name": "media_jitter", "jitter_s": 0.1, "buffer_s": 0.04, "seed": 5})
    assert both.media_delay == MediaDelay(0.54, 0.0)  # the jitter buffer is delay to the caller too
    assert both.jitter_loss is not None and both.jitter_loss.rate == pytest.approx(0.6)  # later than 40 of 100 ms
    assert (both.jitter_loss.seed, both.jitter_loss.fault) == (5, "media_jitter")
    assert script_of({"name": "media_jitter", "jitter_s": 0.02, "buffer_s": 0.04}).jitter_loss == \
        FrameLoss(0.0, 0, "1", "media_jitter")  # a buffer deeper than the spread loses nothing
    # the same seed loses other frames to jitter than to media_loss
    jitter, loss = FrameLoss(0.5, 1, "1", "media_jitter"), FrameLoss(0.5, 1, "1")
    assert [jitter.lost(n) for n in range(50)] != [loss.lost(n) for n in range(50)]
    with pytest.raises(ValueError, match="direction"):
        Fault.model_validate({"name": "media_delay", "direction": "sideways"})
    with pytest.raises(ValueError, match="'media_jitter'"):
        Fault.model_validate({"name": "media_jitter", "jitter_s": -1})


async def test_a_lane_runs_its_actions_late_in_order_and_drops_them_when_closed() -> None:
    now, asked, done = [0.0], [], []
    errors: list[BaseException] = []
    due = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the lane's wait, ended by the test once its clock has moved
        asked.append(seconds)
        await due.wait()

    lane = DelayLane(0.05, errors.append, clock=lambda: now[0], sleep=sleep)

    def action(n: int) -> Any:
        async def run() -> None:
            if n == 2:
                raise RuntimeError("boom")
            done.append(n)
        return run

    for n in range(4):
        lane.put(action(n))
    await until(lambda: asked, what="the lane waiting")
    assert asked == [0.05] and done == []  # the first action waits its delay; the others queue behind it
    now[0] = 1.0
    due.set()
    await until(lambda: len(done) == 3, what="the due actions")
    assert done == [0, 1, 3] and [str(e) for e in errors] == ["boom"] and asked == [0.05]  # a failure strands none
    lane.close()
    lane.put(action(9))
    assert done == [0, 1, 3]


def reply_start_ms(call: Any) -> int:
    """When the reply tone began in the caller's recording, in ms from the call's media start."""
    return loud_frames(str(call.recording)).index(True) * 20


def turn_detected_ms(view: Any) -> int:
    """When the ingress's worker found the caller's turn over, in ms of the call's received audio."""
    (stopped,) = view.of_kind("sip.speech_stopped")
    return int(stopped.data["detected_ms"])


def model_lag_ms(view: Any) -> float:
    """How long after the worker found the turn over the mock's journal got it (its 200 as the common start)."""
    answered = next(e for e in view.of_kind("sip.sent") if e.data.get("status") == 200)
    (stopped,) = view.of_kind("sip.speech_stopped")
    return float(stopped.t_ms - answered.t_ms - int(stopped.data["detected_ms"]))


async def test_delay_both_ways_puts_the_reply_two_delays_later(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await tone_call(sip_stack, sip_phone, tmp_path, [{"name": "media_delay", "delay_s": DELAY_S}])
    assert model_lag_ms(view) >= DELAY_S * 1000 - ORIGIN_MS  # the model heard the turn's end a delay late
    late = reply_start_ms(call) - turn_detected_ms(view)
    assert 2 * DELAY_S * 1000 <= late <= 2 * DELAY_S * 1000 + 3000, late  # and the caller heard the reply late
    (figure,) = timing(view.entries).turn_latency_ms  # the run report's figure, on the caller's clock too
    assert abs(figure - late) <= 400, (figure, late)
    assert fired(view, "media_delay") == ["audio 1 s late to the caller, 1 s late to the model"]
    assert_tail_cut(call)


def assert_tail_cut(call: Any) -> None:
    """The app hangs up once the mock has sent the whole reply: what is still on its way is lost (what an app that
    hangs up on output_audio_buffer.stopped does to a caller on a slow path). At most the delay is lost, and some
    is unless the app's hang-up takes longer than the delay."""
    heard = sum(loud_frames(str(call.recording))) * 20
    assert TONE_MS - DELAY_S * 1000 - 300 <= heard <= TONE_MS - 200, heard


async def test_delay_to_the_caller_only_leaves_the_model_on_time(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await tone_call(sip_stack, sip_phone, tmp_path,
                                 [{"name": "media_delay", "delay_s": DELAY_S, "direction": "to_caller"}])
    assert model_lag_ms(view) < ORIGIN_MS
    late = reply_start_ms(call) - turn_detected_ms(view)
    assert DELAY_S * 1000 <= late <= DELAY_S * 1000 + 3000, late
    assert fired(view, "media_delay") == ["audio 1 s late to the caller, 0 s late to the model"]
    assert_tail_cut(call)


async def test_jitter_loses_the_frames_later_than_the_buffer(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    jitter = {"name": "media_jitter", "jitter_s": 0.1, "buffer_s": 0.06, "seed": 4}  # 40 % of the frames late
    call, view = await tone_call(sip_stack, sip_phone, tmp_path, [jitter])
    pcm = audio.load_audio(str(call.recording), 8000)  # 5 ms windows: a lost frame need not align with 20 ms ones
    quiet = [rms_dbfs(pcm[i:i + 80]) <= QUIET_DBFS for i in range(0, len(pcm) - 79, 80)]
    lo, hi = quiet.index(False), len(quiet) - quiet[::-1].index(False)
    assert 0.3 <= sum(quiet[lo:hi]) / (hi - lo) <= 0.5
    first, summary = fired(view, "media_jitter")
    assert first == "40% of the reply frames come later than the caller's jitter buffer, seed 4: they play as silence"
    lost, total = (int(w) for w in summary.split()[1:4:2])
    late = script_of(jitter).jitter_loss
    assert late is not None and late.rate == pytest.approx(0.4)
    assert total == TONE_MS // 20 and lost == sum(late.lost(n) for n in range(total))
    assert fired(view, "media_delay") == ["audio 0.06 s late to the caller, 0 s late to the model"]


async def test_an_outbound_gpt_live_leg_is_delayed_too(
        sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> None:
    """GPT-Live's outbound legs (POST /v1/live/sessions) get the same lanes: the journal says so from the leg's
    own lanes, and the callee still hears the reply."""
    from openai import AsyncOpenAI

    from tests.test_live_outbound import PASSWORD, REPLY, USER, answerer, dialing

    mock, _, control = sip_stack
    await control.configure(script={"turns": [{"hears": "policy number", "says": REPLY.text,
                                               "audio": str(REPLY.path)}], "response_latency_s": 0.05},
                            faults=[{"name": "media_delay", "delay_s": 0.5}])
    app = AsyncOpenAI(api_key="sk-app", base_url=mock.base_url, max_retries=0)
    try:
        callee = await answerer(mock, tmp_path, username=USER, password=PASSWORD)
        async with callee, dialing(app, callee.url) as (live_id, sb):
            await sb.until("transport.answered", session_id=live_id)
            await callee.wait_for(lambda: any(c.heard for c in callee.calls), 30)  # the reply, late, played
            await app.live.sessions.hangup(live_id)
            await sb.until("session.closed")
    finally:
        await app.close()
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    assert [e.data for e in view.of_kind("sip.media_delay")] == [{"to_caller_ms": 500.0, "to_model_ms": 500.0}]
    assert fired(view, "media_delay") == ["audio 0.5 s late to the caller, 0.5 s late to the model"]
