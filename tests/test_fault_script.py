"""A call's faults as one typed script: every fault answered, parameters read once, the mock's faults first."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mock_api.calls import Call
from mock_api.config import ConfigPatch, MockConfig
from mock_api.fault_script import NO_FAULTS, DeliveryPlan, FaultScript
from mock_api.faults import FAULTS, Fault
from mock_api.server import MockServer

SESSION_LAYER = {name for name, info in FAULTS.items() if info.layer == "session"}


def script(*items: str | dict[str, object]) -> FaultScript:
    return FaultScript.of(Fault.model_validate(f) for f in items)


@pytest.mark.parametrize("name", sorted(set(FAULTS) - SESSION_LAYER))
def test_every_fault_outside_the_session_core_changes_an_answer(name: str) -> None:
    """A fault no field answers would be a switch some adapter still has to look up."""
    answered = script(name)
    assert replace(answered, faults=()) != NO_FAULTS


@pytest.mark.parametrize("name", sorted(SESSION_LAYER))
def test_session_faults_are_left_to_the_session_core(name: str) -> None:
    answered = script(name)
    assert replace(answered, faults=()) == NO_FAULTS and [f.name for f in answered.faults] == [name]


def test_parameters_and_defaults() -> None:
    s = script({"name": "webhook_delay", "seconds": 3}, {"name": "webhook_duplicate", "copies": 3},
               "webhook_stale_timestamp", {"name": "random_hangup", "after_s": 4}, "ws_drop", "no_answer_timeout",
               {"name": "accept_invalid_hangup", "after_s": 0.5})
    assert s.delivery == DeliveryPlan(delay_s=3.0, copies=3, stale_age_s=600)
    assert (s.random_hangup_after_s, s.ws_drop_after_s, s.no_answer_timeout_s) == (4.0, 2.0, 5.0)
    assert s.accept_forced_invalid and s.invalid_accept_bye_s == 0.5
    assert NO_FAULTS.delivery == DeliveryPlan() and NO_FAULTS.invalid_accept_bye_s is None


def test_one_hold_and_the_first_of_a_name_counts() -> None:
    both = script({"name": "slow_webhook"}, {"name": "webhook_delay", "seconds": 1})
    assert both.delivery.delay_s == 1.0  # webhook_delay wins over slow_webhook: one hold, not two
    assert script("slow_webhook").delivery.delay_s == 6.0
    twice = script({"name": "ws_drop", "after_s": 1}, {"name": "ws_drop", "after_s": 9})
    assert twice.ws_drop_after_s == 1.0


def test_stale_timestamp() -> None:
    assert DeliveryPlan().timestamp(1_000) == 1_000
    assert script({"name": "webhook_stale_timestamp", "age_s": 400}).delivery.timestamp(1_000) == 600


def test_the_server_reads_the_mocks_faults_then_the_calls_and_again_when_they_change() -> None:
    server = MockServer(MockConfig(faults=[Fault(name="ws_drop", after_s=1.0)]))
    call = Call.incoming([])
    call_id = call.call_id
    server.calls[call_id] = call
    server.set_call_options(call_id, faults=[Fault(name="ws_drop", after_s=7.0), Fault(name="refer_noop")])
    first = server.fault_script(call_id)
    assert first.ws_drop_after_s == 1.0 and first.refer_noop
    assert server.fault_script(call_id) is first  # read once
    server.configure(ConfigPatch(faults=[]))
    again = server.fault_script(call_id)
    assert again.ws_drop_after_s == 7.0 and again is not first
    server.config = server.config.model_copy(update={"faults": [Fault(name="static_audio")]})  # as a reset does
    assert server.fault_script(call_id).static_audio
    assert server.fault_script(None).ws_drop_after_s is None  # call-less sessions: the mock's faults only
    assert server.fault_script("rtc_unknown").static_audio and "rtc_unknown" not in server._fault_scripts


@pytest.mark.parametrize(("name", "field"), [("caller_hold_reaction", "caller_hold"),
                                             ("caller_ssrc_reaction", "caller_ssrc")])
def test_a_reaction_to_the_callers_media_is_read_into_the_script(name: str, field: str) -> None:
    def reaction(*faults: dict[str, Any]) -> str | None:
        return getattr(FaultScript.of(Fault.model_validate(f) for f in faults), field)

    assert reaction() is None
    assert reaction({"name": name}) == "bye"
    assert reaction({"name": name, "reaction": "silence"}) == "silence"
    with pytest.raises(ValueError, match="reaction"):
        Fault.model_validate({"name": name, "reaction": "music"})
