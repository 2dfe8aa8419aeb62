"""bench/plan_hosts.py: the plan's arithmetic on a fixed measurement (no stack), and the script run on it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.plan_hosts import (
    DEFAULT_HOSTS,
    FORMAT,
    Assumptions,
    HostSize,
    RoleCost,
    capacity,
    costs_from,
    flatness,
    plan_hosts,
    plan_load,
)

ROOT = Path(__file__).resolve().parents[1]


def _role(cpu: float, rss: float, idle: float, processes: int = 1) -> dict[str, Any]:
    """One role's figures in a run, as measure_run writes them (cpu: % of a core for all its calls)."""
    return {"cpu_pct_of_core": cpu, "rss_mb": rss, "processes": processes, "rss_mb_idle": idle,
            "processes_idle": processes}


def _run(name: str, mode: str, calls: int, roles: dict[str, Any], mocks: int = 1) -> dict[str, Any]:
    return {"name": name, "mode": mode, "concurrency": calls, "rate": 80.0, "mock_processes": mocks, "placed": calls,
            "failed_before_stop": 0, "failure_reasons": [], "window_s": 15.0, "mean_active": float(calls),
            "min_active": calls, "box_busy_pct": 60.0, "loadavg_before": [1.0, 1.0, 1.0],
            "loadavg_after": [2.0, 1.5, 1.2], "roles": roles, "wall_s": 40.0}


# A measurement in the script's format, with round numbers: per call, the mock costs 0.07 % of a core at 200
# calls and 0.08 % at 400 (so rule 1 takes 0.08), the app 0.05 %, the virtual callers 0.04 %.
MEASUREMENT: dict[str, Any] = {
    "format": FORMAT, "measured_at": "2026-01-01T00:00:00Z", "window_s": 15.0, "settle_s": 4.0, "measure_s": 170.0,
    "machine": {"cores": 2, "mem_gb": 23.5, "rtp_ports_outside_ephemeral": 12768, "rtp_processes_fit": 319},
    "notes": [],
    "runs": [
        _run("virtual-200", "virtual", 200, {"mock": _role(14.0, 140.0, 120.0), "app": _role(10.0, 90.0, 70.0),
                                             "callers": _role(8.0, 250.0, 130.0, 3),
                                             "callers_workers": _role(6.0, 100.0, 0.0)}),
        _run("virtual-400", "virtual", 400, {"mock": _role(32.0, 160.0, 120.0), "app": _role(20.0, 110.0, 70.0),
                                             "callers": _role(16.0, 280.0, 130.0, 3),
                                             "callers_workers": _role(12.0, 130.0, 0.0)}),
        _run("virtual-400-2-mocks", "virtual", 400, {"mock": _role(36.0, 280.0, 240.0, 2),
                                                     "proxy": _role(4.0, 30.0, 20.0, 2),
                                                     "app": _role(20.0, 110.0, 70.0),
                                                     "callers": _role(16.0, 300.0, 140.0, 4),
                                                     "callers_workers": _role(12.0, 200.0, 0.0, 2)}, mocks=2),
        _run("sip-12", "sip", 12, {"mock": _role(1.2, 125.0, 120.0), "ingress": _role(2.4, 250.0, 245.0, 5),
                                   "app": _role(0.6, 80.0, 70.0), "callers": _role(3.0, 280.0, 130.0, 4),
                                   "callers_workers": _role(2.4, 150.0, 0.0, 3)}),
    ],
}


@pytest.fixture
def a() -> Assumptions:
    return Assumptions()


