"""Append-only timelines, one per call, that tests, reports and the control API read.

Times are monotonic milliseconds since the call's first entry, with one wall-clock
anchor per call, so timelines from different calls line up and survive clock jumps.
Entries that belong to no call (unknown ids, unknown routes) go to a server timeline.

Memory stays bounded whatever clients send:
- audio is kept as its size and a checksum (a string under an ``audio`` key, wherever it sits
  in an event: appends, retrieved items), unless the journal records audio (``rtsip mock --record``);
- a timeline keeps at most ``max_entries`` entries; past that the oldest are dropped (spilled to
  the spill file when there is one) and the timeline says how many went (``dropped``);
- whole timelines leave with :meth:`forget` (the server's retention), spilled first when a spill
  file is set: one JSON line per timeline, append-only, readable with any JSONL tool.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVER = "_server"
MAX_ENTRIES = 20_000  # per timeline: a 30-minute call with events every 100 ms fits
AUDIO_KEEP_CHARS = 256  # shorter audio strings are kept as they are (they cost nothing)


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
    entries: deque[Entry] = field(default_factory=deque)
    dropped: int = 0  # oldest entries let go to bound memory

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.key, "started_at": self.started_wall,
                               "entries": [e.to_json() for e in self.entries]}
        if self.dropped:
            out["dropped"] = self.dropped
        return out

    def after(self, seq: int, limit: int | None = None) -> list[Entry]:
        """Entries with a sequence number above ``seq``, oldest first, at most ``limit``."""
        out: list[Entry] = []
        for e in reversed(self.entries):  # the newest are what pagers ask for
            if e.seq <= seq:
                break
            out.append(e)
        out.reverse()
        return out if limit is None else out[:limit]


def audio_summary(value: str) -> str:
    """What the journal keeps of a base64 audio string: its size and a checksum to compare runs."""
    digest = hashlib.blake2b(value.encode("ascii", "replace"), digest_size=8).hexdigest()
    return f"<{len(value)} base64 chars, blake2b {digest}>"


def compact(value: Any) -> Any:
    """``value`` with every long string under an ``audio`` key replaced by :func:`audio_summary`."""
    if isinstance(value, dict):
        return {k: audio_summary(v) if k == "audio" and isinstance(v, str) and len(v) > AUDIO_KEEP_CHARS
                else compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class Journal:
    """Everyone writes, nobody edits. ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time, *,
                 max_entries: int = MAX_ENTRIES, record_audio: bool = False, spill: Path | None = None) -> None:
        self._clock = clock
        self._wall = wall
        self._seq = itertools.count(1)
        self._timelines: dict[str, Timeline] = {}
        self.max_entries = max_entries
        self.record_audio = record_audio
        self.spill = spill

    def record(self, call_id: str | None, kind: str, /, **data: Any) -> Entry:
        key = call_id or SERVER
        line = self._timelines.get(key)
        now = self._clock()
        if line is None:
            line = self._timelines[key] = Timeline(key, now, self._wall())
        entry = Entry(next(self._seq), (now - line.started_mono) * 1000.0, kind,
                      data if self.record_audio else compact(data))
        line.entries.append(entry)
        if len(line.entries) > self.max_entries:
            old = line.entries.popleft()
            line.dropped += 1
            self._spill({"id": key, "entries": [old.to_json()]})
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

    def entry_count(self) -> int:
        return sum(len(t.entries) for t in self._timelines.values())

    def forget(self, call_id: str) -> None:
        """Drop one call's timeline (the server's retention of ended calls), to the spill file if set."""
        line = self._timelines.pop(call_id, None)
        if line is not None:
            self._spill(line.to_json())

    def _spill(self, record: dict[str, Any]) -> None:
        if self.spill is None:
            return
        with self.spill.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def clear(self) -> None:
        self._timelines.clear()
