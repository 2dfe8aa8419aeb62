"""Timing figures per call (harness/timing.py): exact numbers from hand-built journals, the scenario checks
(``expect.timing``), and one real ``rtsip run`` whose timing check passes in one variant and fails in the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.expect import evaluate
from harness.load_metrics import extract
from harness.scenario import Expectations, ScenarioError, load_scenario
from harness.timing import Span, timing
from mock_api.control_models import CallView, JournalEntry

ROOT = Path(__file__).resolve().parent.parent


def journal(*rows: tuple[float, str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries as the JSON report keeps them: (t_ms, kind, data), numbered in order."""
    return [{"seq": i + 1, "t_ms": t, "kind": kind, "data": data} for i, (t, kind, data) in enumerate(rows)]


def state(t: float, after: str) -> tuple[float, str, dict[str, Any]]:
    return (t, "state", {"before": None, "after": after, "event": "x"})


def ws(t: float, type_: str) -> tuple[float, str, dict[str, Any]]:
    return (t, "ws.server", {"event": {"type": type_}})


def out(t: float, ms: float) -> tuple[float, str, dict[str, Any]]:
    return (t, "audio.out", {"response_id": "resp_1", "ms": ms, "corrupt": False, "voice": "marin"})


# Answered at 100. The greeting's two chunks (500 ms each, the second sent while the first plays) play
# 600-1600. The caller speaks 2000-3000; the reply plays from 3400; the caller barges in at 4000 and the
# session clears the audio at 4150; the caller stops at 4800; the call ends at 9000 after 4.2 s of silence.
REALTIME = journal(
    state(0, "ringing"), state(100, "active"), out(600, 500), out(700, 500),
    ws(2000, "input_audio_buffer.speech_started"), ws(3000, "input_audio_buffer.speech_stopped"),
    out(3400, 1000), ws(4000, "input_audio_buffer.speech_started"), ws(4150, "output_audio_buffer.cleared"),
    ws(4800, "input_audio_buffer.speech_stopped"), state(9000, "ended"))


def test_the_figures_of_a_realtime_call_are_exact() -> None:
    t = timing(REALTIME)
    assert (t.answered_ms, t.ended_ms) == (100, 9000)
    assert t.playback == [Span(600, 1600), Span(3400, 4150)]
    assert t.speech == [Span(2000, 3000), Span(4000, 4800)]
    assert t.first_audio_ms == 500
    assert t.turn_latency_ms == [400]  # the second turn (ending 4800) got no reply
    assert [(b.at_ms, b.reaction_ms, b.cleared) for b in t.barge_ins] == [(4000, 150, True)]
    assert t.overlaps == [Span(4000, 4150)] and t.overlap_ms == 150
    assert t.silences == [Span(100, 600), Span(1600, 2000), Span(3000, 3400), Span(4800, 9000)]
    assert t.dead_air == [Span(4800, 9000)] and t.longest_silence_ms == 4200
    assert timing(REALTIME, dead_air_over_ms=450).dead_air == [Span(100, 600), Span(4800, 9000)]
    doc = t.to_json()
    assert doc["dead_air"] == [{"start_ms": 4800, "end_ms": 9000, "ms": 4200}]
    assert doc["barge_ins"] == [{"at_ms": 4000, "reaction_ms": 150, "cleared": True}]
    assert (doc["overlaps"], doc["overlap_ms"], doc["first_audio_ms"]) == (1, 150, 500)


def test_sip_vad_wins_and_uncleared_audio_plays_to_its_end() -> None:
    """The SIP leg's VAD is the caller's speech when the journal has it; a reply the app never cut plays out,
    so the barge-in's reaction runs to the end of the queued audio, and a reply queued behind it starts late."""
    entries = journal(
        state(50, "active"), (1000, "sip.speech_started", {"audio_ms": 900}),
        ws(1010, "input_audio_buffer.speech_started"),  # the session's VAD: not used while the SIP leg's is there
        (2000, "sip.speech_stopped", {"audio_ms": 1900, "detected_ms": 2000}),
        out(2300, 2000), (3000, "sip.speech_started", {"audio_ms": 2900}),
        (3500, "sip.speech_stopped", {"audio_ms": 3400, "detected_ms": 3500}),
        out(3600, 300), state(5000, "ended"))
    t = timing(entries)
    assert t.speech == [Span(1000, 2000), Span(3000, 3500)]
    assert t.playback == [Span(2300, 4600)]  # 2000 ms, then 300 ms queued behind it
    assert t.turn_latency_ms == [300, 800]  # the second reply began to play at 4300, when the first ended
    assert [(b.reaction_ms, b.cleared) for b in t.barge_ins] == [(1600, False)]  # until 4600
    assert t.overlaps == [Span(3000, 3500)]
    assert t.first_audio_ms == 2250
    assert t.silences == [Span(50, 1000), Span(2000, 2300), Span(4600, 5000)]


