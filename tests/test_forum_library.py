"""The forum bug library: each scenario shows its symptom on the buggy app and passes on the fixed one.

Runs the real command line (`rtsip run scenarios/forum -j 2`), then swaps each scenario's
expectations between its variants to prove every symptom check is specific: the buggy
app's expectations fail against the fixed app, and the other way round.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.runner import ScenarioResult, run_scenario
from harness.scenario import Scenario, Variant, expand, load_scenario

ROOT = Path(__file__).resolve().parent.parent
FORUM = ROOT / "scenarios" / "forum"
LIVE = ROOT / "scenarios" / "live"  # GPT-Live's failure modes, the same buggy/fixed shape
LIBRARIES = [pytest.param(FORUM, id="forum"), pytest.param(LIVE, id="live")]
# failure modes (docs/failure-modes.md) an app can hit; 15, 28 and 29 are SIP-level
REQUIRED = {*range(1, 15), *range(16, 28)}


def test_library_covers_the_failure_modes() -> None:
    files = sorted(FORUM.glob("*.yaml"))
    numbers = {int(f.name.split("_")[0]) for f in files}
    assert numbers >= REQUIRED
    for f in files:
        first = f.read_text().splitlines()[0]
        assert first.startswith("# Symptom:"), f"{f.name} must open with the symptom"
        assert "Thread:" in f.read_text().split("\nname:")[0], f"{f.name} must name the thread"
        assert set(load_scenario(f).variants) == {"buggy", "fixed"}


@pytest.mark.timeout(600)  # 23 scenarios, two variants each, two at a time (about 3.5 min on a busy machine)
@pytest.mark.parametrize("library", LIBRARIES)
def test_rtsip_run_forum_library(tmp_path: Path, library: Path) -> None:
    junit = tmp_path / "forum.xml"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(library), "-j", "2", "--junit", str(junit)],
                          capture_output=True, text=True, timeout=480, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", 0)) == 2 * len(list(library.glob("*.yaml")))
    assert suite.get("failures") == "0" and suite.get("errors") == "0"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("library", LIBRARIES)
async def test_each_symptom_check_is_specific(library: Path) -> None:
    runs = []
    for f in sorted(await asyncio.to_thread(lambda: list(library.glob("*.yaml")))):
        s = load_scenario(f)
        b, fx = s.variants["buggy"], s.variants["fixed"]
        swapped = s.model_copy(update={"variants": {
            "buggy-app-fixed-checks": Variant(app_args=b.app_args, env=b.env, faults=b.faults, expect=fx.expect),
            "fixed-app-buggy-checks": Variant(app_args=fx.app_args, env=fx.env, faults=fx.faults, expect=b.expect),
        }})
        runs += expand(swapped)
    sem = asyncio.Semaphore(2)

    async def one(scenario: Scenario) -> ScenarioResult:
        async with sem:
            return await run_scenario(scenario)

    results = await asyncio.gather(*(one(s) for s in runs))
    wrongly_passing = [r.name for r in results if r.passed]
    assert not wrongly_passing
    assert all(r.verdict.startswith("failed:") for r in results), [r.verdict for r in results if "error" in r.verdict]
