"""The caller's RTP changes SSRC mid-call (failure mode 28's other half: a carrier's SBC fails over).

The softphone goes on sending as a new source (``SoftphoneCall.new_ssrc``: a new SSRC and sequence on the same
stream and port, no re-INVITE, written into pjmedia's RTP session); the mock's SIP worker reads the SSRC its
stream hears and journals it (``sip.ssrc``). What the real service does then is unknown, so the mock's answer
is a fault: none (the audio goes on, as pjmedia's does), ``bye`` or ``silence``. Real SIP/TLS calls over
127.0.0.1 and an SDK app; the reply is a steady tone, so what the caller heard is read from its recording.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness.caller_steps import Act, plan
from harness.journal_view import JournalView
from harness.report.ladder import ladder_rows
from harness.report.waveform import waveform
from harness.scenario import CallSpec, Step
from harness.softphone import Softphone, SoftphoneCall, SoftphoneError
from mock_api.client import MockClient
from mock_api.fault_script import FaultScript
from mock_api.faults import Fault
from mock_api.running import RunningMock
from sipworker.rtp_session import SsrcWatch, stream_address
from tests.sip_helpers import CALLER, Receiver
from tests.test_rtp_faults import answered_tone_call, fired, loud_frames, tone_call

ROOT = Path(__file__).resolve().parent.parent


# ---- the sans-I/O parts --------------------------------------------------------------------------------


def test_a_stream_is_found_by_its_port_name() -> None:
    assert stream_address("strm0x55d0c0a01230") == 0x55D0C0A01230
    assert stream_address("strm55d0c0a01230") == 0x55D0C0A01230
    assert stream_address("sipworker-port3") is None and stream_address("Master/sound") is None


@dataclass
class _Look:
    """What the watch reads of a stream's sessions: its address, packets received, the SSRC heard, the pin."""

    stream: int
    received: int
    heard_ssrc: int
    pinned: bool = False

    def follow_peer(self) -> None:
        self.pinned = False


def test_the_watch_learns_the_ssrc_then_tells_each_change() -> None:
    watch = SsrcWatch()
    first = _Look(1, 0, 0xAAAA, pinned=True)  # the SDP's a=ssrc pins peer_ssrc before any packet
    assert watch.look(first) is None and not first.pinned  # taken: followed from now on
    assert watch.look(_Look(1, 0, 0xAAAA)) is None  # nothing heard since: not learnt yet
    assert watch.look(_Look(1, 5, 0xAAAA)) == (None, 0xAAAA)  # learnt from packets
    assert watch.look(_Look(1, 9, 0xAAAA)) is None
    assert watch.look(_Look(1, 12, 0xBBBB)) == (0xAAAA, 0xBBBB)  # a change
    assert watch.look(_Look(1, 15, 0xBBBB)) is None
    # a re-INVITE's new stream is pinned to the SDP's SSRC again: followed, learnt, compared with the last heard
    assert watch.look(_Look(2, 0, 0xAAAA, pinned=True)) is None
    assert watch.look(_Look(2, 3, 0xBBBB)) is None  # the same source as before the re-INVITE
    assert watch.look(_Look(2, 6, 0xCCCC)) == (0xBBBB, 0xCCCC)


def test_a_new_ssrc_step_is_one_act_and_needs_a_sip_call() -> None:
    walk = plan([Step(new_ssrc=True)], 30.0)
    assert next(walk) == Act("over")
    assert walk.send(False) == Act("answered", (pytest.approx(30.0, abs=1),))
    assert walk.send(None) == Act("new_ssrc")
    with pytest.raises(ValidationError, match="new_ssrc step needs mode: sip"):
        CallSpec.model_validate({"steps": [{"new_ssrc": True}]})
    with pytest.raises(ValidationError, match="new_ssrc"):
        Step.model_validate({"new_ssrc": False})
    # nor can a SIP call carry faults of its own: the mock makes it from the INVITE (they went unread before)
    with pytest.raises(ValidationError, match="sip call takes no faults of its own"):
        CallSpec.model_validate({"mode": "sip", "faults": ["caller_ssrc_reaction"]})


# ---- real calls ------------------------------------------------------------------------------------------


async def ssrc_changed_call(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone, tmp_path: Path,
                            faults: list[dict[str, Any]]) -> tuple[SoftphoneCall, Any, tuple[int, int]]:
    """Once the mock has learnt the caller's SSRC, the caller changes it, then speaks; the app hangs up once its
    reply has played (or the call ends first). Returns the call, the mock's view once its leg ended, and the
    caller's (old, new) SSRC."""
    control = stack[2]
    call = await answered_tone_call(stack, phone, tmp_path, faults)
    [view] = await control.calls()
    await control.wait_for(view.call_id, lambda v: bool(v.of_kind("sip.ssrc")), timeout=15)
    change = await call.new_ssrc()
    await control.wait_for(view.call_id, lambda v: len(v.of_kind("sip.ssrc")) == 2, timeout=15)
    with contextlib.suppress(SoftphoneError):  # the mock may hang up at the change (reaction bye)
        await call.play(CALLER.path)
    await call.ended(timeout=60)
    ended = await control.wait_for(view.call_id, lambda v: bool(v.of_kind("sip.ended")), timeout=15)
    return call, ended, change


