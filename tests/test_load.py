"""rtsip load: every call accounted for, percentiles from the journal, reports, bad input, limits, Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.load import LoadError, LoadOptions, descendants, plan, run, run_load
from harness.load_locust import wait_listening, why_short
from harness.load_metrics import METRICS, CallRecord, extract, failure, percentile, summarize
from harness.load_progress import LoadResult
from harness.load_report import to_json, write_reports
from mock_api.control_models import CallView, JournalEntry
from mock_api.running import free_port
from sipworker.ports import free_range
from tests.test_ports import holding_udp, time_wait_port

# the heaviest real-time audio of the suite: one xdist worker runs these one after another (tests/test_sip_calls.py)
pytestmark = pytest.mark.xdist_group("media_heavy")

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT / "scenarios" / "load"
ONE_TURN = LOAD / "one_turn.yaml"


def _opts(**kw: object) -> LoadOptions:
    base: dict[str, object] = {"scenario": ONE_TURN, "calls": 10, "concurrency": 5, "rate": 5.0, "progress": False}
    base.update(kw)
    return LoadOptions(**base)  # type: ignore[arg-type]


def _check_accounting(data: dict[str, object]) -> None:
    calls = data["calls"]
    assert isinstance(calls, dict)
    assert calls["completed"] + calls["failed"] == calls["placed"]
    assert calls["lost"] == 0
    records = data["records"]
    assert isinstance(records, list) and len(records) == calls["placed"]


def _check_percentiles(data: dict[str, object]) -> None:
    """The summary's percentiles are what the per-call records (journal samples) give, recomputed here."""
    records = data["records"]
    metrics = data["metrics"]
    assert isinstance(records, list) and isinstance(metrics, dict)
    for name in METRICS:
        values = sorted(v for r in records for _, v in r["metrics"].get(name, []))
        summ = metrics[name]
        assert summ["count"] == len(values)
        if values:
            for p in (50, 95, 99):
                k = max(1, -(-p * len(values) // 100))  # nearest rank
                assert summ[f"p{p}"] == pytest.approx(values[k - 1])
            assert summ["max"] == pytest.approx(values[-1])


# ---- units: metrics from a journal ---------------------------------------------------------------------


def _entry(seq: int, t: float, kind: str, **data: object) -> JournalEntry:
    return JournalEntry(seq=seq, t_ms=t, kind=kind, data=data)


def _view(entries: list[JournalEntry], state: str = "ended") -> CallView:
    return CallView(call_id="rtc_x", state=state, terminal=True, transport="sip", created_at=1000.0,
                    started_at=1000.0, sip_headers=[], sip_final_status=None, refer_target=None, accept_body=None,
                    end_reason=None, entries=entries)


def test_metrics_come_from_the_journal() -> None:
    ev = "conversation.item.input_audio_transcription.delta"
    view = _view([
        _entry(1, 0, "sip.invite"), _entry(2, 2, "sip.sent", status=180),
        _entry(3, 10, "webhook.attempt", ok=True, status=200, latency_ms=40.0),
        _entry(4, 45, "rest.request", op="accept"), _entry(5, 46, "rest.response", status=200),
        _entry(6, 47, "sip.sent", status=200), _entry(7, 60, "ws.connect"),
        _entry(8, 1000, "sip.speech_stopped", audio_ms=900),
        _entry(9, 1100, "audio.out", ms=100), _entry(10, 1250, "ws.server", event={"type": ev}),
    ])
    m = extract(view)
    assert m["invite_to_180_ms"] == [[1000.002, 2.0]]
    assert m["invite_to_200_ms"][0][1] == 47.0
    assert m["webhook_to_accept_ms"][0][1] == 75.0  # sent at 10 - 40 = -30, accept at 45
    assert m["accept_to_ws_ms"][0][1] == 15.0
    assert m["speech_end_to_transcript_ms"][0][1] == 250.0
    assert m["speech_end_to_audio_ms"][0][1] == 100.0
    assert failure(view) is None
    assert failure(view, sip_status=486) == "SIP 486"


def test_failure_reasons() -> None:
    gave_up = _view([_entry(1, 5, "webhook.attempt", ok=False, status=500, latency_ms=1.0),
                     _entry(2, 9, "webhook.gave_up")], state="no_answer")
    assert failure(gave_up) == "webhook 500"
    limited = _view([_entry(1, 5, "webhook.attempt", ok=True, status=200, latency_ms=1.0),
                     _entry(2, 3, "rest.request", op="accept"),
                     _entry(3, 4, "rest.response", status=429, body={"error": {"code": "rate_limit_exceeded"}})])
    assert failure(limited) == "REST 429 rate limited (rate_limit_exceeded)"
    no_ws = _view([_entry(1, 3, "rest.request", op="accept"), _entry(2, 4, "rest.response", status=200)])
    assert failure(no_ws) == "no WebSocket"
    lost_turn = _view([_entry(1, 3, "rest.request", op="accept"), _entry(2, 5, "ws.connect"),
                       _entry(3, 900, "ws.server", event={"type": "input_audio_buffer.speech_stopped"})])
    assert failure(lost_turn) == "turn without reply"


def test_percentile_is_nearest_rank() -> None:
    vals = [float(v) for v in range(1, 101)]
    assert percentile(vals, 50) == 50.0 and percentile(vals, 95) == 95.0 and percentile(vals, 99) == 99.0
    assert percentile([], 50) is None
    assert summarize([3.0])["p99"] == 3.0


# ---- bad input: each rejected before anything starts ----------------------------------------------------


@pytest.mark.parametrize(("kw", "needle"), [
    ({"rate": 0.0}, "--rate must be a positive"),
    ({"rate": -3.0}, "--rate must be a positive"),
    ({"concurrency": 0}, "--concurrency must be at least 1"),
    ({"calls": 0}, "--calls must be at least 1"),
    ({"concurrency": 20, "calls": 10}, "more than --calls"),
    ({"calls": 100000, "concurrency": 90000}, "beyond what virtual mode can do"),
    ({"rate": 100000.0}, "beyond what virtual mode can start"),
    ({"mode": "sip", "calls": 8, "concurrency": 4, "rate": 100.0}, "too fast for sip mode"),
    ({"mode": "sip", "calls": 5000, "concurrency": 5000}, "beyond what sip mode can do"),
    ({"duration": 0.0}, "--duration must be a positive"),
    ({"mock_processes": 0}, "--mock-processes must be between 1 and 16"),
    ({"mock_processes": 17}, "--mock-processes must be between 1 and 16"),
    ({"mock_processes": 6, "concurrency": 5}, "some mocks would never have a call"),
    ({"mode": "sip", "calls": 8, "concurrency": 4, "rate": 2.0, "mock_processes": 2}, "virtual mode only"),
    ({"master": True, "processes": 2}, "give one or the other"),
    ({"master": True, "expect_workers": 6}, "some workers would never have a user"),
    ({"master": True, "master_bind": "nowhere"}, "--master-bind: 'nowhere' is not HOST:PORT"),
])
def test_impossible_numbers_are_rejected(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(LoadError, match=needle.replace("(", r"\(")):
        plan(_opts(**kw))


def test_sip_scenario_in_virtual_mode_is_rejected() -> None:
    with pytest.raises(LoadError, match=r"needs SIP features.*mode: sip.*--mode sip"):
        plan(_opts(scenario=LOAD / "sip_two_way.yaml", mode="virtual"))
    # another rtsip's RTP (the old fixed ranges) is no reason to refuse: RTP ranges are chosen free
    with holding_udp(20000, 20001, 30000, 30001):
        assert plan(_opts(scenario=LOAD / "sip_two_way.yaml", calls=4, concurrency=4, rate=2.0)).mode == "sip"


def test_account_limits_with_several_mocks_are_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "limits.yaml"
    cfg.write_text("limits: {max_concurrent_sessions: 3, window_s: 60}\n")
    with pytest.raises(LoadError, match=r"limits \(max_concurrent_sessions\).*--mock-processes 1"):
        plan(_opts(mock_config=cfg, mock_processes=2))
    assert plan(_opts(mock_config=cfg)).mock_shards == 1
    cfg.write_text("limits: {window_s: 30}\nring_timeout_s: 5\n")  # no cap turned on: fine
    assert plan(_opts(mock_config=cfg, mock_processes=2)).mock_shards == 2


def test_taken_port_is_rejected() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LoadError, match=f"port {port} .*already taken"):
            plan(_opts(port=port))
        with pytest.raises(LoadError, match=f"port {port} .*already taken"):
            plan(_opts(app_port=port))


def test_ports_left_in_time_wait_are_not_taken() -> None:
    """Re-running with the same ports right after a run: TIME_WAIT leftovers do not count."""
    port = time_wait_port()
    assert plan(_opts(port=port)).options.port == port
    base = free_range(2, kinds=(socket.SOCK_STREAM, socket.SOCK_DGRAM))  # TCP/UDP on base, TLS on base + 1
    tls = time_wait_port(base + 1)
    sip = _opts(scenario=LOAD / "sip_two_way.yaml", calls=4, concurrency=4, rate=2.0, sip_port=tls)
    assert plan(sip).options.sip_port == tls
    with holding_udp(base), pytest.raises(LoadError, match=f"SIP port {tls} .*already taken.*--sip-port"):
        plan(sip)


def _cli(*args: str, pre: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = f"{pre} exec {sys.executable} -m harness.cli load " + " ".join(args)
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("args", "needle"), [
    ("", "give a SCENARIO file (or --worker HOST:PORT"),
    (f"{ONE_TURN} --expect-workers 3", "--master-bind and --expect-workers go with --master"),
    ("--worker nowhere", "--worker: 'nowhere' is not HOST:PORT"),
    ("--worker 127.0.0.1:{port}", "no master answers there"),
    (f"{ONE_TURN} --worker 127.0.0.1:{{port}}", "--worker takes no SCENARIO"),
])
def test_locust_flags_bad_input_is_one_line_before_anything_starts(args: str, needle: str) -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, not listening
        s.bind(("127.0.0.1", 0))
        res = _cli(args.format(port=s.getsockname()[1]), "--no-progress")
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and "rtsip mock ready" not in res.stdout + res.stderr


def test_too_few_file_descriptors_is_rejected_before_any_call() -> None:
    t = time.monotonic()
    res = _cli(str(ONE_TURN), "--calls", "500", "--concurrency", "400", "--no-progress", pre="ulimit -n 300;")
    assert res.returncode == 2, res.stderr
    assert "too few file descriptors" in res.stderr and "ulimit -n" in res.stderr
    assert "placed" not in res.stdout and time.monotonic() - t < 10  # nothing started


def test_cli_bad_input_exits_2_without_starting_anything() -> None:
    res = _cli(str(ONE_TURN), "--calls", "5", "--concurrency", "9", "--no-progress")
    assert res.returncode == 2 and "more than --calls" in res.stderr
    assert "rtsip mock ready" not in res.stdout + res.stderr


# ---- real runs ------------------------------------------------------------------------------------------


async def test_hundred_virtual_calls_all_accounted_for(tmp_path: Path) -> None:
    o = _opts(calls=100, concurrency=50, rate=40.0, run_dir=tmp_path / "run", csv=tmp_path / "s.csv",
              json=tmp_path / "r.json", html=tmp_path / "r.html")
    result = await run_load(plan(o))
    write_reports(result, csv_path=o.csv, json_path=o.json, html_path=o.html)
    assert o.json is not None and o.csv is not None and o.html is not None
    data = json.loads(o.json.read_text())
    _check_accounting(data)
    assert data["calls"]["placed"] == 100 and data["calls"]["failed"] == 0, data["failures"]
    _check_percentiles(data)
    assert data["metrics"]["webhook_to_accept_ms"]["count"] == 100
    assert data["metrics"]["speech_end_to_audio_ms"]["count"] == 100
    assert data["cpu"]["mock_cpu_s"] > 0 and data["cpu"]["mock_cpu_pct_per_active_call"] > 0
    # memory is sampled as the calls go by, so a soak can show it flat
    rss = [data["cpu"][f"mock_rss_mb_at_{q}pct_done"] for q in (25, 50, 75, 100)]
    assert all(isinstance(v, float) and v > 10 for v in rss), rss
    rows = list(csv.reader(o.csv.read_text().splitlines(), delimiter=";"))
    assert rows[0][:3] == ["StartTime", "LastResetTime", "CurrentTime"] and len(rows) > 3
    assert sum(int(r[rows[0].index("OutgoingCall(P)")]) for r in rows[1:]) == 100
    page = o.html.read_text()
    assert "<svg" in page and "Concurrency" in page and "http" not in page.split("<body>")[1].split("options")[0]
    assert "<script" not in page and "cdn" not in page.lower()


async def test_live_calls_under_load(tmp_path: Path) -> None:
    """A GPT-Live scenario: the mock sends live.transport.incoming, the Live app accepts and attaches its sideband,
    and the metrics come from the Live journal (the sideband, the heard turns, the Live transcripts)."""
    result = await run_load(plan(_opts(scenario=LOAD / "live_one_turn.yaml", calls=8, concurrency=4, rate=4.0)))
    data = to_json(result)
    _check_accounting(data)
    assert data["calls"]["placed"] == 8 and data["calls"]["failed"] == 0, data["failures"]
    for metric in ("webhook_to_accept_ms", "accept_to_ws_ms", "speech_end_to_transcript_ms",
                   "speech_end_to_audio_ms", "answer_to_audio_ms"):
        assert data["metrics"][metric]["count"] == 8, metric


@pytest.mark.timeout(240)
async def test_virtual_calls_spread_over_two_mock_processes(tmp_path: Path) -> None:
    """A Locust master with two workers and two mocks behind HAProxy, one host: the app keeps one base URL, each
    call's REST and WebSocket traffic reaches the mock that made it, and every call is counted once."""
    o = _opts(calls=200, concurrency=50, rate=40.0, mock_processes=2, processes=2, run_dir=tmp_path / "run")
    p = plan(o)
    assert (p.mock_shards, p.drivers) == (2, 2)  # calls go to the mocks in turn, by their index
    pids: dict[str, int] = {}
    result = await run_load(p, on_started=pids.update)
    data = to_json(result)
    _check_accounting(data)
    assert data["calls"]["placed"] == 200 and data["calls"]["failed"] == 0, data["failures"]
    assert sorted(r["index"] for r in data["records"]) == list(range(200))  # each call once
    assert {r["worker"] for r in data["records"]} == {0, 1}  # both Locust workers placed calls
    _check_percentiles(data)
    assert data["metrics"]["webhook_to_accept_ms"]["count"] == 200  # the app's accepts went through haproxy
    assert data["metrics"]["speech_end_to_audio_ms"]["count"] == 200
    shards = [int(r["call_id"][4], 16) % 2 for r in data["records"]]
    assert shards.count(0) == 100 and shards.count(1) == 100
    assert pids["mock"] != pids["mock_1"]
    assert data["cpu"]["mock_cpu_s"] > 0  # both mocks sampled as one role
    assert any("2 mock processes behind haproxy" in n for n in data["notes"])
    counts = next(n for n in data["notes"] if n.startswith("haproxy:"))  # the proxy's own counts, at its stop
    per_shard = [int(x) for x in counts.split("[", 1)[1].split("]", 1)[0].split(",")]
    assert min(per_shard) >= 100 and "answered by the proxy 0" in counts, counts  # each call's accept at least
    for pid in (pids["mock"], pids["mock_1"], pids["mock_proxy"]):
        assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists)


def test_mock_processes_without_haproxy_is_bad_input(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RTSIP_HAPROXY", "/nonexistent/haproxy")
    result, code = run(_opts(calls=4, concurrency=2, rate=2.0, mock_processes=2))
    assert (result, code) == (None, 2)
    err = capsys.readouterr().err
    assert "--mock-processes: haproxy is not installed" in err and "`haproxy`" in err, err


def _sip_scenario(tmp_path: Path, first_steps: str = "", mock_faults: str = "[]") -> Path:
    """A SIP load scenario on examples/minimal_app.py: the caller confirms, pauses and hangs up, after
    ``first_steps`` (YAML flow items, each followed by a comma)."""
    scen = tmp_path / "sip.yaml"
    scen.write_text(f"""name: sip-load-test
app:
  command: ["{{python}}", "{ROOT / 'examples' / 'minimal_app.py'}", --port, "{{port}}"]
mock:
  script: {{default_reply: "Thank you, noted.", transcription_delay_s: 0.2}}
  faults: {mock_faults}
calls:
  - mode: sip
    steps: [{first_steps} {{say: caller_confirm}}, {{pause_ms: 1500}}, {{hangup: true}}]
""")
    return scen


async def test_twelve_sip_calls_two_way_audio(tmp_path: Path) -> None:
    scen = _sip_scenario(tmp_path)
    o = _opts(scenario=scen, calls=12, concurrency=12, rate=12.0, run_dir=tmp_path / "run")
    p = plan(o)
    assert (p.phone_workers, p.ingress_workers) == (3, 5)
    result = await run_load(p)
    data = to_json(result)
    _check_accounting(data)
    assert data["calls"]["placed"] == 12 and data["calls"]["failed"] == 0, data["failures"]
    _check_percentiles(data)
    for m in ("invite_to_180_ms", "invite_to_200_ms", "speech_end_to_audio_ms"):
        assert data["metrics"][m]["count"] == 12, m
    assert data["rtp"]["rx_loss"] == 0 and data["rtp"]["calls_without_rx"] == 0
    assert data["rtp"]["calls_with_stats"] == 12
    # the mock's side of each call counted its RTP too (the worker's stream stats, journaled in sip.ended)
    assert data["rtp"]["calls_with_ingress_stats"] == 12 and data["rtp"]["ingress_rx_loss"] == 0
    assert all(r["rtp"]["ingress_rx_pkt"] > 100 for r in data["records"])
    assert len({r["worker"] for r in data["records"]}) >= 4  # spread over the ingress workers' contact URIs


async def test_sip_load_calls_change_ssrc_from_their_steps(tmp_path: Path) -> None:
    """A new_ssrc step in a SIP load call: the mock hears the change and, told to, hangs up at once, so no turn
    is ever taken (without the fault the same steps would give each call its turn)."""
    scen = _sip_scenario(tmp_path, "{new_ssrc: true},", "[{name: caller_ssrc_reaction, reaction: bye}]")
    result = await run_load(plan(_opts(scenario=scen, calls=2, concurrency=2, rate=4.0, run_dir=tmp_path / "run")))
    data = to_json(result)
    _check_accounting(data)
    assert [(r["state"], r["turns"]) for r in data["records"]] == [("ended", 0), ("ended", 0)], data["records"]


async def test_load_beyond_the_session_cap_is_answered_with_429(tmp_path: Path) -> None:
    cfg = tmp_path / "limits.yaml"
    cfg.write_text("limits: {max_concurrent_sessions: 3}\nring_timeout_s: 2\n")
    o = _opts(calls=8, concurrency=8, rate=20.0, mock_config=cfg, run_dir=tmp_path / "run")
    result = await run_load(plan(o))
    data = to_json(result)
    _check_accounting(data)
    limited = {k: v for k, v in data["failures"].items() if k.startswith("REST 429")}
    assert limited, data["failures"]
    assert data["calls"]["completed"] >= 3 and sum(limited.values()) >= 1


def test_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    """Ctrl-C while calls are in flight: the progress line (every 5 s when stderr is not a terminal) says when."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "load", str(ONE_TURN), "--calls", "60",
                             "--concurrency", "30", "--rate", "30", "--json", str(tmp_path / "r.json")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    err: list[str] = []
    in_flight = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            m = re.search(r"placed (\d+) active (\d+)", line)
            if m and int(m[1]) > 0 and int(m[2]) > 0:
                in_flight.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert in_flight.wait(90), "".join(err)[-2000:]
        tree = descendants(proc.pid)
        assert len(tree) >= 4  # load, mock, app, a driver
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground group
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(10)
    assert proc.returncode == 130, "".join(err)[-2000:]
    assert [pid for pid in tree if running(pid, within_s=5)] == []
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["aborted"] and data["calls"]["lost"] == 0
    assert data["calls"]["completed"] + data["calls"]["failed"] == data["calls"]["placed"] > 0


@pytest.mark.timeout(240)
def test_master_here_and_two_workers_place_every_call_once(tmp_path: Path) -> None:
    """rtsip load --master waits for two `rtsip load --worker` processes; the calls, counted once each, come
    back from both workers through the master, which ends them when it is done."""
    out = tmp_path / "r.json"
    master = subprocess.Popen([sys.executable, "-m", "harness.cli", "load", str(ONE_TURN), "--calls", "12",
                               "--concurrency", "6", "--rate", "12", "--master", "--expect-workers", "2",
                               "--no-progress", "--json", str(out), "--run-dir", str(tmp_path / "run")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert master.stderr is not None
        where = ""
        for line in master.stderr:  # the master says where it listens once the mock and the app are up
            m = re.search(r"Locust master at (\S+):", line)
            if m:
                where = m[1]
                break
        assert where.startswith("127.0.0.1:")
        logs = [tmp_path / f"worker{i}.log" for i in range(2)]
        workers = [subprocess.Popen([sys.executable, "-m", "harness.cli", "load", "--worker", where], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=log.open("w")) for log in logs]
        assert master.wait(timeout=180) == 0, master.stderr.read()[-2000:]
        codes = [w.wait(timeout=60) for w in workers]  # the master's quit ends its workers
        assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    finally:
        procs: list[subprocess.Popen[Any]] = [master, *workers]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    data = json.loads(out.read_text())
    _check_accounting(data)
    assert data["calls"]["placed"] == 12 and data["calls"]["completed"] == 12, data["failures"]
    assert sorted(r["index"] for r in data["records"]) == list(range(12))
    assert len({r["call_id"] for r in data["records"]}) == 12
    assert {r["worker"] for r in data["records"]} == {0, 1}  # both workers placed calls
    assert data["metrics"]["speech_end_to_audio_ms"]["count"] == 12
    with (tmp_path / "run" / "locust_stats.csv").open() as f:  # Locust's own statistics agree
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    assert int(rows[("call", "load-one-turn")]["Request Count"]) == 12


@pytest.mark.timeout(180)
async def test_web_ui_shows_the_run_while_it_goes(tmp_path: Path) -> None:
    """--web: Locust's UI answers with the run's live statistics, and the run still ends by itself."""
    import aiohttp

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harness.cli", "load", str(ONE_TURN), "--calls", "6", "--concurrency", "3", "--rate",
        "6", "--web", "--web-port", str(port), "--no-progress", "--json", str(tmp_path / "r.json"), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    seen: dict[str, object] = {}
    try:
        async with aiohttp.ClientSession() as http:
            while proc.returncode is None and not seen:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/stats/requests") as resp:
                        body = await resp.json()
                        if resp.status == 200 and body.get("state") == "running" and body.get("user_count"):
                            seen = body
                except aiohttp.ClientError:  # not listening yet: the mock and the app start first
                    pass
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.25)
        assert await asyncio.wait_for(proc.wait(), 150) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert seen.get("user_count") == 3, seen
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["calls"]["completed"] == 6 and any(f"127.0.0.1:{port}" in n for n in data["notes"])


def running(pid: int, within_s: float) -> bool:
    """Whether ``pid`` is still a live process (not a zombie) after waiting up to ``within_s`` for it to end."""
    try:
        proc = psutil.Process(pid)
        proc.wait(within_s)
        return False
    except psutil.NoSuchProcess:
        return False
    except psutil.TimeoutExpired:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def test_calls_never_placed_fail_the_run() -> None:
    """A run that ends with part of its --calls budget never placed (Locust gave up: no worker came) fails
    and says how many; --duration and Ctrl-C end a run early on purpose, so nothing is owed then."""
    result = LoadResult(plan(LoadOptions(scenario=ONE_TURN, calls=12, concurrency=6, rate=12)), 0.0, placed=5)
    assert result.unplaced == 7 and to_json(result)["calls"]["unplaced"] == 7
    result.aborted = True
    assert result.unplaced == 0
    timed = LoadResult(plan(LoadOptions(scenario=ONE_TURN, calls=12, concurrency=6, rate=12, duration=5)), 0.0)
    assert timed.unplaced == 0  # the clock ended it: the budget was a ceiling
    timed.cut_short = True
    assert timed.unplaced == 12  # Locust stopped on its own error before the clock did


def test_a_short_run_names_locusts_own_error_before_any_clock(tmp_path: Path) -> None:
    """A master whose workers never came waited past the safety limit: its note names Locust's error."""
    p = plan(LoadOptions(scenario=ONE_TURN, calls=12, concurrency=6, rate=6))
    (tmp_path / "locust.log").write_text("[2026-12-04 23:40:00,000] host/INFO/locust.main: Starting Locust\n"
                                         "[2026-12-04 23:42:00,000] host/ERROR/locust.main: Gave up waiting for "
                                         "workers to connect\n")
    long_ago = time.time() - p.stop_placing_s - 60
    why, cut = why_short(p, tmp_path, long_ago, 1)
    assert cut and why.startswith("Locust stopped early (Gave up waiting for workers to connect; see ")
    assert why_short(p, tmp_path, long_ago, 0) == (
        f"the safety time limit ({p.stop_placing_s:.0f} s) was reached: calls took longer than their steps", False)
    timed = plan(LoadOptions(scenario=ONE_TURN, calls=12, concurrency=6, rate=6, duration=5))
    assert why_short(timed, tmp_path, long_ago, 1) == ("--duration 5 s reached", False)


async def test_the_master_is_announced_only_once_it_listens() -> None:
    """`rtsip load --master` prints where workers connect once Locust accepts there: a worker started on
    that line must find it (its own check refuses an address nobody answers)."""
    port = free_port()
    binds = textwrap.dedent(f"""
        import socket, sys
        sys.stdin.readline()  # bind only when the test says so
        s = socket.create_server(("127.0.0.1", {port}))
        print("up", flush=True)
        s.accept()
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", binds, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        listening = asyncio.ensure_future(wait_listening("127.0.0.1", port, proc))
        await asyncio.wait({listening}, timeout=0.3)
        assert not listening.done()  # nothing listens yet: not announced
        proc.stdin.write(b"go\n")
        assert await proc.stdout.readline() == b"up\n"
        assert await asyncio.wait_for(listening, 30) is True
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(1)")
    assert await asyncio.wait_for(wait_listening("127.0.0.1", port, gone), 30) is False  # ended before listening


def test_records_roundtrip() -> None:
    r = CallRecord(3, "rtc_1", 0, 1.0, 2.0, False, "no accept")
    assert CallRecord.from_json(r.to_json()) == r


async def test_a_dead_mock_fails_only_its_own_calls(tmp_path: Path) -> None:
    """One of two mocks is killed once everything is up: its share of the calls fails, the run goes on."""
    o = _opts(calls=20, concurrency=10, rate=20.0, mock_processes=2, run_dir=tmp_path / "run")
    p = plan(o)

    def kill_shard_1(pids: dict[str, int]) -> None:
        os.kill(pids["mock_1"], signal.SIGKILL)

    result = await run_load(p, on_started=kill_shard_1)
    data = to_json(result)
    _check_accounting(data)
    assert data["calls"]["placed"] == 20 and data["calls"]["completed"] == 10, data["failures"]
    done = [r for r in data["records"] if r["ok"]]
    assert all(int(r["call_id"][4], 16) % 2 == 0 for r in done)  # the calls that lived were shard 0's
    assert data["calls"]["failed"] == 10
