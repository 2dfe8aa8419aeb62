"""Pass rates of repeated runs (``rtsip run --repeat N``): how often each scenario passes, not only whether.

Rules:

- A scenario's runs are its results of one name (a variant is a scenario of its own); the rate is passes / runs.
- A failed run has one failure kind: the names of its failed checks (``webhook answer``), else its verdict up to
  the first detail (``error: app not ready after 3 s``, ``error: MockControlError``); kinds are counted.
- The slowest run is the one with the most seconds (the first of equals).
- The run meets ``min_pass_rate`` when every scenario's rate is at least that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..runner import ScenarioResult

KIND_CHARS = 80  # a failure kind is a label to count, not the whole verdict


@dataclass(frozen=True)
class Rate:
    name: str
    file: str
    runs: int
    passes: int
    kinds: dict[str, int]  # failure kind -> how many runs failed so, most frequent first
    slowest: ScenarioResult

    @property
    def rate(self) -> float:
        return self.passes / self.runs if self.runs else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "runs": self.runs, "passes": self.passes,
                "rate": round(self.rate, 4), "failure_kinds": self.kinds,
                "slowest": {"repeat": self.slowest.repeat, "seconds": round(self.slowest.seconds, 3),
                            "fault_seed": self.slowest.fault_seed}}


def failure_kind(result: ScenarioResult) -> str | None:
    """What kind of failure a run is (``None``: it passed), short enough to count alike failures together."""
    if result.passed:
        return None
    failed = [c.name for c in result.checks if not c.ok]
    if failed and result.verdict.startswith("failed"):
        return ", ".join(dict.fromkeys(failed))[:KIND_CHARS]
    head, _, rest = result.verdict.partition(": ")
    detail = rest.split(": ", 1)[0] if rest else ""
    return (f"{head}: {detail}" if detail else head)[:KIND_CHARS]


def rates(results: list[ScenarioResult]) -> list[Rate]:
    """One rate per scenario name, in the order the scenarios first appear."""
    groups: dict[str, list[ScenarioResult]] = {}
    for r in results:
        groups.setdefault(r.name, []).append(r)
    out = []
    for name, runs in groups.items():
        kinds = Counter(k for k in map(failure_kind, runs) if k is not None)
        slowest = max(runs, key=lambda r: r.seconds)
        out.append(Rate(name, runs[0].file, len(runs), sum(r.passed for r in runs), dict(kinds.most_common()),
                        slowest))
    return out


def below(found: list[Rate], min_pass_rate: float) -> list[Rate]:
    """The scenarios whose pass rate is under ``min_pass_rate``."""
    return [r for r in found if r.rate < min_pass_rate]
