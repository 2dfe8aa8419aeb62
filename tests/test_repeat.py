"""``rtsip run --repeat N``: pass rates over seeded fault draws, replayed exactly, JUnit per run, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.expect import Check
from harness.report.compare import comparisons
from harness.report.rates import below, failure_kind, rates
from harness.runner import ScenarioResult
from mock_api.fault_script import draw

ROOT = Path(__file__).resolve().parent.parent
SEED = 7
RUNS = 5

# The app under test answers every webhook 200; the scenario checks that it got one. A dropped webhook
# (webhook_drop, probability 0.5) is then a failed run, and the draw alone says which runs those are.
APP = textwrap.dedent('''
    import sys
    from aiohttp import web
    async def hook(request):
        await request.read()
        return web.Response(status=200)
    async def health(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/webhook", hook)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
''')

SCENARIO = textwrap.dedent('''\
    name: chance
    app:
      command: ["{python}", app.py, "{port}"]
      ready: {http: /healthz, timeout_s: 10}
    mock:
      ring_timeout_s: 1.0
      retry_attempts: 1
      faults: [{name: webhook_drop, probability: 0.5}]
    calls:
      - steps:
          - say: caller_greeting
    expect:
      webhook_status: 200
''')


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("repeat")
    (where / "app.py").write_text(APP)
    (where / "chance.yaml").write_text(SCENARIO)
    return where / "chance.yaml"


def rtsip(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})


def per_run(report: dict[str, Any]) -> list[tuple[int, int | None, bool, str, list[dict[str, Any]]]]:
    return [(s["repeat"], s["fault_seed"], s["passed"], s["verdict"], s["fault_draws"]) for s in report["scenarios"]]


def test_repeat_reports_the_same_pass_rate_twice_and_the_exit_follows_min_pass_rate(
        scenario: Path, tmp_path: Path) -> None:
    expected = [draw(SEED + i, "webhook_drop", "1") >= 0.5 for i in range(RUNS)]  # a run passes when the drop missed
    assert 1 <= sum(expected) <= RUNS - 1, "the seed must give a mixed run"
    rate = sum(expected) / RUNS
    reports = []
    for attempt, min_rate in enumerate((rate, rate + 0.01)):
        junit, report = tmp_path / f"junit{attempt}.xml", tmp_path / f"report{attempt}.json"
        proc = rtsip("run", scenario, "--repeat", RUNS, "--seed", SEED, "-j", RUNS, "--min-pass-rate", min_rate,
                     "--junit", junit, "--json", report)
        assert proc.returncode == (0 if attempt == 0 else 1), proc.stdout + proc.stderr
        assert f"seed {SEED}" in proc.stdout and "Traceback" not in proc.stderr
        assert f"{sum(expected)}/{RUNS} runs passed" in proc.stdout
        assert f"{RUNS - sum(expected)}× webhook answer" in proc.stdout
        assert ("below --min-pass-rate" in proc.stdout) == (attempt == 1)
        doc = json.loads(report.read_text())
        reports.append(doc)
        (found,) = doc["rates"]
        assert (found["runs"], found["passes"]) == (RUNS, sum(expected))
        assert 1 / RUNS <= found["rate"] <= (RUNS - 1) / RUNS
        assert found["failure_kinds"] == {"webhook answer": RUNS - sum(expected)}
        slowest = max(doc["scenarios"], key=lambda s: s["seconds"])
        assert found["slowest"] == {"repeat": slowest["repeat"], "seconds": slowest["seconds"],
                                    "fault_seed": slowest["fault_seed"]}
        cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
        assert [c.get("name") for c in cases] == [f"chance [run {i + 1}/{RUNS}, seed {SEED + i}]" for i in range(RUNS)]
        assert [c.find("failure") is None for c in cases] == expected
    first, second = (per_run(doc) for doc in reports)
    assert first == second  # the same seed replays the same draws, the same verdicts
    assert [(i, seed, passed) for i, seed, passed, _, _ in first] == [
        (i, SEED + i, ok) for i, ok in enumerate(expected)]
    for (_, seed, passed, _, draws) in first:
        (made,) = draws
        assert (made["seed"], made["fault"], made["fired"]) == (seed, "webhook_drop", not passed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--repeat", "0"), "rtsip run: --repeat must be at least 1 (got 0)"),
        (("--min-pass-rate", "1.5"), "rtsip run: --min-pass-rate is a share of runs from 0 to 1 (got 1.5)"),
        (("--min-pass-rate", "nan"), "rtsip run: --min-pass-rate is a share of runs from 0 to 1 (got nan)"),
        (("--seed", "-1"), "rtsip run: --seed must be at least 0 (got -1)"),
    ],
)
def test_bad_run_flags_are_one_line_and_exit_2(scenario: Path, args: tuple[str, ...], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(scenario), *args]) == 2  # refused before anything starts
    out, err = capsys.readouterr()
    assert (err.strip(), out) == (message, "")


def test_a_bad_probability_in_mock_settings_is_one_line_and_exit_2(tmp_path: Path) -> None:
    settings = tmp_path / "mock.yaml"
    settings.write_text("faults:\n  - {name: webhook_drop, probability: 2}\n")
    proc = rtsip("mock", "--config", settings, "--no-sip", "--port", "0", timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (f"rtsip mock: --config {settings}: faults[0].probability: fault 'webhook_drop' "
                                   "takes a probability from 0 to 1 here, not 2")


def test_a_bad_probability_in_a_scenario_names_its_file_and_line(scenario: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario.read_text().replace("probability: 0.5", "probability: 2"))
    proc = rtsip("run", bad, "--repeat", "3", "--seed", "1", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{bad}:8" in proc.stdout and "0/1 runs passed" in proc.stdout  # a file that does not load runs once
    assert "Traceback" not in proc.stdout + proc.stderr


def run(name: str, passed: bool, seconds: float, repeat: int, verdict: str = "passed", **kw: Any) -> ScenarioResult:
    return ScenarioResult(name, f"{name}.yaml", passed, verdict, seconds, repeat=repeat, repeats=3,
                          fault_seed=10 + repeat, **kw)


def test_rates_count_failure_kinds_and_name_the_slowest_run() -> None:
    results = [
        run("a", True, 1.0, 0),
        run("a", False, 3.0, 1, "failed: webhook answer: expected 200, got None",
            checks=[Check("webhook answer", False, 200, None), Check("call_state", True, "ended", "ended")]),
        run("a", False, 2.0, 2, "error: app not ready after 3 s"),
        run("b", False, 1.0, 0, "error: MockControlError: 404 call_id_not_found"),
    ]
    a, b = rates(results)
    assert (a.name, a.runs, a.passes, round(a.rate, 3)) == ("a", 3, 1, 0.333)
    assert a.kinds == {"webhook answer": 1, "error: app not ready after 3 s": 1}
    assert (a.slowest.repeat, a.slowest.fault_seed) == (1, 11)
    assert b.kinds == {"error: MockControlError": 1}
    assert below([a, b], 0.3) == [b] and below([a, b], 0.0) == [] and below([a, b], 1.0) == [a, b]
    assert [failure_kind(r) for r in results] == [None, "webhook answer", "error: app not ready after 3 s",
                                                  "error: MockControlError"]


def test_a_repeated_compare_scenario_compares_its_variants_run_by_run() -> None:
    results = [run(f"m[{v}]", True, 1.0, i, compare="m") for i in range(2) for v in ("realtime", "live")]
    found = comparisons(results)
    assert [(c.name, c.columns) for c in found] == [("m #1", ["realtime", "live"]), ("m #2", ["realtime", "live"])]
