"""Benchmark: ``rtsip load`` against examples/minimal_app.py, on this machine (issue 6 targets).

* ``virtual``: scenarios/load/turn_every_5s_long.yaml (one scripted turn every 5 s) at each concurrency of
  ``--virtual`` (target ≥ 2,000 concurrent, zero lost calls); reports the mock's CPU per active call.
  With ``--mock-processes 1,2`` each step runs once per number of mock processes, in the same run.
* ``sip``: scenarios/load/sip_two_way.yaml, real SIP/TLS calls with two-way audio, at each concurrency of
  ``--sip`` (target ≥ 150, zero failed, zero RTP loss); CPU per call of the whole stack, and of bare
  pjsua2 in the same run when ``bench/bench_sip.py --stacks bare`` is available.
* ``soak``: ``--soak-virtual`` virtual and ``--soak-sip`` SIP calls, then checks that no process, thread
  or socket was left behind and that the mock's memory stayed flat; every call accounted for.
  ``--soak-model`` opens that many short ``?model=`` sessions (no call: each its own timeline)
  against an ``rtsip mock`` with default settings. Every soak prints the mock's RSS at each 10 % of the
  sessions done and its growth from two points: after the warm-up (the first 10 %), and once the
  retention is full (1,000 sessions ended: what the mock keeps of the last 1,000 is allocated by then);
  the target is within 10 %. The virtual soak runs with the mock's default retention
  (``retain_ended_calls`` 1,000, which ``rtsip load`` would otherwise lower), as a user's long-running
  mock does, so the first figure includes the retention filling up (the journal packs all but the
  newest 50 ended timelines, about 5 kB each; the calls' own state is kept whole).

* ``distributed`` (issue 18): ``--distributed N`` calls at a 100/s ramp of scenarios/load/turn_every_5s.yaml
  through (a) the embedded ``rtsip load`` (one Locust process, one mock) and (b) a Locust master with two
  forked workers and two mocks behind HAProxy, in the same run; prints the whole stack's CPU per call in
  progress of (b) over (a) (target at most 1.25x).

    python bench/bench_load.py --virtual 300,1000,2000 --mock-processes 1,2 --sip 40,150 \
        --soak-virtual 5000 --soak-sip 1000 --soak-model 2000
    python bench/bench_load.py --virtual '' --sip '' --distributed 2000
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

import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.load import LoadOptions, plan, run_load  # noqa: E402
from harness.load_report import to_json  # noqa: E402
from harness.mock_process import MockProcess  # noqa: E402
from mock_api.config import DEFAULT_RETAIN_ENDED  # noqa: E402

LOAD = ROOT / "scenarios" / "load"
WARMUP_PCT = 10  # RSS growth is measured from this point of a soak: what a mock allocates once comes before
MODEL_SOAK_CONCURRENCY = 20


async def one(scenario: Path, calls: int, conc: int, rate: float, mode: str, tmp: Path,
              mocks: int = 1, mock_config: Path | None = None, processes: int | None = None) -> dict[str, Any]:
    o = LoadOptions(scenario=scenario, calls=calls, concurrency=conc, rate=rate, mode=mode, progress=False,
                    run_dir=tmp / f"{mode}-{conc}-{calls}-{mocks}-{processes}", mock_processes=mocks,
                    mock_config=mock_config, processes=processes)
    t = time.monotonic()
    result = await run_load(plan(o))
    data = to_json(result)
    data["wall_s"] = round(time.monotonic() - t, 1)
    data.pop("records")
    points = [(s["done"], s["mock_rss_mb"]) for s in sorted(result.samples, key=lambda s: s["t"])
              if "mock_rss_mb" in s]
    data["rss"] = rss_curve(points, calls)
    return data


def rss_curve(points: list[tuple[float, float]], total: int, retained: int = DEFAULT_RETAIN_ENDED) -> dict[str, Any]:
    """The mock's RSS (MB) at each 10 % of ``total`` sessions done, from ``(done, rss)`` samples in time
    order, and its growth to the highest later point from two starts: the warm-up (the first 10 %) and
    the moment the journal's retention is full (``retained`` sessions ended, the last ones the mock keeps).
    Until then a user's mock grows by what it keeps of each ended session; that growth is reported, not
    hidden: the first figure includes it, the second is what happens after it (the soak target: within 10 %)."""
    curve: dict[int, float | None] = {}
    for pct in range(10, 101, 10):
        at = next((rss for done, rss in points if done >= total * pct / 100), None)
        curve[pct] = round(at, 1) if at is not None else None
    base = curve[WARMUP_PCT]
    later = [v for pct, v in curve.items() if pct > WARMUP_PCT and v is not None]
    growth = round(100 * (max(later) - base) / base, 1) if base and later else None
    half, last = curve[50], curve[100]
    second_half = round(100 * (last - half) / half, 1) if half and last else None
    full = next(((done, rss) for done, rss in points if done >= max(retained, total * WARMUP_PCT / 100)), None)
    after_full = [rss for done, rss in points if full is not None and done > full[0]]
    growth_full = round(100 * (max(after_full) - full[1]) / full[1], 1) if full and after_full else None
    return {"mb_at_pct_done": curve, "growth_after_warmup_pct": growth, "growth_second_half_pct": second_half,
            "retained": retained, "mb_when_retention_full": round(full[1], 1) if full else None,
            "growth_after_retention_full_pct": growth_full}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f} %"


def rss_line(label: str, rss: dict[str, Any]) -> str:
    curve = " / ".join("-" if v is None else f"{v:.0f}" for v in rss["mb_at_pct_done"].values())
    growth, full = rss["growth_after_warmup_pct"], rss["growth_after_retention_full_pct"]

    def verdict(g: float | None) -> str:
        return "" if g is None else (" (flat: within 10 %)" if g <= 10 else " (NOT flat: over 10 %)")

    return (f"{label}: mock RSS MB at 10/20/.../100 % done: {curve}; growth after the first {WARMUP_PCT} %: "
            f"{_pct(growth)}{verdict(growth)}; once retention is full ({rss['retained']} ended kept, "
            f"{rss['mb_when_retention_full'] or '-'} MB): {_pct(full)}{verdict(full)}; over the second half: "
            f"{_pct(rss['growth_second_half_pct'])}")


def _tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants (MB); processes gone meanwhile count 0."""
    total = 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return total
    for proc in procs:
        try:
            total += proc.memory_info().rss / 1e6
        except psutil.Error:
            continue
    return total


