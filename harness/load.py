"""``rtsip load``: many calls from one scenario against the app under test, with journal-based metrics.

The pieces, each in its own process so their CPU is measurable and one saturated core does
not hide another:

* the mock: ``rtsip mock`` as a child process (:class:`~harness.mock_process.MockProcess`),
  with its SIP ingress pool sized from ``--concurrency`` in sip mode;
* the app under test: started like the runner does (:class:`~harness.app_process.AppProcess`);
* the callers: virtual callers in K driver processes (``spawn``), each placing a share of the
  calls through the control API; or, with ``--mode sip``, a softphone worker pool (4 calls per
  worker process) in this process, calling the ingress workers' contact URIs directly.

"pjsua2 wheel item N" cites docs/architecture.md, 'What the pjsua2 wheel imposes'.

Every call is accounted for: each one placed ends as completed or failed (with a reason read
from its journal), and the run stops by itself at ``--calls`` or ``--duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from faker import Faker

from audio_fixtures import FixtureNotFound
from audio_fixtures import fixture as find_fixture
from mock_api.shards import MAX_SHARDS, ROUTER_READY
from mock_api.webhooks import new_secret
from sipworker import sip_available, sip_missing
from sipworker.ports import RTP_SPAN, NoFreePorts, port_taken, rtp_base

from .load_metrics import MAIN_METRICS, CallRecord, extract, failure, ingress_rtp, percentile
from .load_report import print_summary, write_reports
from .scenario import CallSpec, Scenario, ScenarioError, load_scenario, resolve_audio

TRAILING_SILENCE_MS = 800
CALLS_PER_SIP_WORKER = 4
SIP_RATE_PER_WORKER = 30.0  # new calls/s per SIP worker process (≤ ~40 before aborts: pjsua2 wheel item 4)
SIP_MAX_PER_CORE = 120  # concurrent two-way-audio TLS calls per core, both ends on this box (pjsua2 wheel item 1)
SIP_WORKER_RSS_MB = 40
# Media of the SIP workers in sip mode (sipworker.ipc.WorkerConfig): native frame ports (the
# default), and received audio taken less often than by default, which is most of what is left of a
# worker's CPU.  The callers only play fixtures (their turn metrics come from the mock's journal):
# every 200 ms.  The mock's ingress: every 60 ms, so its VAD events reach the fake model up to
# 60 ms after the audio (20 ms by default).  Replies still start within a 20 ms frame.  Should the
# workers fall back to Python ports, these are their frame sizes (the ingress's VAD on the same port).
SIP_LOAD_MEDIA = "native"
SIP_LOAD_CALLER_FRAME_MS = 200
SIP_LOAD_INGRESS_FRAME_MS = 60
VIRTUAL_MAX_PER_CORE = 2500
VIRTUAL_RATE_PER_CORE = 150.0
VIRTUAL_CALLS_PER_DRIVER = 1000
FDS_PER_CALL = 4  # per process: the app's WebSocket and REST, the mock's side of both, the driver's request
FD_BASE = 256
SETTLE_S = 0.3


class LoadError(ValueError):
    """Bad input, found before any call is placed. The message says what to change."""


@dataclass
class LoadOptions:
    scenario: Path
    calls: int = 100
    concurrency: int = 10
    rate: float = 10.0
    duration: float | None = None
    mode: str | None = None  # None: the scenario's first call's mode
    interval: float = 1.0
    csv: Path | None = None
    json: Path | None = None
    html: Path | None = None
    processes: int | None = None  # virtual driver processes (default: one per 1,000 concurrent calls)
    mock_processes: int = 1  # mock shards for virtual calls (mock_api.shards), behind one base URL
    port: int = 0  # the mock's HTTP port (0: a free one)
    sip_port: int = 0
    app_port: int = 0
    mock_config: Path | None = None  # extra mock settings (YAML/JSON), merged over the scenario's
    run_dir: Path | None = None
    progress: bool = True


@dataclass
class Plan:
    """What a run will do, decided (and checked) before anything starts."""

    options: LoadOptions
    scenario: Scenario
    spec: CallSpec
    mode: str
    drivers: int
    mock_shards: int
    phone_workers: int
    ingress_workers: int
    rate: float
    max_call_s: float
    stop_placing_s: float  # placing stops this long after the start
    hard_stop_s: float  # everything is cut off this long after the start
    fds_needed: int
    notes: list[str] = field(default_factory=list)

    def caller_numbers(self) -> Iterator[str]:
        """One distinct E.164 number (+1 NXX NXX XXXX) per SIP call, in order, from the scenario's seed: an
        app that routes or logs by caller sees a caller per call, as through a carrier, and a rerun sees the same."""
        fake = Faker()
        fake.seed_instance(self.scenario.seed)
        seen: set[str] = set()
        while True:
            number = f"+1{fake.random_int(2, 9)}{fake.numerify('##')}{fake.random_int(2, 9)}{fake.numerify('######')}"
            if number not in seen:
                seen.add(number)
                yield number


# ---- bad input -------------------------------------------------------------------------------------


def _sip_needs(scenario: Scenario) -> list[str]:
    """What in a scenario only a SIP leg can do."""
    out = []
    for i, c in enumerate(scenario.calls):
        if c.mode == "sip":
            out.append(f"calls[{i}] has mode: sip")
    e = scenario.expect
    if e.sip_final_status is not None:
        out.append("expect.sip_final_status")
    if e.media_corrupt is not None:
        out.append("expect.media_corrupt (audio heard by a SIP caller)")
    if e.time_to_first_audio_ms is not None:
        out.append("expect.time_to_first_audio_ms (measured by a SIP caller)")
    return out


def _taken(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """Something is bound to ``port`` (sipworker.ports: TIME_WAIT leftovers do not count); a port nobody
    may bind here is a LoadError with the system's reason."""
    try:
        return port_taken(port, kind)
    except OSError as exc:
        raise LoadError(f"cannot use port {port}: {exc.strerror or exc}") from None


