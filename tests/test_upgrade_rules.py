"""The WebSocket upgrade rules as a pure function: each rule in the order ``mock_api.realtime.upgrade`` states.

The socket tests (test_realtime_ws, test_realtime_socket_modes, test_azure, test_ephemeral_keys) show the adapter
applies them over real sockets; these pin the order and the answers without one.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mock_api.realtime import upgrade
from mock_api.realtime.upgrade import Accept, RefuseHttp, RefuseSocket, UpgradeRequest

CALL = UpgradeRequest(azure=False, beta=False, call_id="rtc_1", call_live=True, call_ended=False,
                      beta_header_404=False, key_masked="sk-abc***xyz", key_ok=True, legacy_beta=True,
                      intent=None, model=None)
MODEL = replace(CALL, call_id=None, call_live=False, model="gpt-realtime")


@pytest.mark.parametrize(("req", "expected"), [
    (replace(CALL, call_live=False), RefuseHttp(404, "No session found for the provided call_id", "call_id_not_found")),
    (replace(CALL, beta=True, beta_header_404=True),
     RefuseHttp(404, "No session found for the provided call_id", "call_id_not_found")),
    (replace(CALL, beta=True), None),
    (CALL, None),
    (MODEL, None),  # no call_id: nothing is refused before the 101
])
def test_before_the_upgrade_only_a_dead_call_or_the_beta_fault_is_an_http_answer(
        req: UpgradeRequest, expected: RefuseHttp | None) -> None:
    assert upgrade.before_upgrade(req) == expected


def test_after_the_upgrade_the_key_comes_first() -> None:
    no_key = upgrade.after_upgrade(replace(CALL, key_masked=None, key_ok=False, beta=True, legacy_beta=False))
    assert no_key == RefuseSocket(3000, upgrade.MISSING_KEY_MESSAGE, None)
    wrong = upgrade.after_upgrade(replace(CALL, key_ok=False, call_ended=True))
    assert isinstance(wrong, RefuseSocket)
    assert (wrong.close_code, wrong.code) == (3000, "invalid_api_key")
    assert "sk-abc***xyz" in (wrong.message or "")
    # Azure's key was checked at its front door, before the upgrade
    assert upgrade.after_upgrade(replace(CALL, azure=True, key_masked=None, key_ok=False)) == Accept("realtime", None)


def test_then_the_beta_shape_then_a_call_that_ended_during_the_upgrade() -> None:
    beta = upgrade.after_upgrade(replace(CALL, beta=True, legacy_beta=False, call_ended=True))
    assert beta == RefuseSocket(4000, upgrade.BETA_SHAPE_MESSAGE, "beta_api_shape_disabled")
    assert upgrade.after_upgrade(replace(CALL, beta=True)) == Accept("realtime", None)
    assert upgrade.after_upgrade(replace(CALL, call_ended=True)) == RefuseSocket(1000, None, None, reason="call ended")


@pytest.mark.parametrize(("intent", "model", "azure", "expected"), [
    (None, None, False, "missing_model"),
    ("realtime", "", False, "missing_model"),
    (None, "gpt-4o", False, "invalid_model"),
    (None, "gpt-4o", True, Accept("realtime", "gpt-4o")),  # Azure: any deployment name
    (None, "gpt-realtime-2026-01-01", False, Accept("realtime", "gpt-realtime-2026-01-01")),
    (None, "gpt-audio-mini", False, Accept("realtime", "gpt-audio-mini")),
    ("transcription", None, False, Accept("transcription", None)),
    ("transcription", "gpt-4o", False, Accept("transcription", "gpt-4o")),
])
def test_a_call_less_socket_needs_a_realtime_model_unless_it_transcribes(
        intent: str | None, model: str | None, azure: bool, expected: str | Accept) -> None:
    got = upgrade.after_upgrade(replace(MODEL, intent=intent, model=model, azure=azure))
    if isinstance(expected, Accept):
        assert got == expected
    else:
        assert isinstance(got, RefuseSocket)
        assert (got.close_code, got.code) == (4000, expected)
