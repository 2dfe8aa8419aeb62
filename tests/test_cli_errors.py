"""Every common command-line mistake: exit 2, one line on stderr naming the culprit, no traceback.

Each case runs the installed ``rtsip`` console script with its own empty state directory. The checks
happen before anything listens, so no case binds a port (mock cases pass ``--port 0`` and
``--no-sip`` or ``--sip-port 0`` anyway, should a check ever let one through).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RTSIP = Path(sys.executable).parent / "rtsip"
SCENARIO = ROOT / "scenarios" / "load" / "one_turn.yaml"
MOCK = ("mock", "--port", "0", "--no-sip")
SIP = "sip:proj_x@127.0.0.1:5061;transport=tls"
TRIGGER = ("trigger", "realtime.call.incoming", "--forward-to", "http://127.0.0.1:9/hook")

# (id, arguments, what the one line must mention); "{tmp}" is the test's directory, which holds
# notes.txt (text, not audio), a state file where a directory belongs, and the config files below.
CASES: list[tuple[str, tuple[str, ...], str]] = [
    # rtsip env
    ("env-no-running-mock", ("env",), "no rtsip mock is running with the state directory"),
    ("mock-proxy-port-out-of-range", (*MOCK, "--intercept", "--proxy-port", "70000"), "--proxy-port"),
    # rtsip call
    ("answer-no-fixture", ("answer", "--port", "0"), "--fixture is required"),
    ("shards-no-mocks", ("shards",), "--mocks is required"),
    ("shards-too-many", ("shards", "--mocks", "17"), "--mocks must be between 1 and 16 (got 17)"),
    ("shards-hosts-count", ("shards", "--mocks", "2", "--hosts", "127.0.0.1:9"),
     "--hosts names 1 mocks but --mocks is 2"),
    ("answer-bad-reject", ("answer", "--port", "0", "--fixture", str(ROOT / "audio_fixtures/caller_confirm.wav"),
                           "--reject", "200"),
     "--reject must be a SIP final status"),
    ("call-bad-codec", ("call", SIP, "--insecure", "--codec", "opus,speex"),
     "--codec opus,speex: unknown codec 'speex'"),
    ("call-not-a-uri", ("call", "not-a-uri", "--insecure"), "'not-a-uri': not a SIP URI; expected sip:user@host"),
    ("call-uri-without-user", ("call", "sip:127.0.0.1:5061", "--insecure"), "no user@"),
    ("call-uri-bad-host", ("call", "sip:proj_x@-bad-.example", "--insecure"), "bad host '-bad-.example'"),
    ("call-uri-bad-port", ("call", "sip:proj_x@127.0.0.1:99999", "--insecure"), "bad port '99999'"),
    ("call-uri-bad-transport", ("call", "sip:proj_x@127.0.0.1;transport=sctp", "--insecure"), "transport=sctp"),
    ("call-audio-not-audio", ("call", SIP, "--insecure", "--audio", "{tmp}/notes.txt"),
     "--audio {tmp}/notes.txt: cannot be decoded as audio"),
    ("call-audio-missing", ("call", SIP, "--insecure", "--audio", "/nope.wav"), "--audio /nope.wav: no such file"),
    ("call-record-no-dir", ("call", SIP, "--insecure", "--record", "{tmp}/missing/heard.wav"),
     "--record {tmp}/missing/heard.wav: directory {tmp}/missing does not exist"),
    ("call-bad-dtmf", ("call", SIP, "--insecure", "--dtmf", "12x"), "--dtmf '12x'"),
    ("call-negative-timeout", ("call", SIP, "--insecure", "--answer-timeout", "-1"), "--answer-timeout"),
    ("call-no-ca", ("call", SIP), "ca.pem not found"),
    ("call-missing-ca", ("call", SIP, "--ca", "{tmp}/nope.pem"), "--ca {tmp}/nope.pem: no such file"),
    ("call-bad-from", ("call", SIP, "--insecure", "--from", "+14155550123"),
     "--from '+14155550123': not a SIP URI; expected sip:user@host"),
    ("call-from-bad-tel", ("call", SIP, "--insecure", "--from", "tel:+1-415-CALL-NOW"), "bad number '+1-415-CALL-NOW'"),
    ("call-to-bad-host", ("call", SIP, "--insecure", "--to", "sip:+18005550199@-bad-.example"),
     "--to 'sip:+18005550199@-bad-.example': bad host"),
    ("call-display-name-line-break", ("call", SIP, "--insecure", "--display-name", "Alice\nX-Evil: 1"),
     "--display-name 'Alice\\nX-Evil: 1': contains control characters"),
    # rtsip mock
    ("mock-missing-config", (*MOCK, "--config", "{tmp}/missing.yaml"), "--config {tmp}/missing.yaml: no such file"),
    ("mock-config-unknown-key", (*MOCK, "--config", "{tmp}/unknown_key.yaml"),
     "unknown key 'colour'; valid keys: webhook_url,"),
    ("mock-config-unknown-nested-key", (*MOCK, "--config", "{tmp}/nested_key.yaml"),
     "unknown key 'retry.attempts'; valid keys of retry: max_attempts,"),
    ("mock-config-bad-value", (*MOCK, "--config", "{tmp}/bad_value.yaml"), "ring_timeout_s: input should be greater"),
    ("mock-config-unknown-fault", (*MOCK, "--config", "{tmp}/bad_fault.yaml"), "unknown fault 'ws_dorp'; known"),
    ("mock-config-not-yaml", (*MOCK, "--config", "{tmp}/broken.yaml"), "not YAML or JSON: line 2"),
    ("mock-config-not-a-mapping", (*MOCK, "--config", "{tmp}/list.yaml"), "expected a mapping of settings"),
    ("mock-unknown-fault", (*MOCK, "--fault", "no_such_fault"), "unknown fault 'no_such_fault'; known faults: "),
    ("mock-sip-frame-ms", (*MOCK, "--sip-frame-ms", "30"), "--sip-frame-ms 30: frame_ms must be a multiple of 20"),
    ("mock-sip-vad-frame-ms", ("mock", "--port", "0", "--sip-port", "0", "--sip-vad-frame-ms", "100"),
     "--sip-vad-frame-ms 100"),
    ("mock-sip-workers", ("mock", "--port", "0", "--sip-port", "0", "--sip-workers", "0"), "--sip-workers"),
    ("mock-port-out-of-range", ("mock", "--port", "70000", "--no-sip"), "--port must be 0"),
    ("mock-ring-timeout", (*MOCK, "--ring-timeout", "-1"), "--ring-timeout"),
    ("mock-webhook-url", (*MOCK, "--webhook-url", "localhost:8000"), "--webhook-url"),
    ("mock-webhook-secret", (*MOCK, "--webhook-secret", "whsec_***"), "after whsec_ is not valid base64"),
    ("mock-state-dir-is-a-file", (*MOCK, "--state-dir", "{tmp}/notes.txt"), "{tmp}/notes.txt is not a directory"),
    ("mock-control-token-empty", (*MOCK, "--control-token", ""), "--control-token is empty"),
    ("mock-control-token-space", (*MOCK, "--control-token", "two words"), "only visible ASCII characters"),
    ("mock-allow-host-url", (*MOCK, "--allow-host", "http://mock.internal/"), "a host, not a URL"),
    ("mock-allow-host-port", (*MOCK, "--allow-host", "mock.internal:8765"), "not a host name (no port"),
    ("mock-bad-shard", (*MOCK, "--shard", "0/0"), "need 0 <= index < count"),
    # rtsip trigger
    ("trigger-no-secret", TRIGGER, "has no webhook secret"),
    ("trigger-bad-url", ("trigger", "realtime.call.incoming", "--forward-to", "127.0.0.1:8000", "--secret", "s"),
     "--forward-to '127.0.0.1:8000'"),
    ("trigger-bad-from", (*TRIGGER, "--secret", "s", "--from", "+15555550100"), "--from '+15555550100'"),
    ("trigger-bad-timeout", (*TRIGGER, "--secret", "s", "--timeout", "0"), "--timeout"),
    # rtsip schema, run, load, demo
    ("schema-out-no-dir", ("schema", "--out", "bad/dir/x.json"), "--out bad/dir/x.json: directory bad/dir"),
    ("run-missing-file", ("run", "nope.yaml"), "no such scenario file or directory: nope.yaml"),
    ("run-no-scenarios", ("run", "{tmp}/empty"), "no scenario files"),
    ("run-zero-jobs", ("run", str(SCENARIO), "-j", "0"), "-j/--jobs must be at least 1"),
    ("run-junit-no-dir", ("run", str(SCENARIO), "--junit", "missing/r.xml"), "--junit missing/r.xml"),
    ("run-html-is-a-dir", ("run", str(SCENARIO), "--html", "{tmp}/empty"), "is a directory, expected a file"),
    ("load-missing-scenario", ("load", "nope.yaml"), "scenario nope.yaml: no such file"),
    ("load-negative-calls", ("load", str(SCENARIO), "--calls", "-1"), "--calls must be at least 1 (got -1)"),
    ("load-concurrency-over-calls", ("load", str(SCENARIO), "--calls", "5", "--concurrency", "9"),
     "--concurrency 9 is more than --calls 5"),
    ("load-json-no-dir", ("load", str(SCENARIO), "--json", "missing/r.json"), "--json missing/r.json"),
    ("load-port-out-of-range", ("load", str(SCENARIO), "--port", "-5"), "--port must be 0"),
    ("load-mock-config-unknown-key", ("load", str(SCENARIO), "--mock-config", "{tmp}/unknown_key.yaml"),
     "--mock-config {tmp}/unknown_key.yaml: unknown key 'colour'"),
    ("demo-html-no-dir", ("demo", "--html", "missing/r.html"), "--html missing/r.html"),
]

CONFIGS = {
    "unknown_key.yaml": "colour: blue\n",
    "nested_key.yaml": "retry:\n  attempts: 3\n",
    "bad_value.yaml": "ring_timeout_s: -4\n",
    "bad_fault.yaml": "faults: [ws_dorp]\n",
    "broken.yaml": "faults: [ws_drop\nretry: {}\n",
    "list.yaml": "- ws_drop\n",
}


def _workspace(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("shopping list: milk, eggs\n")
    (tmp / "empty").mkdir()
    for name, text in CONFIGS.items():
        (tmp / name).write_text(text)


def rtsip(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it, in ``tmp``, with a fresh state directory and no rtsip env."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_WEBHOOK_SECRET", "RTSIP_WEBHOOK_URL")}
    env["RTSIP_STATE_DIR"] = str(tmp / "state")
    return subprocess.run([str(RTSIP), *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=60)


def test_the_table_covers_every_command() -> None:
    import argparse

    from harness.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert isinstance(sub, argparse._SubParsersAction)
    assert {args[0] for _, args, _ in CASES} == set(sub.choices)


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    _workspace(tmp_path)
    r = rtsip([a.replace("{tmp}", str(tmp_path)) for a in args], tmp_path)
    lines = r.stderr.splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:], r.stdout[-500:])
    assert "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[0].strip(), r.stderr
    assert lines[0].startswith(f"rtsip {args[0]}: "), lines[0]
    assert needle.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert "https://errors.pydantic.dev" not in lines[0]
    assert "ready" not in r.stdout  # nothing was started


def test_trigger_without_a_secret_creates_none(tmp_path: Path) -> None:
    """The app would answer "invalid signature" to a secret made up on the spot: say so instead."""
    r = rtsip(list(TRIGGER), tmp_path)
    assert r.returncode == 2
    assert "--secret" in r.stderr and "OPENAI_WEBHOOK_SECRET" in r.stderr
    assert not (tmp_path / "state").exists()
