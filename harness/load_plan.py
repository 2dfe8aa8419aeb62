"""``rtsip load``, before anything starts: the options, the checks on them, and the sizing of the run.

:func:`plan` turns :class:`LoadOptions` into a :class:`Plan` (driver and SIP worker processes, start
rate, time limits, file descriptors) or a :class:`LoadError` saying what to change, so a run that
cannot work on this machine is refused before a call is placed. The sizing constants live here
because the planner and the callers (:mod:`harness.load_locust`, :mod:`harness.load_sip`) share them.

"pjsua2 wheel item N" cites docs/architecture.md, 'What the pjsua2 wheel imposes'.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml
from faker import Faker

from mock_api.shards import MAX_SHARDS
from sipworker import sip_available, sip_missing
from sipworker.ports import RTP_SPAN, NoFreePorts, port_taken, rtp_base

from .caller_steps import TRAILING_SILENCE_MS
from .scenario import CallSpec, Scenario, ScenarioError, load_scenario, resolve_audio

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
    processes: int | None = None  # Locust workers forked for virtual calls (default: one per 1,000 in flight)
    mock_processes: int = 1  # mock shards for virtual calls (mock_api.shards), behind one base URL
    port: int = 0  # the mock's HTTP port (0: a free one)
    sip_port: int = 0
    app_port: int = 0
    mock_config: Path | None = None  # extra mock settings (YAML/JSON), merged over the scenario's
    run_dir: Path | None = None
    progress: bool = True
    master: bool = False  # virtual: Locust's master here, its workers `rtsip load --worker` processes
    master_bind: str = "127.0.0.1:0"  # HOST:PORT the master listens on (port 0: a free one)
    expect_workers: int = 1  # with master: start once this many workers have connected
    web: bool = False  # virtual: serve Locust's web UI while the run goes
    web_port: int = 0  # 0: a free one


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
        return caller_numbers(self.scenario.seed)


# ---- bad input -------------------------------------------------------------------------------------


def sip_needs(scenario: Scenario) -> list[str]:
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


def caller_numbers(seed: int | None) -> Iterator[str]:
    """Distinct E.164 numbers (+1 NXX NXX XXXX) from ``seed``, the same on every run with that seed."""
    fake = Faker()
    fake.seed_instance(seed)
    seen: set[str] = set()
    while True:
        number = f"+1{fake.random_int(2, 9)}{fake.numerify('##')}{fake.random_int(2, 9)}{fake.numerify('######')}"
        if number not in seen:
            seen.add(number)
            yield number


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
    _check_locust(o)
    if o.master:
        drivers = o.expect_workers
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
        needs = sip_needs(scenario)
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
    return min(drivers, o.concurrency), o.rate


def master_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``--master-bind``, ``--worker``) as a pair; LoadError when it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise LoadError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:5557)")
    return host, int(port)


def _check_locust(o: LoadOptions) -> None:
    """The Locust flags of a virtual run (harness.load_locust)."""
    if not o.master:
        return
    if o.processes is not None:
        raise LoadError("--processes forks Locust workers here; with --master the workers are `rtsip load "
                        "--worker` processes: give one or the other")
    if o.expect_workers < 1:
        raise LoadError(f"--expect-workers must be at least 1 (got {o.expect_workers})")
    if o.expect_workers > o.concurrency:
        raise LoadError(f"--expect-workers {o.expect_workers} is more than --concurrency {o.concurrency}: "
                        "some workers would never have a user")
    try:
        master_address(o.master_bind)
    except LoadError as exc:
        raise LoadError(f"--master-bind: {exc}") from None


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
