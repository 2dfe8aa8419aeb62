"""Hosts needed past this machine (issue 18, item 4): per-call costs measured here, a plan for bigger loads.

    python -m bench.plan_hosts --json plan.json      # measure (2-3 minutes), then plan
    python -m bench.plan_hosts --from-json plan.json # plan again from that measurement

Measuring runs the real stack through ``rtsip load`` (:func:`harness.load.run_load`) with
``scenarios/load/turn_every_5s_long.yaml`` (a caller turn every 5 s): virtual calls with one mock, the same
at twice the size (the extrapolation check), twice the size on two mocks behind HAProxy (``rtsip load
--mock-processes 2``: what sharding and the proxy cost), and real SIP/TLS calls with the same steps. Each
run's CPU and memory are read per role from the process tree (psutil) over a steady window, once every
call is up; the run is then stopped (hung up) rather than waiting for the calls to end.

Rules of the plan (:func:`plan_hosts` and :func:`capacity`, pure functions of a measurement):

1. A role's cost per call is the highest per-call figure among the runs that measured it (the
   conservative one): CPU in % of one core per call in progress, memory in MB per call in progress.
2. Each role gets hosts of its own. A host takes as many calls as its tightest limit allows: CPU (its
   cores at the target utilisation), memory (its RAM at the memory target, less what the role's
   processes hold with no call), RTP ports (SIP roles: ``RTP_SPAN`` ports per pjsua2 process of 4 calls,
   from the ports outside the kernel's ephemeral range, one IP per host), and a role's own cap
   (``rtsip load`` refuses more than ``VIRTUAL_MAX_PER_CORE`` virtual callers per core).
3. Single-threaded roles (a mock, the example app, a virtual-caller driver) run one process per core;
   each process takes what one core allows at the target utilisation. The single processes inside a
   role (``rtsip load``'s own, a SIP mock's main one) are counted the same way, in the notes.
4. Virtual calls: mocks are shards behind HAProxy, at most ``MAX_SHARDS`` behind one proxy (one hex digit
   of the call id), so a load needing more mock processes needs several proxies (each its own base URL,
   with its own share of apps and callers). HAProxy's hosts are sized from its measured CPU per call.
5. SIP calls: a mock's SIP ingress workers are its children, so they share its host; ``rtsip load``
   runs ``ceil(1.25 × callers' workers) + 1`` of them. SIP does not shard: each mock is its own SIP entry
   point, and a mock's main process takes what one core allows.
6. The bottleneck is the role with the most hosts; its tightest limit is named.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.load_plan import CALLS_PER_SIP_WORKER, VIRTUAL_MAX_PER_CORE
from mock_api.shards import MAX_SHARDS
from sipworker.ports import RTP_PORTS, RTP_SPAN

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = ROOT / "scenarios" / "load" / "turn_every_5s_long.yaml"
FORMAT = 1  # of the measurement JSON

# what a plan assumes unless told otherwise (each one is a flag)
CPU_TARGET = 0.70  # of each core, on every host
MEM_TARGET = 0.80  # of each host's RAM
VIRTUAL_TARGETS = (10_000, 50_000)
SIP_TARGETS = (1_000, 5_000)
INGRESS_WORKERS_PER_CALLER_WORKER = 1.25  # harness.load_plan._size_sip


@dataclass(frozen=True)
class HostSize:
    name: str
    cores: int
    mem_gb: float


DEFAULT_HOSTS = (HostSize("2 cores / 24 GB (this machine)", 2, 24.0), HostSize("16 cores / 64 GB", 16, 64.0))


LINUX_EPHEMERAL_START = 32768  # the kernel's default ip_local_port_range starts here


@dataclass(frozen=True)
class Assumptions:
    """What the arithmetic takes as given; printed under the table. rtsip's own limits come from its code."""

    cpu_target: float = CPU_TARGET
    mem_target: float = MEM_TARGET
    # one IP per host: RTP_PORTS below the ephemeral range (the measurement gives this machine's figure)
    rtp_ports_per_host: int = LINUX_EPHEMERAL_START - RTP_PORTS.start
    rtp_span: int = RTP_SPAN
    calls_per_sip_process: int = CALLS_PER_SIP_WORKER  # the pjsua2 wheel's limit
    virtual_max_per_core: int = VIRTUAL_MAX_PER_CORE  # rtsip load refuses more
    max_shards: int = MAX_SHARDS  # one hex digit of the call id


