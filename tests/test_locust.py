"""rtsip callers as Locust users: the rules (harness.locust_core) and a distributed run on one host.

Locust patches the process with gevent when imported, so this suite never imports it: the adapter
(harness.locust_users) and the shipped locustfile run in ``locust`` subprocesses.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from harness.app_process import AppProcess, app_argv, app_env
from harness.control_walk import ANSWER_POLL_S, run_async, run_blocking, virtual_call, wait_answered
from harness.load_metrics import METRICS, CallRecord
from harness.load_plan import sip_needs
from harness.locust_core import CALL_TYPE, JOURNAL_TYPE, CallBudget, CallFailed, Setup, refusal, request_events
from harness.mock_process import MockProcess
from harness.scenario import Step, load_scenario
from mock_api.running import free_port

ROOT = Path(__file__).resolve().parents[1]
ONE_TURN = ROOT / "scenarios" / "load" / "one_turn.yaml"
SIP_SCENARIO = ROOT / "scenarios" / "load" / "sip_two_way.yaml"
LOCUSTFILE = ROOT / "harness" / "locustfile.py"
SIP_LOCUSTFILE = ROOT / "harness" / "locustfile_sip.py"


# ---- the rules, without Locust -------------------------------------------------------------------------


def test_budget_hands_out_each_call_once_and_finishes_when_all_are_counted() -> None:
    budget = CallBudget(3)
    assert [t.index if t else None for t in (budget.take() for _ in range(5))] == [0, 1, 2, None, None]
    for _ in range(3):
        assert not budget.finished(reported=3)
        budget.finish()
    assert not budget.finished(reported=2)  # back, but not all in the master's stats yet
    assert budget.finished(reported=3)
    unlimited = CallBudget(0)
    assert [t.index if t else None for t in (unlimited.take() for _ in range(3))] == [0, 1, 2]
    unlimited.finish()
    assert not unlimited.finished(reported=1)


def test_budget_paces_the_starts_without_catching_up_and_stops_at_its_time() -> None:
    """rtsip load --rate R --duration S on any number of workers: tickets start 1/R apart, a late ask starts
    at once (no burst to make up for it), and none is handed out past S."""
    budget = CallBudget(10, rate=4.0, stop_at=101.2, next_start=100.0)
    starts = [t.start_at for t in (budget.take(100.0) for _ in range(3)) if t]
    assert starts == [100.0, 100.25, 100.5]
    late = budget.take(100.9)  # asked after its slot: starts now, the next one a gap later
    assert late is not None and late.start_at == 100.9
    assert budget.take(100.9) is not None and budget.next_start == pytest.approx(101.4)
    assert budget.take(100.95) is None  # its start (101.4 at the soonest) is past stop_at
    assert budget.closed(101.5) and budget.issued == 5
    for _ in range(5):
        budget.finish()
    assert budget.finished(reported=5, now=101.5)  # closed by time: every ticket handed out is back


def test_a_call_becomes_one_call_event_and_one_event_per_journal_sample() -> None:
    rec = CallRecord(index=0, call_id="rtc_1", start=100.0, end=105.5, ok=False, reason="webhook 500",
                     metrics={"speech_end_to_audio_ms": [[101.0, 100.4], [103.0, 99.6]],
                              "webhook_to_accept_ms": [[100.1, 2.5]]})
    events = request_events(rec, "load-one-turn")
    journal = [(e.name, e.response_time) for e in events if e.request_type == JOURNAL_TYPE]
    assert journal == [("webhook_to_accept_ms", 2.5), ("speech_end_to_audio_ms", 100.4),
                       ("speech_end_to_audio_ms", 99.6)]  # in the order of METRICS, each sample once
    assert all(e.exception is None for e in events if e.request_type == JOURNAL_TYPE)
    (call,) = [e for e in events if e.request_type == CALL_TYPE]
    assert call.name == "load-one-turn" and call.response_time == 5500.0
    assert isinstance(call.exception, CallFailed) and str(call.exception) == "webhook 500"
    ok = request_events(CallRecord(index=1, start=1.0, end=2.0, ok=True), "x")
    assert [(e.request_type, e.exception) for e in ok] == [(CALL_TYPE, None)]


@pytest.mark.parametrize(("setup", "needle"), [
    (Setup(None, 10, 2, 0), "no scenario: give --rtsip-scenario"),
    (Setup("/nonexistent.yaml", 10, 2, 0), "/nonexistent.yaml: no such file"),
    (Setup(str(SIP_SCENARIO), 10, 2, 0), "needs SIP features (calls[0] has mode: sip)"),
    (Setup(str(ONE_TURN), 10, 2, 0, ["SipCaller"]), "mode: virtual; use VirtualCaller (or --rtsip-mode sip)"),
    (Setup(str(SIP_SCENARIO), 10, 2, 0, ["SipCaller", "VirtualCaller"]), "VirtualCaller and SipCaller in one run"),
    (Setup(str(ONE_TURN), 5, 20, 0), "20 users for --rtsip-calls 5"),
    (Setup(str(ONE_TURN), 5, 2, 8), "8 workers for --rtsip-calls 5"),
    (Setup(str(ONE_TURN), -1, 2, 0), "--rtsip-calls must be 0"),
])
def test_bad_input_is_one_line(setup: Setup, needle: str) -> None:
    why = refusal(setup, load_scenario, sip_needs)
    assert why is not None and needle in why and "\n" not in why


def test_good_input_is_not_refused() -> None:
    assert refusal(Setup(str(SIP_SCENARIO), 8, 4, 0, ["SipCaller"]), load_scenario, sip_needs) is None
    # rtsip load --mode sip places a virtual scenario's steps on SIP calls: --rtsip-mode sip says so
    assert refusal(Setup(str(ONE_TURN), 8, 4, 0, ["SipCaller"], "sip"), load_scenario, sip_needs) is None
    assert refusal(Setup(str(ONE_TURN), 40, 10, 2, ["VirtualCaller"]), load_scenario, sip_needs) is None
    assert refusal(Setup(str(ONE_TURN), 0, 500, 2), load_scenario, sip_needs) is None  # no limit: any -u


class _Mock:
    """Answers a virtual call's control-API requests as the mock does, and records them.

    The call is active; its journal gains one ``response.done`` per ``say`` or ``dtmf``; ``gone_after`` ends the call
    (404 to every later request) after that many requests."""

    def __init__(self, gone_after: int | None = None) -> None:
        self.asked: list[tuple[str, str]] = []
        self.done = 0
        self.gone_after = gone_after

    def answer(self, method: str, path: str, body: object = None, timeout: float = 30) -> tuple[int, object]:
        self.asked.append((method, path.removeprefix("/_mock/calls/rtc_1")))
        if self.gone_after is not None and len(self.asked) > self.gone_after:
            return 404, {"error": {"message": "no such call"}}
        if path.endswith("/say"):
            assert isinstance(body, dict) and body["fixture"] == "caller_confirm" and body["wait"] is True
        if method == "POST":  # the fake model answers each thing the caller says or keys
            self.done += 1
        entries = [{"kind": "ws.server", "data": {"event": {"type": "response.done"}}}] * self.done
        return 200, {"state": "active", "terminal": False, "entries": entries}

    async def answer_async(self, method: str, path: str, body: object = None,
                           timeout: float = 30) -> tuple[int, object]:
        return self.answer(method, path, body, timeout)


STEPS = [Step(say="caller_confirm"), Step(pause_ms=1), Step(wait_for="response.done"), Step(dtmf="12#"),
         Step(wait_for="response.done"), Step(say="caller_confirm"), Step(wait_for="response.done"),
         Step(hangup=True), Step(say="never")]


@pytest.mark.parametrize("gone_after", [None, 3])
async def test_a_locust_user_and_rtsip_load_make_the_same_requests(gone_after: int | None) -> None:
    """One sans-I/O walk (harness.control_walk) behind both: the gevent runner and the asyncio one ask the
    mock the same things, in the order the steps say, and stop when the call is gone."""
    blocking, awaited = _Mock(gone_after), _Mock(gone_after)
    run_blocking(virtual_call(STEPS, 30.0, "rtc_1", ROOT, 2.0), blocking.answer, sleep=lambda s: None)
    await run_async(virtual_call(STEPS, 30.0, "rtc_1", ROOT, 2.0), awaited.answer_async)
    assert blocking.asked == awaited.asked
    if gone_after is None:  # answered once; the n-th wait_for waits for the n-th response.done
        assert blocking.asked == [("GET", ""), ("POST", "/say"), ("GET", ""), ("POST", "/dtmf"),
                                  ("GET", ""), ("POST", "/say"), ("GET", "")]
    else:
        assert len(blocking.asked) == gone_after + 1  # the first request to a gone call ends the steps


def test_the_walk_stops_at_the_deadline() -> None:
    now = [0.0]
    mock = _Mock()

    def sleep(s: float) -> None:
        now[0] += s

    walk = virtual_call([Step(pause_ms=2000), Step(say="caller_confirm")], 1.0, "rtc_1", ROOT, 2.0,
                        clock=lambda: now[0])
    run_blocking(walk, mock.answer, sleep)
    assert mock.asked == [] and now[0] == 1.0  # the pause was cut to what was left; the say never made


def test_an_unanswered_call_is_polled_then_skipped() -> None:
    """While the call rings the walk reads it every ANSWER_POLL_S, for at most its time; then says why."""
    now = [0.0]
    asked: list[str] = []

    def ringing(method: str, path: str, body: object = None, timeout: float = 30) -> tuple[int, object]:
        asked.append(method)
        return 200, {"state": "ringing"}

    def sleep(s: float) -> None:
        now[0] += s

    run_blocking(wait_answered("rtc_1", 0.5, clock=lambda: now[0]), ringing, sleep)
    assert asked == ["GET"] * round(0.5 / ANSWER_POLL_S) and abs(now[0] - 0.5) < 1e-9


# ---- Locust itself ---------------------------------------------------------------------------------------


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def test_shipped_locustfile_prints_its_path() -> None:
    out = subprocess.run([sys.executable, "-m", "harness.locustfile"], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=60)
    assert Path(out.stdout.strip()) == LOCUSTFILE


@pytest.mark.parametrize(("args", "needle"), [
    (["--rtsip-scenario", str(SIP_SCENARIO), "--rtsip-calls", "4", "-u", "2"], "needs SIP features"),
    (["--rtsip-calls", "4", "-u", "2"], "no scenario"),
    (["--rtsip-scenario", str(ONE_TURN), "--rtsip-calls", "4", "-u", "9"], "9 users for --rtsip-calls 4"),
])
def test_bad_input_stops_locust_before_any_call_in_one_line(args: list[str], needle: str) -> None:
    # nothing listens on the host: a call placed would fail, but none is
    proc = subprocess.run(_locust("--headless", "--host", f"http://127.0.0.1:{free_port()}", *args),
                          capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rtsip: ")]
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in proc.stderr


CALLS = 40


async def _mock_calls(url: str) -> list[dict[str, object]]:
    """Every call the mock made (the list is paged)."""
    calls: list[dict[str, object]] = []
    after = ""
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{url}/_mock/calls", params={"entries": "0", "after": after}) as resp:
                assert resp.status == 200
                page = await resp.json()
            calls.extend(page["calls"])
            if not page.get("next_after"):
                return calls
            after = page["next_after"]


@pytest.mark.timeout(240)
async def test_distributed_run_on_one_host_accounts_for_every_call_once(tmp_path: Path) -> None:
    """A Locust master and two workers place a fixed number of virtual calls against a real mock and app."""
    app_port = free_port()
    async with MockProcess(args=["--port", "0", "--no-sip", "--state-dir", str(tmp_path / "state"),
                                 "--webhook-url", f"http://127.0.0.1:{app_port}/webhook"],
                           startup_timeout=60.0) as mock:
        scenario = load_scenario(ONE_TURN)
        app = AppProcess(app_argv(scenario.app.command, app_port), app_env(mock.base_url, mock.webhook_secret,
                                                                            app_port), ONE_TURN.parent)
        await app.start()
        procs: list[asyncio.subprocess.Process] = []
        try:
            await app.wait_ready(port=app_port, http_path=scenario.app.ready.http, log_regex=scenario.app.ready.log,
                                 timeout=60)
            master_port = free_port()
            csv_prefix = tmp_path / "run"
            master = await asyncio.create_subprocess_exec(
                *_locust("--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                         str(master_port), "--expect-workers", "2", "--expect-workers-max-wait", "60",
                         "--host", mock.base_url, "--rtsip-scenario", str(ONE_TURN), "--rtsip-calls", str(CALLS),
                         "-u", "10", "-r", "10", "--csv", str(csv_prefix), "--run-time", "150"),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            procs.append(master)
            for _ in range(2):
                procs.append(await asyncio.create_subprocess_exec(
                    *_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)),
                    cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
            out, _ = await asyncio.wait_for(master.communicate(), 200)
            log = out.decode(errors="replace")
            assert master.returncode == 0, log[-3000:]
            for worker in procs[1:]:  # the master's quit ends its workers
                assert await asyncio.wait_for(worker.wait(), 60) == 0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            await app.stop()
        assert "to 2 ready workers" in log  # the users were spread over both workers
        assert f"rtsip: {CALLS} calls placed and back" in log

        calls = await _mock_calls(mock.url)
        with (tmp_path / "run_stats.csv").open() as f:
            rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
        call_row = rows[(CALL_TYPE, scenario.name)]
        # every call once: the mock made as many as Locust reported, and each ended
        assert int(call_row["Request Count"]) == len(calls) == CALLS
        assert len({c["call_id"] for c in calls}) == CALLS
        assert all(c["state"] == "ended" for c in calls), {c["state"] for c in calls}
        assert int(call_row["Failure Count"]) == 0, (tmp_path / "run_failures.csv").read_text()
        # the journal's figures, one sample per call (one accept, one WebSocket, one turn each)
        for name in ("webhook_to_accept_ms", "accept_to_ws_ms", "speech_end_to_transcript_ms",
                     "speech_end_to_audio_ms"):
            assert name in METRICS
            row = rows[(JOURNAL_TYPE, name)]
            assert int(row["Request Count"]) == CALLS and int(row["Failure Count"]) == 0
        # the fake model's scripted delay (transcription_delay_s: 0.2) shows through, as in rtsip load
        assert 150 <= float(rows[(JOURNAL_TYPE, "speech_end_to_transcript_ms")]["50%"]) <= 400


@pytest.mark.timeout(180)
async def test_failed_calls_reach_locust_with_their_reason(tmp_path: Path) -> None:
    """A mock whose webhook reaches no app: every call fails, and Locust's failures file says why, per call."""
    scenario = tmp_path / "short.yaml"
    scenario.write_text(ONE_TURN.read_text().replace("max_duration_s: 20", "max_duration_s: 3"))
    nobody = free_port()
    async with MockProcess(args=["--port", "0", "--no-sip", "--state-dir", str(tmp_path / "state"),
                                 "--webhook-url", f"http://127.0.0.1:{nobody}/webhook"],
                           startup_timeout=60.0) as mock:
        proc = await asyncio.create_subprocess_exec(
            *_locust("--headless", "--host", mock.url, "--rtsip-scenario", str(scenario), "--rtsip-calls", "3",
                     "-u", "3", "-r", "3", "--csv", str(tmp_path / "run")),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 150)
        assert proc.returncode == 1, out.decode(errors="replace")[-3000:]  # Locust's status for failures
        assert len(await _mock_calls(mock.url)) == 3
    with (tmp_path / "run_failures.csv").open() as f:
        failures = list(csv.DictReader(f))
    assert [(r["Method"], r["Name"], r["Error"], r["Occurrences"]) for r in failures] == [
        (CALL_TYPE, "load-one-turn", "CallFailed('webhook connection_error')", "3")]


