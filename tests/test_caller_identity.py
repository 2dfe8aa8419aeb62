"""The caller's identity on real SIP calls: the From (number and display name) and To an app receives.

Apps route on the caller's number and log From/To by their exact header names, so each test reads
``data.sip_headers`` of the signed webhook as the SDK's ``client.webhooks.unwrap`` gives it (the
Receiver verifies every delivery) and compares names case-sensitively. Every call is a real SIP/TLS
call over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from harness.callers import VirtualCaller, caller_of
from harness.load import LoadOptions, plan
from harness.mock_process import MockProcess
from harness.runner import run_scenario
from harness.scenario import CallSpec, load_scenario
from harness.softphone import Softphone, caller_identity, sip_form
from mock_api.client import MockClient
from mock_api.running import RunningMock
from mock_api.webhooks import new_secret
from sipworker.ipc import name_addr
from tests.sip_helpers import App, Receiver

ROOT = Path(__file__).resolve().parents[1]
RTSIP = str(Path(sys.executable).parent / "rtsip")
TAG = r";tag=[A-Za-z0-9.\-_~]+"  # pjsip's random From tag


def header(delivery: Any, name: str) -> list[str]:
    """The values of the webhook's SIP header ``name``, matched case-sensitively as apps do."""
    assert delivery.error is None, delivery.error
    return [h.value for h in delivery.event.data.sip_headers if h.name == name]


# ---- the pieces that need no call ---------------------------------------------------------------


def test_tel_uris_become_sip_uris_at_the_dialled_host() -> None:
    dialled = "sip:proj_x@127.0.0.1:5061;transport=tls"
    assert sip_form("tel:+14155550123", dialled) == "sip:+14155550123@127.0.0.1;user=phone"
    assert sip_form("tel:+1-415-555-0123;ext=7", "sip:a@[::1]:5061") == "sip:+1-415-555-0123;ext=7@[::1];user=phone"
    assert sip_form("sips:+1415@carrier.example", dialled) == "sips:+1415@carrier.example"
    with pytest.raises(ValueError, match="not a sip:, sips: or tel: URI"):
        sip_form("+14155550123", dialled)
    with pytest.raises(ValueError, match="control characters"):
        caller_identity(dialled, None, "Alice\r\nX-Injected: 1", None)
    assert caller_identity(dialled, None, None, None) == {}


def test_display_names_are_quoted_strings() -> None:
    assert name_addr("sip:+1415@c.example", "Alice Smith") == '"Alice Smith" <sip:+1415@c.example>'
    assert name_addr("sip:+1415@c.example", 'Al "The" \\ Smith') == r'"Al \"The\" \\ Smith" <sip:+1415@c.example>'
    assert name_addr("sip:+1415@c.example", None) == "sip:+1415@c.example"
    # URI parameters stay the URI's: "sip:+1415@h;user=phone;tag=x" would give user=phone to the header
    assert name_addr("sip:+1415@h;user=phone") == "<sip:+1415@h;user=phone>"


def test_a_scenario_from_may_carry_the_name() -> None:
    spec = CallSpec.model_validate({"from": '"Bob \\"B\\" Jones" <sip:+4420@uk.example>'})
    assert caller_of(spec) == ("sip:+4420@uk.example", 'Bob "B" Jones')
    named = CallSpec.model_validate({"from": '"Bob" <sip:+4420@uk.example>', "display_name": "Robert"})
    assert caller_of(named) == ("sip:+4420@uk.example", "Robert")
    assert caller_of(CallSpec.model_validate({"from": "tel:+4420"})) == ("tel:+4420", None)


