"""Append-only timelines, one per call, that tests, reports and the control API read.

Times are monotonic milliseconds since the call's first entry, with one wall-clock
anchor per call, so timelines from different calls line up and survive clock jumps.
Entries that belong to no call (unknown ids, unknown routes) go to a server timeline.

Every entry has a kind defined in :mod:`mock_api.journal_entries`: writers journal a typed entry
(:meth:`Journal.add`) or its kind and keys (:meth:`Journal.record`, checked against the same
definition), and readers parse the data back with :func:`mock_api.journal_entries.parse`. The
journal itself keeps plain JSON-able dicts, so what it serves and spills is the same either way.

Memory stays bounded whatever clients send, by entries and by bytes (each entry's JSON size,
estimated once while it is written, in the same walk that compacts it):
- audio is kept as its size and a checksum (a string under an ``audio`` key, wherever it sits
  in an event: appends, retrieved items), unless the journal records audio (``rtsip mock --record``);
- any other string longer than ``max_string_chars`` (64 KiB) is kept as its size, its sha256 and its
  first characters; the timeline counts them (``truncated``);
- a timeline keeps at most ``max_entries`` entries and ``max_timeline_bytes`` bytes; past that the
  oldest are dropped (spilled to the spill file when there is one) and the timeline says how many
  went (``dropped``);
- an entry of ``BIG_ENTRY_BYTES`` or more (a large tool schema: thousands of small dicts that cost
  several times their JSON as objects) is packed as soon as it is written, with the entries before it;
- older entries are packed: held as compressed JSON segments (about a tenth of their memory as
  objects), decoded again for whoever reads them. A long timeline (the server's) packs all but its
  newest ``SEGMENT_ENTRIES``; an ended one packs whole once ``FRESH_ENDED`` calls have ended after it.
  A mock that keeps its last 1,000 calls so holds about 50 of them as objects, and its memory is flat
  in a soak long before the 1,000th call;
- ended timelines (:meth:`end`) stay while there are at most ``retain_ended`` of them and the whole
  journal is within ``max_bytes``; past either, the oldest ended ones leave (spilled first when a spill
  file is set: one JSON line per timeline, append-only, readable with any JSONL tool) and the
  ``on_forget`` listeners hear which. The newest ``FRESH_ENDED`` ended timelines never leave for
  bytes: a reader that asks right after a call ends (a load driver) still finds it. Live timelines
  never leave: each is bounded on its own, and how many there are is the limits' business.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import json
import queue
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from .journal_entries import EntryData, EntryError, MockBug, check, parse

SERVER = "_server"
MAX_ENTRIES = 20_000  # per timeline: a 30-minute call with events every 100 ms fits
MAX_TIMELINE_BYTES = 16 * 1024 * 1024  # per timeline, estimated JSON: that call's 20,000 entries take about 6 MB
MAX_BYTES = 64 * 1024 * 1024  # the whole journal, estimated JSON (Python holds it in about 2-3 times that)
MAX_STRING_CHARS = 64 * 1024  # a longer string (1 MB of instructions) is kept as size, sha256 and a head
HEAD_CHARS = 256  # of a cut string: enough to tell which prompt it was
AUDIO_KEEP_CHARS = 256  # shorter audio strings are kept as they are (they cost nothing)
BIG_ENTRY_BYTES = 64 * 1024  # an entry this big (an accept with a large tool schema) is packed as it is written
FRESH_ENDED = 50  # newest ended timelines kept unpacked and safe from the byte cap: readers ask right at the end
ENTRY_OVERHEAD = 56  # '{"seq": ..., "t_ms": ..., "kind": "", "data": }' around an entry's data
SEGMENT_ENTRIES = 512  # a live timeline packs its older entries this many at a time, past twice as many
SEGMENT_OVERHEAD = 120  # a segment's own objects
AUDIO_KEYS = frozenset({"audio", "delta"})  # where --record keeps long strings whole (appends, audio deltas)

ForgetListener = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    t_ms: float
    kind: str
    data: dict[str, Any]
    size: int = field(default=0, compare=False)  # estimated JSON characters, counted once when written

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "t_ms": round(self.t_ms, 3), "kind": self.kind, "data": self.data}

    @property
    def typed(self) -> EntryData:
        """What the entry says, typed (:mod:`mock_api.journal_entries`), parsed from the data as kept."""
        return parse(self.kind, self.data)


def _pack(entries: Sequence[Entry]) -> bytes:
    rows = [[e.seq, e.t_ms, e.kind, e.data, e.size] for e in entries]
    return zlib.compress(json.dumps(rows, default=str, separators=(",", ":")).encode(), 1)


def _unpack(blob: bytes) -> list[Entry]:
    return [Entry(seq, t_ms, kind, data, size) for seq, t_ms, kind, data, size in json.loads(zlib.decompress(blob))]


@dataclass(frozen=True, slots=True)
class Segment:
    """Older entries of a timeline held as one compressed JSON blob (about a tenth of them as objects)."""

    blob: bytes
    count: int
    last_seq: int

    @property
    def cost(self) -> int:
        return len(self.blob) + SEGMENT_OVERHEAD

    def entries(self) -> list[Entry]:
        return _unpack(self.blob)


class EntriesView(Sequence[Entry]):
    """A timeline with packed segments as a reader sees it: the length is known, the entries are decoded
    the first time one is looked at and dropped with this object (the timeline stays packed)."""

    __slots__ = ("_items", "_segments", "_tail")

    def __init__(self, segments: list[Segment], tail: deque[Entry]) -> None:
        self._segments = list(segments)
        self._tail = tail
        self._items: list[Entry] | None = None

    async def decoded(self) -> EntriesView:
        """This view with its packed segments decoded on a thread (a long timeline's took 300 ms on the loop);
        the live tail is copied on the loop, so entries written meanwhile are not half-seen."""
        if self._items is None and self._segments:
            tail = list(self._tail)
            segments = self._segments  # a copy made at __init__: the timeline may pack or drop meanwhile
            packed = await asyncio.to_thread(lambda: [e for seg in segments for e in seg.entries()])
            self._items = packed + tail
        return self

    def _all(self) -> list[Entry]:
        if self._items is None:
            self._items = [e for seg in self._segments for e in seg.entries()] + list(self._tail)
        return self._items

    def __len__(self) -> int:
        if self._items is not None:
            return len(self._items)
        return sum(seg.count for seg in self._segments) + len(self._tail)

    @overload
    def __getitem__(self, index: int) -> Entry: ...

    @overload
    def __getitem__(self, index: slice) -> list[Entry]: ...

    def __getitem__(self, index: int | slice) -> Entry | list[Entry]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._all())


@dataclass
class Timeline:
    key: str
    started_mono: float
    started_wall: float
    dropped: int = 0  # oldest entries let go to bound memory
    truncated: int = 0  # long strings kept as size, checksum and head
    size_bytes: int = 0  # what the entries cost: the newest their estimated JSON size, packed ones their blob
    count: int = 0  # entries kept, packed or not
    segments: list[Segment] = field(default_factory=list, repr=False)  # the older entries, packed, oldest first
    tail: deque[Entry] = field(default_factory=deque, repr=False)  # the newest entries as objects

    @property
    def entries(self) -> Sequence[Entry]:
        """The entries, oldest first; packed ones are decoded for the reader, not kept decoded."""
        return EntriesView(self.segments, self.tail) if self.segments else self.tail

    @property
    def packed(self) -> bool:
        """Whether every entry is packed (an ended timeline past the fresh ones, with no late entry)."""
        return bool(self.segments) and not self.tail

    def append(self, entry: Entry) -> None:
        self.tail.append(entry)
        self.size_bytes += entry.size
        self.count += 1

    def pack(self, keep: int = 0) -> int:
        """Pack all but the newest ``keep`` entries into a segment; returns how many bytes that saved."""
        n = len(self.tail) - keep
        if n <= 0:
            return 0
        old = [self.tail.popleft() for _ in range(n)]
        seg = Segment(_pack(old), n, old[-1].seq)
        self.segments.append(seg)
        saved = sum(e.size for e in old) - seg.cost
        self.size_bytes -= saved
        return saved

    def drop_oldest(self) -> tuple[list[Entry], int]:
        """Let the oldest entry go, or the oldest packed segment whole; returns them and the bytes freed."""
        if self.segments:
            seg = self.segments.pop(0)
            gone, freed = seg.entries(), seg.cost
        else:
            first = self.tail.popleft()
            gone, freed = [first], first.size
        self.count -= len(gone)
        self.dropped += len(gone)
        self.size_bytes -= freed
        return gone, freed

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.key, "started_at": self.started_wall,
                               "entries": [e.to_json() for e in self.entries]}
        if self.dropped:
            out["dropped"] = self.dropped
        if self.truncated:
            out["truncated"] = self.truncated
        return out

    def after(self, seq: int, limit: int | None = None) -> list[Entry]:
        """Entries with a sequence number above ``seq``, oldest first, at most ``limit`` (packed segments
        are decoded only when the reader asks that far back)."""
        out: list[Entry] = []
        for e in reversed(self.tail):  # the newest are what pagers ask for
            if e.seq <= seq:
                break
            out.append(e)
        else:
            for seg in reversed(self.segments):
                if seg.last_seq <= seq:
                    break
                out.extend(e for e in reversed(seg.entries()) if e.seq > seq)
        out.reverse()
        return out if limit is None else out[:limit]


def audio_summary(value: str) -> str:
    """What the journal keeps of a base64 audio string: its size and a checksum to compare runs."""
    digest = hashlib.blake2b(value.encode("ascii", "replace"), digest_size=8).hexdigest()
    return f"<{len(value)} base64 chars, blake2b {digest}>"


def text_summary(value: str, head: int = HEAD_CHARS) -> str:
    """What the journal keeps of a very long string: its size, its sha256 (to compare runs) and its start."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"<{len(value)} chars, sha256 {digest}, first {head} kept> {value[:head]}"


class _Walk:
    """One pass over an entry's data: a compacted copy (audio summarised, long strings cut) and its
    estimated JSON size, so that nothing is serialised twice to learn how big it is."""

    __slots__ = ("cap", "cut", "record_audio", "size")

    def __init__(self, record_audio: bool, cap: int) -> None:
        self.record_audio = record_audio
        self.cap = cap
        self.size = 0
        self.cut = 0

    def value(self, value: Any, key: str | None = None) -> Any:
        kind = type(value)
        if kind is str:
            value = self.string(value, key)
            self.size += len(value) + 2
        elif kind is dict:
            value = self._dict(value)
        elif kind is list or kind is tuple:
            value = self._items(value)
        elif isinstance(value, str | dict | list | tuple):  # subclasses: the slow way, same result
            value = self.value(str(value) if isinstance(value, str) else
                               dict(value) if isinstance(value, dict) else list(value), key)
        elif isinstance(value, bool | int | float) or value is None:
            self.size += 8
        else:  # shown as str() on the wire
            self.size += 32
        return value

    # Containers take their plain leaves (short strings, numbers) in their own loop: one function call per
    # leaf made a schema of 8,000 properties cost over 100 ms of the event loop.

    def _dict(self, value: dict[Any, Any]) -> dict[Any, Any]:
        out = {}
        size = 2
        short = min(self.cap, AUDIO_KEEP_CHARS)
        for k, v in value.items():
            size += len(k) + 4 if type(k) is str else 12
            kind = type(v)
            if kind is str and (len(v) <= short or (k != "audio" and len(v) <= self.cap)):
                size += len(v) + 2
            elif kind is int or kind is float or kind is bool or v is None:
                size += 8
            else:
                v = self.value(v, k)
            out[k] = v
        self.size += size
        return out

    def _items(self, value: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
        out = []
        size = 2 + 2 * len(value)
        cap = self.cap
        for v in value:
            kind = type(v)
            if kind is str and len(v) <= cap:
                size += len(v) + 2
            elif kind is int or kind is float or kind is bool or v is None:
                size += 8
            else:
                v = self.value(v)
            out.append(v)
        self.size += size
        return tuple(out) if type(value) is tuple else out

    def string(self, value: str, key: str | None) -> str:
        n = len(value)
        if key == "audio" and n > AUDIO_KEEP_CHARS and not self.record_audio:
            return audio_summary(value)
        if n > self.cap and not (self.record_audio and key in AUDIO_KEYS):
            self.cut += 1
            return text_summary(value)
        return value


def _one_entry(key: str, entry: Entry) -> dict[str, Any]:
    return {"id": key, "entries": [entry.to_json()]}


SPILL_QUEUE = 10_000  # records waiting for the writer; past that the event loop waits for the disk


class SpillWriter:
    """Appends JSON lines to the spill file on a thread of its own, in the order they were handed over.

    Each record arrives as a function that builds it (a dropped entry, a whole timeline that left),
    so decoding and serialising happen off the event loop too; the file stays open between records.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.Queue[Callable[[], dict[str, Any]]] = queue.Queue(SPILL_QUEUE)
        self._thread = threading.Thread(target=self._run, name="rtsip-journal-spill", daemon=True)
        self._thread.start()

    def put(self, record: Callable[[], dict[str, Any]]) -> None:
        self._queue.put(record)

    def flush(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                self._queue.all_tasks_done.wait(left)

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            while True:
                record = self._queue.get()
                try:
                    f.write(json.dumps(record(), default=str) + "\n")
                    if self._queue.empty():
                        f.flush()
                except Exception as exc:  # a record that cannot be written must not stop the ones after it
                    f.write(json.dumps({"spill_error": repr(exc)[:500]}) + "\n")
                finally:
                    self._queue.task_done()


class Journal:
    """Everyone writes, nobody edits. ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time, *,
                 max_entries: int = MAX_ENTRIES, record_audio: bool = False, spill: Path | None = None,
                 max_bytes: int | None = MAX_BYTES, max_timeline_bytes: int = MAX_TIMELINE_BYTES,
                 max_string_chars: int = MAX_STRING_CHARS, retain_ended: int | None = None) -> None:
        self._clock = clock
        self._wall = wall
        self._seq = itertools.count(1)
        self._timelines: dict[str, Timeline] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # ended timelines' keys, oldest first
        self._fresh: deque[str] = deque()  # the newest ended keys, not packed yet
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_timeline_bytes = max_timeline_bytes
        self.max_string_chars = max_string_chars
        self.retain_ended = retain_ended
        self.record_audio = record_audio
        self.spill = spill
        self.bytes = 0  # estimated JSON size of every entry kept
        self.evicted = 0  # ended timelines let go (by count or bytes)
        self.on_forget: list[ForgetListener] = []
        self._spiller: SpillWriter | None = None

    def add(self, call_id: str | None, entry: EntryData) -> Entry:
        """Journal one typed entry on ``call_id``'s timeline (the server's when None)."""
        return self._append(call_id, entry.journal_kind, entry.to_data())

    def record(self, call_id: str | None, kind: str, /, **data: Any) -> Entry:
        """Journal ``kind`` with ``data`` as its keys, checked against the kind's typed entry: a kind nobody
        registered, or keys its entry does not have, is journaled as given next to a ``mock.bug`` saying so
        (runs and the pytest plugin fail on it), never dropped and never raised into the writer."""
        try:
            check(kind, data)
        except EntryError as exc:
            self.add(call_id, MockBug(where=f"journal {kind}", error=str(exc)[:500], traceback=""))
        return self._append(call_id, kind, data)

    def _append(self, call_id: str | None, kind: str, data: dict[str, Any]) -> Entry:
        key = call_id or SERVER
        line = self._timelines.get(key)
        now = self._clock()
        if line is None:
            line = self._timelines[key] = Timeline(key, now, self._wall())
        walk = _Walk(self.record_audio, self.max_string_chars)
        kept = walk.value(data)
        entry = Entry(next(self._seq), (now - line.started_mono) * 1000.0, kind, kept,
                      walk.size + len(kind) + ENTRY_OVERHEAD)
        line.append(entry)
        line.truncated += walk.cut
        self.bytes += entry.size
        if entry.size >= BIG_ENTRY_BYTES:  # as objects it would cost several times its JSON: packed at once
            self.bytes -= line.pack()
        elif len(line.tail) >= 2 * SEGMENT_ENTRIES:  # a long timeline (the server's): its older half packed
            self.bytes -= line.pack(keep=SEGMENT_ENTRIES)
        while line.count > 1 and (line.count > self.max_entries or line.size_bytes > self.max_timeline_bytes):
            self._drop_oldest(line)
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            self._evict()
        return entry

    def _drop_oldest(self, line: Timeline) -> None:
        gone, freed = line.drop_oldest()
        self.bytes -= freed
        key = line.key
        for old in gone:
            self._spill(functools.partial(_one_entry, key, old))

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
        return sum(t.count for t in self._timelines.values())

    def stats(self) -> dict[str, int]:
        """How full the journal is (``/_mock/health`` serves it): what a soak or fuzz run watches next to RSS."""
        return {"bytes": self.bytes, "timelines": len(self._timelines), "ended": len(self._ended),
                "evicted": self.evicted}

    def ended(self) -> list[str]:
        """Keys of the ended timelines still kept, oldest first."""
        return list(self._ended)

    def end(self, call_id: str) -> None:
        """The call (or call-less session) ended: its timeline may now leave, oldest ended first, once
        more than ``retain_ended`` have ended or the journal is over ``max_bytes``."""
        if call_id in self._ended:
            return
        self._ended[call_id] = None
        self._fresh.append(call_id)
        while len(self._fresh) > FRESH_ENDED:
            line = self._timelines.get(self._fresh.popleft())
            if line is not None:
                self.bytes -= line.pack()
        self._evict()

    def _evict(self) -> None:
        """Let the oldest ended timelines go while over the count, then while over the byte cap."""
        keep = self.retain_ended
        while keep is not None and len(self._ended) > keep:
            self._let_go(next(iter(self._ended)))
        while (self.max_bytes is not None and self.bytes > self.max_bytes
               and len(self._ended) > FRESH_ENDED):
            self._let_go(next(iter(self._ended)))

    def _let_go(self, key: str) -> None:
        self.evicted += 1
        self.forget(key)
        for listener in self.on_forget:
            listener(key)

    def forget(self, call_id: str) -> None:
        """Drop one call's timeline (ended calls beyond retention, or shutdown), to the spill file if set."""
        self._ended.pop(call_id, None)
        line = self._timelines.pop(call_id, None)
        if line is not None:
            self.bytes -= line.size_bytes
            self._spill(line.to_json)  # the timeline is no one else's now: the writer thread may read it

    def _spill(self, record: Callable[[], dict[str, Any]]) -> None:
        """One line for the spill file, built and written by the writer thread (``record`` makes it there:
        decoding a packed timeline and serialising it are work the event loop must not wait for)."""
        if self.spill is None:
            return
        if self._spiller is None or self._spiller.path != self.spill:
            self._spiller = SpillWriter(self.spill)
        self._spiller.put(record)

    def flush_spill(self, timeout: float | None = None) -> None:
        """Wait until everything spilled so far is in the file (shutdown, a reader of the file)."""
        if self._spiller is not None:
            self._spiller.flush(timeout)

    def clear(self) -> None:
        self._timelines.clear()
        self._ended.clear()
        self._fresh.clear()
        self.bytes = 0