def test_costs_take_the_highest_per_call_figure_of_the_runs(a: Assumptions) -> None:
    costs = costs_from(MEASUREMENT, a)
    virtual = {r.name: r for r in costs["virtual"]}
    assert virtual["mock shards"].cpu_pct_per_call == pytest.approx(36.0 / 400)  # the sharded run's, the highest
    assert virtual["app"].cpu_pct_per_call == pytest.approx(0.05)
    assert virtual["HAProxy"].cpu_pct_per_call == pytest.approx(0.01)
    assert virtual["virtual callers"].main_cpu_pct_per_call == pytest.approx((16.0 - 12.0) / 400)  # rtsip load
    sip = {r.name: r for r in costs["sip"]}
    assert sip["mock + SIP ingress"].cpu_pct_per_call == pytest.approx((1.2 + 2.4) / 12)
    assert sip["mock + SIP ingress"].main_cpu_pct_per_call == pytest.approx(1.2 / 12)  # the mock's own process
    assert sip["SIP callers"].mb_per_process == pytest.approx(50.0)  # 150 MB over 3 softphone workers
    assert sip["SIP callers"].calls_per_process == a.calls_per_sip_process


def test_capacity_names_the_tightest_limit(a: Assumptions) -> None:
    host = HostSize("h", 2, 24.0)
    cpu_bound = RoleCost("x", cpu_pct_per_call=0.1, mb_per_call=1.0)
    cap = capacity(cpu_bound, host, a)
    assert cap.limits["cpu"] == math.floor(2 * 70 / 0.1) and cap.limit == "cpu" and cap.calls == cap.limits["cpu"]
    mem_bound = RoleCost("y", cpu_pct_per_call=0.001, mb_per_call=100.0)
    assert capacity(mem_bound, host, a).limit == "memory"
    assert capacity(mem_bound, host, a).calls == math.floor(24 * 1024 * a.mem_target / 100.0)
    ports_bound = RoleCost("z", cpu_pct_per_call=0.001, mb_per_call=0.0, mb_per_process=1.0, calls_per_process=4,
                           rtp_ports_per_call=10.0)
    assert capacity(ports_bound, host, a).limit == "RTP ports"
    assert capacity(ports_bound, host, a).calls == a.rtp_ports_per_host // 10


def test_one_process_per_core_counts_whole_cores(a: Assumptions) -> None:
    """Rule 3: a single-threaded role's share is per core, not pooled across the host."""
    role = RoleCost("m", cpu_pct_per_call=0.3, mb_per_call=0.0, one_per_core=True)
    pooled = RoleCost("m", cpu_pct_per_call=0.3, mb_per_call=0.0)
    host = HostSize("h", 16, 64.0)
    assert capacity(role, host, a).calls == 16 * math.floor(70 / 0.3)
    assert capacity(pooled, host, a).calls == math.floor(16 * 70 / 0.3)
    assert capacity(role, host, a).calls <= capacity(pooled, host, a).calls


def test_hosts_scale_with_the_load_and_cover_it(a: Assumptions) -> None:
    costs = costs_from(MEASUREMENT, a)
    plans = plan_hosts(costs, DEFAULT_HOSTS, {"virtual": (10_000, 50_000), "sip": (1_000, 5_000)}, a)
    assert len(plans) == 8  # two loads of each kind, on each of the two host sizes
    for p in plans:
        for r in p.roles:
            assert r.hosts * r.per_host.calls >= p.calls  # enough hosts to hold every call
            assert (r.hosts - 1) * r.per_host.calls < p.calls  # and not one more than needed
        small = next(q for q in plans if q.kind == p.kind and q.host == p.host and q.calls < p.calls) \
            if p.calls in (50_000, 5_000) else None
        if small is not None:  # five times the calls: at least as many hosts of every role, more in all
            assert all(big.hosts >= s.hosts for big, s in zip(p.roles, small.roles, strict=True))
            assert p.total_hosts > small.total_hosts
    for kind, calls in (("virtual", 10_000), ("sip", 1_000)):
        small_box, big_box = (next(q for q in plans if q.kind == kind and q.calls == calls and q.host == h)
                              for h in DEFAULT_HOSTS)
        assert big_box.total_hosts < small_box.total_hosts  # bigger hosts, fewer of them


