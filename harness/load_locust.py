"""``rtsip load``'s callers on Locust's engine.

The callers are :class:`harness.locust_users.VirtualCaller` users (``--mode sip``: ``SipCaller``, each
Locust process with a softphone pool of its own) of one ``locust`` process run headless by the load
process (``--processes K`` forks Locust's own workers when the plan wants more than one core;
``--master`` waits for workers started elsewhere with ``rtsip load --worker``). Locust spawns the
users, spreads them over its workers and keeps its own statistics, CSV and HTML (in the run directory);
the budget of calls and their pacing are the master's (:mod:`harness.locust_core`, rules 2, 7 and 9).

This process decides nothing about the calls: it starts Locust, reads back each call's record from the
records file the master writes, feeds the progress display and the CPU sampler, and on Ctrl-C or the
hard time limit stops Locust's process group. A call placed and never reported back (a worker killed,
the run cut off) is counted failed, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mock_api.client import TOKEN_ENV
from mock_api.subprocesses import stop_group

from .load_metrics import CallRecord
from .load_plan import Plan
from .load_progress import LoadResult, Progress, Stopper, _Sampler

LOCUSTFILE = Path(__file__).with_name("locustfile.py")  # VirtualCaller
SIP_LOCUSTFILE = Path(__file__).with_name("locustfile_sip.py")  # SipCaller
STOP_GRACE_S = 5.0  # Locust's own shutdown (stats, CSV) before its group is killed
AFTER_HARD_STOP_S = 30.0


@dataclass(frozen=True)
class Distribution:
    """Where Locust's workers come from: forked here (``processes``), or ``expect_workers`` that connect to
    a master bound at ``bind`` (``rtsip load --master``); ``web_port`` serves Locust's UI (0: none)."""

    processes: int = 1
    master: bool = False
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    expect_workers: int = 0
    web_port: int = 0


def locust_argv(plan_: Plan, mock_urls: list[str], records: Path, run_dir: Path, dist: Distribution) -> list[str]:
    """The ``locust`` command line of one run (the mock's URL first; its shards' URLs in turn)."""
    o = plan_.options
    locustfile = SIP_LOCUSTFILE if plan_.mode == "sip" else LOCUSTFILE
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", mock_urls[0],
            "-u", str(o.concurrency), "-r", str(plan_.rate), "--run-time", f"{int(plan_.hard_stop_s) + 1}s",
            "--stop-timeout", "10", "--csv", str(run_dir / "locust"), "--html", str(run_dir / "locust.html"),
            "--only-summary", "--loglevel", "INFO",
            "--rtsip-scenario", str(o.scenario), "--rtsip-calls", str(o.calls), "--rtsip-rate", str(plan_.rate),
            "--rtsip-duration", str(o.duration or 0), "--rtsip-mocks", ",".join(mock_urls),
            "--rtsip-mock-has-scenario", "--rtsip-records", str(records), "--rtsip-mode", plan_.mode]
    if dist.web_port:
        argv += ["--autostart", "--autoquit", "0", "--web-host", "127.0.0.1", "--web-port", str(dist.web_port)]
    else:
        argv += ["--headless"]
    if dist.master:
        argv += ["--master", "--master-bind-host", dist.bind_host, "--master-bind-port", str(dist.bind_port),
                 "--expect-workers", str(dist.expect_workers), "--expect-workers-max-wait", "120"]
    elif dist.processes > 1:  # Locust's master here, its workers forked; the port from the OS, on loopback
        argv += ["--processes", str(dist.processes), "--master-bind-host", "127.0.0.1",
                 "--master-bind-port", str(dist.bind_port), "--master-host", "127.0.0.1",
                 "--master-port", str(dist.bind_port)]
    return argv


