"""The whole run as JSON: every scenario, its checks and each call's full journal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..runner import ScenarioResult


def write_json(results: list[ScenarioResult], path: Path) -> None:
    doc = {
        "created_at": time.time(),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "scenarios": [r.to_json() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
