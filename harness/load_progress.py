"""``rtsip load`` while it runs: the result being filled, the live progress, Ctrl-C, CPU and memory.

:class:`LoadResult` collects every call's record; :class:`Progress` shows counts and rolling
percentiles; :class:`Stopper` turns Ctrl-C into "stop placing" then "cut off"; :class:`_Sampler`
takes the CPU and RSS of each role's process tree (psutil) once per ``--interval``. Both kinds of
callers (:mod:`harness.load_locust`, :mod:`harness.load_sip`) report into these.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil

from .load_metrics import MAIN_METRICS, CallRecord, percentile
from .load_plan import Plan

# ---- CPU and memory of process trees (psutil) ----------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process now: one pass, so a sample sees one consistent tree."""
    out: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            out.setdefault(int(ppid), []).append(proc.pid)
    return out


def _reaped_cpu() -> float:
    """CPU seconds of this process's children that ended and were waited for (with theirs): the mock and the
    app end only after the last sample, so during a run this is the drivers'."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``pid`` and every process below it (``children``: a :func:`_children_map` taken already)."""
    children = children if children is not None else _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_rss(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user + system) and RSS in MB summed over ``pids``; processes gone meanwhile count 0."""
    cpu = rss = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                mem = proc.memory_info()
        except psutil.Error:
            continue
        cpu += times.user + times.system
        rss += mem.rss / 1e6
    return cpu, rss


# ---- progress, results ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    plan: Plan
    started_at: float  # wall clock
    ended_at: float = 0.0
    records: list[CallRecord] = field(default_factory=list)
    placed: int = 0
    aborted: bool = False
    samples: list[dict[str, float]] = field(default_factory=list)  # periodic CPU/RSS/active
    cpu: dict[str, float] = field(default_factory=dict)
    app_output: list[str] = field(default_factory=list)
    mock_output: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cut_short: bool = False  # the driver stopped placing calls on its own error, before the run's clock said so

    @property
    def completed(self) -> int:
        return sum(1 for r in self.records if r.ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if not r.ok)

    @property
    def unplaced(self) -> int:
        """Calls of the budget never placed though nothing asked to stop early: the run failed them. With
        ``--duration`` the budget is a ceiling, owed only when the driver stopped before the clock did."""
        o = self.plan.options
        if self.aborted or (o.duration and not self.cut_short):
            return 0
        return max(0, o.calls - self.placed)


class Progress:
    """Counts and rolling percentiles while the run goes; rendered with rich (or a line every 5 s)."""

    def __init__(self, plan: Plan, enabled: bool) -> None:
        from rich.console import Console

        self.plan = plan
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.placed = self.done = self.failed = 0
        self.roll: dict[str, deque[float]] = {m: deque(maxlen=300) for m in MAIN_METRICS}
        self.t0 = time.time()
        self.live: Any = None
        self.last_line = 0.0
        self.phase = "starting"

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(None, None, None)

    def add(self, rec: CallRecord) -> None:
        self.done += 1
        if not rec.ok:
            self.failed += 1
        for m in MAIN_METRICS:
            for _, v in rec.metrics.get(m, []):
                self.roll[m].append(v)

    def render(self) -> Any:
        from rich.table import Table

        el = max(0.0, time.time() - self.t0)
        t = Table(title=f"rtsip load · {self.plan.scenario.name} · {self.plan.mode} · {self.phase}", expand=False)
        for col in ("elapsed", "placed", "active", "done", "failed", *[f"{m.removesuffix('_ms')} p50/p95"
                                                                        for m in MAIN_METRICS]):
            t.add_column(col, justify="right")
        cells = []
        for m in MAIN_METRICS:
            vals = list(self.roll[m])
            p50, p95 = percentile(vals, 50), percentile(vals, 95)
            cells.append("-" if p50 is None or p95 is None else f"{p50:.0f} / {p95:.0f} ms")
        t.add_row(f"{el:.0f} s", str(self.placed), str(self.placed - self.done), str(self.done - self.failed),
                  f"[red]{self.failed}[/]" if self.failed else "0", *cells)
        return t

    def tick(self) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self.render())
        elif time.time() - self.last_line >= 5:
            self.last_line = time.time()
            self.console.print(f"[{max(0.0, time.time() - self.t0):5.0f} s] placed {self.placed} active "
                               f"{self.placed - self.done} done {self.done - self.failed} failed {self.failed}")


# ---- stopping ------------------------------------------------------------------------------------------


class Stopper:
    """Ctrl-C once: stop placing and hang up what is in flight; the run still reports. Twice: cut off."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.requested.set()


# ---- CPU and memory of the run, sampled -------------------------------------------------------------


class _Sampler:
    """CPU and RSS of the mock, the app and the drivers, once per interval."""

    def __init__(self, result: LoadResult, roles: dict[str, list[int]], progress: Progress) -> None:
        self.result, self.roles, self.progress = result, roles, progress
        self.last: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.reaped_at_start = _reaped_cpu()
        self.take()

    def take(self) -> None:
        children = _children_map()
        row: dict[str, float] = {"t": time.time(), "active": self.progress.placed - self.progress.done,
                                 "done": self.progress.done}
        for role, tops in self.roles.items():
            tops = [p for p in tops if p]
            if not tops:
                continue
            pids = [p for top in tops for p in descendants(top, children)]
            if role == "load":  # this process and the driver / softphone workers it started
                pids = [p for p in pids if p not in self._others(children)]
            cpu, rss = proc_cpu_rss(pids)
            if role == "load":  # drivers that have ended (Locust, before the last sample) and were waited for
                cpu += _reaped_cpu() - self.reaped_at_start
            self.first.setdefault(role, cpu)
            self.last[role] = cpu
            row[f"{role}_cpu_s"] = round(cpu, 3)
            row[f"{role}_rss_mb"] = round(rss, 1)
        self.result.samples.append(row)

    def _others(self, children: dict[int, list[int]]) -> set[int]:
        out: set[int] = set()
        for role, tops in self.roles.items():
            if role != "load":
                out.update(p for top in tops if top for p in descendants(top, children))
        return out

    def finish(self) -> None:
        self.take()
        for role in self.last:
            self.result.cpu[f"{role}_cpu_s"] = round(self.last[role] - self.first[role], 3)
