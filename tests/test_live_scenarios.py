"""GPT-Live in scenarios: ``surface: live|both``, the Live expectations, the example Live app run end to end by the
runner (a subprocess, virtual and SIP callers), ``rtsip demo --live``, the migration comparison and the pytest
plugin placing a Live call. Real mock, real app processes, the official SDK inside the apps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.expect import in_order
from harness.journal_view import JournalView
from harness.pytest_plugin import OpenAIMock
from harness.runner import ScenarioResult, run_files
from harness.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "scenarios" / "examples"
LIVE_APP = ROOT / "examples" / "live_sip_app.py"
SDK_APP = ROOT / "examples" / "sdk_app.py"


def _failed(result: ScenarioResult) -> list[str]:
    return [c.describe() for c in result.checks if not c.ok]


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _example(name: str) -> dict[str, Any]:
    """An example scenario with its app's path made absolute, to be varied in a temporary directory."""
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    doc["app"]["command"] = [str((EXAMPLES / a).resolve()) if a.endswith(".py") else a for a in doc["app"]["command"]]
    return doc


async def test_the_live_example_runs_end_to_end_and_a_broken_expectation_names_itself(tmp_path: Path) -> None:
    doc = _example("live_sip_app.yaml")
    doc["variants"] = {
        "as_written": {},
        "broken": {"expect": {"closed_reason": "close_requested", "dtmf_sent": "9",
                              "live_events": ["session.started", "session.paused"]}},
    }
    good, bad = await run_files([_write(tmp_path, doc)], jobs=2)
    assert good.passed, (good.verdict, good.notes, [line for _, line in good.app_output])
    view = good.calls[0]
    assert (view.surface, view.state) == ("live", "ended") and view.live_id.startswith("live_")
    journal = JournalView.of_call(view)
    assert journal.said("caller") == ["My policy number is 5665-2870."]
    assert journal.said("assistant") == ["Thanks, I found policy 5665-2870."]
    assert (journal.dtmf_to_app(), journal.dtmf_to_caller(), journal.closed_reason()) == ("1", "1", "remote_hangup")
    names = {c.name for c in good.checks}
    assert {"live_events", "closed_reason", "dtmf sent to the caller", "surface", "ended by"} <= names
    assert not bad.passed
    assert sorted(_failed(bad)) == [
        "closed_reason: expected 'close_requested', got 'remote_hangup'",
        "dtmf sent to the caller: expected '9', got '1'",
        "live_events: expected ['session.started', 'session.paused'], got ['session.started']",
    ]
    assert "closed_reason: expected 'close_requested'" in bad.verdict


@pytest.mark.sip
async def test_the_live_example_takes_a_real_sip_call() -> None:
    [result] = await run_files([EXAMPLES / "live_sip_app_sip.yaml"])
    assert result.passed, (result.verdict, result.notes, [line for _, line in result.app_output])
    view = result.calls[0]
    assert view.transport != "virtual" and view.surface == "live"
    assert "sip.dtmf" in view.kinds() and "live.dtmf_out" in view.kinds()


async def test_both_surfaces_the_first_accept_wins_as_the_scenario_says(tmp_path: Path) -> None:
    doc = _example("live_sip_app.yaml")
    doc["surface"] = "both"
    doc["expect"] = {"accepted": True, "reply_heard": True, "ended_by": "caller"}
    doc["calls"][0]["steps"] = [{"say": "caller_policy_number"}, {"wait_for": "audio.out"}, {"hangup": True}]
    doc["variants"] = {  # the Realtime app greets (its audio.out comes first); the Live one answers the caller
        "live_app": {"expect": {"surface": "live", "closed_reason": "remote_hangup", "caller_said": ["5665-2870"],
                                "app_output": ["ignored realtime.call.incoming"]}},
        "realtime_app": {"command": ["{python}", str(SDK_APP), "--port", "{port}"],
                         "expect": {"surface": "realtime", "ws_connected": True}},
    }
    live, realtime = await run_files([_write(tmp_path, doc)], jobs=2)
    for result in (live, realtime):
        assert result.passed, (result.name, result.verdict, [line for _, line in result.app_output][-15:])
    assert (live.calls[0].surface, realtime.calls[0].surface) == ("live", "realtime")


async def test_a_barge_in_cuts_the_live_reply(tmp_path: Path) -> None:
    reply = "Thanks, I found policy 5665-2870, and I can tell you a great deal more about it if you want."
    doc = _example("live_sip_app.yaml")
    doc["mock"]["script"]["turns"] = [{"hears": "policy number", "says": reply}, {"says": "Sure, go ahead."}]
    doc["calls"][0]["steps"] = [{"say": "caller_policy_number"}, {"barge_in": "caller_confirm"},
                                {"wait_for": "live.heard"}, {"wait_for": "live.heard"}, {"hangup": True}]
    doc["expect"] = {"surface": "live", "caller_said": ["Yes, that's correct"], "closed_reason": "remote_hangup"}
    [result] = await run_files([_write(tmp_path, doc)])
    assert result.passed, (result.verdict, result.notes)
    said = JournalView.of_call(result.calls[0]).said("assistant")
    assert len(said) == 2 and said[0] != reply and reply.startswith(said[0])  # the caller cut it short


