"""Side by side: the variants of a ``compare: true`` scenario, e.g. one caller script against a Realtime
app and against its GPT-Live port, so a migration shows what changed for the caller.

Rules:

1. Results group by :attr:`ScenarioResult.compare` (the scenario's name), in run order; a group of one
   is not a comparison. Repeated runs (``--repeat N``) group run by run (``name #2``).
2. A column is one variant's first call, read through :class:`~harness.journal_view.JournalView` on the
   surface that owns it, so both surfaces answer the same questions.
3. Rows: who owned the call, the app, the verdict, what the caller and the assistant said (as the app
   received it), each turn's latency (the caller's turn end to the first reply audio after it), the
   keys the app was told of and the keys it sent, how the call ended (state, end reason, Live
   ``session.closed`` reason, who ended it).
4. A row whose values are not all equal is marked ``differs``: that is what the migration changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mock_api.control_models import CallView

from ..journal_view import JournalView
from ..runner import ScenarioResult

NONE = "—"


@dataclass(frozen=True)
class Row:
    label: str
    values: list[str]

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


@dataclass(frozen=True)
class Comparison:
    name: str  # the scenario's
    columns: list[str]  # its variants
    rows: list[Row]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "columns": self.columns,
                "rows": [{"label": r.label, "values": r.values, "differs": r.differs} for r in self.rows]}


def comparisons(results: list[ScenarioResult]) -> list[Comparison]:
    """One comparison per ``compare: true`` scenario that ran more than one variant (rule 1)."""
    groups: dict[str, list[ScenarioResult]] = {}
    for r in results:
        if r.compare:  # a repeated run (--repeat N) compares its variants run by run
            groups.setdefault(r.compare if r.repeats == 1 else f"{r.compare} #{r.repeat + 1}", []).append(r)
    return [compare(name, group) for name, group in groups.items() if len(group) > 1]


def compare(name: str, results: list[ScenarioResult]) -> Comparison:
    columns = [_variant(r.compare or name, r.name) for r in results]
    facts = [column(r) for r in results]
    labels = list(facts[0])
    return Comparison(name, columns, [Row(label, [f[label] for f in facts]) for label in labels])


def column(result: ScenarioResult) -> dict[str, str]:
    """One variant's facts, label to text (rules 2 and 3)."""
    view = result.calls[0] if result.calls else None
    out = {"surface": (view.surface if view else None) or NONE,
           "app": _app(result.command),
           "verdict": "passed" if result.passed else result.verdict}
    if view is None:
        return {**out, **dict.fromkeys(_CALL_ROWS, NONE)}
    return {**out, **_call_facts(view)}


_CALL_ROWS = ("caller said", "assistant said", "turn latencies (ms)", "keys the app got", "keys sent to the caller",
              "call state", "end reason", "session.closed", "ended by")


def _call_facts(view: CallView) -> dict[str, str]:
    journal = JournalView.of_call(view)
    latencies = journal.turn_latencies()
    facts = [
        " / ".join(journal.said("caller")) or NONE,
        " / ".join(journal.said("assistant")) or NONE,
        ", ".join(f"{ms:.0f}" for ms in latencies) or NONE,
        journal.dtmf_to_app() or NONE,
        journal.dtmf_to_caller() or NONE,
        view.state,
        view.end_reason or NONE,
        journal.closed_reason() or NONE,
        journal.ended_by(view.end_reason) or NONE,
    ]
    return dict(zip(_CALL_ROWS, facts, strict=True))


def _app(command: list[str]) -> str:
    """The app's script (``sdk_app.py``), else its whole command."""
    return next((Path(a).name for a in command if a.endswith(".py")), " ".join(command) or NONE)


def _variant(family: str, name: str) -> str:
    """``migration[live]`` → ``live``."""
    return name[len(family) + 1:-1] if name.startswith(family + "[") and name.endswith("]") else name


def text_table(comp: Comparison) -> list[list[str]]:
    """The comparison as rows of cells (label, a value per column, a mark when it differs): for consoles."""
    return [[r.label, *r.values, "≠" if r.differs else ""] for r in comp.rows]