class _Tail:
    """The complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos, self.rest = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        *whole, self.rest = (self.rest + data).split(b"\n")
        return [line.decode() for line in whole if line.strip()]


async def run_callers(plan_: Plan, mock_urls: list[str], result: LoadResult, progress: Progress, stopper: Stopper,
                      mock_pids: list[int], app_pid: int, run_dir: Path, dist: Distribution,
                      token: str | None = None) -> None:
    """Run Locust until every call is back (or Ctrl-C, or the hard limit); every placed call gets a record."""
    o = plan_.options
    records = run_dir / "locust-records.jsonl"
    records.write_text("")
    env = dict(os.environ)
    if token:
        env[TOKEN_ENV] = token
    log = (run_dir / "locust.log").open("wb")
    t0 = time.time()
    proc = await asyncio.create_subprocess_exec(
        *locust_argv(plan_, mock_urls, records, run_dir, dist), stdin=asyncio.subprocess.DEVNULL, stdout=log,
        stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    sampler = _Sampler(result, {"mock": mock_pids, "app": [app_pid], "load": [os.getpid()]}, progress)
    progress.t0 = t0
    tail = _Tail(records)
    inflight: dict[int, float] = {}
    last_sample = time.time()
    try:  # from here on, however this ends (Ctrl-C twice cancels it), Locust's group is stopped
        await _announce(dist, proc, result, progress, stopper)
        while proc.returncode is None:
            _read(tail, result, progress, inflight)
            if stopper.requested.is_set() and not result.aborted:
                result.aborted = True
                await stop_group(proc, None, STOP_GRACE_S)
            if time.time() > t0 + plan_.hard_stop_s + AFTER_HARD_STOP_S:
                result.notes.append("hard time limit reached; Locust stopped")
                await stop_group(proc, None, STOP_GRACE_S)
            if time.time() - last_sample >= o.interval:
                last_sample = time.time()
                sampler.take()
            progress.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.1)
    finally:
        await stop_group(proc, None, STOP_GRACE_S)
        sampler.finish()
        _read(tail, result, progress, inflight)
        why = ("aborted (Ctrl-C or hard time limit)" if result.aborted
               else f"driver gave no result (Locust rc {proc.returncode})")
        for index, started in inflight.items():  # placed, never reported: failed, not lost
            result.records.append(CallRecord(index, None, 0, started, time.time(), False, why))
    if proc.returncode not in (0, 1) and not result.aborted:  # 1: some calls failed, which the records say
        refused = [line for line in (run_dir / "locust.log").read_text(errors="replace").splitlines()
                   if line.startswith("rtsip: ")]
        if refused and not result.placed:  # the users' own check (locust_core rule 5): rtsip load's bug
            raise RuntimeError(f"Locust refused the run: {refused[-1].removeprefix('rtsip: ')}")
        result.notes.append(f"Locust ended with rc {proc.returncode}: see {run_dir / 'locust.log'}")
    if result.placed < o.calls and not result.aborted:
        why, result.cut_short = why_short(plan_, run_dir, t0, proc.returncode)
        result.notes.append(f"placed {result.placed} of {o.calls} calls: {why}")


def why_short(plan_: Plan, run_dir: Path, t0: float, rc: int | None) -> tuple[str, bool]:
    """Why Locust stopped placing calls before the budget was spent, and whether that cut the run short (its
    own error, before the clock said stop) rather than the run's clock (``--duration``, the safety limit)."""
    o, elapsed = plan_.options, time.time() - t0
    if o.duration and elapsed >= o.duration:
        return f"--duration {o.duration:g} s reached", False
    errors = [line.split(": ", 1)[-1] for line in (run_dir / "locust.log").read_text(errors="replace").splitlines()
              if "/ERROR/" in line or "/CRITICAL/" in line]
    if rc and errors:  # Locust's own reason first: a master left without workers waited past every clock
        return f"Locust stopped early ({errors[-1]}; see {run_dir / 'locust.log'})", True
    if elapsed >= plan_.stop_placing_s:
        return (f"the safety time limit ({plan_.stop_placing_s:.0f} s) was reached: calls took longer than "
                "their steps", False)
    return f"Locust stopped early (rc {rc}, no error logged; see {run_dir / 'locust.log'})", True


async def _announce(dist: Distribution, proc: asyncio.subprocess.Process, result: LoadResult, progress: Progress,
                    stopper: Stopper) -> None:
    """Say where Locust's UI and master are, each once it answers there: a worker started on the master's
    line finds it (its own check refuses an address nobody answers)."""
    if dist.web_port:
        result.notes.append(f"Locust's web UI: http://127.0.0.1:{dist.web_port}/")
        if await wait_listening("127.0.0.1", dist.web_port, proc, stopper.requested):
            print(f"rtsip load: Locust's web UI at http://127.0.0.1:{dist.web_port}/", file=sys.stderr, flush=True)
    if dist.master:
        where = f"{dist.bind_host}:{dist.bind_port}"
        progress.phase = f"waiting for {dist.expect_workers} Locust workers (rtsip load --worker {where})"
        if await wait_listening(dist.bind_host, dist.bind_port, proc, stopper.requested):
            print(f"rtsip load: Locust master at {where}: start workers with `rtsip load --worker {where}`",
                  file=sys.stderr, flush=True)


async def wait_listening(host: str, port: int, proc: asyncio.subprocess.Process,
                         stop: asyncio.Event | None = None) -> bool:
    """Whether ``proc`` came to accept connections on ``host:port``: False once it ended, or ``stop`` was set
    (Ctrl-C: the caller's loop stops it)."""
    while proc.returncode is None and not (stop is not None and stop.is_set()):
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.1)  # not up yet: ask again, unless it ended
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def _read(tail: _Tail, result: LoadResult, progress: Progress, inflight: dict[int, float]) -> None:
    for line in tail.lines():
        event = json.loads(line)
        index = int(event["index"])
        if event["kind"] == "placed":
            progress.placed += 1
            result.placed += 1
            inflight[index] = float(event["t"])
        elif event["kind"] == "done" and index in inflight:
            inflight.pop(index)
            rec = CallRecord.from_json(event["record"])
            result.records.append(rec)
            progress.add(rec)
