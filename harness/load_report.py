"""Reports of a load run: the terminal summary, SIPp-style CSV per interval, JSON, self-contained HTML.

This module reads a finished run through ``LoadRun`` (what ``harness.load.LoadResult`` provides)
and never imports the runner, so ``harness.load`` can import it without a cycle.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from markupsafe import Markup

from .load_metrics import METRICS, PERCENTILES, CallRecord, Interval, intervals, reasons, summary
from .report.charts import Series, line_chart
from .report.html_assets import LOAD_CSS
from .report.render import render

if TYPE_CHECKING:
    from rich.console import Console


class RunOptions(Protocol):
    """What was asked for (``harness.load.LoadOptions``)."""

    scenario: Path
    calls: int
    concurrency: int
    rate: float
    duration: float | None
    interval: float


class NamedScenario(Protocol):
    @property
    def name(self) -> str: ...


class RunPlan(Protocol):
    """What the run decided to do (``harness.load.Plan``)."""

    @property
    def options(self) -> RunOptions: ...

    @property
    def scenario(self) -> NamedScenario: ...

    mode: str
    drivers: int
    mock_shards: int
    phone_workers: int
    ingress_workers: int
    rate: float


class LoadRun(Protocol):
    """A finished load run as the reports read it (``harness.load.LoadResult``)."""

    @property
    def plan(self) -> RunPlan: ...

    started_at: float
    ended_at: float
    records: list[CallRecord]
    placed: int
    aborted: bool
    samples: list[dict[str, float]]
    cpu: dict[str, float]
    notes: list[str]

    @property
    def completed(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def unplaced(self) -> int: ...


def _t0(result: LoadRun) -> float:
    return min(r.start for r in result.records) if result.records else result.started_at


def _interval_rows(result: LoadRun) -> list[Interval]:
    step = result.plan.options.interval
    t0 = _t0(result)
    t_end = max([r.end for r in result.records] + [t0 + step])
    out = intervals(result.records, t0, t_end, step)
    samples = sorted(result.samples, key=lambda s: s["t"])
    for role in ("mock", "app", "load"):
        key = f"{role}_cpu_s"
        pts = [(s["t"], s[key]) for s in samples if key in s]
        if len(pts) < 2:
            continue

        def cum(t: float, pts: list[tuple[float, float]] = pts) -> float | None:
            """Cumulative CPU seconds at wall time t, interpolated between samples."""
            if t < pts[0][0] or t > pts[-1][0]:
                return None
            for (ta, ca), (tb, cb) in itertools.pairwise(pts):
                if ta <= t <= tb:
                    return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
            return None

        for iv in out:
            a, b = cum(t0 + iv.start), cum(t0 + iv.end)
            if a is not None and b is not None:
                iv.cpu[role] = round(100 * (b - a) / (iv.end - iv.start), 1)
    return out


def cpu_summary(result: LoadRun) -> dict[str, float | None]:
    """CPU seconds per process role, and the mock's CPU per active call (% of one core)."""
    call_seconds = sum(max(0.0, r.end - r.start) for r in result.records)
    wall = max(1e-9, result.ended_at - result.started_at)
    out: dict[str, float | None] = {**result.cpu, "call_seconds": round(call_seconds, 1),
                                    "mean_active": round(call_seconds / wall, 1) if result.records else 0.0}
    active = [s["active"] for s in result.samples]
    out["max_active"] = max(active) if active else 0
    for role in ("mock", "app", "load"):
        cpu = result.cpu.get(f"{role}_cpu_s")
        out[f"{role}_cpu_pct_per_active_call"] = (round(100 * cpu / call_seconds, 4)
                                                  if cpu is not None and call_seconds else None)
    rss = [s["mock_rss_mb"] for s in result.samples if "mock_rss_mb" in s]
    if rss:
        out["mock_rss_mb_first"], out["mock_rss_mb_max"], out["mock_rss_mb_last"] = rss[0], max(rss), rss[-1]
        # memory as the calls go by: flat from the middle on means nothing grows with calls handled
        total = len(result.records) or 1
        for q in (25, 50, 75, 100):
            at = next((s for s in result.samples if s.get("done", 0) >= total * q / 100 and "mock_rss_mb" in s), None)
            out[f"mock_rss_mb_at_{q}pct_done"] = at["mock_rss_mb"] if at else None
    return out