async def model_session(http: Any, url: str, audio_b64: str) -> bool:
    """One short ``?model=`` session as a browser or server app opens it: a turn of audio, one reply, bye."""
    async with http.ws_connect(url, headers={"Authorization": "Bearer sk-soak"}) as ws:
        await ws.send_json({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief.",
                                                                  "audio": {"input": {"turn_detection": None}}}})
        await ws.send_json({"type": "input_audio_buffer.append", "audio": audio_b64})
        await ws.send_json({"type": "input_audio_buffer.commit"})
        await ws.send_json({"type": "response.create"})
        async with asyncio.timeout(60):
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("type") == "response.done":
                    return True
    return False


async def soak_model(n: int, tmp: Path, concurrency: int = MODEL_SOAK_CONCURRENCY) -> dict[str, Any]:
    """``n`` short ``?model=`` sessions against ``rtsip mock`` with default settings; its RSS per 10 % done."""
    import base64

    import aiohttp

    from mock_api import audio

    pcm = audio.load_audio(str(ROOT / "audio_fixtures" / "caller_greeting.wav"), 24000)
    audio_b64 = base64.b64encode(pcm).decode()
    env = {**os.environ, "RTSIP_STATE_DIR": str(tmp / "model-soak-state")}
    t0 = time.monotonic()
    async with MockProcess(["--port", "0", "--no-sip"], env=env, startup_timeout=60) as mock, \
            aiohttp.ClientSession() as http:
        url = mock.url.replace("http", "ws", 1) + "/v1/realtime?model=gpt-realtime"
        points: list[tuple[float, float]] = [(0, _tree_rss_mb(mock.pid))]
        done = failed = 0
        step = max(1, n // 100)  # RSS read every 1 % done: the curve takes the first read past each 10 %
        sem = asyncio.Semaphore(concurrency)

        async def one_session() -> None:
            nonlocal done, failed
            async with sem:
                try:
                    ok = await model_session(http, url, audio_b64)
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ok = False
                done += 1
                failed += not ok
                if done % step == 0 or done == n:
                    points.append((done, _tree_rss_mb(mock.pid)))

        await asyncio.gather(*(one_session() for _ in range(n)))
        async with http.get(mock.url + "/_mock/health") as resp:
            health = resp.status
    return {"mode": "model", "sessions": n, "failed": failed, "concurrency": concurrency,
            "audio_s_per_session": round(len(pcm) / 2 / 24000, 2), "mock_health_after": health,
            "wall_s": round(time.monotonic() - t0, 1), "rss": rss_curve(points, n)}


def _row(d: dict[str, Any]) -> list[str]:
    c, m, cpu = d["calls"], d["metrics"], d["cpu"]

    def p(name: str, q: str) -> str:
        v = m[name][q]
        return "-" if v is None else f"{v:.0f}"

    per_call = stack_per_call(d)
    rtp = d.get("rtp") or {}
    return [str(d["options"]["concurrency"]), str(d["options"].get("mock_processes", 1)),
            str(d["options"].get("drivers", "-")), str(c["placed"]),
            str(c["completed"]), str(c["failed"]),
            str(c["lost"]), str(cpu["max_active"]),
            f"{cpu['mock_cpu_s']:.0f}", f"{cpu['mock_cpu_pct_per_active_call'] or 0:.3f}", f"{per_call:.3f}",
            f"{p('webhook_to_accept_ms', 'p50')}/{p('webhook_to_accept_ms', 'p95')}",
            f"{p('speech_end_to_audio_ms', 'p50')}/{p('speech_end_to_audio_ms', 'p95')}/"
            f"{p('speech_end_to_audio_ms', 'p99')}",
            f"{p('invite_to_200_ms', 'p50')}/{p('invite_to_200_ms', 'p95')}",
            f"{rtp.get('rx_loss', '-')}/{rtp.get('ingress_rx_loss', '-')}",
            ", ".join(f"{k}: {v}" for k, v in list(d["failures"].items())[:3]) or "-"]


COLS = ["C", "mocks", "Locust workers", "placed", "done", "failed", "lost", "max active", "mock CPU s",
        "mock % core/call",
        "stack % core/call", "webhook→accept p50/p95", "speech end→audio p50/p95/p99", "INVITE→200 p50/p95",
        "RTP loss caller/ingress", "failure reasons"]


def stack_per_call(d: dict[str, Any]) -> float:
    """CPU of the whole stack (mocks and their proxy, app, callers) per call in progress, % of one core."""
    cpu = d["cpu"]
    stack = sum(cpu.get(f"{r}_cpu_s") or 0 for r in ("mock", "app", "load"))
    return 100 * stack / cpu["call_seconds"] if cpu["call_seconds"] else float("nan")


async def distributed(calls: int, rate: float, scenario: Path, tmp: Path, console: Console) -> dict[str, Any]:
    """Issue 18's pair, in one run: (a) the embedded rtsip load (one Locust process, one mock) and (b) a Locust
    master with two forked workers and two mocks behind HAProxy; the stack's CPU per call in progress of each."""
    a = await one(scenario, calls, calls, rate, "virtual", tmp, mocks=1)  # rtsip load sizes its Locust workers
    b = await one(scenario, calls, calls, rate, "virtual", tmp, mocks=2, processes=2)
    ratio = stack_per_call(b) / stack_per_call(a)
    console.print(table(f"(a) embedded vs (b) Locust master + 2 workers, 2 mocks behind HAProxy: {scenario.name}, "
                        f"{calls} calls at {rate:g}/s", [a, b]))
    console.print(f"stack CPU per call in progress, (b)/(a): {ratio:.2f}x (target at most 1.25x)")
    return {"a": a, "b": b, "ratio": round(ratio, 3)}


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
    return psutil.Process().num_fds()


async def soak(n_virtual: int, n_sip: int, n_model: int, tmp: Path, console: Console) -> dict[str, Any]:
    # a short warm-up first, so what this process creates once (the event loop's resolver thread and
    # its descriptors) is not counted as a leak; then the soak must leave nothing more behind
    await one(LOAD / "one_turn.yaml", 20, 20, 20.0, "virtual", tmp / "warmup")
    before = {"threads": threading.active_count(), "fds": _fds(), "children": len(_kids())}
    out: dict[str, Any] = {"before": before, "runs": []}
    if n_virtual:
        # the mock's default retention, not the lower one rtsip load sets: what a user's mock keeps
        settings = tmp / "soak-mock.json"
        settings.write_text(json.dumps({"retain_ended_calls": DEFAULT_RETAIN_ENDED}))
        out["runs"].append(await one(LOAD / "one_turn.yaml", n_virtual, min(300, n_virtual), 60.0, "virtual", tmp,
                                     mock_config=settings))
    if n_sip:
        out["runs"].append(await one(LOAD / "sip_two_way.yaml", n_sip, min(100, n_sip), 20.0, "sip", tmp))
    if n_model:
        out["model"] = await soak_model(n_model, tmp)
    await asyncio.sleep(2)
    kids = _kids()
    after = {"threads": threading.active_count(), "fds": _fds(), "children": len(kids),
             "children_cmdlines": [_cmdline(p)[:120] for p in kids]}
    out["after"] = after
    return out


def _kids() -> list[int]:
    """This process's descendants, less multiprocessing's resource tracker (it lives as long as we do)."""
    return [p.pid for p in psutil.Process().children(recursive=True) if "resource_tracker" not in _cmdline(p.pid)]


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
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
    ap.add_argument("--soak-model", type=int, default=0, metavar="N",
                    help="N short ?model= sessions (one audio turn and reply each) against rtsip mock")
    ap.add_argument("--distributed", type=int, default=0, metavar="N",
                    help="issue 18's pair: N calls (as many in flight) at --distributed-rate through (a) one Locust "
                         "process and one mock and (b) a Locust master with 2 workers and 2 mocks behind HAProxy")
    ap.add_argument("--distributed-rate", type=float, default=100.0)
    ap.add_argument("--distributed-scenario", type=Path, default=LOAD / "turn_every_5s.yaml")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    console = Console(width=220)
    tmp = Path(tempfile.mkdtemp(prefix="rtsip-bench-load-"))
    results: dict[str, Any] = {"cores": os.cpu_count(), "virtual": [], "sip": [], "bare": None, "soak": None}
    if args.distributed:
        results["distributed"] = await distributed(args.distributed, args.distributed_rate,
                                                   args.distributed_scenario, tmp, console)
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
    if args.soak_virtual or args.soak_sip or args.soak_model:
        s = await soak(args.soak_virtual, args.soak_sip, args.soak_model, tmp, console)
        results["soak"] = s
        if s["runs"]:
            console.print(table("soak", s["runs"]))
        for d in s["runs"]:
            cpu = d["cpu"]
            console.print(f"{d['mode']}: mock RSS first {cpu.get('mock_rss_mb_first')} MB, max "
                          f"{cpu.get('mock_rss_mb_max')} MB, last {cpu.get('mock_rss_mb_last')} MB")
            console.print(rss_line(f"{d['mode']} soak, {d['calls']['placed']} calls", d["rss"]))
        if "model" in s:
            m = s["model"]
            console.print(rss_line(f"?model= soak, {m['sessions']} sessions ({m['failed']} failed, "
                                   f"{m['wall_s']} s)", m["rss"]))
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