@dataclass(frozen=True)
class RoleCost:
    """One role's cost, per call in progress, and how its processes are laid out (rules 2, 3, 5)."""

    name: str
    cpu_pct_per_call: float  # % of one core
    mb_per_call: float  # memory that grows with the calls (worker processes included, per call)
    mb_per_process: float = 0.0  # what a process holds with no call (one process per core: rule 3)
    one_per_core: bool = False  # single-threaded, one process per core
    calls_per_process: float | None = None  # pjsua2 workers (rule 5: fewer for the ingress)
    rtp_ports_per_call: float = 0.0
    calls_per_core_cap: int | None = None  # a refusal in rtsip itself
    main_cpu_pct_per_call: float = 0.0  # the share spent in one single-threaded process (a mock's, rtsip load's)
    main_label: str = ""  # what that process is, for the notes


@dataclass(frozen=True)
class Capacity:
    calls: int  # per host
    limit: str  # the tightest: cpu, memory, RTP ports, or the role's own cap
    limits: dict[str, int]


@dataclass(frozen=True)
class RolePlan:
    role: str
    hosts: int
    per_host: Capacity
    processes: int
    mains: int = 0  # single-threaded main processes the role needs (each under one core at the target)


@dataclass
class LoadPlan:
    kind: str  # virtual or sip
    calls: int
    host: HostSize
    roles: list[RolePlan]
    notes: list[str] = field(default_factory=list)

    @property
    def total_hosts(self) -> int:
        return sum(r.hosts for r in self.roles)

    @property
    def bottleneck(self) -> RolePlan:
        """Rule 6: the role with the most hosts (the first listed among equals)."""
        return max(self.roles, key=lambda r: r.hosts)


# ---- the plan: pure ---------------------------------------------------------------------------------------


def capacity(role: RoleCost, host: HostSize, a: Assumptions) -> Capacity:
    """Calls one host of ``host``'s size takes for ``role`` (rule 2), and which limit binds."""
    limits: dict[str, int] = {}
    if role.cpu_pct_per_call > 0:
        per_core = math.floor(a.cpu_target * 100 / role.cpu_pct_per_call)
        # one process per core: each core's share is whole; otherwise the host's cores pool their share
        limits["cpu"] = (per_core * host.cores if role.one_per_core
                         else math.floor(host.cores * a.cpu_target * 100 / role.cpu_pct_per_call))
    fixed = role.mb_per_process * host.cores if role.one_per_core else 0.0
    mem = host.mem_gb * 1024 * a.mem_target - fixed
    per_call_mb = role.mb_per_call
    if role.calls_per_process:
        per_call_mb += role.mb_per_process / role.calls_per_process
    if per_call_mb > 0:
        limits["memory"] = max(0, math.floor(mem / per_call_mb))
    if role.rtp_ports_per_call > 0:
        limits["RTP ports"] = math.floor(a.rtp_ports_per_host / role.rtp_ports_per_call)
    if role.calls_per_core_cap is not None:
        limits["rtsip cap"] = role.calls_per_core_cap * host.cores
    if not limits:
        raise ValueError(f"{role.name}: no cost measured, nothing limits it")
    limit = min(limits, key=lambda k: limits[k])
    return Capacity(limits[limit], limit, limits)


def processes_for(role: RoleCost, calls: int, hosts: int, host: HostSize, a: Assumptions) -> int:
    """How many processes of the role the load runs (for the table and the shard count)."""
    if role.calls_per_process:
        return math.ceil(calls / role.calls_per_process)
    if role.one_per_core:  # as many as the CPU needs, at most one per core of its hosts
        per_process = math.floor(a.cpu_target * 100 / role.cpu_pct_per_call) if role.cpu_pct_per_call else calls
        return min(hosts * host.cores, math.ceil(calls / max(1, per_process)))
    return hosts


def plan_load(kind: str, calls: int, host: HostSize, roles: Sequence[RoleCost], a: Assumptions) -> LoadPlan:
    """Hosts per role for ``calls`` concurrent calls of ``kind`` (rules 2-6)."""
    out = LoadPlan(kind, calls, host, [])
    for role in roles:
        cap = capacity(role, host, a)
        if cap.calls <= 0:
            raise ValueError(f"{role.name}: a {host.name} host takes no call ({cap.limit})")
        hosts = math.ceil(calls / cap.calls)
        mains = 0
        if role.main_cpu_pct_per_call > 0:
            mains = math.ceil(calls / max(1, math.floor(a.cpu_target * 100 / role.main_cpu_pct_per_call)))
            out.notes.append(f"{mains} {role.main_label}")
        out.roles.append(RolePlan(role.name, hosts, cap, processes_for(role, calls, hosts, host, a), mains))
    mocks = next((r for r in out.roles if r.role.startswith("mock")), None)
    if mocks is not None and kind == "virtual":
        proxies = math.ceil(mocks.processes / a.max_shards)
        out.notes.append(f"{mocks.processes} mock shards behind {proxies} HAProxy front(s) of at most "
                         f"{a.max_shards} shards, each its own base URL (rule 4)")
    elif mocks is not None:
        out.notes.append(f"{_ingress_workers(calls, a)} SIP ingress workers, "
                         f"{math.ceil(calls / a.calls_per_sip_process)} softphone workers (rule 5)")
    return out


