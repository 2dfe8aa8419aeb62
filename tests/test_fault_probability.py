"""Faults of chance: seeded per-call draws in the fault script, refused bad values, and a real mock obeying them."""

from __future__ import annotations

import aiohttp
import pytest

from mock_api.client import MockClient
from mock_api.fault_script import FaultScript, decide, draw, seeded
from mock_api.faults import FAULTS, PER_CALL, Fault
from mock_api.running import RunningMock
from tests.helpers import WebhookReceiver


def drop(probability: float, **extra: object) -> Fault:
    return Fault.model_validate({"name": "webhook_drop", "probability": probability, **extra})


def test_a_draw_depends_on_its_arguments_alone() -> None:
    values = [draw(seed, "webhook_drop", "", 0) for seed in range(200)]
    assert values == [draw(seed, "webhook_drop", "", 0) for seed in reversed(range(200))][::-1]
    assert all(0 <= v < 1 for v in values)
    assert 60 < sum(v < 0.5 for v in values) < 140  # about half, not all one way
    assert draw(1, "webhook_drop", "a") != draw(1, "webhook_drop", "b") != draw(1, "ws_drop", "b")


def test_the_script_keeps_a_fault_only_when_its_draw_is_under_the_probability() -> None:
    for seed in range(40):
        script = FaultScript.of([drop(0.5, seed=seed)])
        (made,) = script.draws
        assert made.draw == draw(seed, "webhook_drop")
        assert made.fired == (made.draw < 0.5) == script.delivery.drop
        assert [f.name for f in script.faults] == (["webhook_drop"] if made.fired else [])
    assert FaultScript.of([drop(1.0)]).delivery.drop and not FaultScript.of([drop(0.0)]).delivery.drop


def test_without_a_probability_a_fault_always_fires_and_is_not_drawn() -> None:
    script = FaultScript.of([Fault(name="webhook_drop"), Fault(name="transcription_403")])
    assert script.delivery.drop and script.draws == ()
    assert [f.name for f in script.faults] == ["webhook_drop", "transcription_403"]


def test_a_missed_first_copy_lets_a_later_copy_count() -> None:
    seed = next(s for s in range(100) if draw(s, "webhook_delay", "", 0) >= 0.5 > draw(s, "webhook_delay", "", 1))
    faults = [Fault.model_validate({"name": "webhook_delay", "seconds": 1, "probability": 0.5, "seed": seed}),
              Fault.model_validate({"name": "webhook_delay", "seconds": 3, "probability": 0.5, "seed": seed})]
    script = FaultScript.of(faults)
    assert [d.fired for d in script.draws] == [False, True]
    assert script.delivery.delay_s == 3


def test_the_call_key_changes_the_draw_and_replays_it() -> None:
    faults = [drop(0.5, seed=3)]
    by_key = {key: decide(faults, key)[1][0] for key in ("call-1", "call-2", "call-3", "call-4")}
    assert len({d.draw for d in by_key.values()}) == 4
    assert all(decide(faults, key)[1][0] == made for key, made in by_key.items())


def test_a_run_seed_goes_only_to_faults_without_their_own() -> None:
    faults = [drop(0.5), drop(0.5, seed=42), Fault(name="ws_drop")]
    out = seeded(faults, 7)
    assert [f.param("seed") for f in out[:2]] == [7, 42]
    assert out[2] == faults[2] and "seed" not in (out[2].model_extra or {})


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"name": "webhook_drop", "probability": 2}, "takes a probability from 0 to 1 here, not 2"),
        ({"name": "webhook_drop", "probability": -0.1}, "takes a probability from 0 to 1 here"),
        ({"name": "webhook_drop", "probability": "half"}, "takes a probability from 0 to 1 here, not 'half'"),
        ({"name": "webhook_drop", "probability": True}, "takes a probability from 0 to 1 here"),
        ({"name": "transcription_403", "probability": 0.5}, "takes no 'probability': only faults decided once"),
    ],
)
async def test_the_control_api_refuses_a_bad_probability_naming_the_field(
        mock: RunningMock, fault: dict[str, object], message: str) -> None:
    for method, path, body in (("PUT", "/_mock/config", {"faults": [fault]}),
                               ("POST", "/_mock/calls", {"faults": [Fault(name="ws_drop").model_dump(), fault]})):
        async with aiohttp.ClientSession() as http, http.request(
                method, mock.url + path, json=body, headers={"Authorization": "Bearer sk-test"}) as resp:
            answer = await resp.json()
        where = "faults[1].probability" if method == "POST" else "faults[0].probability"
        assert resp.status == 400, answer
        assert answer["error"]["param"] == where
        assert message in answer["error"]["message"] and where in answer["error"]["message"]
    assert mock.server.config.faults == []


def test_every_per_call_fault_takes_a_probability_and_the_others_do_not() -> None:
    for name, info in FAULTS.items():
        if name in PER_CALL:
            assert Fault.model_validate({"name": name, "probability": 0.25, "seed": 1}).param("probability") == 0.25
        else:
            with pytest.raises(ValueError, match="takes no 'probability'"):
                Fault.model_validate({"name": name, "probability": 0.25})
            assert "probability" not in info.params


async def test_a_real_mock_drops_exactly_the_webhooks_the_draws_say(
        mock: RunningMock, control: MockClient, receiver: WebhookReceiver) -> None:
    expected = {}
    for n in range(1, 9):  # one seed for every call: the call's arrival number keys its draw
        fault = drop(0.5, seed=3)
        call_id = await control.start_call(faults=[fault.model_dump()])
        expected[call_id] = (n, FaultScript.of([fault], key=str(n)).delivery.drop)
    assert {dropped for _, dropped in expected.values()} == {True, False}  # both outcomes are exercised
    for call_id, (n, dropped) in expected.items():
        view = await control.wait_for(call_id, lambda v: any(
            e.kind in ("webhook.dropped", "webhook.delivered") for e in v.entries), timeout=10)
        kinds = {e.kind for e in view.entries}
        assert ("webhook.dropped" in kinds) == dropped, (call_id, sorted(kinds))
        assert ("webhook.delivered" in kinds) == (not dropped)
        (drawn,) = [e.data for e in view.entries if e.kind == "fault.drawn"]  # journaled, for a replay
        assert (drawn["fault"], drawn["seed"], drawn["key"], drawn["fired"]) == ("webhook_drop", 3, str(n), dropped)
