"""bench_sip's older measurements (``--stacks testuas``): softphone workers ↔ ``TestUas`` answering workers.

Kept apart from the stack comparison: no mock and no app, just the two pjsua2 pools of the test harness.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench.sip_audio import noise_wav
from bench.sip_machine import box_busy, pids, proc_cpu_s, setup_ms
from harness.softphone import Softphone, SoftphoneCall
from mock_api.certs import ensure_certs
from sipworker.testing import Action, TestUas


async def hold(pairs: int, seconds: float, tmp: Path) -> dict[str, Any]:
    n_calls = 4 * pairs
    audio = noise_wav(tmp / "hold.wav", seconds + 10, seed=3)
    async with (
        TestUas(
            tmp / f"uas{pairs}", certs=ensure_certs(tmp / f"uas{pairs}"), workers=pairs,
            policy=lambda c: Action(play=[str(audio)], record=False),
        ) as uas,
        Softphone(ca=uas.certs.ca, workers=pairs, state_dir=tmp / f"ph{pairs}", record=False) as phone,
    ):
        t0 = time.monotonic()
        calls: list[SoftphoneCall] = []
        for i in range(n_calls):
            target = i % pairs
            calls.append(await phone.call(uas.uri("proj_bench", worker=target), audio=[audio]))
        answered = await asyncio.gather(*(c.answered(30) for c in calls))
        setup_ms = sorted(c.marks.get("answered", 0) for c in calls)
        all_up = time.monotonic() - t0
        await asyncio.sleep(2.0)  # let jitter buffers settle before the window
        procs = pids(uas.pool) + pids(phone.pool)
        cpu0 = {p: proc_cpu_s(p) for p in procs}
        b0 = box_busy()
        w0 = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - w0
        b1 = box_busy()
        cpu = {p: proc_cpu_s(p) - cpu0[p] for p in procs}
        stats = await asyncio.gather(*(c.stats() for c in calls if not c.is_ended))
        uas_stats: list[dict[str, Any]] = []
        for w in range(pairs):
            res = await uas.pool.command(w, "stats")
            uas_stats.extend(res.get("calls", {}).values())
        for c in calls:
            await c.hangup()
        await asyncio.gather(*(c.ended(10) for c in calls), return_exceptions=True)
    both = stats + uas_stats
    cpu_total = sum(cpu.values()) / wall * 100
    return {
        "pairs": pairs,
        "processes": 2 * pairs,
        "concurrent_calls": n_calls,
        "confirmed": sum(answered),
        "rtp_both_ways": sum(1 for s in stats if s.get("rx_pkt", 0) > 0 and s.get("tx_pkt", 0) > 0),
        "uas_rtp_both_ways": sum(1 for s in uas_stats if s.get("rx_pkt", 0) > 0 and s.get("tx_pkt", 0) > 0),
        "rtp_loss": sum(int(s.get("rx_loss", 0)) for s in both),
        "max_mean_jitter_ms": round(max((s.get("rx_jitter_mean_us", 0) for s in both), default=0) / 1000, 2),
        "setup_p50_ms": setup_ms[len(setup_ms) // 2] if setup_ms else None,
        "setup_max_ms": setup_ms[-1] if setup_ms else None,
        "all_up_s": round(all_up, 2),
        "cpu_sum_pct_of_core": round(cpu_total, 1),
        "cpu_per_call_pct_of_core": round(cpu_total / n_calls, 2),
        "box_busy_pct": round((b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]) * 100, 1),
    }


async def rate(workers: int, total: int, per_proc_cps: float, tmp: Path) -> dict[str, Any]:
    async with (
        TestUas(tmp / "uas-rate", certs=ensure_certs(tmp / "uas-rate"), workers=workers,
                policy=lambda c: Action(record=False)) as uas,
        Softphone(ca=uas.certs.ca, workers=workers, state_dir=tmp / "ph-rate", record=False) as phone,
    ):
        sem = asyncio.Semaphore(4 * workers)
        setups: list[float] = []
        failed = 0
        interval = 1.0 / (per_proc_cps * workers)

        async def one(i: int) -> None:
            nonlocal failed
            async with sem:
                ms = await setup_ms(phone, uas.uri("proj_rate", worker=i % workers))
                if ms is None:
                    failed += 1
                else:
                    setups.append(ms)

        t0 = time.monotonic()
        tasks = []
        for i in range(total):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(interval)
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
    setups.sort()
    return {
        "workers_per_side": workers,
        "placed": total,
        "confirmed": len(setups),
        "failed": failed,
        "cps_achieved": round(len(setups) / wall, 1),
        "setup_p50_ms": statistics.median(setups) if setups else None,
        "setup_p95_ms": setups[int(len(setups) * 0.95) - 1] if setups else None,
    }
