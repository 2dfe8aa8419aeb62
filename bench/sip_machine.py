"""Measuring the machine for bench_sip: CPU of processes and of the box, a quiet-box wait, percentiles.

Every stack in the comparison is measured with these same rulers, so they live apart from any stack.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from typing import Any

import psutil

from harness.softphone import Softphone


def proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of one process; 0 once it is gone."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def box_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole box since boot; idle and I/O wait are not busy."""
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def pids(pool: Any) -> list[int]:
    """The live processes of a worker pool, whose CPU a window adds up."""
    return [w.pid for w in pool.workers if w.pid]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def busy_pct(sample: float = 1.0) -> float:
    b0 = box_busy()
    await asyncio.sleep(sample)
    b1 = box_busy()
    return (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]) * 100


async def wait_quiet(max_wait: float, threshold: float = 15.0) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until the box is below ``threshold`` % busy; report what it was."""
    t0 = time.monotonic()
    busy = await busy_pct()
    while busy > threshold and time.monotonic() - t0 < max_wait:
        busy = await busy_pct(2.0)
    return {"busy_before_pct": round(busy, 1), "loadavg_before": loadavg(), "waited_s": round(time.monotonic() - t0, 1)}


class CpuWindow:
    """CPU seconds of a set of processes, and of the whole box, between start() and stop()."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.cpu0 = {p: proc_cpu_s(p) for p in self.pids}
        self.b0 = box_busy()
        self.w0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.w0
        b1 = box_busy()
        cpu = {p: proc_cpu_s(p) - self.cpu0[p] for p in self.pids}
        total = sum(cpu.values()) / wall * 100
        box = (b1[0] - self.b0[0]) / max(1.0, b1[1] - self.b0[1]) * 100
        ncpu = os.cpu_count() or 1
        return {"cpu_sum_pct_of_core": round(total, 1), "box_busy_pct": round(box, 1),
                # what else ran meanwhile: box busy (in % of one core) minus what we measured
                "other_pct_of_core": round(max(0.0, box * ncpu - total), 1), "window_s": round(wall, 2),
                "per_pid": {str(p): round(v / wall * 100, 2) for p, v in cpu.items()}}


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


async def setup_ms(phone: Softphone, uri: str) -> float | None:
    """One call's INVITE → 200 time in ms, hung up as soon as it is answered; None when it failed."""
    try:
        call = await phone.call(uri)
        answered = await call.answered(10)
        await call.hangup()
        await call.ended(10)
    except Exception:
        return None
    return float(call.marks["answered"]) if answered else None
