"""Benchmark: ``rtsip load`` against examples/minimal_app.py, on this machine (issue 6 targets).

* ``virtual``: scenarios/load/turn_every_5s_long.yaml (one scripted turn every 5 s) at each concurrency of
  ``--virtual`` (target ≥ 2,000 concurrent, zero lost calls); reports the mock's CPU per active call.
  With ``--mock-processes 1,2`` each step runs once per number of mock processes, in the same run.
* ``sip``: scenarios/load/sip_two_way.yaml, real SIP/TLS calls with two-way audio, at each concurrency of
  ``--sip`` (target ≥ 150, zero failed, zero RTP loss); CPU per call of the whole stack, and of bare
  pjsua2 in the same run when ``bench/bench_sip.py --stacks bare`` is available.
* ``soak``: ``--soak-virtual`` virtual and ``--soak-sip`` SIP calls, then checks that no process, thread
  or socket was left behind and that the mock's memory stayed flat; every call accounted for.

    python bench/bench_load.py --virtual 300,1000,2000 --mock-processes 1,2 --sip 40,150 \
        --soak-virtual 5000 --soak-sip 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.load import LoadOptions, descendants, plan, run_load  # noqa: E402
from harness.load_report import to_json  # noqa: E402

LOAD = ROOT / "scenarios" / "load"


async def one(scenario: Path, calls: int, conc: int, rate: float, mode: str, tmp: Path,
              mocks: int = 1) -> dict[str, Any]:
    o = LoadOptions(scenario=scenario, calls=calls, concurrency=conc, rate=rate, mode=mode, progress=False,
                    run_dir=tmp / f"{mode}-{conc}-{calls}-{mocks}", mock_processes=mocks)
    t = time.monotonic()
    result = await run_load(plan(o))
    data = to_json(result)
    data["wall_s"] = round(time.monotonic() - t, 1)
    data.pop("records")
    return data


def _row(d: dict[str, Any]) -> list[str]:
    c, m, cpu = d["calls"], d["metrics"], d["cpu"]

    def p(name: str, q: str) -> str:
        v = m[name][q]
        return "-" if v is None else f"{v:.0f}"

    stack = sum(cpu.get(f"{r}_cpu_s") or 0 for r in ("mock", "app", "load"))
    per_call = 100 * stack / cpu["call_seconds"] if cpu["call_seconds"] else float("nan")
    rtp = d.get("rtp") or {}
    return [str(d["options"]["concurrency"]), str(d["options"].get("mock_processes", 1)), str(c["placed"]),
            str(c["completed"]), str(c["failed"]),
            str(c["lost"]), str(cpu["max_active"]),
            f"{cpu['mock_cpu_s']:.0f}", f"{cpu['mock_cpu_pct_per_active_call'] or 0:.3f}", f"{per_call:.3f}",
            f"{p('webhook_to_accept_ms', 'p50')}/{p('webhook_to_accept_ms', 'p95')}",
            f"{p('speech_end_to_audio_ms', 'p50')}/{p('speech_end_to_audio_ms', 'p95')}/"
            f"{p('speech_end_to_audio_ms', 'p99')}",
            f"{p('invite_to_200_ms', 'p50')}/{p('invite_to_200_ms', 'p95')}",
            f"{rtp.get('rx_loss', '-')}/{rtp.get('ingress_rx_loss', '-')}",
            ", ".join(f"{k}: {v}" for k, v in list(d["failures"].items())[:3]) or "-"]


COLS = ["C", "mocks", "placed", "done", "failed", "lost", "max active", "mock CPU s", "mock % core/call",
        "stack % core/call", "webhook→accept p50/p95", "speech end→audio p50/p95/p99", "INVITE→200 p50/p95",
        "RTP loss caller/ingress", "failure reasons"]


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    for c in COLS:
        t.add_column(c, justify="left" if c == "failure reasons" else "right")
    for d in rows:
        t.add_row(*_row(d))
    return t


def bare_pjsua2(concurrency: int) -> dict[str, Any] | None:
    """CPU per call of bare pjsua2 pairs at the same concurrency, via bench_sip.py if it has --stacks."""
    script = ROOT / "bench" / "bench_sip.py"
    helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    if "--stacks" not in helptext:
        return None
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "bare.json"
        args = [sys.executable, str(script), "--stacks", "bare", "--json", str(out)]
        if "--steps" in helptext:
            args += ["--steps", str(concurrency)]
        if "--rate-calls" in helptext:
            args += ["--rate-calls", "0"]
        res = subprocess.run(args, capture_output=True, text=True, timeout=900)
        if res.returncode != 0 or not out.exists():
            return {"error": res.stderr[-500:]}
        data: dict[str, Any] = json.loads(out.read_text())
        return data


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak(n_virtual: int, n_sip: int, tmp: Path, console: Console) -> dict[str, Any]:
    # a short warm-up first, so what this process creates once (the event loop's resolver thread and
    # its descriptors) is not counted as a leak; then the soak must leave nothing more behind
    await one(LOAD / "one_turn.yaml", 20, 20, 20.0, "virtual", tmp / "warmup")
    before = {"threads": threading.active_count(), "fds": _fds(), "children": len(_kids())}
    out: dict[str, Any] = {"before": before, "runs": []}
    if n_virtual:
        out["runs"].append(await one(LOAD / "one_turn.yaml", n_virtual, min(300, n_virtual), 60.0, "virtual", tmp))
    if n_sip:
        out["runs"].append(await one(LOAD / "sip_two_way.yaml", n_sip, min(100, n_sip), 20.0, "sip", tmp))
    await asyncio.sleep(2)
    kids = _kids()
    after = {"threads": threading.active_count(), "fds": _fds(), "children": len(kids),
             "children_cmdlines": [_cmdline(p)[:120] for p in kids]}
    out["after"] = after
    return out


def _kids() -> list[int]:
    """This process's descendants, less multiprocessing's resource tracker (it lives as long as we do)."""
    return [p for p in descendants(os.getpid())[1:] if "resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--virtual", default="300,1000,2000", help="comma list of virtual concurrencies ('' skips)")
    ap.add_argument("--virtual-rate", type=float, default=40.0, help="new virtual calls/s (60 s calls: 2,000 in "
                    "flight after 50 s)")
    ap.add_argument("--mock-processes", default="1", help="comma list: run each virtual step with each number "
                    "of mock processes (rtsip load --mock-processes), e.g. 1,2")
    ap.add_argument("--sip", default="40,150", help="comma list of SIP concurrencies ('' skips)")
    ap.add_argument("--sip-rate", type=float, default=20.0)
    ap.add_argument("--bare", action="store_true", help="also run bare pjsua2 (bench_sip.py --stacks bare)")
    ap.add_argument("--soak-virtual", type=int, default=0)
    ap.add_argument("--soak-sip", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    console = Console(width=220)
    tmp = Path(tempfile.mkdtemp(prefix="rtsip-bench-load-"))
    results: dict[str, Any] = {"cores": os.cpu_count(), "virtual": [], "sip": [], "bare": None, "soak": None}
    for c in [int(x) for x in args.virtual.split(",") if x]:
        for m in [int(x) for x in args.mock_processes.split(",") if x]:
            d = await one(LOAD / "turn_every_5s_long.yaml", c, c, args.virtual_rate, "virtual", tmp, mocks=m)
            results["virtual"].append(d)
            console.print(table("virtual callers, one turn every 5 s (12 turns, 60 s a call)", [d]))
    for c in [int(x) for x in args.sip.split(",") if x]:
        d = await one(LOAD / "sip_two_way.yaml", c, c, args.sip_rate, "sip", tmp)
        results["sip"].append(d)
        console.print(table("SIP/TLS callers, two-way audio", [d]))
    if args.bare and results["sip"]:
        results["bare"] = bare_pjsua2(max(d["options"]["concurrency"] for d in results["sip"]))
    if args.soak_virtual or args.soak_sip:
        s = await soak(args.soak_virtual, args.soak_sip, tmp, console)
        results["soak"] = s
        console.print(table("soak", s["runs"]))
        for d in s["runs"]:
            cpu = d["cpu"]
            console.print(f"{d['mode']}: mock RSS first {cpu.get('mock_rss_mb_first')} MB, max "
                          f"{cpu.get('mock_rss_mb_max')} MB, last {cpu.get('mock_rss_mb_last')} MB; at 25/50/75/100 % "
                          "of calls done: " + " / ".join(str(cpu.get(f"mock_rss_mb_at_{q}pct_done"))
                                                        for q in (25, 50, 75, 100)) + " MB")
        console.print(f"before: {s['before']}\nafter:  {s['after']}")
    if results["virtual"] or results["sip"]:
        console.print(table("all runs", results["virtual"] + results["sip"]))
    if results["bare"] is not None:
        console.print(f"bare pjsua2: {json.dumps(results['bare'])[:2000]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