def rtp_summary(result: LoadRun) -> dict[str, int]:
    recs = [r for r in result.records if r.rtp]
    return {"calls_with_stats": len(recs), "rx_pkt": sum(r.rtp.get("rx_pkt", 0) for r in recs),
            "tx_pkt": sum(r.rtp.get("tx_pkt", 0) for r in recs), "rx_loss": sum(r.rtp.get("rx_loss", 0) for r in recs),
            "calls_without_rx": sum(1 for r in recs if not r.rtp.get("rx_pkt")),
            "ingress_rx_pkt": sum(r.rtp.get("ingress_rx_pkt", 0) for r in recs),
            "ingress_rx_loss": sum(r.rtp.get("ingress_rx_loss", 0) for r in recs),
            "calls_with_ingress_stats": sum(1 for r in recs if "ingress_rx_pkt" in r.rtp)}


def to_json(result: LoadRun) -> dict[str, Any]:
    p = result.plan
    o = p.options
    return {
        "scenario": p.scenario.name, "file": str(o.scenario), "mode": p.mode,
        "options": {"calls": o.calls, "concurrency": o.concurrency, "rate": o.rate, "duration": o.duration,
                    "interval": o.interval, "drivers": p.drivers, "softphone_workers": p.phone_workers,
                    "ingress_workers": p.ingress_workers, "mock_processes": p.mock_shards},
        "started_at": result.started_at, "seconds": round(result.ended_at - result.started_at, 3),
        "aborted": result.aborted,
        "calls": {"placed": result.placed, "completed": result.completed, "failed": result.failed,
                  "lost": result.placed - len(result.records), "unplaced": result.unplaced},
        "failures": reasons(result.records),
        "metrics": summary(result.records),
        "cpu": cpu_summary(result),
        "rtp": rtp_summary(result) if p.mode == "sip" else None,
        "notes": result.notes,
        "intervals": [{"start": iv.start, "end": iv.end, "created": iv.created, "completed": iv.completed,
                       "failed": iv.failed, "active": iv.active, "cpu_pct": iv.cpu,
                       "metrics": {m: summary_of(v) for m, v in iv.samples.items()}}
                      for iv in _interval_rows(result)],
        "records": [r.to_json() for r in sorted(result.records, key=lambda r: r.index)],
    }


def summary_of(values: list[float]) -> dict[str, Any]:
    from .load_metrics import summarize

    return summarize(values)


def write_csv(result: LoadRun, path: Path) -> None:
    """One row per interval, SIPp's stat-file style: ';'-separated, (P) periodic and (C) cumulative columns."""
    rows = _interval_rows(result)
    t0 = _t0(result)
    cols = ["StartTime", "LastResetTime", "CurrentTime", "ElapsedTime(P)", "ElapsedTime(C)", "TargetRate",
            "CallRate(P)", "CallRate(C)", "OutgoingCall(P)", "OutgoingCall(C)", "TotalCallCreated", "CurrentCall",
            "SuccessfulCall(P)", "SuccessfulCall(C)", "FailedCall(P)", "FailedCall(C)",
            "MockCPU%(P)", "AppCPU%(P)", "LoadCPU%(P)"]
    for m in METRICS:
        short = m.removesuffix("_ms")
        cols += [f"{short}_p50(P)", f"{short}_p95(P)", f"{short}_max(P)", f"{short}_count(P)"]
    lines = [";".join(cols)]
    created = ok = bad = 0

    def stamp(t: float) -> str:
        import time as _t

        return _t.strftime("%Y-%m-%d\t%H:%M:%S", _t.localtime(t)) + f".{int((t % 1) * 1e6):06d}"

    for iv in rows:
        created += iv.created
        ok += iv.completed
        bad += iv.failed
        span = iv.end - iv.start
        vals: list[Any] = [stamp(t0), stamp(t0 + iv.start), stamp(t0 + iv.end), f"{span:.3f}", f"{iv.end:.3f}",
                           f"{result.plan.rate:g}", f"{iv.created / span:.3f}", f"{created / iv.end:.3f}",
                           iv.created, created, created, iv.active, iv.completed, ok, iv.failed, bad,
                           iv.cpu.get("mock", ""), iv.cpu.get("app", ""), iv.cpu.get("load", "")]
        for m in METRICS:
            s = summary_of(iv.samples.get(m, []))
            vals += ["" if s["p50"] is None else s["p50"], "" if s["p95"] is None else s["p95"],
                     "" if s["max"] is None else s["max"], s["count"]]
        lines.append(";".join(str(v) for v in vals))
    path.write_text("\n".join(lines) + "\n")


