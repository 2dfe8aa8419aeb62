"""The event-loop watchdog: a stall is journaled with its length and where the loop was."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mock_api.journal import Journal
from mock_api.journal_entries import MockStall
from mock_api.stall_watch import StallWatch
from tests.helpers import until
from tests.test_cli import rtsip


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a stall made on purpose: the loop thread does nothing else meanwhile


async def test_a_stall_is_journaled_with_the_stack_it_was_in() -> None:
    journal = Journal()
    watch = StallWatch(journal, threshold_s=0.05).start()
    try:
        await asyncio.sleep(0.05)  # some ordinary beats first: nothing to report
        assert not list(journal.entries(None, "mock.stall"))
        _hold_the_loop(0.3)
        await until(lambda: watch.stalls > 0, what="the next beat, once the loop is back, reporting it")
    finally:
        watch.stop()
    [entry] = list(journal.entries(None, "mock.stall"))
    stall = MockStall(**entry.data)
    assert stall.ms >= 250
    assert "_hold_the_loop" in stall.stack and "test_stall_watch.py" in stall.stack


def test_the_flag_takes_milliseconds_above_zero(tmp_path: Path) -> None:
    r = rtsip("mock", "--port", "0", "--no-sip", "--stall-watch", "0", "--state-dir", str(tmp_path))
    assert r.returncode == 2 and "--stall-watch" in r.stderr and "Traceback" not in r.stderr