def test_a_delayed_path_puts_each_side_on_the_callers_clock() -> None:
    """media_delay: the caller spoke 300 ms before the mock heard it and hears each reply 200 ms after the mock
    sent it, so the turn latency grows by both and a barge-in that the mock saw in time hits the reply later."""
    entries = journal(
        state(50, "active"), (60, "sip.media_delay", {"to_caller_ms": 200.0, "to_model_ms": 300.0}),
        (1000, "sip.speech_started", {"audio_ms": 600}), (2000, "sip.speech_stopped", {"audio_ms": 1600,
                                                                                       "detected_ms": 1700}),
        out(2300, 2000), (3000, "sip.speech_started", {"audio_ms": 2600}),
        (3100, "sip.clear_playback", {"response_id": "resp_1"}),
        (3500, "sip.speech_stopped", {"audio_ms": 3100, "detected_ms": 3200}), state(5000, "ended"))
    t = timing(entries)
    assert t.speech == [Span(700, 1700), Span(2700, 3200)]
    assert t.playback == [Span(2500, 3300)]  # sent 2300-3100 (the clear), heard 200 ms later
    assert t.turn_latency_ms == [800]  # 300 at the mock, plus both delays
    assert [(b.at_ms, b.reaction_ms, b.cleared) for b in t.barge_ins] == [(2700, 600, True)]
    assert t.first_audio_ms == 2450
    plain = timing([e for e in entries if e["kind"] != "sip.media_delay"])
    assert plain.turn_latency_ms == [300] and plain.first_audio_ms == 2250


def test_a_live_call_reads_its_heard_turns_and_media_clears() -> None:
    entries = journal(
        state(10, "active"), (20, "live.server", {"event": {"type": "session.started"}, "to": ["c1"]}),
        out(300, 1200), (1520, "live.heard", {"text": "hi", "recognised": True, "source": "x", "reason": "x",
                                              "audio_ms": 800, "start_ms": 1000, "end_ms": 1500}),
        (1100, "live.media_cleared", {"reason": "barge_in"}), out(1900, 400), state(2500, "ended"))
    entries.sort(key=lambda e: e["t_ms"])
    t = timing(entries)
    assert t.speech == [Span(1020, 1520)]
    assert t.playback == [Span(300, 1100), Span(1900, 2300)]
    assert [(b.at_ms, b.reaction_ms, b.cleared) for b in t.barge_ins] == [(1020, 80, True)]
    assert t.turn_latency_ms == [380]
    assert t.first_audio_ms == 290


def test_without_vad_the_virtual_callers_feed_is_the_speech_and_unanswered_calls_have_no_figures() -> None:
    fed = journal(state(0, "active"), (100, "caller.say", {"label": "a", "ms": 1800, "speed": 1}),
                  (1900, "caller.said", {"label": "a", "ms": 1800}), out(2000, 500), state(2600, "ended"))
    t = timing(fed)
    assert t.speech == [Span(100, 1900)] and t.turns == [] and t.first_audio_ms == 2000
    ringing = timing(journal(state(0, "ringing"), state(5000, "no_answer")))
    assert (ringing.answered_ms, ringing.first_audio_ms, ringing.silences) == (None, None, [])


def test_load_metrics_take_the_same_figures() -> None:
    view = CallView(call_id="rtc_x", state="ended", terminal=True, transport="sip", created_at=1000.0,
                    started_at=1000.0, sip_headers=[], sip_final_status=None, refer_target=None, accept_body=None,
                    end_reason=None, entries=[JournalEntry(**e) for e in REALTIME])
    m = extract(view)
    assert m["speech_end_to_audio_ms"] == [[1003.4, 400.0]]
    assert m["answer_to_audio_ms"] == [[1000.6, 500.0]]
    assert m["dead_air_ms"] == [[1009.0, 4200.0]]
    assert m["barge_in_ms"] == [[1004.15, 150.0]]
    assert m["overlap_ms"] == [[1004.15, 150.0]]


def _checks(expect: dict[str, Any]) -> dict[str, tuple[bool, Any, Any]]:
    view = CallView(call_id="rtc_x", state="ended", terminal=True, transport="sip", created_at=0.0, started_at=0.0,
                    sip_headers=[], sip_final_status=None, refer_target=None, accept_body=None, end_reason=None,
                    entries=[JournalEntry(**e) for e in REALTIME])
    checks = evaluate(Expectations.model_validate({"timing": expect}), view, "", [])
    return {c.name: (c.ok, c.expected, c.actual) for c in checks}


def test_timing_checks_name_the_figure_the_bound_and_the_value() -> None:
    got = _checks({"first_audio_ms": {"max": 400, "min": 100}, "turn_latency_ms": {"p95": 500, "mean": 300},
                   "dead_air_ms": {"max": 3000}, "barge_in_ms": {"max": 200}, "overlaps": {"max": 0},
                   "overlap_ms": {"max": 200}})
    assert got == {
        "timing.first_audio_ms max": (False, "<= 400", 500), "timing.first_audio_ms min": (True, ">= 100", 500),
        "timing.turn_latency_ms p95": (True, "<= 500", 400), "timing.turn_latency_ms mean": (False, "<= 300", 400),
        "timing.dead_air_ms max": (False, "<= 3000", 4200), "timing.barge_in_ms max": (True, "<= 200", 150),
        "timing.overlaps max": (False, "<= 0", 1), "timing.overlap_ms max": (True, "<= 200", 150)}


