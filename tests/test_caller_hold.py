"""The caller puts the mock on hold (failure mode 28's hold half, from the carrier's side).

A scenario's ``hold_ms`` step makes the softphone re-INVITE the mock with a=sendonly, then resume it. What the
real service does then is unknown, so the mock's answer is a fault: none (the call goes on), ``bye`` (it hangs
up) or ``silence`` (the caller hears nothing more). Real SIP/TLS calls over 127.0.0.1 and an SDK app; the reply
is a steady tone, so what the caller heard is read from its recording.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness.caller_steps import Act, plan
from harness.journal_view import JournalView
from harness.runner import run_scenario
from harness.scenario import CallSpec, Step, expand, load_scenario
from harness.softphone import Softphone, SoftphoneCall
from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.sip_helpers import CALLER, Receiver
from tests.test_rtp_faults import answered_tone_call, fired, leg_ended, loud_frames

HOLD_S = 1.0
ROOT = Path(__file__).resolve().parent.parent


def test_a_hold_step_is_one_act_and_needs_a_sip_call() -> None:
    walk = plan([Step(hold_ms=1500)], 30.0)
    assert next(walk) == Act("over")
    assert walk.send(False) == Act("answered", (pytest.approx(30.0, abs=1),))
    assert walk.send(None) == Act("hold", (1.5,))
    with pytest.raises(ValidationError, match="hold_ms step needs mode: sip"):
        CallSpec.model_validate({"steps": [{"hold_ms": 1000}]})
    with pytest.raises(ValidationError, match="exactly one of"):
        Step.model_validate({"hold_ms": 1000, "pause_ms": 5})


async def held_call(stack: tuple[RunningMock, Receiver, MockClient], phone: Softphone, tmp_path: Path,
                    faults: list[dict[str, Any]]) -> tuple[SoftphoneCall, Any]:
    """The caller holds the mock for HOLD_S once answered, resumes, then speaks; the app hangs up once its
    reply has played (or the call ends first). Returns the call and the mock's view of it once its leg ended."""
    call = await answered_tone_call(stack, phone, tmp_path, faults)
    await call.hold_for(HOLD_S)
    if not call.is_ended:
        await call.play(CALLER.path)
    await call.ended(timeout=60)
    return call, await leg_ended(stack[2])


def ingress_media(view: Any) -> list[str]:
    return [e.data["state"] for e in view.of_kind("sip.state") if str(e.data["state"]).startswith("media")]


async def test_without_the_fault_the_call_goes_on_after_the_hold(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await held_call(sip_stack, sip_phone, tmp_path, [])
    assert [e.data["status"] for e in call.events if e.kind == "media_state"] == ["active", "local_hold", "active"]
    assert ingress_media(view) == ["media active", "media remote_hold", "media active"]
    assert sum(loud_frames(str(call.recording))) * 20 >= 7000  # the 8 s reply tone, heard after the resume
    assert not fired(view, "caller_hold_reaction") and view.state == "ended"


async def test_reaction_bye_hangs_up_on_the_held_caller(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await held_call(sip_stack, sip_phone, tmp_path, [{"name": "caller_hold_reaction"}])
    assert call.ended_by == "remote"
    assert fired(view, "caller_hold_reaction") == ["the caller put the call on hold: BYE"]
    kinds = [(e.kind, e.data.get("request")) for e in view.entries if e.kind in ("fault.fired", "sip.sent")]
    assert kinds[-2:] == [("fault.fired", None), ("sip.sent", "BYE")]  # the BYE follows the hold at once
    assert view.state == "ended" and not any(loud_frames(str(call.recording)))


async def test_reaction_silence_leaves_the_caller_hearing_nothing_after_the_resume(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone, tmp_path: Path) -> None:
    call, view = await held_call(sip_stack, sip_phone, tmp_path,
                                 [{"name": "caller_hold_reaction", "reaction": "silence"}])
    assert ingress_media(view) == ["media active", "media remote_hold", "media active"]  # resumed
    assert fired(view, "caller_hold_reaction") == [
        "the caller put the call on hold: no more audio to the caller, resumed or not"]
    assert JournalView.of_call(view).count("response.done"), "the model heard the caller and replied"
    assert not any(loud_frames(str(call.recording))), "yet the caller heard none of the reply"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("example", ["caller_hold", "caller_ssrc"])
async def test_the_example_scenario_runs_from_its_steps(example: str) -> None:
    """scenarios/examples/caller_hold.yaml (its hold_ms step) and caller_ssrc.yaml (its new_ssrc step, failure
    mode 28's other half: tests/test_ssrc_change.py) through the runner, with each answer of the mock."""
    scenario = load_scenario(ROOT / "scenarios" / "examples" / f"{example}.yaml")
    results = await asyncio.gather(*(run_scenario(s) for s in expand(scenario)))
    name = example.replace("_", "-")
    assert [(r.name, r.verdict) for r in results] == [(f"{name}[goes_on]", "passed"), (f"{name}[bye]", "passed")]
