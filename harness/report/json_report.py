"""The whole run as JSON: every scenario, its checks, each call's full journal, timing figures and model notices,
and the side-by-side comparisons of ``compare: true`` scenarios."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..runner import ScenarioResult
from ..timing import timing
from .compare import comparisons
from .model_notices import scenario_notices
from .rates import rates


def write_json(results: list[ScenarioResult], path: Path, run_dir: Path | None = None) -> None:
    """``run_dir``: the kept run directory the calls' ``recording`` paths point into.

    It is null when the run's files did not outlive the command (``rtsip run`` without ``--keep``),
    so a reader knows those paths are gone rather than finding out.
    """
    doc = {
        "created_at": time.time(),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "scenarios": [{**r.to_json(), "model_notices": [n.to_json() for n in scenario_notices(r)],
                       "timing": [timing(c.entries).to_json() for c in r.calls]}  # per call, harness/timing.py
                      for r in results],
        "comparisons": [c.to_json() for c in comparisons(results)],  # compare: true scenarios, side by side
    }
    if any(r.repeats != 1 for r in results):  # rtsip run --repeat N: each scenario's pass rate
        doc["rates"] = [rate.to_json() for rate in rates(results)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
