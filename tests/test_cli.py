"""The ``rtsip`` commands as a user runs them: real processes, real sockets."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from harness.cli import build_parser
from harness.mock_process import MockProcess
from mock_api.client import MockClient, MockControlError
from mock_api.running import SipOptions, running_mock
from sipworker import SipUnavailable, sip_missing
from tests.helpers import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
# `rtsip mock` in a process where pjsua2 is not installed (a None in sys.modules is "no such module")
MOCK_WITHOUT_PJSUA2 = ("-c", "import sys; sys.modules['pjsua2'] = None; from harness.cli import main; "
                             "sys.exit(main(['mock', *sys.argv[1:]]))")


def rtsip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_help_documents_every_flag_and_env() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(sub, argparse._SubParsersAction)
    for name, p in sub.choices.items():
        text = rtsip(name, "--help").stdout
        for action in p._actions:
            for flag in action.option_strings:
                assert flag in text, f"{name} --help lacks {flag}"
        if name in ("mock", "trigger"):
            assert "OPENAI_WEBHOOK_SECRET" in text and "RTSIP_STATE_DIR" in text


def test_help_names_only_flags_that_exist() -> None:
    """A flag in a command's help is that command's, or written as `rtsip OTHER --flag`."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(sub, argparse._SubParsersAction)
    flags = {name: {f for a in p._actions for f in a.option_strings}
             for name, p in sub.choices.items()}
    flags[""] = {"--help"}
    for name in flags:
        text = " ".join(rtsip(*([name] if name else []), "--help").stdout.split())  # undo argparse's wrapping
        for m in re.finditer(r"(?:rtsip (\w+) )?(--[a-z][a-z-]*)", text):
            owner = m.group(1) or name
            assert m.group(2) in flags[owner], f"rtsip {name} --help mentions {m.group(0)!r}, which does not exist"


async def test_mock_ready_line_and_stable_secret(tmp_path: Path) -> None:
    env = {"RTSIP_STATE_DIR": str(tmp_path)}
    async with MockProcess(["--port", "0", "--no-sip"], env=env) as first:
        assert first.base_url.startswith("http://127.0.0.1:") and first.base_url.endswith("/v1")
        assert first.webhook_secret.startswith("whsec_")
        async with MockClient(first.url) as control:
            assert (await control.start_call()).startswith("rtc_")
        secret = first.webhook_secret
    assert first.returncode == 0
    async with MockProcess(["--port", "0", "--no-sip"], env=env) as second:
        assert second.webhook_secret == secret
    env_secret = {**env, "OPENAI_WEBHOOK_SECRET": "whsec_ZmFrZQ=="}
    async with MockProcess(["--port", "0", "--no-sip"], env=env_secret) as third:
        assert third.webhook_secret == "whsec_ZmFrZQ=="


async def test_mock_delivers_to_webhook_url_flag(tmp_path: Path) -> None:
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    receiver = await WebhookReceiver(secret=secret).start()
    try:
        args = ["--port", "0", "--no-sip", "--webhook-url", receiver.url, "--webhook-secret", secret, "--state-dir",
                str(tmp_path)]
        async with MockProcess(args) as mock, MockClient(mock.url) as control:
            call_id = await control.start_call(headers={"X-Customer": "42"})
            [d] = await receiver.wait(1)
            assert d.error is None and d.event.data.call_id == call_id
    finally:
        await receiver.stop()


