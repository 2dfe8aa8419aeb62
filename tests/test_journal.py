"""The journal keeps everything a test reads and stays bounded whatever clients send."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mock_api.journal import FRESH_ENDED, HEAD_CHARS, SEGMENT_ENTRIES, SERVER, Journal, text_summary
from mock_api.journal_entries import ABSENT, MockBug, Unknown, WsClose, parse


def test_audio_is_kept_as_size_and_checksum_wherever_it_sits() -> None:
    j = Journal()
    blob = "QUJD" * 10_000
    item: dict[str, Any] = {"type": "message", "content": [{"type": "input_audio", "audio": blob, "transcript": "hi"}]}
    e = j.record("rtc_1", "ws.server", event={"type": "conversation.item.retrieved", "item": item})
    kept = e.data["event"]["item"]["content"][0]
    assert kept["audio"].startswith("<40000 base64 chars, blake2b ") and kept["transcript"] == "hi"
    assert item["content"][0]["audio"] == blob  # the event itself is not touched
    assert j.record("rtc_1", "test.x", audio="AAAA").data["audio"] == "AAAA"  # short strings cost nothing
    assert Journal(record_audio=True).record("c", "test.x", audio=blob).data["audio"] == blob


def test_a_timeline_keeps_its_newest_entries_and_spills_the_rest(tmp_path: Path) -> None:
    spill = tmp_path / "journal.jsonl"
    j = Journal(max_entries=100, spill=spill)
    for i in range(250):
        j.record("rtc_1", "test.tick", i=i)
    line = j.timeline("rtc_1")
    assert line is not None and len(line.entries) == 100 and line.dropped == 150
    assert [e.data["i"] for e in line.entries][:2] == [150, 151] and line.to_json()["dropped"] == 150
    assert [e.data["i"] for e in line.after(line.entries[-3].seq)] == [248, 249]
    assert [e.data["i"] for e in line.after(0, limit=2)] == [150, 151]
    j.forget("rtc_1")
    j.flush_spill()
    rows = [json.loads(r) for r in spill.read_text().splitlines()]
    assert len(rows) == 151  # 150 single entries as they went, then the rest of the timeline at once
    assert [r["entries"][0]["data"]["i"] for r in rows[:150]] == list(range(150))
    assert len(rows[-1]["entries"]) == 100 and j.timeline("rtc_1") is None


def held(j: Journal, keys: list[str]) -> int:
    """What the journal's timelines say they cost, added up (its own total must agree)."""
    return sum(line.size_bytes for line in map(j.timeline, keys) if line is not None)


def test_a_long_string_is_kept_as_size_checksum_and_head() -> None:
    j = Journal(max_string_chars=1024)
    prompt = "You are a helpful agent. " + "x" * 5000
    e = j.record("rtc_1", "ws.client", event={"type": "session.update", "session": {"instructions": prompt}})
    kept = e.data["event"]["session"]["instructions"]
    assert kept == text_summary(prompt)
    assert kept.startswith(f"<{len(prompt)} chars, sha256 {hashlib.sha256(prompt.encode()).hexdigest()}, ")
    assert kept.endswith(prompt[:HEAD_CHARS]) and len(kept) < HEAD_CHARS + 200
    line = j.timeline("rtc_1")
    assert line is not None and line.truncated == 1 and line.to_json()["truncated"] == 1
    assert j.record("rtc_1", "test.x", text="y" * 1024).data["text"] == "y" * 1024  # at the cap: kept whole
    recorder = Journal(record_audio=True, max_string_chars=1024)
    kept_audio = recorder.record("c", "test.x", audio="QUJD" * 1000, delta="QUJD" * 1000, text="z" * 4000).data
    assert kept_audio["audio"] == kept_audio["delta"] == "QUJD" * 1000  # --record keeps audio whole, only audio
    assert kept_audio["text"] == text_summary("z" * 4000)


def test_each_entry_is_sized_once_and_a_timeline_is_bounded_by_bytes(tmp_path: Path) -> None:
    spill = tmp_path / "journal.jsonl"
    j = Journal(max_timeline_bytes=50_000, spill=spill)
    first = j.record("rtc_1", "test.tick", text="a" * 1000)
    assert 1000 < first.size < 1000 + 200  # the JSON it stands for, not Python's memory
    assert abs(first.size - len(json.dumps(first.to_json()))) < 100
    for i in range(200):
        j.record("rtc_1", "test.tick", i=i, text="a" * 1000)
    line = j.timeline("rtc_1")
    assert line is not None and line.size_bytes <= 50_000 and j.bytes == line.size_bytes
    assert line.dropped == 201 - len(line.entries) > 0 and len(line.entries) == line.count
    assert [e.data["i"] for e in line.entries][-1] == 199
    j.flush_spill()
    assert len(spill.read_text().splitlines()) == line.dropped  # what went is in the spill file


