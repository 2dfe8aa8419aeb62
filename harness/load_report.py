"""Reports of a load run: the terminal summary, SIPp-style CSV per interval, JSON, self-contained HTML."""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .load_metrics import METRICS, PERCENTILES, Interval, intervals, reasons, summary

if TYPE_CHECKING:
    from rich.console import Console

    from .load import LoadResult


def _t0(result: LoadResult) -> float:
    return min(r.start for r in result.records) if result.records else result.started_at


def _interval_rows(result: LoadResult) -> list[Interval]:
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


def cpu_summary(result: LoadResult) -> dict[str, float | None]:
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


def rtp_summary(result: LoadResult) -> dict[str, int]:
    recs = [r for r in result.records if r.rtp]
    return {"calls_with_stats": len(recs), "rx_pkt": sum(r.rtp.get("rx_pkt", 0) for r in recs),
            "tx_pkt": sum(r.rtp.get("tx_pkt", 0) for r in recs), "rx_loss": sum(r.rtp.get("rx_loss", 0) for r in recs),
            "calls_without_rx": sum(1 for r in recs if not r.rtp.get("rx_pkt")),
            "ingress_rx_pkt": sum(r.rtp.get("ingress_rx_pkt", 0) for r in recs),
            "ingress_rx_loss": sum(r.rtp.get("ingress_rx_loss", 0) for r in recs),
            "calls_with_ingress_stats": sum(1 for r in recs if "ingress_rx_pkt" in r.rtp)}


def to_json(result: LoadResult) -> dict[str, Any]:
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
                  "lost": result.placed - len(result.records)},
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


def write_csv(result: LoadResult, path: Path) -> None:
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


def _svg_lines(series: dict[str, list[tuple[float, float | None]]], title: str, unit: str,
               width: int = 860, height: int = 240) -> str:
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
    pts = [(x, y) for s in series.values() for x, y in s if y is not None]
    left, right, top, bottom = 56, 12, 26, 30
    if not pts:
        return f'<svg width="{width}" height="60"><text x="10" y="30">{html.escape(title)}: no data</text></svg>'
    xmax = max(x for x, _ in pts) or 1.0
    ymax = max(y for _, y in pts) or 1.0
    ymax *= 1.1

    def sx(x: float) -> float:
        return left + (width - left - right) * x / xmax

    def sy(y: float) -> float:
        return height - bottom - (height - top - bottom) * y / ymax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>']
    for i in range(5):
        yt = ymax * i / 4
        out.append(f'<text x="{left - 4}" y="{sy(yt) + 4:.1f}" text-anchor="end">{yt:.0f}</text>'
                   f'<line x1="{left}" y1="{sy(yt):.1f}" x2="{width - right}" y2="{sy(yt):.1f}" stroke="#eee"/>')
        xt = xmax * i / 4
        out.append(f'<text x="{sx(xt):.1f}" y="{height - bottom + 14}" text-anchor="middle">{xt:.0f} s</text>')
    out.append(f'<text x="{left - 4}" y="{top - 4}" text-anchor="end">{html.escape(unit)}</text>')
    for i, (name, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        segs: list[list[str]] = [[]]
        for x, y in s:
            if y is None:
                segs.append([])
            else:
                segs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
        for seg in segs:
            if len(seg) > 1:
                out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{" ".join(seg)}"/>')
            elif len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{c}"/>')
        lx = left + 10 + (i % 4) * 200
        ly = top + 12 + (i // 4) * 14
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{c}"/>'
                   f'<text x="{lx + 14}" y="{ly - 3}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def write_html(result: LoadResult, path: Path) -> None:
    data = to_json(result)
    rows = _interval_rows(result)
    mid = [(iv.start + iv.end) / 2 for iv in rows]
    lat: dict[str, list[tuple[float, float | None]]] = {}
    for m in METRICS:
        if not any(m in iv.samples for iv in rows):
            continue
        short = m.removesuffix("_ms")
        for p in (50, 95):
            lat[f"{short} p{p}"] = [(x, summary_of(iv.samples.get(m, [])).get(f"p{p}")) for x, iv in zip(mid, rows,
                                                                                                       strict=True)]
    conc: dict[str, list[tuple[float, float | None]]] = {
            "active calls": [(x, float(iv.active)) for x, iv in zip(mid, rows, strict=True)],
            "started / interval": [(x, float(iv.created)) for x, iv in zip(mid, rows, strict=True)],
            "failed / interval": [(x, float(iv.failed)) for x, iv in zip(mid, rows, strict=True)]}
    cpu = {f"{role} CPU %": [(x, iv.cpu.get(role)) for x, iv in zip(mid, rows, strict=True)]
           for role in ("mock", "app", "load")}
    esc = html.escape
    metric_rows = "".join(
        f"<tr><td>{esc(METRICS[m])}</td><td>{s['count']}</td>"
        + "".join(f"<td>{_fmt(s.get(f'p{p}'))}</td>" for p in PERCENTILES)
        + f"<td>{_fmt(s['max'])}</td></tr>" for m, s in data["metrics"].items())
    fail_rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in data["failures"].items()) or \
        "<tr><td colspan=2>none</td></tr>"
    cpu_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in data["cpu"].items())
    c = data["calls"]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>rtsip load: {esc(data['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 20px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.ok{{color:#2a7}}.bad{{color:#c22}}</style></head><body>
<h1>rtsip load · {esc(data['scenario'])} · {esc(data['mode'])}</h1>
<p>{c['placed']} placed · <span class="ok">{c['completed']} completed</span> ·
<span class="{'bad' if c['failed'] else 'ok'}">{c['failed']} failed</span> · {c['lost']} lost ·
{data['seconds']:.1f} s · options {esc(json.dumps(data['options']))}{' · ABORTED' if data['aborted'] else ''}</p>
<h2>Latency (ms, from the journal)</h2><table><tr><th>metric</th><th>count</th>
{''.join(f'<th>p{p}</th>' for p in PERCENTILES)}<th>max</th></tr>{metric_rows}</table>
<h2>Failures by reason</h2><table><tr><th>reason</th><th>calls</th></tr>{fail_rows}</table>
{_svg_lines(lat, "Latency over time", "ms")}
{_svg_lines(conc, "Concurrency", "calls")}
{_svg_lines(cpu, "CPU (% of one core)", "%")}
<h2>CPU and memory</h2><table>{cpu_rows}</table>
</body></html>"""
    path.write_text(doc)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def write_reports(result: LoadResult, *, csv_path: Path | None, json_path: Path | None,
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


def print_summary(result: LoadResult, console: Console) -> None:
    from rich.table import Table

    data = to_json(result)
    c = data["calls"]
    console.print(f"[bold]{data['scenario']}[/] ({data['mode']}): {c['placed']} placed, "
                  f"[green]{c['completed']} completed[/], "
                  f"{'[red]' if c['failed'] else ''}{c['failed']} failed{'[/]' if c['failed'] else ''}, "
                  f"{c['lost']} lost in {data['seconds']:.1f} s"
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