def test_a_figure_the_call_never_had_fails_its_check() -> None:
    entries = [e for e in REALTIME if e["t_ms"] < 3900]  # no barge-in
    view = CallView(call_id="rtc_x", state="active", terminal=False, transport="sip", created_at=0.0,
                    started_at=0.0, sip_headers=[], sip_final_status=None, refer_target=None, accept_body=None,
                    end_reason=None, entries=[JournalEntry(**e) for e in entries])
    [check] = evaluate(Expectations.model_validate({"timing": {"barge_in_ms": {"max": 500}}}), view, "", [])
    assert not check.ok
    assert check.describe() == ("timing.barge_in_ms max: expected '<= 500', "
                                "got 'the caller never spoke over reply audio'")


@pytest.mark.parametrize(("timing_yaml", "message"), [
    ("{turn_latency: {max: 1}}", "unknown key 'turn_latency'; expected one of: first_audio_ms, turn_latency_ms"),
    ("{first_audio_ms: {p95: 1}}", "unknown key 'p95'; expected one of: max, min"),
    ("{barge_in_ms: {}}", "give at least one of max, min, p50, p90, p95, p99, mean"),
    ("{dead_air_ms: {max: -1}}", "greater than or equal to 0"),
])
def test_bad_timing_expectations_name_the_file_and_line(tmp_path: Path, timing_yaml: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\napp:\n  command: [x]\ncalls:\n  - steps: [{{hangup: true}}]\nexpect:\n"
                    f"  timing: {timing_yaml}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}:7: at expect.timing.")
    assert message in str(err.value)


# ---- a real run -----------------------------------------------------------------------------------

SCENARIO = textwrap.dedent("""\
    name: timing
    app:
      command: ["{{python}}", {app}, --port, "{{port}}"]
    mock:
      script:
        transcription_delay_s: 0.05
        turns:
          - says: "Thank you. I found your policy."
    calls:
      - speed: 2
        steps:
          - wait_for: output_audio_buffer.stopped   # the greeting has played
          - say: caller_policy_number
          - wait_for: output_audio_buffer.stopped   # the reply has played
          - hangup: true
    expect:
      timing:
        first_audio_ms: {{max: 10000}}
        dead_air_ms: {{max: 20000}}
        overlaps: {{max: 0}}
    variants:
      relaxed:
        expect:
          timing: {{turn_latency_ms: {{p95: 10000}}, first_audio_ms: {{max: 10000}}}}
      strict:
        expect:
          timing: {{turn_latency_ms: {{max: 1}}, first_audio_ms: {{max: 10000}}}}
    """)


# The caller talks over a long reply; the mock's server VAD cuts it (interrupt_response) and clears the audio.
BARGE_IN = textwrap.dedent("""\
    name: barge
    app:
      command: ["{{python}}", {app}, --port, "{{port}}"]
    mock:
      script:
        turns:
          - says: "Thank you. I found your policy 5665-2870 for Michelle Perry, and it is active until next year."
    calls:
      - steps:
          - barge_in: caller_policy_number
          - wait_for: output_audio_buffer.stopped
          - hangup: true
    expect:
      timing: {{barge_in_ms: {{max: 500}}}}
    """)


def test_a_real_run_passes_a_timing_threshold_and_fails_a_strict_one_naming_it(tmp_path: Path) -> None:
    path, barge = tmp_path / "timing.yaml", tmp_path / "barge.yaml"
    path.write_text(SCENARIO.format(app=ROOT / "examples" / "sdk_app.py"))
    barge.write_text(BARGE_IN.format(app=ROOT / "examples" / "sdk_app.py"))
    report, html = tmp_path / "run.json", tmp_path / "run.html"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), str(barge), "-j", "3",
                          "--json", str(report), "--html", str(html)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 1, run.stdout + run.stderr
    doc = json.loads(report.read_text())
    by_name = {s["name"]: s for s in doc["scenarios"]}
    relaxed, strict = by_name["timing[relaxed]"], by_name["timing[strict]"]
    assert relaxed["passed"], relaxed["verdict"]
    [figures] = relaxed["timing"]
    assert figures["first_audio_ms"] > 0 and len(figures["turn_latency_ms"]) == 1 and figures["overlaps"] == 0
    latency = strict["timing"][0]["turn_latency_ms"][0]
    failed = [c for c in strict["checks"] if not c["ok"]]
    assert [(c["name"], c["expected"], c["actual"]) for c in failed] == [
        ("timing.turn_latency_ms max", "<= 1", round(latency, 1))]
    assert f"timing.turn_latency_ms max: expected '<= 1', got {round(latency, 1)!r}" in run.stdout
    [cut] = by_name["barge"]["timing"][0]["barge_ins"]
    assert by_name["barge"]["passed"], by_name["barge"]["verdict"]
    assert cut["cleared"] and 0 <= cut["reaction_ms"] <= 500
    page = html.read_text()
    assert page.count('<svg class="timing-strip"') == 3  # one per call
    assert f"<th>turn latency (caller&#39;s turn end → reply audio)</th><td>{latency:g} ms</td>" in page