def test_old_ended_timelines_are_packed_and_read_back_the_same() -> None:
    j = Journal()
    keys = [f"rtc_{n}" for n in range(FRESH_ENDED + 3)]
    for key in keys:
        for i in range(20):
            j.record(key, "test.tick", i=i, event={"type": "response.done", "ids": [key, i]})
    before = {key: j.timeline(key).to_json() for key in keys}  # type: ignore[union-attr]
    as_objects = j.timeline(keys[0]).size_bytes  # type: ignore[union-attr]
    for key in keys:
        j.end(key)
    packed = [key for key in keys if j.timeline(key).packed]  # type: ignore[union-attr]
    assert packed == keys[:3]  # all but the newest FRESH_ENDED
    assert j.timeline(keys[0]).size_bytes < as_objects / 3  # type: ignore[union-attr]
    assert {key: j.timeline(key).to_json() for key in keys} == before  # type: ignore[union-attr]
    line = j.timeline(keys[0])
    assert line is not None and len(line.entries) == 20 and line.entries[-1].data["i"] == 19
    assert [e.data["i"] for e in line.after(line.entries[17].seq)] == [18, 19]
    late = j.record(keys[0], "ws.close", code=1000)  # a late entry for a packed call is kept too
    assert [e.seq for e in line.entries][-1] == late.seq and line.count == 21
    assert j.bytes == held(j, keys)


def test_a_long_live_timeline_packs_its_older_entries() -> None:
    j = Journal(max_entries=3 * SEGMENT_ENTRIES)
    for i in range(5 * SEGMENT_ENTRIES):
        j.record(None, "test.tick", i=i, note="server timeline entry")
    line = j.timeline(SERVER)
    assert line is not None and line.segments and len(line.tail) < 2 * SEGMENT_ENTRIES
    kept = [e.data["i"] for e in line.entries]
    assert kept == list(range(5 * SEGMENT_ENTRIES - len(kept), 5 * SEGMENT_ENTRIES))
    assert len(kept) <= 3 * SEGMENT_ENTRIES and line.dropped == 5 * SEGMENT_ENTRIES - len(kept)
    oldest = line.entries[0].seq
    assert [e.data["i"] for e in line.after(oldest, limit=2)] == kept[1:3]  # reaches into the packed part
    assert [e.data["i"] for e in line.after(line.entries[-2].seq)] == kept[-1:]


def test_over_the_byte_cap_the_oldest_ended_timelines_leave(tmp_path: Path) -> None:
    spill = tmp_path / "journal.jsonl"
    j = Journal(max_bytes=3_000_000, max_string_chars=100_000, spill=spill)
    gone: list[str] = []
    j.on_forget.append(gone.append)
    j.record("live", "test.tick", text=os.urandom(25_000).hex())  # 50 kB that packing cannot shrink much
    for n in range(FRESH_ENDED + 30):
        j.record(f"rtc_{n}", "test.tick", text=os.urandom(25_000).hex())
        j.end(f"rtc_{n}")
    assert j.bytes <= 3_000_000
    assert gone and gone == [f"rtc_{n}" for n in range(len(gone))]  # oldest first
    assert j.timeline("live") is not None  # a live timeline never leaves
    assert len(j.ended()) > FRESH_ENDED and j.ended()[-1] == f"rtc_{FRESH_ENDED + 29}"
    j.flush_spill()
    assert j.evicted == len(gone) and [json.loads(r)["id"] for r in spill.read_text().splitlines()] == gone
    assert j.bytes == held(j, ["live", *j.ended()])


def test_retain_ended_keeps_that_many_ended_timelines() -> None:
    j = Journal(retain_ended=2)
    gone: list[str] = []
    j.on_forget.append(gone.append)
    for n in range(5):
        j.record(f"rtc_{n}", "test.tick")
        j.end(f"rtc_{n}")
        j.end(f"rtc_{n}")  # twice is once
    assert j.ended() == ["rtc_3", "rtc_4"] and gone == ["rtc_0", "rtc_1", "rtc_2"]
    assert sorted(j.call_ids()) == ["rtc_3", "rtc_4"]


def test_typed_entries_are_journaled_as_the_keys_writers_always_wrote() -> None:
    j = Journal()
    typed = j.add("rtc_1", WsClose(code=None, reason="call ended", dropped=True))
    given = j.record("rtc_1", "ws.close", code=None, reason="call ended", dropped=True)
    assert typed.kind == given.kind == "ws.close" and typed.data == given.data
    assert list(typed.data) == ["code", "reason", "dropped"]  # absent keys stay absent, None stays null
    assert typed.typed == WsClose(None, "call ended", True) and typed.typed.queued_bytes is ABSENT
    assert [e.kind for e in j.entries("rtc_1")] == ["ws.close", "ws.close"]


def test_a_wrong_kind_or_key_is_journaled_with_a_mock_bug_next_to_it() -> None:
    j = Journal()
    j.record("rtc_1", "ws.closed", code=1000)  # a kind nobody registered
    j.record("rtc_1", "ws.close", status=1000)  # a key ws.close does not have
    j.record("rtc_1", "test.anything", whatever=1)  # tests' filler is free-form
    kinds = [e.kind for e in j.entries("rtc_1")]
    assert kinds == ["mock.bug", "ws.closed", "mock.bug", "ws.close", "test.anything"]
    bugs = [e.typed for e in j.entries("rtc_1", "mock.bug")]
    assert all(isinstance(b, MockBug) for b in bugs)
    assert "'ws.closed' is not registered" in bugs[0].to_data()["error"]
    assert "status" in bugs[1].to_data()["error"]
    assert isinstance(parse("ws.closed", {"code": 1000}), Unknown)
