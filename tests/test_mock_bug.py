"""A bug inside the mock fails the run as the mock's fault, never as the app's.

The ``mock_bug`` debug fault makes the session core raise on a client event, as a real bug would: the
client gets the real ``server_error``, the journal a ``mock.bug`` with the traceback, and then
``rtsip run`` fails the scenario with "mock bug (not your app)" and the traceback in its report, and the
pytest plugin fails the test at teardown (unless ``openai_mock.allow_mock_bugs``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
RTSIP = str(Path(sys.executable).parent / "rtsip")

PLUGIN_TESTS = """
import aiohttp
import pytest


async def provoke(openai_mock):
    openai_mock.configure(faults=[{"name": "mock_bug", "event": "response.create"}])
    url = openai_mock.base_url.replace("http", "ws", 1) + "/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http, \\
            http.ws_connect(url, headers={"Authorization": "Bearer sk-test"}) as ws:
        assert (await ws.receive_json())["type"] == "session.created"
        await ws.send_json({"type": "response.create"})
        error = await ws.receive_json()
        assert error["type"] == "error" and error["error"]["type"] == "server_error", error


@pytest.mark.asyncio
async def test_provoked_by_accident(openai_mock):
    await provoke(openai_mock)


@pytest.mark.asyncio
async def test_provoked_on_purpose(openai_mock):
    openai_mock.allow_mock_bugs = True
    await provoke(openai_mock)
"""


def test_the_plugin_fails_a_test_on_a_mock_bug_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bug=PLUGIN_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # both bodies pass; the first one's teardown fails on the bug, the second one opted out
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_provoked_by_accident*",
        "*rtsip mock bug (not your app): RuntimeError(*mock_bug*",
        "*mock bug in receive (session *",
        "*Traceback (most recent call last):*",
    ])


SCENARIO = """\
name: mock-bug
app:
  command: ["{python}", %(app)s, --port, "{port}"]
mock:
  faults: [{name: mock_bug, event: response.create}]
calls:
  - speed: 3
    steps:
      - wait_for: ws.connect
      - say: caller_greeting
      - hangup: true
expect:
  call_state: ended
"""


async def test_rtsip_run_fails_the_scenario_as_a_mock_bug(tmp_path: Path) -> None:
    scenario = tmp_path / "bug.yaml"
    scenario.write_text(SCENARIO % {"app": json.dumps(str(ROOT / "examples" / "sdk_app.py"))})
    report = tmp_path / "report.json"
    env = {**os.environ, "RTSIP_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    done = await asyncio.to_thread(subprocess.run, [RTSIP, "run", str(scenario), "--json", str(report)],
                                   capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    [result] = json.loads(report.read_text())["scenarios"]
    assert not result["passed"]
    assert result["verdict"].startswith("mock bug (not your app): RuntimeError("), result["verdict"]
    [note] = [n for n in result["notes"] if n.startswith("mock bug in ")]
    assert "Traceback (most recent call last):" in note and "mock_bug" in note, note
    # the summary names whose fault it is and prints the traceback to file with the bug
    assert "mock bug (not your app)" in done.stdout and "Traceback (most recent call last):" in done.stdout


def test_the_fault_is_listed_as_a_debug_aid() -> None:
    from mock_api.faults import FAULTS, Fault

    info = FAULTS["mock_bug"]
    assert info.layer == "session" and info.section == "-" and "Debug only" in info.summary
    assert Fault.model_validate({"name": "mock_bug", "event": "session.update"}).param("event") == "session.update"