def _ingress_workers(calls: int, a: Assumptions) -> int:
    return math.ceil(math.ceil(calls / a.calls_per_sip_process) * INGRESS_WORKERS_PER_CALLER_WORKER) + 1


def plan_hosts(costs: dict[str, list[RoleCost]], hosts: Iterable[HostSize], targets: Mapping[str, Sequence[int]],
               a: Assumptions) -> list[LoadPlan]:
    """Every target load on every host size; a kind with no measured costs is left out."""
    sizes = list(hosts)
    return [plan_load(kind, n, h, costs[kind], a) for kind in ("virtual", "sip") if costs.get(kind)
            for n in targets.get(kind, ()) for h in sizes]


# ---- from a measurement to per-call costs: pure -------------------------------------------------------------


def per_call(run: dict[str, Any], role: str) -> tuple[float, float] | None:
    """(CPU % of one core, MB) per call in progress of ``role`` in one run; None when the run lacks it."""
    r = run["roles"].get(role)
    active = run["mean_active"]
    if r is None or not active:
        return None
    return r["cpu_pct_of_core"] / active, max(0.0, r["rss_mb"] - r["rss_mb_idle"]) / active


def worst(runs: Iterable[dict[str, Any]], role: str) -> tuple[float, float] | None:
    """Rule 1: the highest per-call CPU and memory of ``role`` among ``runs``."""
    got = [pc for run in runs if (pc := per_call(run, role)) is not None]
    if not got:
        return None
    return max(c for c, _ in got), max(m for _, m in got)


def _idle_mb(runs: Iterable[dict[str, Any]], role: str) -> float:
    """What one process of ``role`` holds with no call: the largest idle figure seen."""
    vals = [r["roles"][role]["rss_mb_idle"] / max(1, r["roles"][role]["processes_idle"])
            for r in runs if role in r["roles"] and r["roles"][role].get("processes_idle")]
    return max(vals, default=0.0)


def _per_process_mb(runs: Iterable[dict[str, Any]], role: str) -> float:
    vals = [r["roles"][role]["rss_mb"] / r["roles"][role]["processes"]
            for r in runs if role in r["roles"] and r["roles"][role]["processes"]]
    return max(vals, default=0.0)


def _main_cpu(runs: Iterable[dict[str, Any]]) -> float:
    """CPU per call of the callers' main process (rtsip load itself): the callers less their workers."""
    vals = [(r["roles"]["callers"]["cpu_pct_of_core"] - r["roles"]["callers_workers"]["cpu_pct_of_core"])
            / r["mean_active"] for r in runs if "callers_workers" in r["roles"] and r["mean_active"]]
    return max(vals, default=0.0)


def costs_from(measurement: dict[str, Any], a: Assumptions) -> dict[str, list[RoleCost]]:
    """The roles of each kind of load, with their costs from the runs (rules 1, 3, 5)."""
    runs = measurement["runs"]
    virtual = [r for r in runs if r["mode"] == "virtual"]
    sip = [r for r in runs if r["mode"] == "sip"]
    out: dict[str, list[RoleCost]] = {"virtual": [], "sip": []}
    ports = a.rtp_span / a.calls_per_sip_process
    if virtual:
        for role, label, cap in (("callers", "virtual callers", a.virtual_max_per_core),
                                 ("mock", "mock shards", None), ("app", "app", None)):
            w = worst(virtual, role)
            if w is not None:
                main = _main_cpu(virtual) if role == "callers" else 0.0
                out["virtual"].append(RoleCost(label, w[0], w[1], _idle_mb(virtual, role), one_per_core=True,
                                               calls_per_core_cap=cap, main_cpu_pct_per_call=main,
                                               main_label="rtsip load process(es), each gathering its "
                                                          "drivers' calls on one core"))
        w = worst(virtual, "proxy")
        if w is not None:
            out["virtual"].insert(2, RoleCost("HAProxy", w[0], w[1], _per_process_mb(virtual, "proxy")))
    if sip:
        callers, ingress, mock, app = (worst(sip, r) for r in ("callers", "ingress", "mock", "app"))
        if callers is not None:
            out["sip"].append(RoleCost("SIP callers", callers[0], 0.0,
                                       _per_process_mb(sip, "callers_workers"),
                                       calls_per_process=a.calls_per_sip_process, rtp_ports_per_call=ports,
                                       main_cpu_pct_per_call=_main_cpu(sip),
                                       main_label="rtsip load process(es), each driving its calls on one core"))
        if ingress is not None and mock is not None:
            per_worker = a.calls_per_sip_process / INGRESS_WORKERS_PER_CALLER_WORKER
            out["sip"].append(RoleCost("mock + SIP ingress", ingress[0] + mock[0], mock[1],
                                       _per_process_mb(sip, "ingress"), calls_per_process=per_worker,
                                       rtp_ports_per_call=a.rtp_span / per_worker, main_cpu_pct_per_call=mock[0],
                                       main_label="mock(s), each its own SIP entry point (SIP does not shard)"))
        if app is not None:
            out["sip"].append(RoleCost("app", app[0], app[1], _idle_mb(sip, "app"), one_per_core=True))
    return out


