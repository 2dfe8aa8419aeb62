"""Stopping a child process rtsip started in its own process group (a mock, HAProxy).

Why one place: each of them is asked with SIGTERM first, so it can stop its own children and flush
what it logs, and its whole group is killed only if it has not ended in time; the task reading its
output is awaited after, so nothing it printed last is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal


async def stop_group(proc: asyncio.subprocess.Process | None, reader: asyncio.Task[None] | None,
                     timeout: float) -> int | None:
    """SIGTERM ``proc``, SIGKILL its process group after ``timeout`` s; its exit code (None if never started)."""
    if proc is None:
        return None
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if reader is not None:
        await asyncio.gather(reader, return_exceptions=True)
    return proc.returncode
