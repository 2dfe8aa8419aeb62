"""Benchmark: softphone pool ↔ answering pool over SIP/TLS on this machine.

Two measurements, both through the public APIs (Softphone, TestUas over WorkerPool):

* ``hold``: P softphone workers and P answering workers carry 4·P concurrent TLS calls with
  two-way audio (both sides play speech-like noise).  After a steady window we read RTP stats
  per call and CPU per process from /proc.  Pass = every call confirmed, RTP both ways, 0 loss.
* ``rate``: calls placed back to back (≤ 4 outstanding per softphone worker, paced below the
  40 calls/s per process that the wheel tolerates, notes G9), BYE right after the answer;
  setup time = INVITE → 200 OK.

    python bench/bench_sip.py --pairs 1,2,4 --hold 10 --rate-calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.softphone import Softphone, SoftphoneCall
from mock_api.audio import write_wav
from sipworker.testing import Action, TestUas

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def box_busy() -> tuple[float, float]:
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return float(sum(vals) - idle), float(sum(vals))


def noise_wav(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    x = np.convolve(rng.normal(0, 1, n), np.ones(3) / 3, mode="same")
    x *= 0.55 + 0.45 * np.sin(2 * np.pi * 3 * np.arange(n) / 8000)
    return write_wav(path, (x / np.max(np.abs(x)) * 9000).astype("<i2").tobytes(), 8000)


def pids(pool: Any) -> list[int]:
    return [w.pid for w in pool.workers if w.pid]


async def hold(pairs: int, seconds: float, tmp: Path) -> dict[str, Any]:
    n_calls = 4 * pairs
    audio = noise_wav(tmp / "hold.wav", seconds + 10, seed=3)
    async with (
        TestUas(
            tmp / f"uas{pairs}", workers=pairs, rtp_base=20000, policy=lambda c: Action(play=[str(audio)], record=False)
        ) as uas,
        Softphone(ca=uas.certs.ca, workers=pairs, state_dir=tmp / f"ph{pairs}", rtp_base=40000, record=False) as phone,
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
        TestUas(tmp / "uas-rate", workers=workers, rtp_base=21000, policy=lambda c: Action(record=False)) as uas,
        Softphone(ca=uas.certs.ca, workers=workers, state_dir=tmp / "ph-rate", rtp_base=41000, record=False) as phone,
    ):
        sem = asyncio.Semaphore(4 * workers)
        setups: list[int] = []
        failed = 0
        interval = 1.0 / (per_proc_cps * workers)

        async def one(i: int) -> None:
            nonlocal failed
            async with sem:
                try:
                    call = await phone.call(uas.uri("proj_rate", worker=i % workers))
                    ok = await call.answered(10)
                    if ok:
                        setups.append(call.marks["answered"])
                    else:
                        failed += 1
                    await call.hangup()
                    await call.ended(10)
                except Exception:
                    failed += 1

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


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="1,2,4", help="comma list of softphone/UAS worker pairs for 'hold'")
    ap.add_argument("--hold", type=float, default=10.0, help="steady window in seconds")
    ap.add_argument("--rate-calls", type=int, default=200, help="calls for the setup-rate run (0 skips it)")
    ap.add_argument("--rate-workers", type=int, default=2)
    ap.add_argument("--rate-cps", type=float, default=20.0, help="calls/s per softphone worker")
    ap.add_argument("--json", type=Path, help="also write results here")
    args = ap.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "hold": [], "rate": None}
    with tempfile.TemporaryDirectory(prefix="rtsip-bench-") as d:
        tmp = Path(d)
        for p in [int(x) for x in args.pairs.split(",") if x]:
            r = await hold(p, args.hold, tmp)
            results["hold"].append(r)
            print(json.dumps(r), flush=True)
        if args.rate_calls:
            results["rate"] = await rate(args.rate_workers, args.rate_calls, args.rate_cps, tmp)
            print(json.dumps(results["rate"]), flush=True)
    print(
        "\n| procs | calls | confirmed | RTP both ways | loss | max jitter ms | setup p50/max ms | CPU % core | "
        "CPU/call | box busy % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["hold"]:
        print(
            f"| {r['processes']} | {r['concurrent_calls']} | {r['confirmed']} | "
            f"{r['rtp_both_ways']}/{r['uas_rtp_both_ways']} | {r['rtp_loss']} | {r['max_mean_jitter_ms']} | "
            f"{r['setup_p50_ms']}/{r['setup_max_ms']} | {r['cpu_sum_pct_of_core']} | "
            f"{r['cpu_per_call_pct_of_core']} | {r['box_busy_pct']} |"
        )
    if results["rate"]:
        r = results["rate"]
        print(
            f"\nsetup rate: {r['confirmed']}/{r['placed']} confirmed, {r['cps_achieved']} cps, "
            f"setup p50 {r['setup_p50_ms']} ms, p95 {r['setup_p95_ms']} ms ({r['workers_per_side']} workers/side)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