def test_an_expectation_of_the_other_surface_is_a_scenario_error_naming_its_line(tmp_path: Path) -> None:
    doc = _example("live_sip_app.yaml")
    doc["expect"] = {"surface": "live", "transcription_events": "completed"}
    with pytest.raises(ScenarioError) as exc:
        load_scenario(_write(tmp_path, doc))
    line = yaml.safe_dump(doc, sort_keys=False).splitlines().index("  transcription_events: completed") + 1
    assert exc.value.line == line
    assert "transcription_events is a Realtime-only expectation" in str(exc.value)

    realtime = {**_example("live_sip_app.yaml"), "surface": "realtime", "expect": {"closed_reason": "remote_hangup"}}
    with pytest.raises(ScenarioError, match="closed_reason is a GPT-Live-only expectation"):
        load_scenario(_write(tmp_path, realtime, "realtime.yaml"))

    waits = _example("live_sip_app.yaml")
    waits["calls"][0]["steps"][1] = {"wait_for": "response.done"}
    with pytest.raises(ScenarioError, match=r"calls\[0\]\.steps\[1\]\.wait_for: response.done is a realtime event"):
        load_scenario(_write(tmp_path, waits, "waits.yaml"))

    both = {**_example("live_sip_app.yaml"), "surface": "both", "expect": {"reply_heard": True}}
    with pytest.raises(ScenarioError, match=r"surface: both needs expect\.surface"):
        load_scenario(_write(tmp_path, both, "both.yaml"))

    alone = {**_example("live_sip_app.yaml"), "compare": True}
    with pytest.raises(ScenarioError, match="compare: true needs at least two variants"):
        load_scenario(_write(tmp_path, alone, "alone.yaml"))


def test_in_order_allows_events_between() -> None:
    seen = ["session.started", "session.input_audio.append", "session.input_transcript.delta", "session.closed"]
    assert in_order(seen, ["session.started", "session.closed"])
    assert not in_order(seen, ["session.closed", "session.started"])
    assert not in_order(seen, ["session.started", "session.paused"])


def _cli_env(tmp_path: Path) -> dict[str, str]:
    return {"RTSIP_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}


def test_rtsip_demo_live(tmp_path: Path) -> None:
    report = tmp_path / "demo.html"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "demo", "--live", "--html", str(report)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env=_cli_env(tmp_path))
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    for text in ("rtsip demo --live", "POST live.transport.incoming → 200", "app → accept", "app attached (/attach)",
                 "model heard “My policy number is 5665-2870.”", "← mock transport.dtmf.received 1",
                 "app → transport.dtmf.send 1", "← mock session.closed (remote_hangup)"):
        assert text in out, text
    assert "Thank you. I found policy 5665-2870 for Michelle Perry." in out
    assert report.exists() and "<svg" in report.read_text()
    assert "PASS passed" in out


def test_the_migration_report_holds_both_columns(tmp_path: Path) -> None:
    html, report = tmp_path / "run.html", tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(EXAMPLES / "migration.yaml"), "--html",
                           str(html), "--json", str(report)], capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env=_cli_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "migration: side by side" in proc.stdout
    [comparison] = json.loads(report.read_text())["comparisons"]
    assert comparison["name"] == "migration" and comparison["columns"] == ["realtime", "live"]
    rows = {r["label"]: r for r in comparison["rows"]}
    assert rows["surface"]["values"] == ["realtime", "live"] and rows["surface"]["differs"]
    assert rows["app"]["values"] == ["sdk_app.py", "live_sip_app.py"]
    assert all("5665-2870" in v for v in rows["caller said"]["values"])
    assert rows["keys the app got"]["values"] == ["1", "1"] and not rows["keys the app got"]["differs"]
    assert rows["session.closed"]["values"] == ["—", "remote_hangup"]
    assert all(v != "—" for v in rows["turn latencies (ms)"]["values"])
    page = html.read_text()
    assert "migration: side by side" in page and "<th>realtime</th><th>live</th>" in page


async def test_the_plugin_places_a_live_call(openai_mock: OpenAIMock) -> None:
    openai_mock.expect(surface="live", accepted=True, closed_reason="remote_hangup", ended_by="caller",
                       caller_said=["5665-2870"], dtmf_received="5", dtmf_sent="5", server_errors=[],
                       live_events=["session.started", "session.input_transcript.delta", "transport.dtmf.received",
                                    "session.closed"])
    async with openai_mock.app([sys.executable, str(LIVE_APP), "--port", "{port}"]) as app:
        call = await openai_mock.place_call(surface="live")
        assert call.live_id.startswith("live_")
        await openai_mock.wait_event(call.call_id, "live.connect")  # the app attached its sideband
        await openai_mock.control.say(call.call_id, "caller_policy_number", speed=4, wait=True)
        await openai_mock.wait_event(call.call_id, "live.heard")
        await openai_mock.control.dtmf(call.call_id, "5")
        await openai_mock.wait_event(call.call_id, "transport.dtmf.sent")
        await openai_mock.control.caller_hangup(call.call_id)
        await openai_mock.wait_event(call.call_id, "live.close")
    assert "DTMF from caller: 5" in app.output