def test_the_bottleneck_is_the_role_with_most_hosts_and_is_named(a: Assumptions) -> None:
    costs = costs_from(MEASUREMENT, a)
    p = plan_load("virtual", 10_000, DEFAULT_HOSTS[0], costs["virtual"], a)
    assert p.bottleneck.hosts == max(r.hosts for r in p.roles)
    # the mock costs the most CPU per call of the virtual roles here, so it needs the most hosts
    assert p.bottleneck.role == "mock shards" and p.bottleneck.per_host.limit == "cpu"
    assert p.total_hosts == sum(r.hosts for r in p.roles)


def test_mock_shards_need_a_proxy_per_sixteen(a: Assumptions) -> None:
    """Rule 4: at most MAX_SHARDS mocks behind one HAProxy."""
    costs = costs_from(MEASUREMENT, a)
    p = plan_load("virtual", 50_000, DEFAULT_HOSTS[1], costs["virtual"], a)
    mocks = next(r for r in p.roles if r.role == "mock shards")
    per_mock = math.floor(70 / (36.0 / 400))
    assert mocks.processes == math.ceil(50_000 / per_mock)
    assert any(f"behind {math.ceil(mocks.processes / 16)} HAProxy" in n for n in p.notes)


def test_sip_needs_a_mock_per_core_of_sessions_and_the_ingress_ratio(a: Assumptions) -> None:
    """Rule 5: SIP does not shard; each mock's main process holds what one core allows."""
    costs = costs_from(MEASUREMENT, a)
    p = plan_load("sip", 5_000, DEFAULT_HOSTS[1], costs["sip"], a)
    ingress = next(r for r in p.roles if r.role == "mock + SIP ingress")
    assert ingress.mains == math.ceil(5_000 / math.floor(70 / 0.1))
    assert any(f"{math.ceil(math.ceil(5_000 / 4) * 1.25) + 1} SIP ingress workers" in n for n in p.notes)


def test_a_role_with_nothing_measured_is_refused(a: Assumptions) -> None:
    with pytest.raises(ValueError, match="nothing limits it"):
        capacity(RoleCost("ghost", 0.0, 0.0), DEFAULT_HOSTS[0], a)


def test_the_extrapolation_check_pairs_each_run_with_its_half(a: Assumptions) -> None:
    rows = flatness(MEASUREMENT["runs"])
    pairs = {(r["small"], r["big"]) for r in rows}
    assert pairs == {("virtual-200", "virtual-400")}  # the sharded run has no half with two mocks
    mock = next(r for r in rows if r["role"] == "mock")
    assert mock["cpu_ratio"] == pytest.approx((32.0 / 400) / (14.0 / 200))


def test_the_script_plans_from_a_saved_measurement(tmp_path: Path) -> None:
    saved = tmp_path / "measure.json"
    saved.write_text(json.dumps(MEASUREMENT))
    md = tmp_path / "plan.md"
    res = subprocess.run([sys.executable, "-m", "bench.plan_hosts", "--from-json", str(saved), "--markdown", str(md)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Hosts needed" in out and "10,000 virtual" in out and "5,000 sip" in out
    assert "load average" in out  # the notes say the machine was shared
    text = md.read_text()
    costs = costs_from(MEASUREMENT, Assumptions())
    total = plan_load("virtual", 10_000, DEFAULT_HOSTS[0], costs["virtual"], Assumptions()).total_hosts
    row = next(line for line in text.splitlines() if line.startswith("| 10,000 virtual | 2 cores"))
    assert f"| {total:,} |" in row  # the Markdown holds the same arithmetic as the function


def test_the_script_refuses_a_file_that_is_not_a_measurement(tmp_path: Path) -> None:
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"runs": []}))
    res = subprocess.run([sys.executable, "-m", "bench.plan_hosts", "--from-json", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "not a plan_hosts measurement" in res.stdout