def test_mock_reports_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = rtsip("mock", "--port", str(port), "--no-sip", "--state-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr  # a taken port is a usage error: another --port fixes it
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_mock_rejects_unknown_fault(tmp_path: Path) -> None:
    r = rtsip("mock", "--port", "0", "--no-sip", "--fault", "no_such_fault", "--state-dir", str(tmp_path))
    assert r.returncode == 2 and "unknown fault 'no_such_fault'" in r.stderr


@pytest.mark.parametrize(("flags", "expected"), [
    (["--sip-frame-ms", "50"], "frame_ms must be a multiple of 20 in 20..200, got 50"),
    (["--sip-vad-frame-ms", "100"], "vad_frame_ms must be a multiple of 20 in 20..frame_ms (60), got 100"),
])
def test_mock_rejects_bad_sip_frame_sizes(tmp_path: Path, flags: list[str], expected: str) -> None:
    r = rtsip("mock", "--port", "0", "--sip-port", "0", *flags, "--state-dir", str(tmp_path))
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("answer", [200, 500])
async def test_trigger_sends_one_signed_webhook(tmp_path: Path, answer: int) -> None:
    secret = "whsec_" + "c2VjcmV0LWZvci10cmlnZ2VyLXRlc3Q="
    receiver = await WebhookReceiver(secret=secret, answers=[answer]).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.cli", "trigger", "realtime.call.incoming", "--forward-to", receiver.url,
            "--secret", secret, "--header", "X-Claim:CLM-1", "--call-id", "rtc_trigger_test",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        [d] = receiver.deliveries
        assert d.error is None
        assert isinstance(d.event, RealtimeCallIncomingWebhookEvent)
        assert d.event.data.call_id == "rtc_trigger_test"
        assert {"name": "X-Claim", "value": "CLM-1"} in [h.model_dump() for h in d.event.data.sip_headers]
        assert f"app answered {answer}" in out.decode()
        assert proc.returncode == (0 if answer == 200 else 1)
    finally:
        await receiver.stop()


@pytest.mark.parametrize("event", ["live.transport.incoming", "live.call.incoming"])
async def test_trigger_sends_the_live_events(event: str) -> None:
    secret = "whsec_" + "c2VjcmV0LWZvci10cmlnZ2VyLXRlc3Q="
    receiver = await WebhookReceiver(secret=secret).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.cli", "trigger", event, "--forward-to", receiver.url, "--secret", secret,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        [d] = receiver.deliveries
        assert d.error is None and d.event.type == event  # the SDK's unwrap parsed it as that event
        assert d.event.data.session_id.startswith("live_")
        assert (event == "live.transport.incoming") == ("type" in json.loads(d.body)["data"])
        assert f"sending {event} session_id={d.event.data.session_id}" in out.decode()
        assert proc.returncode == 0
    finally:
        await receiver.stop()


def test_trigger_reports_unreachable_app(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = rtsip("trigger", "realtime.call.incoming", "--forward-to", f"http://127.0.0.1:{port}/hook",
              "--secret", "whsec_c2VjcmV0", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "delivery failed" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


async def test_trigger_signs_with_the_mocks_kept_secret(tmp_path: Path) -> None:
    """Without --secret, trigger signs with the secret `rtsip mock` keeps, so the app verifies it."""
    async with MockProcess(["--port", "0", "--no-sip", "--state-dir", str(tmp_path)]) as mock:
        secret = mock.webhook_secret
    receiver = await WebhookReceiver(secret=secret).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.cli", "trigger", "realtime.call.incoming", "--forward-to", receiver.url,
            "--state-dir", str(tmp_path), env={k: v for k, v in os.environ.items() if k != "OPENAI_WEBHOOK_SECRET"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        [d] = receiver.deliveries
        assert d.error is None
    finally:
        await receiver.stop()


def test_mock_reports_sip_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = rtsip("mock", "--port", "0", "--sip-port", str(port), "--state-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr  # a taken port is a usage error: another --sip-port fixes it
    assert f"cannot start the SIP ingress on 127.0.0.1:{port}: TLS port {port}: Address already in use" in r.stderr
    assert "--sip-port" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


async def test_mock_with_sip_prints_uri_and_ca(tmp_path: Path) -> None:
    async with MockProcess(["--port", "0", "--sip-port", "0", "--state-dir", str(tmp_path)]) as mock:
        sip = mock.ready["sip"]
        assert sip.startswith("sip:proj_rtsip@127.0.0.1:") and sip.endswith(";transport=tls")
        assert mock.ready["ca"] == str(tmp_path / "tls" / "ca.pem")
        assert (await asyncio.to_thread(Path(mock.ready["ca"]).read_text)).startswith("-----BEGIN CERTIFICATE-----")


async def test_mock_without_pjsua2_warns_once_and_serves_without_sip(tmp_path: Path) -> None:
    args = ["--port", "0", "--sip-port", "0", "--state-dir", str(tmp_path)]
    async with MockProcess(args, command=MOCK_WITHOUT_PJSUA2) as mock, MockClient(mock.url) as control:
        warning = f"rtsip mock: warning: {sip_missing('serving HTTP and WebSocket only (--no-sip hides this line)')}"
        assert [line.rstrip("\n") for line in mock.output if sip_missing() in line] == [warning]
        assert "sip" not in mock.ready and "ca" not in mock.ready  # no ingress, and nothing claims one
        assert (await control.start_call()).startswith("rtc_")  # virtual calls work as with --no-sip
    assert mock.returncode == 0


@pytest.mark.usefixtures("without_pjsua2")
async def test_running_mock_asked_for_sip_without_pjsua2_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(SipUnavailable) as raised:
        async with running_mock(sip=SipOptions(tmp_path, port=0)):
            pytest.fail("the mock started a SIP ingress without pjsua2")
    assert str(raised.value).startswith(sip_missing() + "; ")


async def test_mock_control_token_is_required_and_kept_for_clients(tmp_path: Path) -> None:
    args = ["--port", "0", "--no-sip", "--state-dir", str(tmp_path), "--control-token", "tok-3f9a"]
    async with MockProcess(args) as mock:
        assert json.loads((tmp_path / "running.json").read_text())["control_token"] == "tok-3f9a"
        async with MockClient(mock.url, token="") as anonymous:
            with pytest.raises(MockControlError) as refused:
                await anonymous.start_call()
        assert refused.value.status == 401
        async with MockClient.from_state_dir(tmp_path) as control:  # what a client of the state directory uses
            assert control.token == "tok-3f9a"
            assert (await control.start_call()).startswith("rtc_")
            assert (await control.config())["control_token"] == "<set>"  # never echoed


async def test_mock_record_allow_host_and_journal_spill(tmp_path: Path) -> None:
    args = ["--port", "0", "--no-sip", "--state-dir", str(tmp_path), "--record", "--allow-host", "Mock.Internal"]
    async with MockProcess(args) as mock, MockClient(mock.url) as control:
        config = await control.config()
        assert config["record_audio"] is True
        assert config["allowed_hosts"] == ["mock.internal"]
        assert config["journal_file"] == str(tmp_path / "journal.jsonl")
        call_id = await control.start_call()
        port = mock.url.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as http:
            for host, status in ((f"mock.internal:{port}", 200), (f"other.example:{port}", 403)):
                async with http.get(mock.url + "/_mock/health", headers={"Host": host}) as resp:
                    assert resp.status == status, host
        await control.caller_hangup(call_id)
    assert mock.returncode == 0
    spilled = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    [timeline] = [t for t in spilled if t["id"] == call_id]  # written out when the mock stopped
    assert "call.created" in [e["kind"] for e in timeline["entries"]]


@pytest.mark.timeout(300)
def test_load_sends_the_control_token_of_its_mock(tmp_path: Path) -> None:
    """A load run whose mock settings set a control token still reads every call's journal."""
    (tmp_path / "token.yaml").write_text("control_token: load-tok-51c2\n")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "load", str(ROOT / "scenarios" / "load" / "one_turn.yaml"),
                        "--calls", "1", "--concurrency", "1", "--rate", "1", "--mock-config",
                        str(tmp_path / "token.yaml"), "--json", str(tmp_path / "out.json"), "--no-progress"],
                       capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    [record] = json.loads((tmp_path / "out.json").read_text())["records"]
    assert record["ok"] and record["call_id"].startswith("rtc_"), record