def fd_limit_check(needed: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to what is needed (children inherit it); an error if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= needed:
        return None
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return None
    return (f"too few file descriptors: this load needs about {needed} open files per process "
            f"({FDS_PER_CALL} per concurrent call + {FD_BASE}), but the limit is {soft} (hard limit {hard}). "
            f"Raise it before running, e.g. `ulimit -n {needed}` in this shell (as root, or after raising "
            f"'nofile' in /etc/security/limits.conf or LimitNOFILE= in a systemd unit), or lower --concurrency "
            f"to {max(1, (hard - FD_BASE) // FDS_PER_CALL)}.")


def plan(options: LoadOptions) -> Plan:
    """Check everything that can be checked before a call is placed; LoadError says what is wrong."""
    o = options
    _check_numbers(o)
    try:
        scenario = load_scenario(o.scenario)
    except ScenarioError as exc:
        raise LoadError(str(exc)) from None
    spec = scenario.calls[0]
    mode = o.mode or spec.mode
    _check_mode(o, scenario, mode)
    cores = os.cpu_count() or 1
    notes: list[str] = []
    phone_workers = ingress_workers = 0
    if mode == "virtual":
        drivers, rate = _size_virtual(o, cores)
    else:
        drivers = 1
        phone_workers, ingress_workers, rate = _size_sip(o, cores, notes)
    _check_ports(o, mode, ingress_workers, phone_workers)
    _check_mock_config(o)
    fds = FD_BASE + FDS_PER_CALL * o.concurrency
    msg = fd_limit_check(fds)
    if msg:
        raise LoadError(msg)
    if mode == "sip" and not sip_available():  # last: a mistake in the numbers is one everywhere
        raise LoadError(sip_missing("or use --mode virtual"))
    max_call_s = spec.max_duration_s
    # Without --duration every call is placed; the time limit is only a safety net: what the rate and the
    # concurrency allow (calls last about as long as their steps), with room to spare.
    throughput = min(rate, o.concurrency / max(0.5, estimate_call_s(spec, Path(scenario.source or o.scenario))))
    expected = o.calls / throughput
    stop_placing = o.duration if o.duration else expected * 2 + 30
    return Plan(o, scenario, spec, mode, drivers, o.mock_processes, phone_workers, ingress_workers, rate,
                max_call_s, stop_placing, stop_placing + max_call_s + 30.0, fds, notes)


def _check_numbers(o: LoadOptions) -> None:
    """The flags that are wrong on their own, whatever the scenario and the machine."""
    if o.calls <= 0:
        raise LoadError(f"--calls must be at least 1 (got {o.calls})")
    if o.concurrency <= 0:
        raise LoadError(f"--concurrency must be at least 1 (got {o.concurrency})")
    if not (o.rate > 0) or math.isinf(o.rate):
        raise LoadError(f"--rate must be a positive number of calls per second (got {o.rate})")
    if o.duration is not None and not (o.duration > 0):
        raise LoadError(f"--duration must be a positive number of seconds (got {o.duration})")
    if not (o.interval > 0):
        raise LoadError(f"--interval must be positive (got {o.interval})")
    if o.concurrency > o.calls:
        raise LoadError(f"--concurrency {o.concurrency} is more than --calls {o.calls}: at most {o.calls} calls "
                        f"can ever be in flight; lower --concurrency or raise --calls")
    if o.processes is not None and o.processes <= 0:
        raise LoadError(f"--processes must be at least 1 (got {o.processes})")
    if not 1 <= o.mock_processes <= MAX_SHARDS:
        raise LoadError(f"--mock-processes must be between 1 and {MAX_SHARDS} (got {o.mock_processes})")


def _check_mode(o: LoadOptions, scenario: Scenario, mode: str) -> None:
    """The mode exists and the scenario can run in it."""
    if mode not in ("virtual", "sip"):
        raise LoadError(f"--mode must be virtual or sip (got {mode!r})")
    if mode == "virtual":
        needs = _sip_needs(scenario)
        if needs:
            raise LoadError(f"{o.scenario}: this scenario needs SIP features ({'; '.join(needs)}), which virtual "
                            f"callers do not have; run it with --mode sip")
    if scenario.app.openai != "base_url":
        raise LoadError(f"{o.scenario}: app.openai: {scenario.app.openai} is not supported by rtsip load; "
                        "use base_url (OPENAI_BASE_URL points at the mock)")


def _size_virtual(o: LoadOptions, cores: int) -> tuple[int, float]:
    """Driver processes and start rate for virtual callers, refused beyond what this machine can do."""
    cap = VIRTUAL_MAX_PER_CORE * cores
    if o.concurrency > cap:
        raise LoadError(f"--concurrency {o.concurrency} is beyond what virtual mode can do on this machine "
                        f"({cores} cores: at most {cap}, {VIRTUAL_MAX_PER_CORE} per core)")
    rate_cap = VIRTUAL_RATE_PER_CORE * cores
    if o.rate > rate_cap:
        raise LoadError(f"--rate {o.rate:g}/s is beyond what virtual mode can start on this machine "
                        f"({cores} cores: at most {rate_cap:g} calls/s)")
    drivers = o.processes or max(1, min(cores, math.ceil(o.concurrency / VIRTUAL_CALLS_PER_DRIVER)))
    if o.mock_processes > o.concurrency:
        raise LoadError(f"--mock-processes {o.mock_processes} is more than --concurrency {o.concurrency}: "
                        "some mocks would never have a call")
    # each driver feeds one shard: a multiple of the shards, so each gets the same share of the calls
    drivers = min(-(-drivers // o.mock_processes) * o.mock_processes, o.concurrency)
    return drivers, o.rate


def _size_sip(o: LoadOptions, cores: int, notes: list[str]) -> tuple[int, int, float]:
    """Softphone and ingress worker processes and start rate for SIP calls, refused beyond this machine."""
    cap = SIP_MAX_PER_CORE * cores
    if o.concurrency > cap:
        raise LoadError(f"--concurrency {o.concurrency} is beyond what sip mode can do on this machine: both "
                        f"ends run pjsua2 here, at most {cap} concurrent calls on {cores} cores "
                        f"({SIP_MAX_PER_CORE} per core)")
    phone_workers = math.ceil(o.concurrency / CALLS_PER_SIP_WORKER)
    # a quarter more than the calls need: the front door keeps a slot free, and an ingress worker frees a
    # slot only once it has processed the BYE (a full worker answers 486)
    ingress_workers = math.ceil(phone_workers * 1.25) + 1
    mem_mb = _mem_available_mb()
    need_mb = (phone_workers + ingress_workers) * SIP_WORKER_RSS_MB
    if mem_mb is not None and need_mb > mem_mb:
        raise LoadError(f"--concurrency {o.concurrency} needs {phone_workers + ingress_workers} SIP worker "
                        f"processes (~{need_mb} MB) but only {mem_mb} MB of memory is available")
    rate_cap = SIP_RATE_PER_WORKER * phone_workers
    if o.rate > rate_cap:
        raise LoadError(f"--rate {o.rate:g}/s is too fast for sip mode with --concurrency {o.concurrency}: "
                        f"{phone_workers} softphone worker process(es) start at most {SIP_RATE_PER_WORKER:g} "
                        f"calls/s each ({rate_cap:g}/s in all); lower --rate or raise --concurrency")
    rate = o.rate
    if o.processes not in (None, 1):
        notes.append("--processes applies to virtual callers only; sip mode uses softphone worker processes")
    if o.mock_processes != 1:
        raise LoadError("--mock-processes applies to virtual mode only: in sip mode every call enters through "
                        "the one mock's SIP ingress (its workers are separate processes already)")
    return phone_workers, ingress_workers, rate


def _check_ports(o: LoadOptions, mode: str, ingress_workers: int, phone_workers: int) -> None:
    """The ports asked for are free and distinct; each SIP worker pool can find an RTP range."""
    for label, port, flag in (("the mock's HTTP port", o.port, "--port"), ("the app's port", o.app_port,
                                                                            "--app-port")):
        if port and _taken(port):
            raise LoadError(f"port {port} ({label}) is already taken; pick another with {flag}, or 0 for a free one")
    if len({p for p in (o.port, o.app_port, o.sip_port) if p}) < len([p for p in (o.port, o.app_port, o.sip_port)
                                                                       if p]):
        raise LoadError("--port, --app-port and --sip-port must differ")
    if mode == "sip":
        # TLS listens on --sip-port, TCP and UDP one below it (rtsip mock --help)
        if o.sip_port and (_taken(o.sip_port) or _taken(o.sip_port - 1) or _taken(o.sip_port - 1, socket.SOCK_DGRAM)):
            raise LoadError(f"SIP port {o.sip_port} (TLS) or {o.sip_port - 1} (TCP/UDP) is already taken; pick "
                            "another with --sip-port, or 0 for free ones")
        # each pool picks its RTP range from the ports free when it starts: check both can
        for who, workers in (("the mock's SIP ingress", ingress_workers), ("the softphone", phone_workers)):
            try:
                rtp_base(workers)
            except NoFreePorts as exc:
                raise LoadError(f"no free RTP range for {who} ({workers} workers of {RTP_SPAN} ports): {exc}; "
                                "stop other SIP programs or lower --concurrency") from None


def _check_mock_config(o: LoadOptions) -> None:
    """The --mock-config file exists, and sets no account-wide limits when several mocks share the load."""
    if o.mock_config is not None and not o.mock_config.is_file():
        raise LoadError(f"--mock-config {o.mock_config}: no such file")
    if o.mock_processes > 1:
        capped = _limits_set(o.mock_config)
        if capped:
            raise LoadError(f"--mock-config {o.mock_config} sets OpenAI-side limits ({', '.join(capped)}), which "
                            f"hold for the whole account; with --mock-processes {o.mock_processes} each mock would "
                            "count only its own calls. Use --mock-processes 1 to test limits")


def _limits_set(mock_config: Path | None) -> list[str]:
    """The account-wide caps a --mock-config file turns on."""
    if mock_config is None:
        return []
    try:
        extra = yaml.safe_load(mock_config.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LoadError(f"--mock-config {mock_config}: not YAML or JSON: {exc}") from None
    limits = extra.get("limits") if isinstance(extra, dict) else None
    return sorted(k for k, v in limits.items() if v is not None and k != "window_s") if isinstance(limits, dict) else []


def estimate_call_s(spec: CallSpec, file: Path) -> float:
    """How long one call's steps take on the real clock (said audio, pauses; waits count as the maximum)."""
    from mock_api import audio

    total = 1.0  # setup and teardown
    for step in spec.steps:
        if step.pause_ms is not None:
            total += step.pause_ms / 1000
        elif step.say is not None or step.barge_in is not None:
            with contextlib.suppress(FileNotFoundError, OSError, ValueError):
                path = resolve_audio(step.say or step.barge_in or "", file.parent)
                total += (audio.duration_ms(audio.load_audio(path, 8000), 8000) + TRAILING_SILENCE_MS) / 1000 / (
                    spec.speed if spec.mode == "virtual" else 1.0)
        elif step.wait_for is not None:
            total += 5.0
    return min(total, spec.max_duration_s)


def _mem_available_mb() -> int | None:
    """Memory the kernel could hand out now, or None where psutil cannot tell."""
    with contextlib.suppress(psutil.Error, OSError):
        return int(psutil.virtual_memory().available) // (1024 * 1024)
    return None


# ---- CPU and memory of process trees (psutil) ----------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process now: one pass, so a sample sees one consistent tree."""
    out: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            out.setdefault(int(ppid), []).append(proc.pid)
    return out


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


# ---- the calls: shared pieces ------------------------------------------------------------------------


class _Control:
    """The few control API requests a load driver needs, over one unlimited connection pool.

    ``token``: the mock's control token (its config's ``control_token``; default ``$RTSIP_CONTROL_TOKEN``)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        from mock_api.client import TOKEN_ENV

        self.url = url
        token = token or os.environ.get(TOKEN_ENV)
        self.headers = {"X-Rtsip-Token": token} if token else None
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                          timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def req(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body, headers=self.headers,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.json(content_type=None)

    async def view(self, call_id: str) -> Any:
        from mock_api.control_models import CallView

        status, body = await self.req("GET", f"/_mock/calls/{call_id}")
        if status != 200:
            raise RuntimeError(f"GET /_mock/calls/{call_id}: {status}")
        return CallView.model_validate(body)

    async def close(self) -> None:
        await self.http.close()


def _count_events(entries: list[dict[str, Any]], kind: str) -> int:
    n = 0
    for e in entries:
        if e["kind"] == kind:
            n += 1
        elif e["kind"] in ("ws.server", "ws.client"):
            ev = e["data"].get("event")
            if isinstance(ev, dict) and ev.get("type") == kind:
                n += 1
    return n


def _say_body(ref: str, base: Path, speed: float) -> dict[str, Any]:
    body: dict[str, Any] = {"speed": speed, "trailing_silence_ms": TRAILING_SILENCE_MS, "wait": True}
    try:
        find_fixture(ref)
        body["fixture"] = ref
    except FixtureNotFound:
        body["path"] = str(resolve_audio(ref, base))
    return body


def _releaser(tasks: set[asyncio.Task[None]], sem: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        sem.release()

    return done


class _Pacer:
    """At most ``rate`` starts per second, never catching up in bursts."""

    def __init__(self, rate: float, start: float) -> None:
        self.gap = 1.0 / rate
        self.next = start

    async def wait(self) -> None:
        now = time.time()
        if now < self.next:
            await asyncio.sleep(self.next - now)
        self.next = max(self.next, time.time()) + self.gap


# ---- virtual callers: one driver process's share ------------------------------------------------------


@dataclass
class _Share:
    worker: int
    mock_url: str
    indices: list[int]
    concurrency: int
    rate: float
    start_at: float
    stop_placing_at: float
    hard_stop_at: float
    spec: dict[str, Any]
    base: str
    max_call_s: float
    token: str | None = None  # the mock's control token


def virtual_driver_main(share: _Share, out: Any, stop: Any, abort: Any) -> None:
    """Entry point of a virtual-caller driver process (spawned): Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_virtual_driver(share, out, stop, abort))


async def _virtual_driver(share: _Share, out: Any, stop: Any, abort: Any) -> None:
    spec = CallSpec.model_validate(share.spec)
    control = _Control(share.mock_url, share.token)
    sem = asyncio.Semaphore(share.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    pacer = _Pacer(share.rate, share.start_at)
    aborted = asyncio.Event()

    async def watch() -> None:
        while not aborted.is_set():
            if abort.is_set() or time.time() > share.hard_stop_at:
                aborted.set()
                for t in list(tasks):
                    t.cancel()
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        for i in share.indices:
            await sem.acquire()
            await pacer.wait()
            if stop.is_set() or aborted.is_set() or time.time() > share.stop_placing_at:
                sem.release()
                break
            out.put(("placed", share.worker, i, time.time()))
            task = asyncio.create_task(_virtual_call(control, spec, Path(share.base), i, share, out))
            tasks.add(task)
            task.add_done_callback(_releaser(tasks, sem))
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
    finally:
        aborted.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await control.close()
        out.put(("finished", share.worker, 0, time.time()))


async def _virtual_call(control: _Control, spec: CallSpec, base: Path, index: int, share: _Share, out: Any) -> None:
    rec = CallRecord(index=index, worker=share.worker, start=time.time())
    error: str | None = None
    try:
        async with asyncio.timeout(share.max_call_s + 20):
            status, body = await control.req("POST", "/_mock/calls", {
                "from": spec.from_, "to": spec.to, "headers": spec.headers,
                "faults": [f.model_dump() for f in spec.faults]})
            if status != 201 and status != 200:
                raise RuntimeError(f"POST /_mock/calls answered {status}: {str(body)[:200]}")
            rec.call_id = str(body["call_id"])
            await _virtual_steps(control, spec, base, rec.call_id)
    except asyncio.CancelledError:
        error = "aborted (Ctrl-C or hard time limit)"
    except TimeoutError:
        error = (f"call overran max_duration_s + 20 s ({share.max_call_s + 20:g} s): the steps ran slower than "
                 "real time" if rec.call_id else "driver: POST /_mock/calls timed out")
    except Exception as exc:
        error = f"driver: {type(exc).__name__}: {str(exc)[:160]}"
    if rec.call_id is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await control.req("POST", f"/_mock/calls/{rec.call_id}/caller_hangup")
                await asyncio.sleep(SETTLE_S)
                view = await control.view(rec.call_id)
                rec.metrics = extract(view)
                rec.state = view.state
                rec.turns = len(rec.metrics.get("speech_end_to_audio_ms", []))
                reason = failure(view)
                error = error or reason
                if error is None and view.state != "ended":
                    error = f"call {view.state}"
    elif error is None:
        error = "driver: no call_id"
    if rec.call_id is not None and rec.state is None and error is None:
        error = "driver: journal not readable"
    rec.ok, rec.reason, rec.end = error is None, error, time.time()
    out.put(("done", share.worker, index, rec.to_json()))


async def _virtual_steps(control: _Control, spec: CallSpec, base: Path, call_id: str) -> None:
    deadline = time.monotonic() + spec.max_duration_s
    waits: dict[str, int] = {}
    active = False
    for step in spec.steps:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if step.hangup:
            return  # the caller's hangup follows the steps
        if step.pause_ms is not None:
            await asyncio.sleep(min(step.pause_ms / 1000, left))
            continue
        if step.wait_for is not None:
            waits[step.wait_for] = waits.get(step.wait_for, 0) + 1
            if not await _poll(control, call_id, step.wait_for, waits[step.wait_for], left):
                return
            continue
        if not active:
            active = await _wait_active(control, call_id, min(left, 15.0))
            if not active:
                return
        if step.dtmf is not None:
            status, _ = await control.req("POST", f"/_mock/calls/{call_id}/dtmf", {"digits": step.dtmf})
        elif step.say is not None or step.barge_in is not None:
            if step.barge_in is not None and not await _poll(control, call_id, "response.created", 1, 10):
                return
            ref = step.say or step.barge_in or ""
            status, _ = await control.req("POST", f"/_mock/calls/{call_id}/say", _say_body(ref, base, spec.speed),
                                          timeout=max(5.0, left + 5))
        else:
            continue
        if status >= 400:
            return  # the call is gone: its journal says why


async def _wait_active(control: _Control, call_id: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, body = await control.req("GET", f"/_mock/calls/{call_id}")
        if status == 200 and body.get("state") != "ringing":
            return str(body.get("state")) in ("active", "referring")
        await asyncio.sleep(0.1)
    return False


async def _poll(control: _Control, call_id: str, kind: str, count: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, body = await control.req("GET", f"/_mock/calls/{call_id}")
        if status != 200 or body.get("terminal"):
            return False
        if _count_events(body.get("entries", []), kind) >= count:
            return True
        await asyncio.sleep(0.25)
    return False


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

    @property
    def completed(self) -> int:
        return sum(1 for r in self.records if r.ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if not r.ok)


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


# ---- the run ------------------------------------------------------------------------------------------


class Stopper:
    """Ctrl-C once: stop placing and hang up what is in flight; the run still reports. Twice: cut off."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.requested.set()


async def run_load(plan_: Plan, stopper: Stopper | None = None,
                   on_started: Callable[[dict[str, int]], None] | None = None) -> LoadResult:
    """Start the mock and the app, place the calls, collect every call's record; always tears down."""
    from .app_process import AppProcess, app_argv, app_env
    from .mock_process import MockProcess

    o = plan_.options
    stopper = stopper or Stopper()
    run_dir = o.run_dir or Path(tempfile.mkdtemp(prefix="rtsip-load-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    result = LoadResult(plan_, started_at=time.time(), notes=list(plan_.notes))
    from mock_api.running import free_port

    app_port = o.app_port or free_port()
    mock_port = o.port or 0
    config = _mock_config(plan_, app_port)
    cfg_path = run_dir / "mock-config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    sip = (["--sip-port", str(o.sip_port or 0), "--sip-workers", str(plan_.ingress_workers),
            "--sip-frame-ms", str(SIP_LOAD_INGRESS_FRAME_MS), "--sip-vad-frame-ms", str(SIP_LOAD_INGRESS_FRAME_MS),
            "--sip-media", SIP_LOAD_MEDIA]
           if plan_.mode == "sip" else ["--no-sip"])

    def mock_args(port: int, state: str, *extra: str) -> list[str]:
        return ["--port", str(port), "--config", str(cfg_path), "--state-dir", str(run_dir / state), *sip, *extra]

    shards = plan_.mock_shards
    router: MockProcess | None = None
    sock_dir = Path(tempfile.mkdtemp(prefix="rtsip-shards-")) if shards > 1 else None  # short AF_UNIX paths
    if sock_dir is not None:
        handoffs = [sock_dir / f"{i}.sock" for i in range(shards)]
        router = MockProcess(args=["--port", str(mock_port), *map(str, handoffs)], command=("-m", "mock_api.shards"),
                             ready_prefix=ROUTER_READY)
        # the router owns --port; each shard takes a free one and has its own state
        mocks = [MockProcess(args=mock_args(0, f"state-{i}", "--shard", f"{i}/{shards}", "--handoff", str(path)),
                             startup_timeout=60.0) for i, path in enumerate(handoffs)]
    else:
        mocks = [MockProcess(args=mock_args(mock_port, "state"), startup_timeout=60.0)]
    mock = mocks[0]
    app = None
    progress = Progress(plan_, o.progress)
    try:
        progress.phase = "starting the mock" if shards == 1 else f"starting {shards} mocks"
        started = await asyncio.gather(*(m.__aenter__() for m in mocks), return_exceptions=True)
        failed = next((r for r in started if isinstance(r, BaseException)), None)
        if failed is not None:  # every start has settled, so the finally below stops each one that ran
            raise failed
        base_url = mock.base_url
        if router is not None:  # after the shards: their hand-over sockets exist now
            await router.__aenter__()
            base_url = router.ready["url"] + "/v1"
            result.notes.append(f"{shards} mock processes behind one base URL ({router.ready['url']}); calls spread "
                                "by id")
        env = app_env(base_url, mock.webhook_secret, app_port, plan_.scenario.app.env)
        file = Path(plan_.scenario.source or o.scenario)
        cwd = (file.parent / (plan_.scenario.app.cwd or ".")).resolve()
        app = AppProcess(app_argv(plan_.scenario.app.command, app_port), env, cwd)
        await app.start()
        ready = plan_.scenario.app.ready
        await app.wait_ready(port=app_port, http_path=ready.http, log_regex=ready.log, timeout=ready.timeout_s)
        if on_started is not None:
            on_started({"mock": mock.pid, "app": app.pid or 0, "load": os.getpid(),
                        **{f"mock_{i}": m.pid for i, m in enumerate(mocks) if i},
                        **({"mock_router": router.pid} if router is not None else {})})
        with progress:
            progress.phase = "running"
            if plan_.mode == "virtual":
                await _run_virtual(plan_, [m.url for m in mocks], result, progress, stopper,
                                   [m.pid for m in [*mocks, *([router] if router else [])]], app.pid or 0,
                                   token=config.get("control_token"))
            else:
                await _run_sip(plan_, mock, result, progress, stopper, app.pid or 0, run_dir,
                               token=config.get("control_token"))
            if result.placed < o.calls and not result.aborted:
                why = (f"--duration {o.duration:g} s reached" if o.duration else
                       f"the safety time limit ({plan_.stop_placing_s:.0f} s) was reached: calls took longer than "
                       "their steps")
                result.notes.append(f"placed {result.placed} of {o.calls} calls: {why}")
            progress.phase = "done" if not result.aborted else "stopped (Ctrl-C)"
            progress.tick()
    finally:
        if app is not None:
            await app.stop()
            result.app_output = [line for _, line in app.lines][-200:]
        if router is not None:
            await router.stop()
            result.notes.extend(line.strip() for line in router.output if "routed" in line)
        await asyncio.gather(*(m.stop() for m in mocks))
        if sock_dir is not None:
            shutil.rmtree(sock_dir, ignore_errors=True)
        result.mock_output = [line for m in mocks for line in m.output[-200:]]
        result.ended_at = time.time()
    return result


def _mock_config(plan_: Plan, app_port: int) -> dict[str, Any]:
    s = plan_.scenario
    config: dict[str, Any] = {
        "webhook_url": f"http://127.0.0.1:{app_port}{s.app.webhook_path}",
        "faults": [f.model_dump() for f in s.mock.faults],
        "script": s.mock.script.model_dump(exclude_defaults=True),
        "strict_accept": s.mock.strict_accept, "legacy_beta": s.mock.legacy_beta,
        "ring_timeout_s": s.mock.ring_timeout_s or 10.0,
        "retry": {"max_attempts": s.mock.retry_attempts, "initial_delay_s": 0.2, "max_delay_s": 1.0,
                  "timeout_s": 10.0},
        # each driver reads a call's journal right after it ends, so the mock need not keep every
        # ended call: memory stays flat in soaks (about 10 s of ended calls at the offered rate)
        "retain_ended_calls": max(500, math.ceil(plan_.rate * 10)),
        "journal_file": None,  # each driver has read its call; a soak need not write every call to disk
    }
    if plan_.mock_shards > 1:  # every shard signs with the secret the app verifies
        config["webhook_secret"] = new_secret()
    if plan_.options.mock_config is not None:
        extra = yaml.safe_load(plan_.options.mock_config.read_text()) or {}
        if not isinstance(extra, dict):
            raise LoadError(f"--mock-config {plan_.options.mock_config}: expected a mapping of mock settings")
        config.update(extra)
    return config


class _Sampler:
    """CPU and RSS of the mock, the app and the drivers, once per interval."""

    def __init__(self, result: LoadResult, roles: dict[str, list[int]], progress: Progress) -> None:
        self.result, self.roles, self.progress = result, roles, progress
        self.last: dict[str, float] = {}
        self.first: dict[str, float] = {}
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


async def _run_virtual(plan_: Plan, mock_urls: list[str], result: LoadResult, progress: Progress,
                       stopper: Stopper, mock_pids: list[int], app_pid: int, token: str | None = None) -> None:
    o = plan_.options
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop, abort = ctx.Event(), ctx.Event()
    k = plan_.drivers
    t0 = time.time() + 0.5
    spec = plan_.spec.model_dump(by_alias=True, mode="json")
    base = str(Path(plan_.scenario.source or o.scenario).parent.resolve())
    shares = []
    for w in range(k):
        conc = plan_.options.concurrency // k + (1 if w < plan_.options.concurrency % k else 0)
        shares.append(_Share(w, mock_urls[w % len(mock_urls)], list(range(w, o.calls, k)), conc, plan_.rate / k,
                             t0 + w / plan_.rate, t0 + plan_.stop_placing_s, t0 + plan_.hard_stop_s, spec, base,
                             plan_.max_call_s, token))
    procs = [ctx.Process(target=virtual_driver_main, args=(s, out, stop, abort), daemon=True,
                         name=f"rtsip-load-driver-{s.worker}") for s in shares]
    for p in procs:
        p.start()
    sampler = _Sampler(result, {"mock": mock_pids, "app": [app_pid], "load": [os.getpid()]}, progress)
    progress.t0 = t0
    finished: set[int] = set()
    inflight: dict[int, tuple[int, float]] = {}
    last_sample = time.time()
    try:
        while len(finished) < k:
            got = False
            while True:
                try:
                    kind, worker, index, payload = out.get_nowait()
                except queue_mod.Empty:
                    break
                got = True
                if kind == "placed":
                    progress.placed += 1
                    result.placed += 1
                    inflight[index] = (worker, payload)
                elif kind == "done":
                    rec = CallRecord.from_json(payload)
                    inflight.pop(index, None)
                    result.records.append(rec)
                    progress.add(rec)
                elif kind == "finished":
                    finished.add(worker)
            for w, p in enumerate(procs):
                if w not in finished and not p.is_alive() and not got:
                    # a driver that died: its calls in flight are failed, not lost
                    finished.add(w)
                    for index, (ww, started) in list(inflight.items()):
                        if ww == w:
                            result.records.append(CallRecord(index, None, w, started, time.time(), False,
                                                             f"driver process died (rc {p.exitcode})"))
                            inflight.pop(index)
            if stopper.requested.is_set() and not abort.is_set():
                result.aborted = True
                stop.set()
                abort.set()
            if time.time() > t0 + plan_.hard_stop_s + 30:
                result.notes.append("hard time limit reached; drivers killed")
                break
            if time.time() - last_sample >= o.interval:
                last_sample = time.time()
                sampler.take()
            progress.tick()
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        abort.set()
        sampler.finish()
        for p in procs:
            await asyncio.get_running_loop().run_in_executor(None, p.join, 5)
            if p.is_alive():
                p.kill()
                p.join(2)
        for index, (w, started) in inflight.items():  # placed, never reported: count them failed
            result.records.append(CallRecord(index, None, w, started, time.time(), False, "driver gave no result"))
        out.close()


# ---- SIP callers --------------------------------------------------------------------------------------


def _sip_call_error(rec: CallRecord, error: str | None, sip_status: int | None) -> str | None:
    """Why a SIP call failed, once the mock's view and the RTP figures are in: the first reason that applies."""
    if error is not None:
        return error
    if rec.call_id is None:
        return f"SIP {sip_status}" if sip_status not in (None, 200) else "the mock never saw the call"
    if rec.rtp.get("rx_loss"):
        return f"RTP loss ({rec.rtp['rx_loss']} packets)"
    if rec.rtp and not rec.rtp.get("rx_pkt"):
        return "no RTP received by the caller"
    if rec.rtp.get("ingress_rx_loss"):
        return f"RTP loss at the mock's ingress ({rec.rtp['ingress_rx_loss']} packets)"
    return None


async def _run_sip(plan_: Plan, mock: Any, result: LoadResult, progress: Progress, stopper: Stopper,
                   app_pid: int, run_dir: Path, token: str | None = None) -> None:
    from .softphone import Softphone

    o = plan_.options
    control = _Control(mock.url, token)
    _status, body = await control.req("GET", "/_mock/sip")
    contacts = [(int(w["index"]), str(w["contact"])) for w in body.get("workers", []) if w.get("contact")]
    contacts = contacts or [(0, mock.ready["sip"])]
    caps = {w: CALLS_PER_SIP_WORKER - (1 if w == 0 else 0) for w, _ in contacts}
    load = {w: 0 for w, _ in contacts}
    run_id = uuid.uuid4().hex[:8]
    log = await asyncio.to_thread(open, run_dir / "softphone.log", "a")
    phone = Softphone(ca=mock.ready["ca"], workers=plan_.phone_workers, state_dir=run_dir / "phone", record=False,
                      frame_ms=SIP_LOAD_CALLER_FRAME_MS, media=SIP_LOAD_MEDIA,
                      stderr=log)
    sem = asyncio.Semaphore(o.concurrency)
    t0 = time.time() + 0.5
    pacer = _Pacer(plan_.rate, t0)
    tasks: set[asyncio.Task[None]] = set()
    resolver = _SipResolver(control)
    sampler = _Sampler(result, {"mock": [mock.pid], "app": [app_pid], "load": [os.getpid()]}, progress)
    progress.t0 = t0
    spec = plan_.spec
    base = Path(plan_.scenario.source or o.scenario).parent.resolve()

    def _free_slot(worker: int) -> None:
        load[worker] -= 1

    async def one(index: int, worker: int, uri: str, number: str) -> None:
        rec = CallRecord(index=index, worker=worker, start=time.time())
        marker = f"{run_id}-{index}"
        error: str | None = None
        call = None
        try:
            async with asyncio.timeout(plan_.max_call_s + 30):
                call = await phone.call(uri, headers={**spec.headers, "X-Rtsip-Load": marker}, record=False,
                                        prefer_worker=worker % plan_.phone_workers, from_uri=f"tel:{number}",
                                        display_name=spec.display_name)
                if await call.answered(timeout=20):
                    await _sip_steps(call, spec, base, resolver, marker)
                    with contextlib.suppress(Exception):
                        st = await call.stats()
                        rec.rtp = {k: int(v) for k, v in st.items() if isinstance(v, int | float)}
                    await call.hangup()
                await call.ended(timeout=15)
        except asyncio.CancelledError:
            error = "aborted (Ctrl-C or hard time limit)"
            if call is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup(), 5)
        except Exception as exc:
            error = f"driver: {type(exc).__name__}: {str(exc)[:160]}"
        finally:
            # the ingress worker frees its slot a little after our side has ended
            asyncio.get_running_loop().call_later(1.0, _free_slot, worker)
        sip_status = call.final_status if call is not None else None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                call_id = await resolver.find(marker, timeout=5)
                if call_id is not None:
                    rec.call_id = call_id
                    await asyncio.sleep(SETTLE_S)
                    view = await control.view(call_id)
                    rec.metrics = extract(view)
                    rec.state = view.state
                    rec.turns = len(rec.metrics.get("speech_end_to_audio_ms", []))
                    error = error or failure(view, sip_status=sip_status)
                    rec.rtp.update(ingress_rtp(view))
        error = _sip_call_error(rec, error, sip_status)
        rec.ok, rec.reason, rec.end = error is None, error, time.time()
        result.records.append(rec)
        progress.add(rec)

    async def watch() -> None:
        while True:
            if time.time() - sampler.result.samples[-1]["t"] >= o.interval:
                sampler.take()
            progress.tick()
            if stopper.requested.is_set() and not result.aborted:
                result.aborted = True
                for t in list(tasks):
                    t.cancel()
            if time.time() > t0 + plan_.hard_stop_s:
                result.notes.append("hard time limit reached; calls cut off")
                for t in list(tasks):
                    t.cancel()
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    numbers = plan_.caller_numbers()
    try:
        await phone.start()
        for index in range(o.calls):
            await sem.acquire()
            await pacer.wait()
            if stopper.requested.is_set() or time.time() > t0 + plan_.stop_placing_s:
                sem.release()
                break
            # fill one ingress worker before the next and place its calls from one softphone worker: the RTP
            # between two processes then wakes each of them once per packet time for all their calls
            # (bench_sip: crossing every caller process with every ingress process cost ~40 % more RTP CPU)
            room = [w for w in load if load[w] < caps[w]]
            worker = max(room, key=lambda w: (load[w], -w)) if room else min(load, key=lambda w: load[w])
            load[worker] += 1
            uri = dict(contacts)[worker]
            progress.placed += 1
            result.placed += 1
            task = asyncio.create_task(one(index, worker, uri, next(numbers)))
            tasks.add(task)
            task.add_done_callback(_releaser(tasks, sem))
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        sampler.finish()
        await phone.close()
        log.close()
        await control.close()


class _SipResolver:
    """Maps our INVITE marker header to the mock's call_id, with one list request for many waiters."""

    def __init__(self, control: _Control) -> None:
        self.control = control
        self.known: dict[str, str] = {}
        self.lock = asyncio.Lock()
        self.fetched = 0.0

    async def find(self, marker: str, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        while True:
            if marker in self.known:
                return self.known[marker]
            async with self.lock:
                if marker not in self.known and time.monotonic() - self.fetched > 0.25:
                    _status, body = await self.control.req("GET", "/_mock/calls?entries=0")
                    self.fetched = time.monotonic()
                    for c in body.get("calls", []):
                        for h in c.get("sip_headers", []):
                            if h.get("name", "").lower() == "x-rtsip-load":
                                self.known[h["value"]] = c["call_id"]
            if marker in self.known:
                return self.known[marker]
            if time.monotonic() > end:
                return None
            await asyncio.sleep(0.25)


async def _sip_steps(call: Any, spec: CallSpec, base: Path, resolver: _SipResolver, marker: str) -> None:
    from mock_api import audio

    deadline = time.monotonic() + spec.max_duration_s
    waits: dict[str, int] = {}
    for step in spec.steps:
        left = deadline - time.monotonic()
        if left <= 0 or call.is_ended:
            return
        if step.hangup:
            return
        if step.pause_ms is not None:
            await asyncio.sleep(min(step.pause_ms / 1000, left))
        elif step.dtmf is not None:
            await call.send_dtmf(step.dtmf)
        elif step.say is not None or step.barge_in is not None:
            path = resolve_audio(step.say or step.barge_in or "", base)
            await call.play(path)
            ms = audio.duration_ms(audio.load_audio(path, 8000), 8000)
            await asyncio.sleep(min(left, (ms + TRAILING_SILENCE_MS) / 1000))
        elif step.wait_for is not None:
            waits[step.wait_for] = waits.get(step.wait_for, 0) + 1
            call_id = await resolver.find(marker, timeout=min(left, 10))
            if call_id is None or not await _poll(resolver.control, call_id, step.wait_for, waits[step.wait_for],
                                                  deadline - time.monotonic()):
                return


# ---- the whole thing, for the CLI --------------------------------------------------------------------


def run(options: LoadOptions) -> tuple[LoadResult | None, int]:
    """Plan (bad input → message, exit 2), run with Ctrl-C handling, print and write the reports."""
    from rich.console import Console

    console = Console(stderr=True)
    try:
        p = plan(options)
    except LoadError as exc:
        console.print(f"[red]rtsip load: {exc}[/]", highlight=False)
        return None, 2
    for n in p.notes:
        console.print(f"note: {n}")

    async def main() -> LoadResult:
        stopper = Stopper()
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()

        def on_signal() -> None:
            stopper()
            if stopper.count >= 2 and current is not None:
                current.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        return await run_load(p, stopper)

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        console.print("[red]rtsip load: stopped[/]")
        return None, 130
    except Exception as exc:
        console.print(f"[red]rtsip load: {type(exc).__name__}: {exc}[/]", highlight=False)
        return None, 1
    print_summary(result, Console())
    written = write_reports(result, csv_path=options.csv, json_path=options.json, html_path=options.html)
    for path in written:
        console.print(f"wrote {path}")
    if result.aborted:
        return result, 130
    lost = result.placed - len(result.records)
    return result, 0 if result.failed == 0 and lost == 0 else 1


def records_json(result: LoadResult) -> str:
    return json.dumps([r.to_json() for r in result.records])
