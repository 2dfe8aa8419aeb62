"""Append-only timelines, one per call, that tests, reports and the control API read.

Times are monotonic milliseconds since the call's first entry, with one wall-clock
anchor per call, so timelines from different calls line up and survive clock jumps.
Entries that belong to no call (unknown ids, unknown routes) go to a server timeline.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

SERVER = "_server"


@dataclass(frozen=True)
class Entry:
    seq: int
    t_ms: float
    kind: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "t_ms": round(self.t_ms, 3), "kind": self.kind, "data": self.data}


@dataclass
class Timeline:
    key: str
    started_mono: float
    started_wall: float
    entries: list[Entry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "started_at": self.started_wall,
            "entries": [e.to_json() for e in self.entries],
        }


class Journal:
    """Everyone writes, nobody edits. ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._seq = itertools.count(1)
        self._timelines: dict[str, Timeline] = {}

    def record(self, call_id: str | None, kind: str, /, **data: Any) -> Entry:
        key = call_id or SERVER
        line = self._timelines.get(key)
        now = self._clock()
        if line is None:
            line = self._timelines[key] = Timeline(key, now, self._wall())
        entry = Entry(next(self._seq), (now - line.started_mono) * 1000.0, kind, data)
        line.entries.append(entry)
        return entry

    def timeline(self, call_id: str) -> Timeline | None:
        return self._timelines.get(call_id)

    def entries(self, call_id: str | None = None, kind: str | None = None) -> Iterator[Entry]:
        line = self._timelines.get(call_id or SERVER)
        for e in line.entries if line else ():
            if kind is None or e.kind == kind or e.kind.startswith(kind + "."):
                yield e

    def call_ids(self) -> list[str]:
        return [k for k in self._timelines if k != SERVER]

    def forget(self, call_id: str) -> None:
        """Drop one call's timeline (the server's retention of ended calls)."""
        self._timelines.pop(call_id, None)

    def clear(self) -> None:
        self._timelines.clear()