def flatness(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The extrapolation check: per-call costs of a run against one of the same kind at half its size."""
    out = []
    for big in runs:
        small = next((r for r in runs if r["mode"] == big["mode"] and r["mock_processes"] == big["mock_processes"]
                      and 2 * r["concurrency"] == big["concurrency"]), None)
        if small is None:
            continue
        for role in big["roles"]:
            a, b = per_call(small, role), per_call(big, role)
            if a is None or b is None or role.endswith("_workers") or role.endswith("_main"):
                continue
            out.append({"mode": big["mode"], "role": role, "small": small["name"], "big": big["name"],
                        "cpu_small": a[0], "cpu_big": b[0], "cpu_ratio": b[0] / a[0] if a[0] else None,
                        "mb_small": a[1], "mb_big": b[1]})
    return out


# ---- measuring: the real stack -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    name: str
    mode: str
    concurrency: int
    rate: float
    mocks: int = 1


class TreeSampler:
    """CPU seconds and RSS per role, from the process tree under the pids ``rtsip load`` reports.

    Roles: ``mock`` (the mock processes), ``ingress`` (their children: SIP workers), ``proxy`` (HAProxy),
    ``app`` (and its children), ``callers`` (this process and the drivers or softphone workers it started,
    the others' trees left out); ``callers_workers`` is the callers' child processes alone. A process's CPU
    counts from the first time it is seen, and still counts once it is gone (its last reading)."""

    def __init__(self, tops: dict[str, int]) -> None:
        self.mocks = [pid for key, pid in tops.items() if key == "mock" or (key.startswith("mock_")
                                                                             and key != "mock_proxy")]
        self.proxy = [tops["mock_proxy"]] if "mock_proxy" in tops else []
        self.app = [tops["app"]] if tops.get("app") else []
        self.load = tops["load"]
        self.cpu: dict[int, tuple[str, float]] = {}  # pid → (role, last CPU seconds)
        self.samples: list[dict[str, Any]] = []
        self.own_cpu_s = 0.0  # this sampler's own CPU, in the callers' process: taken off their figure

    def roles_now(self) -> dict[str, list[int]]:
        import psutil

        from harness.load_progress import descendants

        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            if proc.info.get("ppid") is not None:
                children.setdefault(int(proc.info["ppid"]), []).append(proc.pid)
        mock_trees = [p for top in self.mocks for p in descendants(top, children)]
        others = set(mock_trees)
        roles = {"mock": list(self.mocks), "ingress": [p for p in mock_trees if p not in self.mocks]}
        for name, tops in (("proxy", self.proxy), ("app", self.app)):
            roles[name] = [p for top in tops for p in descendants(top, children)]
            others.update(roles[name])
        mine = [p for p in descendants(self.load, children) if p not in others]
        roles["callers"] = mine
        roles["callers_workers"] = [p for p in mine if p != self.load and not _is_tracker(p)]
        return roles

    def take(self) -> dict[str, Any]:
        import psutil

        began = time.thread_time()
        row: dict[str, Any] = {"t": time.time(), "roles": {}}
        for role, pids in self.roles_now().items():
            rss = 0.0
            alive = 0
            for pid in pids:
                try:
                    proc = psutil.Process(pid)
                    with proc.oneshot():
                        times = proc.cpu_times()
                        rss += proc.memory_info().rss / 1e6
                except psutil.Error:
                    continue
                alive += 1
                key = pid if role != "callers_workers" else -pid  # a worker counts in two roles
                self.cpu[key] = (role, times.user + times.system)
            row["roles"][role] = {"rss_mb": rss, "processes": alive}
        for role in row["roles"]:
            row["roles"][role]["cpu_s"] = sum(c for r, c in self.cpu.values() if r == role)
        row["box"] = _box_busy()
        self.own_cpu_s += time.thread_time() - began
        row["own_cpu_s"] = self.own_cpu_s
        self.samples.append(row)
        return row

    def app_connections(self, pid: int) -> int:
        """Established TCP connections of the app: one WebSocket per call in progress, plus a few."""
        import psutil

        began = time.thread_time()
        try:
            return sum(1 for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED)
        except psutil.Error:
            return 0
        finally:
            self.own_cpu_s += time.thread_time() - began


def _is_tracker(pid: int) -> bool:
    import psutil

    try:
        return "resource_tracker" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return True


def _box_busy() -> tuple[float, float]:
    from bench.sip_machine import box_busy

    return box_busy()


def window_of(samples: list[dict[str, Any]], opens: float, closes: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first and last samples inside [opens, closes]."""
    inside = [s for s in samples if opens <= s["t"] <= closes]
    if len(inside) < 2:
        raise RuntimeError(f"the steady window holds {len(inside)} sample(s): the calls never all came up")
    return inside[0], inside[-1]


def mean_active(records: Iterable[Any], t0: float, t1: float) -> float:
    """Calls in progress over [t0, t1], on average: each call's time inside the window, summed."""
    total = sum(max(0.0, min(r.end, t1) - max(r.start, t0)) for r in records)
    return total / (t1 - t0)


def active_at(records: Iterable[Any], t: float) -> int:
    return sum(1 for r in records if r.start <= t < r.end)


async def measure_run(spec: RunSpec, tmp: Path, window_s: float, settle_s: float,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """One ``rtsip load`` run: wait until every call is up, a settle time, a steady window; then stop it."""
    from harness.load import LoadOptions, Stopper, plan, run_load

    options = LoadOptions(scenario=SCENARIO, calls=spec.concurrency, concurrency=spec.concurrency, rate=spec.rate,
                          mode=spec.mode, progress=False, run_dir=tmp / spec.name, mock_processes=spec.mocks)
    load_plan = plan(options)
    stopper = Stopper()
    tops: dict[str, int] = {}
    started = asyncio.Event()

    def on_started(pids: dict[str, int]) -> None:
        tops.update(pids)
        started.set()

    t_begin = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    task = asyncio.create_task(run_load(load_plan, stopper, on_started))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        task.result()  # raises what stopped the start
        raise RuntimeError(f"{spec.name}: rtsip load ended before it started")
    sampler = TreeSampler(tops)
    idle = sampler.take()
    say(f"{spec.name}: mock and app up in {time.monotonic() - t_begin:.0f} s; placing {spec.concurrency} calls "
        f"at {spec.rate:g}/s")
    # every call is up once they have all been placed (at the rate, at the earliest) and the app holds a
    # connection for each; the records tell afterwards when the last one started, and the window opens after it
    placed_by = time.time() + spec.concurrency / spec.rate
    deadline = placed_by + 60
    up_at: float | None = None
    while not task.done():
        await asyncio.sleep(1.0)
        sampler.take()
        now = time.time()
        if up_at is None and now >= placed_by and (sampler.app_connections(tops["app"]) >= spec.concurrency
                                                   or now > deadline):
            up_at = now
            say(f"{spec.name}: {spec.concurrency} calls up; settling {settle_s:g} s, then a {window_s:g} s window")
        if up_at is not None and time.time() >= up_at + settle_s + window_s:
            break
    stop_at = time.time()
    stopper()
    result = await task
    load_after = [round(x, 2) for x in os.getloadavg()]
    records = result.records
    last_start = max((r.start for r in records), default=stop_at)
    first, last = window_of(sampler.samples, max(last_start, up_at or stop_at) + settle_s, stop_at)
    t0, t1 = first["t"], last["t"]
    wall = t1 - t0
    roles: dict[str, Any] = {}
    for role, now in last["roles"].items():
        was = first["roles"][role]
        inside = [s["roles"][role] for s in sampler.samples if t0 <= s["t"] <= t1]
        cpu_s = now["cpu_s"] - was["cpu_s"]
        if role == "callers":  # the sampler ran in this process: its own work is not the callers'
            cpu_s -= last["own_cpu_s"] - first["own_cpu_s"]
        roles[role] = {"cpu_pct_of_core": round(100 * cpu_s / wall, 3),
                       "rss_mb": round(sum(x["rss_mb"] for x in inside) / len(inside), 1),
                       "processes": max(x["processes"] for x in inside),
                       "rss_mb_idle": round(idle["roles"][role]["rss_mb"], 1),
                       "processes_idle": idle["roles"][role]["processes"]}
    if not tops.get("mock_proxy"):
        roles.pop("proxy", None)
    if spec.mode == "virtual":
        roles.pop("ingress", None)
    b0, b1 = first["box"], last["box"]
    failed_early = sum(1 for r in records if not r.ok and r.end < stop_at - 0.5)
    out = {"name": spec.name, "mode": spec.mode, "concurrency": spec.concurrency, "rate": spec.rate,
           "mock_processes": spec.mocks, "placed": result.placed, "failed_before_stop": failed_early,
           "failure_reasons": sorted({str(r.reason) for r in records if not r.ok and r.end < stop_at - 0.5})[:5],
           "window_s": round(wall, 2), "mean_active": round(mean_active(records, t0, t1), 1),
           "min_active": min(active_at(records, s["t"]) for s in sampler.samples if t0 <= s["t"] <= t1),
           "box_busy_pct": round(100 * (b1[0] - b0[0]) / max(1e-9, b1[1] - b0[1]), 1),
           "loadavg_before": load_before, "loadavg_after": load_after, "roles": roles,
           "wall_s": round(time.monotonic() - t_begin, 1)}
    say(f"{spec.name}: window {wall:.1f} s, {out['mean_active']} calls in progress (min {out['min_active']}), "
        f"{failed_early} failed before the stop; box {out['box_busy_pct']} % busy; " + ", ".join(
            f"{k} {v['cpu_pct_of_core'] / max(1e-9, out['mean_active']):.3f} %/call" for k, v in roles.items()
            if not k.endswith("_workers")))
    return out


def machine() -> dict[str, Any]:
    import platform

    import psutil

    from sipworker.ports import RTP_SPAN, outside_ephemeral

    parts = outside_ephemeral()
    return {"cores": os.cpu_count(), "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "rtp_ports_outside_ephemeral": sum(len(p) for p in parts),
            "rtp_processes_fit": sum(len(p) // RTP_SPAN for p in parts)}


async def measure(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    import tempfile

    from mock_api.shards import ProxyUnavailable, haproxy_path

    n, s = args.virtual, args.sip
    specs = [RunSpec(f"virtual-{n}", "virtual", n, args.rate), RunSpec(f"virtual-{2 * n}", "virtual", 2 * n, args.rate)]
    notes: list[str] = []
    try:
        haproxy_path()
        specs.append(RunSpec(f"virtual-{2 * n}-2-mocks", "virtual", 2 * n, args.rate, mocks=2))
    except ProxyUnavailable as exc:
        notes.append(f"HAProxy not measured: {exc}")
    if s:
        specs.append(RunSpec(f"sip-{s}", "sip", s, args.sip_rate))
        if args.sip_2x:
            specs.append(RunSpec(f"sip-{2 * s}", "sip", 2 * s, args.sip_rate))
    tmp = Path(tempfile.mkdtemp(prefix="rtsip-plan-hosts-"))
    t0 = time.monotonic()
    out: dict[str, Any] = {"format": FORMAT, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "machine": machine(), "window_s": args.window, "settle_s": args.settle, "runs": [],
                           "notes": notes}
    for spec in specs:
        out["runs"].append(await measure_run(spec, tmp, args.window, args.settle, say))
    out["measure_s"] = round(time.monotonic() - t0, 1)
    return out


# ---- output: each table as a title, headers and rows, shown with rich or written as Markdown -------------------


@dataclass(frozen=True)
class Grid:
    title: str
    headers: list[str]
    rows: list[list[str]]

    def rich(self) -> Table:
        t = Table(title=self.title)
        for i, h in enumerate(self.headers):
            t.add_column(h, justify="left" if i == 0 else "right")
        for row in self.rows:
            t.add_row(*row)
        return t

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def _n(v: int) -> str:
    return f"{v:,}"


ROLE_COLUMNS = (("callers", "callers"), ("mock", "mock"), ("ingress", "SIP ingress"), ("proxy", "HAProxy"),
                ("app", "app"))


def runs_grid(m: dict[str, Any]) -> Grid:
    def cell(r: dict[str, Any], role: str) -> str:
        pc = per_call(r, role)
        return "-" if pc is None else f"{pc[0]:.3f} / {pc[1]:.2f}"

    rows = []
    for r in m["runs"]:
        workers = r["roles"].get("callers_workers", {})
        wmb = f"{workers['rss_mb'] / workers['processes']:.0f} × {workers['processes']}" if workers.get(
            "processes") else "-"
        rows.append([r["name"], f"{r['mean_active']:.0f} ({r['min_active']})", str(r["failed_before_stop"]),
                     f"{r['window_s']:.0f} s", f"{r['box_busy_pct']:.0f} %", f"{r['loadavg_after'][0]:.2f}",
                     *[cell(r, role) for role, _ in ROLE_COLUMNS], wmb])
    return Grid("Measured here: CPU % of a core / MB, per call in progress, over each run's steady window",
                ["run", "calls up (min)", "failed", "window", "box busy", "load avg", *[h for _, h in ROLE_COLUMNS],
                 "callers' worker MB × n"], rows)


def flat_grid(rows: list[dict[str, Any]]) -> Grid:
    out = [[f["role"], f"{f['small']} → {f['big']}", f"{f['cpu_small']:.3f}", f"{f['cpu_big']:.3f}",
            "-" if f["cpu_ratio"] is None else f"{f['cpu_ratio']:.2f}", f"{f['mb_small']:.2f} → {f['mb_big']:.2f}"]
           for f in rows]
    return Grid("The extrapolation check: the same run at twice the size (CPU % of a core per call)",
                ["role", "runs", "at 1×", "at 2×", "2× ÷ 1×", "MB per call, 1× → 2×"], out)


def costs_grid(costs: dict[str, list[RoleCost]], hosts: Sequence[HostSize], a: Assumptions) -> Grid:
    rows = []
    for kind, roles in costs.items():
        for role in roles:
            caps = [capacity(role, h, a) for h in hosts]
            rows.append([f"{kind}: {role.name}", f"{role.cpu_pct_per_call:.3f}", f"{role.mb_per_call:.2f}",
                         f"{role.mb_per_process:.0f}", *[f"{_n(c.calls)} ({c.limit})" for c in caps]])
    return Grid("Per-call costs the plan uses, and calls per host (limited by)",
                ["role", "CPU % core/call", "MB/call", "MB/process", *[h.name for h in hosts]], rows)


def plan_grid(plans: list[LoadPlan]) -> Grid:
    roles = list(dict.fromkeys(r.role for p in plans for r in p.roles))
    rows = []
    for p in plans:
        by = {r.role: r for r in p.roles}
        b = p.bottleneck
        rows.append([f"{_n(p.calls)} {p.kind}", p.host.name, *[_n(by[r].hosts) if r in by else "-" for r in roles],
                     _n(p.total_hosts), f"{b.role} ({b.per_host.limit})"])
    return Grid("Hosts needed, each role on hosts of its own",
                ["concurrent calls", "host", *roles, "total hosts", "bottleneck (limited by)"], rows)


def plan_notes(plans: list[LoadPlan]) -> list[str]:
    """The processes each load needs (the same on every host size), once per load."""
    seen: dict[str, None] = {}
    for p in plans:
        seen.setdefault(f"{_n(p.calls)} {p.kind} calls: " + "; ".join(p.notes), None)
    return list(seen)


def assumptions_text(m: dict[str, Any], a: Assumptions, hosts: Sequence[HostSize]) -> list[str]:
    mach = m["machine"]
    loads = [r["loadavg_after"][0] for r in m["runs"]]
    return [
        f"Measured {m['measured_at']} on {mach['cores']} cores / {mach['mem_gb']} GB, in {m.get('measure_s', '?')} s: "
        f"{SCENARIO.relative_to(ROOT)} (a caller turn every 5 s, 12 turns), examples/minimal_app.py as the app; "
        f"each run's steady window ({m['window_s']:g} s) opens {m['settle_s']:g} s after every call is up.",
        f"Other work shared this machine (other test runs): 1-minute load average {min(loads):.2f}-{max(loads):.2f} "
        f"during the runs; the 'box busy' column is the whole machine. Costs measured under load are conservative.",
        "A role's cost is the highest per-call figure among the runs (CPU of the window's steady calls, no call "
        "set-up; memory above the role's idle RSS).",
        f"Hosts: {', '.join(h.name for h in hosts)}; CPU at most {a.cpu_target:.0%} of every core, memory at most "
        f"{a.mem_target:.0%} of RAM; each role on hosts of its own (mixing roles on a host does not change the "
        "total cores much).",
        f"Virtual: one mock per core as shards behind HAProxy, at most {a.max_shards} per proxy; rtsip load takes "
        f"at most {a.virtual_max_per_core} virtual callers per core. The app is examples/minimal_app.py, one "
        "process per core behind a load balancer: your app's cost replaces its row.",
        f"SIP: pjsua2 holds {a.calls_per_sip_process} calls per process; {INGRESS_WORKERS_PER_CALLER_WORKER:g} "
        f"ingress workers per caller worker (+1); {a.rtp_span} RTP ports per worker, {_n(a.rtp_ports_per_host)} "
        "ports per host (one IP; ports 20000-60000 outside the kernel's ephemeral range: narrowing "
        "ip_local_port_range or more IPs raises it). SIP does not shard: each mock is its own SIP entry point.",
        "Not measured: the network between hosts (everything here ran on 127.0.0.1), TLS set-up rates at scale, "
        "and rtsip load driving remote mocks (today it starts mock, app and callers on one host; "
        "rtsip shards --hosts puts a proxy in front of remote mocks).",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--from-json", type=Path, metavar="FILE", help="plan from a saved measurement, measure nothing")
    ap.add_argument("--json", type=Path, metavar="OUT", help="save the measurement here")
    ap.add_argument("--virtual", type=int, default=200, help="virtual calls of the small run (default 200; then 2×)")
    ap.add_argument("--rate", type=float, default=80.0, help="new virtual calls/s (default 80)")
    ap.add_argument("--sip", type=int, default=12, help="SIP calls (default 12: 3 pjsua2 processes; 0 skips)")
    ap.add_argument("--sip-rate", type=float, default=10.0)
    ap.add_argument("--sip-2x", action="store_true", help="also run SIP at twice the size")
    ap.add_argument("--window", type=float, default=15.0, help="steady window, s (default 15)")
    ap.add_argument("--settle", type=float, default=4.0, help="wait after every call is up, s (default 4)")
    ap.add_argument("--cpu-target", type=float, default=CPU_TARGET)
    ap.add_argument("--mem-target", type=float, default=MEM_TARGET)
    ap.add_argument("--host", action="append", metavar="NAME:CORES:GB",
                    help="a host size (repeatable; default 2 cores/24 GB and 16 cores/64 GB)")
    ap.add_argument("--virtual-targets", default=",".join(map(str, VIRTUAL_TARGETS)))
    ap.add_argument("--sip-targets", default=",".join(map(str, SIP_TARGETS)))
    ap.add_argument("--markdown", type=Path, metavar="OUT", help="also write the tables and notes as Markdown")
    args = ap.parse_args(argv)
    console = Console(width=200)

    def say(text: str) -> None:
        console.print(f"[{time.strftime('%H:%M:%S')}] {text}", highlight=False)

    if args.from_json:
        measurement = json.loads(args.from_json.read_text())
        if measurement.get("format") != FORMAT:
            console.print(f"[red]{args.from_json}: not a plan_hosts measurement (format {FORMAT})[/]")
            return 2
    else:
        measurement = asyncio.run(measure(args, say))
    if args.json:
        args.json.write_text(json.dumps(measurement, indent=1))
        say(f"wrote {args.json}")
    hosts = [_host(h) for h in args.host] if args.host else list(DEFAULT_HOSTS)
    rtp_ports = measurement["machine"].get("rtp_ports_outside_ephemeral") or Assumptions.rtp_ports_per_host
    a = Assumptions(cpu_target=args.cpu_target, mem_target=args.mem_target, rtp_ports_per_host=rtp_ports)
    costs = costs_from(measurement, a)
    targets = {"virtual": _ints(args.virtual_targets), "sip": _ints(args.sip_targets)}
    plans = plan_hosts(costs, hosts, targets, a)
    flat = flatness(measurement["runs"])
    grids = [runs_grid(measurement), *([flat_grid(flat)] if flat else []), costs_grid(costs, hosts, a),
             plan_grid(plans)]
    notes = plan_notes(plans) + assumptions_text(measurement, a, hosts) + list(measurement.get("notes", []))
    for g in grids:
        console.print(g.rich())
    for line in notes:
        console.print(f"- {line}", highlight=False)
    if args.markdown:
        args.markdown.write_text("\n".join(g.markdown() for g in grids) + "\n" + "\n".join(f"- {n}" for n in notes)
                                 + "\n")
        say(f"wrote {args.markdown}")
    return 0


def _host(text: str) -> HostSize:
    name, cores, gb = text.rsplit(":", 2)
    return HostSize(name, int(cores), float(gb))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    sys.exit(main())