@pytest.mark.sip
@pytest.mark.timeout(240)
async def test_sip_callers_place_real_calls_through_locust(tmp_path: Path) -> None:
    """SipCaller: Locust's users dial the mock's SIP ingress from a softphone pool of their process (asyncio,
    apart from gevent), two-way audio heard both ends; the master fills one ingress worker before the next."""
    app_port = free_port()
    async with MockProcess(args=["--port", "0", "--sip-port", "0", "--sip-workers", "2", "--state-dir",
                                 str(tmp_path / "state"), "--webhook-url", f"http://127.0.0.1:{app_port}/webhook"],
                           startup_timeout=90.0) as mock:
        scenario = load_scenario(SIP_SCENARIO)
        app = AppProcess(app_argv(scenario.app.command, app_port), app_env(mock.base_url, mock.webhook_secret,
                                                                            app_port), SIP_SCENARIO.parent)
        await app.start()
        records = tmp_path / "records.jsonl"
        try:
            await app.wait_ready(port=app_port, http_path=scenario.app.ready.http, log_regex=scenario.app.ready.log,
                                 timeout=60)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "locust", "-f", str(SIP_LOCUSTFILE), "--headless", "--host", mock.url,
                "--rtsip-scenario", str(SIP_SCENARIO), "--rtsip-calls", "6", "--rtsip-records", str(records),
                "-u", "3", "-r", "3", "--csv", str(tmp_path / "run"), "--run-time", "200",
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 220)
            log = out.decode(errors="replace")
        finally:
            await app.stop()
        assert proc.returncode == 0, log[-3000:]
        calls = await _mock_calls(mock.url)
    assert "rtsip: 6 calls placed and back" in log
    assert len(calls) == 6 and all(c["state"] == "ended" for c in calls), [c["state"] for c in calls]
    done = [json.loads(line) for line in records.read_text().splitlines() if '"done"' in line]
    assert sorted(d["index"] for d in done) == list(range(6))
    recs = [CallRecord.from_json(d["record"]) for d in done]
    assert all(r.ok for r in recs), [r.reason for r in recs]
    assert {r.call_id for r in recs} == {c["call_id"] for c in calls}
    assert all(r.rtp["rx_pkt"] > 100 and r.rtp["ingress_rx_pkt"] > 100 for r in recs)  # heard both ways
    assert all(len(r.metrics["speech_end_to_audio_ms"]) == 2 for r in recs)  # two turns each, from the journal
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    assert int(rows[(CALL_TYPE, scenario.name)]["Request Count"]) == 6
    assert int(rows[(JOURNAL_TYPE, "speech_end_to_audio_ms")]["Request Count"]) == 12


@pytest.mark.sip
def test_sip_callers_against_a_mock_without_sip_stop_in_one_line(tmp_path: Path) -> None:
    async def run() -> subprocess.CompletedProcess[str]:
        async with MockProcess(args=["--port", "0", "--no-sip", "--state-dir", str(tmp_path / "state")],
                               startup_timeout=60.0) as mock:
            return await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "locust", "-f", str(SIP_LOCUSTFILE), "--headless", "--host",
                                 mock.url, "--rtsip-scenario", str(SIP_SCENARIO), "--rtsip-calls", "2", "-u", "1",
                                 "-r", "1", "--run-time", "30"],
                cwd=ROOT, capture_output=True, text=True, timeout=90)

    res = asyncio.run(run())
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "the mock runs without SIP (started with --no-sip)" in res.stderr
