"""Benchmark: GPT-Live calls against Realtime calls through the whole rtsip SIP stack, in one run.

The same stack as ``bench_sip.py``'s ``full`` (softphone pool → the mock's SIP/TLS ingress → an in-process
SDK app), the same caller audio and the same scripted reply, at the same concurrency; only the surface
differs. Realtime: the app takes ``realtime.call.incoming``, accepts with ``client.realtime.calls.accept``
and drives ``client.realtime.connect(call_id=…)``. GPT-Live: it takes ``live.transport.incoming``, accepts
with ``client.live.sessions.accept`` and attaches ``client.live.sideband.connect`` (which also receives the
caller's audio reflected, 24 kHz PCM as base64: the work Live adds). The surfaces take turns, ``--repeat``
times each, after one unmeasured call of each (its first events build the SDK's pydantic models: seconds
of CPU that would land in the window); the median run of each is reported. CPU = softphone workers +
ingress workers + this process (mock + app) over a steady window that opens as the first reply starts.

Target (issue 17): CPU per Live call within 1.2x of a Realtime call.

Most of what Live adds is per sideband event (the mock's send and journal entry, the SDK's parse), not per
byte: ``--reflect-chunk-ms`` runs the Live surface once per reflection chunk given (the mock config's
``live.reflect_chunk_ms``; its default when not given), each against the same Realtime runs.

    python -m bench.bench_live --calls 8 --hold 10 --repeat 3
    python -m bench.bench_live --calls 8 --hold 10 --repeat 2 --reflect-chunk-ms 100 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sip import _media
from bench.sip_full import Surface, full_hold
from bench.sip_machine import loadavg, wait_quiet
from mock_api.live.settings import LiveSettings

TARGET_RATIO = 1.2


def variants(chunks: list[int] | None) -> dict[str, tuple[Surface, int | None]]:
    """The runs that take turns, by label: Realtime, then Live once per reflection chunk (``live`` alone when
    only the mock's default runs, ``live@<ms>`` per chunk otherwise)."""
    out: dict[str, tuple[Surface, int | None]] = {"realtime": ("realtime", None)}
    if not chunks:
        out["live"] = ("live", None)
    else:
        out.update({f"live@{ms}" if len(chunks) > 1 else "live": ("live", ms) for ms in chunks})
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose CPU per call is the median (a whole run, so its other figures belong together)."""
    ranked = sorted(runs, key=lambda r: r["cpu_per_call_pct_of_core"])
    return ranked[(len(ranked) - 1) // 2]


def table(best: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="Realtime vs GPT-Live through the full SIP stack (median run)")
    for col in ("surface", "reflect ms", "calls", "ok", "CPU/call % core", "mock+app % core", "SIP endpoints/call %",
                "setup p50 ms", "replying", "app events"):
        t.add_column(col, justify="right")
    for label, r in best.items():
        events = sum(r["app_events"].values())
        chunk = r.get("reflect_chunk_ms")
        t.add_row(label, "-" if chunk is None else str(chunk), str(r["concurrent_calls"]), "yes" if r["ok"] else "NO",
                  f"{r['cpu_per_call_pct_of_core']:.2f}", f"{r['mock_app_pct_of_core']:.1f}",
                  f"{r['sip_endpoints_per_call_pct']:.2f}", str(r["setup_p50_ms"]), str(r["replying_in_window"]),
                  str(events))
    return t


def _cpu(run: dict[str, Any]) -> float:
    return max(float(run["cpu_per_call_pct_of_core"]), 1e-9)


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    plan = variants(args.reflect_chunk_ms)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in plan}
    with tempfile.TemporaryDirectory(prefix="rtsip-bench-live-") as dname:
        media = _media(Path(dname), args.hold)
        for surface in ("realtime", "live"):  # unmeasured: each surface's first call builds the SDK's models
            tmp = Path(dname) / f"warm-{surface}"
            tmp.mkdir()
            print(f"warm-up: {surface}, 1 call", file=sys.stderr, flush=True)
            await full_hold(1, 1.0, tmp, media.caller, media.reply, media.speech_s, surface=surface)
        for i in range(args.repeat):
            for k, (label, (surface, chunk)) in enumerate(plan.items()):
                await wait_quiet(args.quiet_wait)
                print(f"run {i + 1}/{args.repeat}: {label}, {args.calls} calls", file=sys.stderr, flush=True)
                tmp = Path(dname) / f"run{i}-{k}"
                tmp.mkdir()
                prof = args.profile / f"{label}-{i + 1}.prof" if args.profile is not None else None
                runs[label].append(await full_hold(args.calls, args.hold, tmp, media.caller, media.reply,
                                                   media.speech_s, surface=surface, reflect_chunk_ms=chunk,
                                                   profile=prof))
    best = {label: median_run(rs) for label, rs in runs.items()}
    lives = [label for label in plan if label != "realtime"]
    ratio = {label: round(_cpu(best[label]) / _cpu(best["realtime"]), 3) for label in lives}
    pairs = {label: [round(_cpu(lv) / _cpu(rt), 3) for rt, lv in zip(runs["realtime"], runs[label], strict=True)]
             for label in lives}
    first = lives[0]
    return {"calls": args.calls, "hold_s": args.hold, "repeat": args.repeat, "median": best,
            "live_over_realtime_cpu": ratio[first], "ratios_per_pair": pairs[first],
            "ratio_spread": round(statistics.pstdev(pairs[first]), 3) if len(pairs[first]) > 1 else 0.0,
            "by_variant": {label: {"ratio": ratio[label], "per_pair": pairs[label]} for label in lives},
            "target_ratio": TARGET_RATIO, "all_ok": all(r["ok"] for rs in runs.values() for r in rs),
            "loadavg_end": loadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=8, help="concurrent calls per run (both surfaces)")
    ap.add_argument("--hold", type=float, default=10.0, help="steady measurement window in seconds")
    ap.add_argument("--repeat", type=int, default=3, help="runs per surface, taking turns")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="max s to wait for a quiet box before a run")
    ap.add_argument("--reflect-chunk-ms", type=int, nargs="+", metavar="MS",
                    help="Live runs, one per reflection chunk (default: the mock's "
                         f"{LiveSettings.model_fields['reflect_chunk_ms'].default} ms)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="write each run's window, mock and app, as cProfile stats here (<label>-<run>.prof; "
                         "profiling adds CPU of its own, so compare runs profiled alike)")
    args = ap.parse_args()
    if args.calls < 1 or args.hold <= 0 or args.repeat < 1:
        print("bench_live: --calls and --repeat must be at least 1 and --hold positive", file=sys.stderr)
        return 2
    for ms in args.reflect_chunk_ms or []:
        try:
            LiveSettings(reflect_chunk_ms=ms)
        except ValidationError as exc:
            print(f"bench_live: --reflect-chunk-ms {ms}: {exc.errors()[0]['msg']}", file=sys.stderr)
            return 2
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(compare(args))
    console = Console(width=160)
    console.print(table(result["median"]))
    for label, v in result["by_variant"].items():
        verdict = "within" if v["ratio"] <= TARGET_RATIO else "OVER"
        console.print(f"CPU per Live call ({label}) / per Realtime call: {v['ratio']:.2f}x "
                      f"({verdict} the {TARGET_RATIO}x target); per pair {v['per_pair']}")
    console.print(f"every run ok: {result['all_ok']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