# key in the JSON report → (what a person reads, unit); the HTML report shows these, never the keys
LABELS: dict[str, tuple[str, str]] = {
    # options
    "calls": ("calls to place", "calls"),
    "concurrency": ("most calls in progress at once", "calls"),
    "rate": ("call rate asked for", "calls/s"),
    "duration": ("run length limit", "s"),
    "interval": ("report interval", "s"),
    "drivers": ("load driver processes", ""),
    "softphone_workers": ("softphone worker processes", ""),
    "ingress_workers": ("SIP ingress worker processes", ""),
    "mock_processes": ("mock processes", ""),
    # cpu and memory
    "mock_cpu_s": ("mock CPU time (SIP ingress workers included)", "s"),
    "app_cpu_s": ("app under test CPU time", "s"),
    "load_cpu_s": ("load drivers CPU time (softphone workers included)", "s"),
    "call_seconds": ("call time, summed over all calls", "s"),
    "mean_active": ("calls in progress, mean", "calls"),
    "max_active": ("calls in progress, most", "calls"),
    "mock_cpu_pct_per_active_call": ("mock CPU per call in progress", "% of one core"),
    "app_cpu_pct_per_active_call": ("app CPU per call in progress", "% of one core"),
    "load_cpu_pct_per_active_call": ("load drivers CPU per call in progress", "% of one core"),
    "mock_rss_mb_first": ("mock memory (RSS) at the first sample", "MB"),
    "mock_rss_mb_max": ("mock memory (RSS), highest", "MB"),
    "mock_rss_mb_last": ("mock memory (RSS) at the last sample", "MB"),
    **{f"mock_rss_mb_at_{q}pct_done": (f"mock memory (RSS) when {q}% of the calls were done", "MB")
       for q in (25, 50, 75, 100)},
    # RTP (sip mode)
    "calls_with_stats": ("calls with RTP statistics from the caller", "calls"),
    "rx_pkt": ("RTP packets the callers received", "packets"),
    "tx_pkt": ("RTP packets the callers sent", "packets"),
    "rx_loss": ("RTP packets lost on the way to the callers", "packets"),
    "calls_without_rx": ("calls in which the caller received no audio", "calls"),
    "ingress_rx_pkt": ("RTP packets the mock's SIP ingress received", "packets"),
    "ingress_rx_loss": ("RTP packets lost on the way to the mock", "packets"),
    "calls_with_ingress_stats": ("calls with RTP statistics from the mock's side", "calls"),
}
ROLES = {"mock": "mock", "app": "app under test", "load": "load drivers"}
LOAD_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def label(key: str) -> tuple[str, str]:
    """(label, unit) of a report key; a key added later still reads as words, not as an identifier."""
    return LABELS.get(key, (key.replace("_", " "), ""))


def _labelled(values: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, unit) rows of a table, in the report's order."""
    rows = []
    for key, value in values.items():
        text, unit = label(key)
        rows.append((text, _num(value), unit if value is not None else ""))
    return rows


def _num(v: Any) -> str:
    """A table value: whole numbers as such, fractions to the precision a reader compares, none as a dash."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _charts(result: LoadRun) -> dict[str, list[Markup]]:
    """The load report's charts, all on one clock: seconds since the first call was placed."""
    rows = _interval_rows(result)
    return {"traffic": _traffic_charts(rows, result.plan.options.interval), "latency": _latency_charts(rows),
            "resources": _resource_charts(result, rows)}


def _mid(iv: Interval) -> float:
    return (iv.start + iv.end) / 2


def _traffic_charts(rows: list[Interval], step: float) -> list[Markup]:
    """Calls in progress (as counted at each interval's end), and calls started, completed, failed per interval."""
    active = Series("calls in progress", [(iv.end, float(iv.active)) for iv in rows])
    counts = [Series(name, [(_mid(iv), float(getattr(iv, attr))) for iv in rows])
              for name, attr in (("started", "created"), ("completed", "completed"), ("failed", "failed"))]
    return [line_chart("Concurrency: calls in progress", [active], "calls", whole=True),
            line_chart(f"Calls per {step:g} s interval", counts, f"calls per {step:g} s", whole=True)]


def _latency_charts(rows: list[Interval]) -> list[Markup]:
    """One chart per measured metric: its median and p95 per interval (a line bridges intervals without samples)."""
    charts = []
    for m, text in METRICS.items():
        if any(m in iv.samples for iv in rows):
            per = [(_mid(iv), summary_of(iv.samples.get(m, []))) for iv in rows]
            charts.append(line_chart(text, [Series(f"p{p}", [(x, s[f"p{p}"]) for x, s in per], color="#0969da",
                                                   dashed=p == 95, bridge=True) for p in (50, 95)], "ms"))
    return charts