def heard_ssrcs(view: Any) -> list[tuple[int | None, int]]:
    return [(e.data["old"], e.data["ssrc"]) for e in view.of_kind("sip.ssrc")]


async def test_without_the_fault_the_audio_goes_on_under_the_new_ssrc(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view, (old, new) = await ssrc_changed_call(sip_stack, sip_phone, tmp_path, [])
    assert old != new
    assert heard_ssrcs(view) == [(None, old), (old, new)]  # what the mock's pjmedia heard on the wire
    completed = JournalView.of_call(view).count("conversation.item.input_audio_transcription.completed")
    assert completed, "the model heard the caller under the new SSRC"
    assert sum(loud_frames(str(call.recording))) * 20 >= 7000  # and the caller heard the 8 s reply tone
    assert not fired(view, "caller_ssrc_reaction") and view.state == "ended"
    rows = [r for r in ladder_rows([e.model_dump() for e in view.entries], "sip") if r.label == "RTP: new SSRC"]
    assert [(r.src, r.dst, r.detail) for r in rows] == [("caller", "sip", f"SSRC {old:#010x} → {new:#010x}")]
    svg, _ = waveform({}, [e.model_dump() for e in view.entries])
    assert str(svg).count("new SSRC") == 1  # marked on the report's audio strips


async def test_reaction_bye_hangs_up_at_the_change(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view, (old, new) = await ssrc_changed_call(sip_stack, sip_phone, tmp_path,
                                                     [{"name": "caller_ssrc_reaction"}])
    assert heard_ssrcs(view) == [(None, old), (old, new)] and call.ended_by == "remote"
    assert fired(view, "caller_ssrc_reaction") == ["the caller's RTP changed SSRC: BYE"]
    kinds = [(e.kind, e.data.get("request")) for e in view.entries if e.kind in ("sip.ssrc", "fault.fired", "sip.sent")]
    assert kinds[-3:] == [("sip.ssrc", None), ("fault.fired", None), ("sip.sent", "BYE")]  # at once
    assert view.state == "ended" and not any(loud_frames(str(call.recording)))


async def test_reaction_silence_over_srtp_leaves_the_caller_hearing_nothing(
        sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path) -> None:
    """SRTP too: pjsua's SRTP takes any SSRC (libsrtp's ssrc_any policies), so the new source is decrypted."""
    mock = sip_stack[0]
    assert mock.sip is not None
    async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone", srtp="mandatory") as phone:
        call, view, (old, new) = await ssrc_changed_call(sip_stack, phone, tmp_path,
                                                         [{"name": "caller_ssrc_reaction", "reaction": "silence"}])
    assert view.of_kind("sip.media")[0].data["srtp"] is True
    assert heard_ssrcs(view) == [(None, old), (old, new)]
    assert fired(view, "caller_ssrc_reaction") == [
        "the caller's RTP changed SSRC: no more audio to the caller, resumed or not"]
    assert JournalView.of_call(view).count("response.done"), "the model heard the caller and replied"
    assert not any(loud_frames(str(call.recording))), "yet the caller heard none of the reply"


async def test_the_mocks_own_rtp_can_change_ssrc_and_the_caller_hears_it_on(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    """Fault media_new_ssrc: the service's side fails over. The caller's worker watches the SSRC it hears too."""
    call, view = await tone_call(sip_stack, sip_phone, tmp_path, [{"name": "media_new_ssrc", "at_s": 1.0}])
    [detail] = fired(view, "media_new_ssrc")
    old, new = (int(x, 16) for x in detail.rsplit(": ", 1)[1].split(" → "))
    heard = [e.data["ssrc"] for e in call.events if e.kind == "ssrc"]
    # the caller's last SSRC heard is the new one (the first is the old one, unless the watch first looked
    # after the change: it learns an SSRC from the packets after its first look)
    assert heard[-1] == new and set(heard) <= {old, new}, (heard, old, new)
    assert sum(loud_frames(str(call.recording))) * 20 >= 7000  # the 8 s reply tone, all heard after the change
    assert not any(e.kind == "sip.sent" and e.data.get("request") == "INVITE" for e in view.entries)  # no re-INVITE
    assert FaultScript.of([Fault.model_validate({"name": "media_new_ssrc"})]).media_steps[0].at_s == 2.0
