"""What the caller heard, in the reports of real SIP calls: drawn from the softphone's recording.

``rtsip run`` and ``rtsip demo`` keep a SIP call's recordings in a run directory that is removed
when they end, so their reports must be written while it is there. These tests place real
SIP/TLS calls to the example app and read the reports left behind: the "heard (recording)"
track is a polygon only the decoded-WAV path of harness/report/html.py draws (the fallback
is ``rect.wf-chunk`` bars from the journal), with the WAV's duration and peak in its title.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import pytest

from harness.report.html import WAVE_POINTS, render_html
from harness.runner import run_scenario
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
RTSIP = Path(sys.executable).parent / "rtsip"  # the installed entry point of this venv

# Only the decoded-WAV path emits this polygon; the title carries the WAV's duration and peak.
TRUE_WAVE = re.compile(r'<polygon class="wave-true" points="(?P<points>[^"]*)"[^>]*data-points="(?P<n>\d+)">'
                       r"<title>(?P<title>[^<]*)</title>")
HEARD_TITLE = re.compile(r"heard \(recording\): (?P<s>[\d.]+) s, peak (?P<db>-?[\d.]+) dBFS")


def greeting_scenario(tmp_path: Path) -> Path:
    """A short SIP scenario: the caller hears the example app's greeting, then hangs up."""
    path = tmp_path / "heard_greeting.yaml"
    path.write_text(f"""\
name: heard-greeting
description: A SIP caller hears the example app's greeting and hangs up.
app:
  command: ["{{python}}", "{ROOT / 'examples' / 'sdk_app.py'}", --port, "{{port}}"]
calls:
  - mode: sip
    steps:
      - wait_for: output_audio_buffer.stopped
      - hangup: true
expect:
  call_state: ended
""")
    return path


def heard_wave(page: str) -> dict[str, Any]:
    """The report's "heard (recording)" waveform: bucket count, seconds, peak dBFS, vertical extent in px."""
    assert "could not be read" not in page, re.findall(r'<p class="wf-note">[^<]*', page)
    waves = [m for m in TRUE_WAVE.finditer(page) if m["title"].startswith("heard (recording)")]
    assert len(waves) == 1, ("no waveform drawn from what the caller heard", re.findall(r'class="wf-note">[^<]*',
                                                                                         page))
    m = waves[0]
    title = HEARD_TITLE.fullmatch(m["title"])
    assert title, m["title"]
    ys = [float(p.split(",")[1]) for p in m["points"].split()]
    return {"n": int(m["n"]), "seconds": float(title["s"]), "peak_db": float(title["db"]),
            "extent_px": max(ys) - min(ys)}


def assert_heard_speech(page: str, at_least_s: float) -> dict[str, Any]:
    """The caller heard real audio: a full envelope, long enough, loud enough, not a flat line."""
    wave_ = heard_wave(page)
    assert wave_["n"] == WAVE_POINTS, wave_
    assert wave_["seconds"] >= at_least_s, wave_
    assert wave_["peak_db"] > -30, wave_  # speech, not the silence of a dead line
    assert wave_["extent_px"] > 20, wave_
    assert re.search(r'<p class="wf-note">heard: [^<]+\.wav, [\d.]+ s, drawn from answer', page)
    return wave_


def run_rtsip(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed ``rtsip`` with its own state and temporary directories."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "RTSIP_STATE_DIR": str(tmp_path / "state"), "TMPDIR": str(tmp_path / "tmp"),
           "COLUMNS": "200"}
    proc = subprocess.run([str(RTSIP), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc


def test_rtsip_run_html_shows_what_the_caller_heard(tmp_path: Path) -> None:
    html, report = tmp_path / "run.html", tmp_path / "run.json"
    run_rtsip(["run", str(greeting_scenario(tmp_path)), "--html", str(html), "--json", str(report)], tmp_path)
    assert_heard_speech(html.read_text(), at_least_s=2.0)
    # the JSON names the recording and says it was not kept; the run directory is gone afterwards
    doc = json.loads(report.read_text())
    call = doc["scenarios"][0]["calls"][0]
    assert doc["run_dir"] is None and call["transport"] == "sip"
    assert call["recording"] and not Path(call["recording"]).exists(), call["recording"]
    assert list((tmp_path / "tmp").glob("rtsip-run-*")) == [], "the run directory outlived the command"


def test_keep_leaves_the_recording_the_report_drew(tmp_path: Path) -> None:
    html, report = tmp_path / "run.html", tmp_path / "run.json"
    proc = run_rtsip(["run", str(greeting_scenario(tmp_path)), "--html", str(html), "--json", str(report), "--keep"],
                     tmp_path)
    doc = json.loads(report.read_text())
    run_dir = Path(doc["run_dir"])
    try:
        assert f"kept in {run_dir}" in " ".join(proc.stdout.split())
        heard = assert_heard_speech(html.read_text(), at_least_s=2.0)
        recording = Path(doc["scenarios"][0]["calls"][0]["recording"])
        assert recording.is_relative_to(run_dir) and (recording.parent.parent.parent / "softphone.log").exists()
        with wave.open(str(recording), "rb") as w:
            seconds = w.getnframes() / w.getframerate()
        assert seconds == pytest.approx(heard["seconds"], abs=0.01), "the report drew this very file"
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_rtsip_demo_report_shows_what_the_caller_heard(tmp_path: Path) -> None:
    html = tmp_path / "demo.html"
    run_rtsip(["demo", "--html", str(html)], tmp_path)
    # the greeting, the caller's turn and the confirmation: the recording spans the whole call
    assert_heard_speech(html.read_text(), at_least_s=8.0)
    assert list((tmp_path / "tmp").glob("rtsip-demo-*")) == [], "the demo's run directory outlived it"


async def test_a_result_names_no_recording_the_runner_removed(tmp_path: Path) -> None:
    """Without a run directory the runner removes its temporary one: the result then names no recording in it."""
    result = await run_scenario(load_scenario(greeting_scenario(tmp_path)))
    assert result.passed, result.verdict
    call = result.calls[0]
    assert call.transport == "sip" and call.recording is None and "recording" not in call.caller, call.caller
    assert call.caller["time_to_first_audio_ms"] is not None, "the caller did hear the greeting"
    page = render_html([result])
    assert "could not be read" not in page and not TRUE_WAVE.search(page)
    assert 'class="wf-chunk"' in page, "the heard strip falls back to the journal's reply chunks"