def _resource_charts(result: LoadRun, rows: list[Interval]) -> list[Markup]:
    """CPU per interval and memory per sample for each process tree (samples before the first call included)."""
    t0 = _t0(result)
    samples = sorted(result.samples, key=lambda s: s["t"])
    cpu = [Series(name, [(_mid(iv), iv.cpu.get(role)) for iv in rows])
           for role, name in ROLES.items() if any(role in iv.cpu for iv in rows)]
    rss = [Series(name, [(s["t"] - t0, s[f"{role}_rss_mb"]) for s in samples if f"{role}_rss_mb" in s])
           for role, name in ROLES.items()]
    return [line_chart("CPU (% of one core)", cpu, "% of one core"),
            line_chart("Memory (resident set size)", [s for s in rss if s.points], "MB")]


def write_html(result: LoadRun, path: Path) -> None:
    """One self-contained page (no script, nothing loaded): tables with labels and units, then charts."""
    data = to_json(result)
    metrics = [(METRICS[m], s["count"], [_num(s.get(f"p{p}")) for p in PERCENTILES], _num(s["max"]))
               for m, s in data["metrics"].items() if s["count"]]
    page = render("load.html.j2", csp=LOAD_CSP, css=Markup(LOAD_CSS), data=data, options=_labelled(data["options"]),
                  metrics=metrics, percentiles=PERCENTILES, cpu=_labelled(data["cpu"]),
                  rtp=_labelled(data["rtp"]) if data["rtp"] else [], charts=_charts(result))
    path.write_text(page, encoding="utf-8")


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def write_reports(result: LoadRun, *, csv_path: Path | None, json_path: Path | None,
                  html_path: Path | None) -> list[Path]:
    written = []
    if csv_path is not None:
        write_csv(result, csv_path)
        written.append(csv_path)
    if json_path is not None:
        json_path.write_text(json.dumps(to_json(result), indent=1))
        written.append(json_path)
    if html_path is not None:
        write_html(result, html_path)
        written.append(html_path)
    return written


def print_summary(result: LoadRun, console: Console) -> None:
    from rich.table import Table

    data = to_json(result)
    c = data["calls"]
    console.print(f"[bold]{data['scenario']}[/] ({data['mode']}): {c['placed']} placed, "
                  f"[green]{c['completed']} completed[/], "
                  f"{'[red]' if c['failed'] else ''}{c['failed']} failed{'[/]' if c['failed'] else ''}, "
                  f"{c['lost']} lost"
                  + (f", [red]{c['unplaced']} never placed[/]" if c["unplaced"] else "")
                  + f" in {data['seconds']:.1f} s"
                  + (" [yellow](stopped by Ctrl-C)[/]" if result.aborted else ""), highlight=False)
    t = Table(title="latency from the journal (ms)")
    for col in ("metric", "count", *[f"p{p}" for p in PERCENTILES], "max"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for m, s in data["metrics"].items():
        if s["count"]:
            t.add_row(METRICS[m], str(s["count"]), *[_fmt(s.get(f"p{p}")) for p in PERCENTILES], _fmt(s["max"]))
    console.print(t)
    if data["failures"]:
        f = Table(title="failures by reason")
        f.add_column("reason")
        f.add_column("calls", justify="right")
        for k, v in data["failures"].items():
            f.add_row(k, str(v))
        console.print(f)
    cpu = data["cpu"]
    u = Table(title="CPU (user+system seconds over the run)")
    for col in ("process", "CPU s", "% of a core per active call"):
        u.add_column(col, justify="left" if col == "process" else "right")
    mocks = data["options"]["mock_processes"]
    names = {"mock": "mock (+ SIP ingress workers)" if mocks == 1 else f"mock ({mocks} processes)",
             "app": "app under test", "load": "load drivers (+ softphone workers)"}
    for role in ("mock", "app", "load"):
        v = cpu.get(f"{role}_cpu_s")
        per = cpu.get(f"{role}_cpu_pct_per_active_call")
        u.add_row(names[role],
                  "-" if v is None else f"{v:.1f}", "-" if per is None else f"{per:.3f}")
    console.print(u)
    console.print(f"call-seconds {cpu['call_seconds']}, mean active {cpu['mean_active']}, max active "
                  f"{cpu['max_active']}" + (f", mock RSS {cpu.get('mock_rss_mb_first')} → {cpu.get('mock_rss_mb_max')}"
                                            f" MB (max)" if "mock_rss_mb_first" in cpu else ""), highlight=False)
    if data["rtp"]:
        r = data["rtp"]
        console.print(f"RTP at the callers: {r['rx_pkt']} packets received, {r['rx_loss']} lost, "
                      f"{r['calls_without_rx']} calls without audio back", highlight=False)
        if r.get("calls_with_ingress_stats"):
            console.print(f"RTP at the mock's ingress: {r['ingress_rx_pkt']} packets received, "
                          f"{r['ingress_rx_loss']} lost ({r['calls_with_ingress_stats']} calls)", highlight=False)
    for n in result.notes:
        console.print(f"note: {n}")
