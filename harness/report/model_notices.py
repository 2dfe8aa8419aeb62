"""Calls that named a retiring or retired model: one highlighted line each, in every run report.

Rules:

- A notice comes only from the journal's ``model.retiring`` entries: the mock judged the date when
  the model was named, so a report read later says what the run saw.
- One notice per call and (model, where it was named): the first entry's facts, ``refused`` when any
  entry of that pair was refused. A hand-written entry missing a field is skipped, not guessed.
- The line is :func:`mock_api.models.advice`'s ("gpt-realtime retires on 2027-01-20: move to
  gpt-realtime-2.1"), the same words wherever it shows (text, HTML, JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mock_api import journal_entries as je
from mock_api.models import advice

from ..journal_view import JournalView
from ..runner import ScenarioResult


@dataclass(frozen=True)
class ModelNotice:
    call_id: str
    model: str
    where: str
    shutdown: str
    replacement: str | None
    days_left: int
    refused: bool

    @property
    def retired(self) -> bool:
        return self.days_left < 0

    @property
    def line(self) -> str:
        said = advice(self.model, self.shutdown, self.replacement, self.retired, self.where)
        return f"{said} (the mock refused it)" if self.refused else said

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "model": self.model, "where": self.where, "shutdown": self.shutdown,
                "replacement": self.replacement, "days_left": self.days_left, "refused": self.refused,
                "line": self.line}


def call_notices(call_id: str, journal: JournalView) -> list[ModelNotice]:
    """The call's notices, in the order its models were first named."""
    found: dict[tuple[str, str], ModelNotice] = {}
    for logged in journal.of(je.ModelRetiring, lambda e: not je.missing(e)):
        e = logged.entry
        key = (e.model, e.where)
        first = found.get(key)
        if first is None:
            found[key] = ModelNotice(call_id, e.model, e.where, e.shutdown, e.replacement, e.days_left, e.refused)
        elif e.refused and not first.refused:
            found[key] = ModelNotice(call_id, first.model, first.where, first.shutdown, first.replacement,
                                     first.days_left, True)
    return list(found.values())


def scenario_notices(result: ScenarioResult) -> list[ModelNotice]:
    """Every call's notices, calls in the scenario's order."""
    return [n for call in result.calls for n in call_notices(call.call_id, JournalView.of_call(call))]


def text_lines(results: list[ScenarioResult]) -> list[str]:
    """The run report's lines (``rtsip run`` prints them highlighted): scenario, call, what to do."""
    return [f"{r.name}: call {n.call_id}: {n.line}" for r in results for n in scenario_notices(r)]
