"""The runner warns when the script's turns and the committed turns disagree (harness/turn_check.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.runner import ScenarioResult, run_scenario
from harness.scenario import ScenarioError, load_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# examples/sdk_app.py: accepts, declares lookup_policy, answers function calls; with --bug default_vad it
# keeps the 200 ms server_vad default (failure mode 30), which commits the caller's two utterances as 2 + 3 turns.
SCENARIO = textwrap.dedent("""\
    name: turns-{name}
    app:
      command: ["{{python}}", {app}, --port, "{{port}}", --bug, default_vad]
    mock:
      script:
        transcription_delay_s: 0.05
        turns:
    {turns}
    calls:
      - mode: virtual
        speed: 4
        steps:
          - say: caller_greeting
          - say: caller_policy_number
    expect:
      accepted: true
    """)
BY_ORDER = """\
          - says: "Hi Michelle. Your policy number, please?"
          - tool_calls: [{name: lookup_policy, arguments: {policy_number: "5665-2870"}}]
"""
BY_CLIP = """\
          - match_clip: caller_greeting
            says: "Hi Michelle. Your policy number, please?"
          - match_clip: caller_policy_number
            tool_calls: [{name: lookup_policy, arguments: {policy_number: "5665-2870"}}]
"""


async def run(tmp_path: Path, name: str, turns: str) -> ScenarioResult:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SCENARIO.format(name=name, app=EXAMPLES / "sdk_app.py", turns=textwrap.indent(turns, "    ")))
    return await run_scenario(load_scenario(path))


def heard(result: ScenarioResult) -> list[tuple[str, str]]:
    return [(e.data["text"], e.data["script"]["how"]) for e in result.calls[0].of_kind("audio.heard")]


async def test_a_script_by_order_gets_a_warning_naming_the_split(tmp_path: Path) -> None:
    result = await run(tmp_path, "order", BY_ORDER)
    assert result.passed, result.verdict
    assert len(heard(result)) == 5
    [warning] = result.warnings
    assert "the caller spoke 2 utterances but the session committed 5 user turns" in warning
    assert "caller_greeting as 'Hi, this is Michelle.' + \"I'm calling about my car insurance.\"" in warning
    assert "match_clip" in warning
    assert result.to_json()["warnings"] == result.warnings  # the JSON report carries it too


async def test_a_script_matched_by_clip_answers_each_utterance_once_without_warnings(tmp_path: Path) -> None:
    result = await run(tmp_path, "clip", BY_CLIP)
    assert result.passed, result.verdict
    assert heard(result) == [("Hi, this is Michelle.", "partial"), ("I'm calling about my car insurance.", "clip"),
                             ("My policy number is", "partial"), ("5665-", "partial"), ("2870.", "clip")]
    assert result.warnings == []


async def test_a_matcher_that_never_matched_is_warned_about(tmp_path: Path) -> None:
    turns = BY_CLIP.replace("match_clip: caller_policy_number", "match_text: claim number")
    result = await run(tmp_path, "unmatched", turns)
    assert result.passed, result.verdict
    [warning] = result.warnings
    assert "script turn 2 (match_text 'claim number') never answered" in warning and "'2870.'" in warning


def test_a_match_clip_that_names_no_clip_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.format(name="bad", app=EXAMPLES / "sdk_app.py", turns=textwrap.indent(
        "      - match_clip: caller_greting\n", "    ")))
    with pytest.raises(ScenarioError, match="match_clip: no fixture and no clip this scenario plays 'caller_greting'"):
        load_scenario(path)
