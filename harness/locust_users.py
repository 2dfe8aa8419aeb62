"""rtsip callers as Locust users: :class:`VirtualCaller`, which ``rtsip load`` runs (and :class:`SipCaller`,
which refuses: not built yet).

The rules are in :mod:`harness.locust_core`; this module is the Locust and gevent side of them.

Locust runs each user in a gevent greenlet of a monkey-patched process, so a caller here blocks the
gevent way: the control API is plain ``requests`` (its sockets are gevent's once Locust has patched
them) and waits are ``gevent.sleep``. There is no asyncio loop in a worker: the steps a call takes are
the same as ``rtsip load``'s, and so are the requests they make (one sans-I/O walk,
:mod:`harness.control_walk`, run here by ``run_blocking``), and each call's figures come from its journal as there.

Configuration: ``--host`` is the mock's URL (``http://127.0.0.1:8765`` or its ``.../v1`` base URL), and
options of our own: ``--rtsip-scenario FILE`` (``RTSIP_SCENARIO``), ``--rtsip-calls N`` (``RTSIP_CALLS``,
0: no limit), ``--rtsip-control-token`` (``RTSIP_CONTROL_TOKEN``), and those ``rtsip load`` sets when it
runs Locust (:mod:`harness.load_locust`): ``--rtsip-rate``, ``--rtsip-duration``, ``--rtsip-mocks``,
``--rtsip-mock-has-scenario``, ``--rtsip-records``. The master sends them to its workers; the scenario
file must be at the same path on every worker host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import gevent
import gevent.event
import gevent.lock
import locust.runners
import requests
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopTest, StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from mock_api.client import TOKEN_ENV
from mock_api.control_models import CallView
from sipworker import sip_available, sip_missing

from .control_walk import run_blocking, virtual_call
from .load_metrics import CallRecord, extract, failure
from .load_plan import CALLS_PER_SIP_WORKER, caller_numbers, sip_needs
from .load_sip import IngressSlots
from .locust_core import CALL_TYPE, CallBudget, Setup, Ticket, record_line, refusal, request_events
from .scenario import CallSpec, Scenario, load_scenario

log = logging.getLogger("rtsip.locust")

WANT, GRANT, DONE = "rtsip_ticket_want", "rtsip_ticket", "rtsip_call_done"  # custom messages, worker ↔ master
TICKET_WAIT_S = 60.0  # a master that does not answer a ticket in this long is gone: the user stops
WATCH_EVERY_S = 0.5
# Locust's master marks a worker missing after 3 heartbeats (1 s apart) go unheard and, once none is left, stops
# the test for good. A caller's worker shares its host with the mock, the app and their SIP workers, which starve
# it for longer than that on a saturated box (seen: 5 s, all workers at once, the run lost); a worker that is
# really gone is still seen within this many seconds. Locust has no option for it: its module constant is it.
WORKER_SILENCE_S = 20
locust.runners.HEARTBEAT_LIVENESS = WORKER_SILENCE_S


# ---- the options -------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    parser.add_argument("--rtsip-scenario", env_var="RTSIP_SCENARIO", default="",
                       help="The scenario whose first call each user places (scenarios/load/*.yaml).")
    parser.add_argument("--rtsip-calls", env_var="RTSIP_CALLS", type=int, default=0,
                       help="Calls to place over all workers, then stop the run (0: until --run-time or Ctrl-C).")
    parser.add_argument("--rtsip-control-token", env_var=TOKEN_ENV, default="", is_secret=True,
                       help="The mock's control token, when it was started with --control-token.")
    parser.add_argument("--rtsip-rate", type=float, default=0.0,
                       help="At most this many new calls a second over all workers (0: as fast as users free up).")
    parser.add_argument("--rtsip-duration", type=float, default=0.0,
                       help="Place no call after this many seconds from the start (0: no limit).")
    parser.add_argument("--rtsip-mocks", default="", include_in_web_ui=False,
                       help="Comma-separated mock URLs the calls go to in turn (default: --host).")
    parser.add_argument("--rtsip-mock-has-scenario", action="store_true", include_in_web_ui=False,
                       help="The mock was started with the scenario's mock config: calls carry only their own faults.")
    parser.add_argument("--rtsip-mode", choices=["", "virtual", "sip"], default="", include_in_web_ui=False,
                       help="Place the scenario's calls in this mode, not its own (rtsip load --mode): SipCaller "
                            "needs sip.")
    parser.add_argument("--rtsip-records", default="", include_in_web_ui=False,
                       help="Append one JSON line per call placed and per call back to this file (rtsip load).")


def mock_url(host: str | None) -> str:
    """The mock's root URL from Locust's ``--host``: its base URL's ``/v1`` (or Azure's) is dropped."""
    url = (host or "").rstrip("/")
    for suffix in ("/openai/v1", "/v1"):
        url = url.removesuffix(suffix)
    return url


# ---- one call through the control API, blocking ------------------------------------------------------


class Control:
    """The control API requests a caller needs, over one kept-alive connection (gevent's, under Locust)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.http = requests.Session()
        if token:
            self.http.headers["X-Rtsip-Token"] = token

    def req(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        resp = self.http.request(method, self.url + path, json=body, timeout=timeout)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, None

    def view(self, call_id: str) -> CallView:
        status, body = self.req("GET", f"/_mock/calls/{call_id}")
        if status != 200:
            raise RuntimeError(f"GET /_mock/calls/{call_id}: {status}")
        return CallView.model_validate(body)

    def close(self) -> None:
        self.http.close()


class _Overran(Exception):
    """The call's steps ran past ``max_duration_s`` + 20 s."""


def place_call(control: Control, scenario: Scenario, base: Path, index: int,
               mock_has_scenario: bool = False) -> CallRecord:
    """One call of the scenario's first call: start, steps, hangup, then its journal's figures.

    The scenario's ``mock.script`` and ``mock.faults`` go with the call (``POST /_mock/calls`` takes them)
    unless the mock was started with them (``mock_has_scenario``, as ``rtsip load`` starts it)."""
    spec: CallSpec = scenario.calls[0]
    rec = CallRecord(index=index, start=time.time())
    error: str | None = None
    faults = spec.faults if mock_has_scenario else [*scenario.mock.faults, *spec.faults]
    body: dict[str, Any] = {"from": spec.from_, "to": spec.to, "headers": spec.headers,
                            "faults": [f.model_dump() for f in faults]}
    script = scenario.mock.script.model_dump(exclude_defaults=True)
    if script and not mock_has_scenario:
        body["script"] = script
    try:
        with gevent.Timeout(spec.max_duration_s + 20, _Overran()):
            status, answer = control.req("POST", "/_mock/calls", body)
            if status not in (200, 201):
                raise RuntimeError(f"POST /_mock/calls answered {status}: {str(answer)[:200]}")
            rec.call_id = str(answer["call_id"])
            run_blocking(virtual_call(spec.steps, spec.max_duration_s, rec.call_id, base, spec.speed), control.req,
                         gevent.sleep)
    except _Overran:
        error = (f"call overran max_duration_s + 20 s ({spec.max_duration_s + 20:g} s): the steps ran slower than "
                 "real time" if rec.call_id else "driver: POST /_mock/calls timed out")
    except Exception as exc:
        error = f"driver: {type(exc).__name__}: {str(exc)[:160]}"
    if rec.call_id is not None:
        with contextlib.suppress(Exception), gevent.Timeout(10, False):  # False: a late journal ends quietly
            control.req("POST", f"/_mock/calls/{rec.call_id}/caller_hangup")
            view = control.view(rec.call_id)
            deadline = time.monotonic() + 5  # the hangup is applied before its answer: a call still open is read
            while not view.terminal and time.monotonic() < deadline:  # again for a while, then judged as it is
                gevent.sleep(0.05)
                view = control.view(rec.call_id)
            rec.metrics = extract(view)
            rec.state = view.state
            rec.turns = len(rec.metrics.get("speech_end_to_audio_ms", []))
            error = error or failure(view)
            if error is None and view.state != "ended":
                error = f"call {view.state}"
    elif error is None:
        error = "driver: no call_id"
    if rec.call_id is not None and rec.state is None and error is None:
        error = "driver: journal not readable"
    rec.ok, rec.reason, rec.end = error is None, error, time.time()
    return rec


# ---- the run: each node's state, the budget, the tickets -------------------------------------------------


@dataclass
class _Run:
    """What every node keeps for one test: the scenario, and the budget and records file (master or local
    runner only)."""

    scenario: Scenario
    base: Path
    budget: CallBudget | None
    tickets: dict[int, gevent.event.AsyncResult]  # a worker's users waiting for the master's answer
    records: IO[str] | None = None
    workers: dict[str, int] = field(default_factory=dict)  # a worker's node id → its number in the records
    next_id: int = 0
    slots: IngressSlots | None = None  # SipCaller runs, master or local runner: the ingress workers' calls
    numbers: Iterator[str] | None = None  # SipCaller runs: the callers' numbers, from the scenario's seed
    sip_host: _SipHost | None = None  # SipCaller runs, every node that has users: its softphone pool

    def write(self, kind: str, index: int, t: float, record: dict[str, Any] | None = None) -> None:
        if self.records is not None:
            self.records.write(record_line(kind, index, t, record))


_runs: weakref.WeakKeyDictionary[Environment, _Run] = weakref.WeakKeyDictionary()


def _options(environment: Environment) -> Any:
    return environment.parsed_options


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    """Register the ticket messages; refuse a headless run's bad input before any worker or call starts."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(WANT, _on_want)
        runner.register_message(DONE, _on_done)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(GRANT, _on_grant)
        return
    o = _options(environment)
    if o is not None and getattr(o, "headless", False):
        workers = int(getattr(o, "expect_workers", 0) or 0) if isinstance(runner, MasterRunner) else 0
        why = _why_not(environment, int(getattr(o, "num_users", 0) or 1), workers)
        if why is not None:
            print(f"rtsip: {why}", file=sys.stderr)
            raise SystemExit(2)


def _why_not(environment: Environment, users: int, workers: int) -> str | None:
    """Rule 5 on this run's options (the master's or the local runner's)."""
    o = _options(environment)
    if not mock_url(environment.host):
        return "no --host: give the mock's URL, e.g. --host http://127.0.0.1:8765"
    setup = Setup(str(getattr(o, "rtsip_scenario", "") or ""), int(getattr(o, "rtsip_calls", 0) or 0), users,
                  workers, [c.__name__ for c in environment.user_classes], str(getattr(o, "rtsip_mode", "") or ""))
    if "SipCaller" in setup.user_classes and not sip_available():
        return sip_missing("or place virtual calls with VirtualCaller")
    return refusal(setup, _load, sip_needs)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    """Refuse what the web UI changed into bad input (master or local runner), then read the scenario on
    every node."""
    o = _options(environment)
    runner = environment.runner
    path = str(getattr(o, "rtsip_scenario", "") or "")
    calls = int(getattr(o, "rtsip_calls", 0) or 0)
    if not isinstance(runner, WorkerRunner):
        users = int(getattr(runner, "target_user_count", 0) or getattr(o, "num_users", 0) or 1)
        why = _why_not(environment, users, runner.worker_count if isinstance(runner, MasterRunner) else 0)
        if why is not None:
            log.error("rtsip: %s", why)
            environment.process_exit_code = 2
            raise StopTest(f"rtsip: {why}")
    scenario = _load(path)
    base = Path(scenario.source or path).parent.resolve()
    budget = records = None
    if not isinstance(runner, WorkerRunner):
        duration = float(getattr(o, "rtsip_duration", 0) or 0)
        now = time.time()
        budget = CallBudget(calls, float(getattr(o, "rtsip_rate", 0) or 0),
                            now + duration if duration > 0 else math.inf, next_start=now)
        path_out = str(getattr(o, "rtsip_records", "") or "")
        records = open(path_out, "a", buffering=1, encoding="utf-8") if path_out else None  # noqa: SIM115
    run = _runs[environment] = _Run(scenario, base, budget, {}, records)
    if budget is not None and _sip_run(environment):
        run.slots, run.numbers = _sip_slots(environment, o, runner), caller_numbers(scenario.seed)
    if budget is not None and (calls or budget.stop_at < math.inf):
        gevent.spawn(_quit_when_done, environment, budget, scenario.name)


def _sip_run(environment: Environment) -> bool:
    return any(c.__name__ == "SipCaller" for c in environment.user_classes)


def _sip_slots(environment: Environment, o: Any, runner: Any) -> IngressSlots:
    """The mock's ingress workers (``GET /_mock/sip``), or StopTest with why a SIP run cannot work there."""
    token = str(getattr(o, "rtsip_control_token", "") or "") or None
    control = Control(mock_url(environment.host), token)
    try:
        status, body = control.req("GET", "/_mock/sip")
    except requests.RequestException as exc:
        status, body = 0, {"error": str(exc)}
    finally:
        control.close()
    why = None
    if status == 404:
        why = "the mock runs without SIP (started with --no-sip): SipCaller needs its SIP ingress"
    elif status != 200 or not isinstance(body, dict):
        why = f"GET /_mock/sip answered {status}: {str(body)[:160]}"
    else:
        slots = IngressSlots.from_status(body)
        room = sum(slots.cap(w) for w in slots.contacts)
        users = int(getattr(runner, "target_user_count", 0) or getattr(o, "num_users", 0) or 1)
        if users > room:
            why = (f"{users} SipCaller users, but the mock's SIP ingress holds {room} calls "
                   f"({len(slots.contacts)} workers): start it with more --sip-workers, or lower -u")
        else:
            return slots
    log.error("rtsip: %s", why)
    environment.process_exit_code = 2
    raise StopTest(f"rtsip: {why}")


@events.quit.add_listener
def _on_quit(**_kw: Any) -> None:
    for run in list(_runs.values()):
        if run.records is not None:
            run.records.close()
            run.records = None
        if run.sip_host is not None:
            run.sip_host.close()
            run.sip_host = None


def _load(path: str) -> Scenario:
    return load_scenario(path)


def _quit_when_done(environment: Environment, budget: CallBudget, name: str) -> None:
    """Rule 3: once every call is back and counted in the stats, end the run (and the workers)."""
    runner = environment.runner
    assert runner is not None
    while True:
        gevent.sleep(WATCH_EVERY_S)
        entry = environment.stats.entries.get((name, CALL_TYPE))
        if budget.finished(entry.num_requests if entry is not None else 0, time.time()):
            log.info("rtsip: %d calls placed and back; stopping", budget.done)
            # Locust's --csv writer snapshots the stats on its own clock and not at quit: one more period
            # of it, so the files hold the last calls too
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)
            runner.quit()
            if environment.web_ui is not None:  # with the UI (--autostart), Locust's main waits for it too
                environment.web_ui.stop()
            return


def _take(run: _Run) -> Ticket | None:
    """Rule 2 and 7 on the master or the local runner: a ticket, its ``placed`` line in the records."""
    assert run.budget is not None
    ticket = run.budget.take(time.time())
    if ticket is not None and run.slots is not None and run.numbers is not None:  # rule 8
        worker, uri = run.slots.take()
        ticket = replace(ticket, worker=worker, uri=uri, number=next(run.numbers))
    if ticket is not None:
        run.write("placed", ticket.index, ticket.start_at)
    return ticket


def _on_want(environment: Environment, msg: Any, **_kw: Any) -> None:
    run = _runs.get(environment)
    ticket = _take(run) if run is not None and run.budget is not None else None
    runner = environment.runner
    assert isinstance(runner, MasterRunner)
    runner.send_message(GRANT, {"id": msg.data["id"], **(asdict(ticket) if ticket else {"index": None})},
                        client_id=msg.node_id)


def _on_done(environment: Environment, msg: Any, **_kw: Any) -> None:
    run = _runs.get(environment)
    if run is None or run.budget is None:
        return
    run.budget.finish()
    slot = (msg.data or {}).get("slot")
    if run.slots is not None and slot is not None:
        run.slots.free(int(slot))
    record = (msg.data or {}).get("record")
    if record is not None:
        record["worker"] = run.workers.setdefault(msg.node_id, len(run.workers))
        run.write("done", int(record["index"]), time.time(), record)


def _on_grant(environment: Environment, msg: Any, **_kw: Any) -> None:
    run = _runs.get(environment)
    waiting = run.tickets.pop(int(msg.data["id"]), None) if run is not None else None
    if waiting is not None:
        data = {k: v for k, v in msg.data.items() if k != "id"}
        waiting.set(None if data["index"] is None else Ticket(**data))


def _ticket(environment: Environment, run: _Run) -> Ticket | None:
    """Rule 2: this call's ticket from the budget (the master's, over a round trip, on a worker)."""
    if run.budget is not None:
        return _take(run)
    runner = environment.runner
    assert isinstance(runner, WorkerRunner)
    run.next_id += 1
    waiting: gevent.event.AsyncResult = gevent.event.AsyncResult()
    run.tickets[run.next_id] = waiting
    runner.send_message(WANT, {"id": run.next_id})
    ticket: Ticket | None = waiting.get(timeout=TICKET_WAIT_S)
    return ticket


def _returned(environment: Environment, run: _Run, record: CallRecord, slot: int = -1) -> None:
    """A call is back: to the budget and the records (a SIP call's ingress slot is free again, rule 8)."""
    if run.budget is not None:
        run.budget.finish()
        if run.slots is not None and slot >= 0:
            run.slots.free(slot)
        run.write("done", record.index, time.time(), record.to_json())
    elif isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(DONE, {"record": record.to_json(), "slot": slot if slot >= 0 else None})


# ---- the users ---------------------------------------------------------------------------------------------


class _Caller(User):
    """One call per task, as the master's ticket says (rules 2, 7, 8); the call itself is the subclass's."""

    abstract = True
    wait_time = constant(0)

    def place(self, run: _Run, ticket: Ticket) -> CallRecord:
        raise NotImplementedError

    @task
    def call(self) -> None:
        run = _runs.get(self.environment)
        if run is None:
            raise StopUser()
        try:
            ticket = _ticket(self.environment, run)
        except gevent.Timeout:
            ticket = None
        if ticket is None:
            raise StopUser()
        gevent.sleep(max(0.0, ticket.start_at - time.time()))  # rule 7
        record = self.place(run, ticket)
        for ev in request_events(record, run.scenario.name):
            self.environment.events.request.fire(request_type=ev.request_type, name=ev.name,
                                                 response_time=ev.response_time, response_length=0,
                                                 exception=ev.exception, context={})
        _returned(self.environment, run, record, ticket.worker)


class VirtualCaller(_Caller):
    """A caller with no SIP leg: each task is one call of the scenario's first call, through the mock's
    control API; its figures reach Locust as request events (:func:`harness.locust_core.request_events`)."""

    def on_start(self) -> None:
        o = _options(self.environment)
        token = str(getattr(o, "rtsip_control_token", "") or "") or None
        urls = [u for u in str(getattr(o, "rtsip_mocks", "") or "").split(",") if u] or [self.environment.host]
        self.controls = [Control(mock_url(u), token) for u in urls]
        self.mock_has_scenario = bool(getattr(o, "rtsip_mock_has_scenario", False))

    def on_stop(self) -> None:
        for control in self.controls:
            control.close()

    def place(self, run: _Run, ticket: Ticket) -> CallRecord:
        control = self.controls[ticket.index % len(self.controls)]
        return place_call(control, run.scenario, run.base, ticket.index, self.mock_has_scenario)


class SipCaller(_Caller):
    """A caller on a real SIP/TLS call: each task is one call of the scenario's first call (``mode: sip``),
    dialled by this Locust process's softphone pool (:class:`_SipHost`) at the ingress worker the master
    chose; its figures reach Locust as for :class:`VirtualCaller` (the caller's RTP counts too)."""

    def place(self, run: _Run, ticket: Ticket) -> CallRecord:
        spec = run.scenario.calls[0]
        try:
            return _sip_host(self.environment, run).call(ticket, spec.max_duration_s + SIP_CALL_SLACK_S)
        except Exception as exc:  # the pool is gone or did not answer: this call failed, the run goes on
            return CallRecord(index=ticket.index, worker=ticket.worker, start=ticket.start_at, end=time.time(),
                              ok=False, reason=f"driver: {type(exc).__name__}: {str(exc)[:160]}")


SIP_CALL_SLACK_S = 90.0  # past a call's max_duration_s: set-up, the journal read, a slow pool


class _SipHost:
    """This Locust process's softphone pool: a ``python -m harness.sip_caller_host`` child (asyncio and its
    pjsua2 workers, apart from gevent), spoken to in JSON lines; a greenlet reads its answers and wakes the
    user waiting for each."""

    def __init__(self, mock: str, scenario: str, workers: int, token: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rtsip-sipcaller-"))
        env = dict(os.environ)
        if token:
            env[TOKEN_ENV] = token
        self.log = (self.dir / "host.log").open("ab")
        self.proc = subprocess.Popen(  # gevent's Popen under Locust: its pipes are cooperative
            [sys.executable, "-m", "harness.sip_caller_host", "--mock", mock, "--scenario", scenario, "--workers",
             str(workers), "--state-dir", str(self.dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, env=env, text=True, bufsize=1)
        self.waiting: dict[int, gevent.event.AsyncResult] = {}
        self.next_id = 0
        self.ready: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("ready"):
                self.ready.set(True)
                continue
            waiting = self.waiting.pop(int(msg["id"]), None)
            if waiting is not None:
                waiting.set(CallRecord.from_json(msg["record"]))
        gone = RuntimeError(f"the softphone pool ended (rc {self.proc.wait()}; log {self.dir / 'host.log'})")
        self.ready.set_exception(gone)
        for waiting in self.waiting.values():
            waiting.set_exception(gone)
        self.waiting.clear()

    def call(self, ticket: Ticket, timeout: float) -> CallRecord:
        self.ready.get(timeout=SIP_HOST_START_S)
        assert self.proc.stdin is not None
        self.next_id += 1
        waiting: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.waiting[self.next_id] = waiting
        self.proc.stdin.write(json.dumps({"id": self.next_id, "index": ticket.index, "worker": ticket.worker,
                                          "uri": ticket.uri, "number": ticket.number}) + "\n")
        self.proc.stdin.flush()
        record: CallRecord = waiting.get(timeout=timeout)
        return record

    def close(self) -> None:
        """End of stdin: the pool finishes what it has and closes its workers."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SIP_HOST_START_S = 120.0  # the pool's worker processes start (pjsua2, TLS) before the first call


_sip_host_lock = gevent.lock.Semaphore()


def _sip_host(environment: Environment, run: _Run) -> _SipHost:
    """This process's pool, started by the first SipCaller that needs it (one per Locust process)."""
    with _sip_host_lock:
        if run.sip_host is None:
            o = _options(environment)
            users = int(getattr(o, "num_users", 0) or 1)
            token = str(getattr(o, "rtsip_control_token", "") or "") or None
            run.sip_host = _SipHost(mock_url(environment.host), str(getattr(o, "rtsip_scenario", "")),
                                    max(1, math.ceil(users / CALLS_PER_SIP_WORKER)), token)
        return run.sip_host


__all__ = ["Control", "SipCaller", "VirtualCaller", "mock_url", "place_call"]
