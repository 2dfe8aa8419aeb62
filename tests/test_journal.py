"""The journal keeps everything a test reads and stays bounded whatever clients send."""

from __future__ import annotations

import json
from pathlib import Path

from mock_api.journal import Journal


def test_audio_is_kept_as_size_and_checksum_wherever_it_sits() -> None:
    j = Journal()
    blob = "QUJD" * 10_000
    item = {"type": "message", "content": [{"type": "input_audio", "audio": blob, "transcript": "hi"}]}
    e = j.record("rtc_1", "ws.server", event={"type": "conversation.item.retrieved", "item": item})
    kept = e.data["event"]["item"]["content"][0]
    assert kept["audio"].startswith("<40000 base64 chars, blake2b ") and kept["transcript"] == "hi"
    assert item["content"][0]["audio"] == blob  # the event itself is not touched
    assert j.record("rtc_1", "x", audio="AAAA").data["audio"] == "AAAA"  # short strings cost nothing
    assert Journal(record_audio=True).record("c", "x", audio=blob).data["audio"] == blob


def test_a_timeline_keeps_its_newest_entries_and_spills_the_rest(tmp_path: Path) -> None:
    spill = tmp_path / "journal.jsonl"
    j = Journal(max_entries=100, spill=spill)
    for i in range(250):
        j.record("rtc_1", "tick", i=i)
    line = j.timeline("rtc_1")
    assert line is not None and len(line.entries) == 100 and line.dropped == 150
    assert [e.data["i"] for e in line.entries][:2] == [150, 151] and line.to_json()["dropped"] == 150
    assert [e.data["i"] for e in line.after(line.entries[-3].seq)] == [248, 249]
    assert [e.data["i"] for e in line.after(0, limit=2)] == [150, 151]
    j.forget("rtc_1")
    rows = [json.loads(r) for r in spill.read_text().splitlines()]
    assert len(rows) == 151  # 150 single entries as they went, then the rest of the timeline at once
    assert [r["entries"][0]["data"]["i"] for r in rows[:150]] == list(range(150))
    assert len(rows[-1]["entries"]) == 100 and j.timeline("rtc_1") is None