def seeded_sip_scenario(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"seed{seed}.yaml"
    path.write_text(f"""\
name: seeded-sip-load
seed: {seed}
app:
  command: ["{{python}}", "{ROOT / 'examples' / 'minimal_app.py'}", --port, "{{port}}"]
calls:
  - mode: sip
    steps: [{{hangup: true}}]
""")
    return path


def test_load_gives_each_sip_caller_its_own_reproducible_number(tmp_path: Path) -> None:
    def numbers(seed: int, n: int) -> list[str]:
        p = plan(LoadOptions(scenario=seeded_sip_scenario(tmp_path, seed), calls=4, concurrency=4, rate=2.0,
                             progress=False))
        assert p.mode == "sip"
        return list(islice(p.caller_numbers(), n))

    first = numbers(7, 2000)
    assert len(set(first)) == len(first)
    assert all(re.fullmatch(r"\+1[2-9]\d\d[2-9]\d{6}", n) for n in first), first[:5]  # E.164, NANP
    assert numbers(7, 2000) == first  # the same run again: the same callers
    assert numbers(8, 20) != first[:20]


async def test_a_virtual_caller_has_the_same_from(control: MockClient, tmp_path: Path) -> None:
    """display_name reaches an app the same way without SIP (no tag: there is no SIP dialog)."""
    spec = CallSpec.model_validate({"from": "sip:+14155550123@carrier.example", "display_name": "Alice Smith",
                                    "to": "sip:+18005550199@carrier.example"})
    caller = await VirtualCaller.place(control, spec, tmp_path)
    view = await control.call(caller.call_id)
    headers = [(h.name, h.value) for h in view.sip_headers]
    assert ("From", '"Alice Smith" <sip:+14155550123@carrier.example>') in headers
    assert ("To", "sip:+18005550199@carrier.example") in headers


# ---- real SIP/TLS calls -------------------------------------------------------------------------


async def test_from_display_name_and_to_reach_the_webhook(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                          sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock)
    dialled = mock.sip.uri("proj_identity")
    call = await sip_phone.call(dialled, from_uri="sip:+14155550123@carrier.example", display_name="Alice Smith",
                                to_uri="sip:+18005550199@carrier.example")
    assert await call.answered(timeout=10)
    await call.hangup()
    await call.ended(timeout=10)
    await asyncio.wait_for(app.closed.wait(), 10)
    [d] = receiver.deliveries
    [from_] = header(d, "From")
    assert re.fullmatch(r'"Alice Smith" <sip:\+14155550123@carrier\.example>' + TAG, from_), from_
    assert header(d, "To") == ["sip:+18005550199@carrier.example"]
    # the INVITE still went to the dialled URI: the Request-URI is not the To
    view = await control.call(d.event.data.call_id)
    [invite] = [e for e in view.entries if e.kind == "sip.invite"]
    assert invite.data["request_uri"] == dialled
    assert view.state == "ended"


async def test_consecutive_calls_from_one_worker_keep_their_own_from(
        sip_stack: tuple[RunningMock, Receiver, MockClient], sip_phone: Softphone) -> None:
    mock, receiver, _control = sip_stack
    assert mock.sip is not None
    receiver.app = App(mock, action="reject:486")  # the webhook is all these calls need
    dialled = mock.sip.uri()
    callers: list[tuple[str | None, str | None, str]] = [
        ("tel:+14155550123", None, r"<sip:\+14155550123@127\.0\.0\.1;user=phone>"),  # bracketed: a URI parameter
        ("sip:+442071838750@uk.carrier.example", 'Bob "B" Jones',
         r'"Bob \\"B\\" Jones" <sip:\+442071838750@uk\.carrier\.example>'),
        (None, None, r"sip:softphone@127\.0\.0\.1"),  # no from_uri: the phone's own, as before
    ]
    for from_uri, name, _ in callers:
        call = await sip_phone.call(dialled, from_uri=from_uri, display_name=name)
        assert await call.ended(timeout=10) == 486
    assert len(sip_phone.pool.workers) == 1 and sip_phone.pool.workers[0].restarts == 0
    assert len(receiver.deliveries) == len(callers)
    for d, (_, _, pattern) in zip(receiver.deliveries, callers, strict=True):
        [from_] = header(d, "From")
        assert re.fullmatch(pattern + TAG, from_), (pattern, from_)
        # no to_uri: the To is the Request-URI, as pjsip writes a To (no port, no transport)
        assert header(d, "To") == ["sip:proj_rtsip@127.0.0.1"]


def identity_scenario(tmp_path: Path) -> Path:
    """A SIP call whose caller has a number, a name and a To; the example app logs the From it gets."""
    path = tmp_path / "caller_identity.yaml"
    path.write_text(f"""\
name: caller-identity
description: The app sees the scenario's caller in the From and its To.
app:
  command: ["{{python}}", "{ROOT / 'examples' / 'sdk_app.py'}", --port, "{{port}}"]
calls:
  - mode: sip
    from: "sip:+14155550123@carrier.example"
    display_name: Alice Smith
    to: "tel:+18005550199"
    steps:
      - wait_for: output_audio_buffer.stopped
      - hangup: true
expect:
  call_state: ended
  app_output:
    - 'incoming call from "Alice Smith" <sip:\\+14155550123@carrier\\.example>;tag='
""")
    return path


async def test_scenario_from_and_to_in_sip_mode(tmp_path: Path) -> None:
    result = await run_scenario(load_scenario(identity_scenario(tmp_path)))
    assert result.passed, (result.verdict, result.app_output[-20:])
    [view] = result.calls
    headers = {h.name: h.value for h in view.sip_headers}  # what the webhook carried to the app
    assert re.fullmatch(r'"Alice Smith" <sip:\+14155550123@carrier\.example>' + TAG, headers["From"])
    assert headers["To"] == "<sip:+18005550199@127.0.0.1;user=phone>"  # tel: at the mock's host
    [invite] = [e for e in view.entries if e.kind == "sip.invite"]
    assert str(invite.data["request_uri"]).startswith("sip:proj_rtsip@127.0.0.1:")


async def test_rtsip_call_from_the_command_line(tmp_path: Path) -> None:
    secret = new_secret()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_WEBHOOK_SECRET", "RTSIP_WEBHOOK_URL")}
    env["RTSIP_STATE_DIR"] = str(tmp_path / "state")
    receiver = await Receiver(secret=secret).start()
    mock = MockProcess(["--port", "0", "--sip-port", "0", "--sip-workers", "1", "--webhook-url", receiver.url,
                        "--webhook-secret", secret], env=env, startup_timeout=60)
    try:
        async with mock:
            receiver.app = App(mock)  # type: ignore[arg-type]  # it only needs the base_url MockProcess has
            run = await asyncio.to_thread(
                subprocess.run, [RTSIP, "call", mock.ready["sip"], "--ca", mock.ready["ca"], "--from",
                                 "tel:+14155550123", "--display-name", "Alice Smith", "--to",
                                 "sip:+18005550199@carrier.example", "--hangup-after", "1"],
                capture_output=True, text=True, env=env, timeout=90, cwd=ROOT)
            assert run.returncode == 0, run.stdout + run.stderr
            assert "final status: 200 OK" in run.stdout
    finally:
        await receiver.stop()
    [d] = receiver.deliveries
    [from_] = header(d, "From")
    assert re.fullmatch(r'"Alice Smith" <sip:\+14155550123@127\.0\.0\.1;user=phone>' + TAG, from_), from_
    assert header(d, "To") == ["sip:+18005550199@carrier.example"]
