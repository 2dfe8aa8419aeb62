"""``rtsip load``: many calls from one scenario against the app under test, with journal-based metrics.

The pieces, each in its own process so their CPU is measurable and one saturated core does
not hide another:

* the mock: ``rtsip mock`` as a child process (:class:`~harness.mock_process.MockProcess`),
  with its SIP ingress pool sized from ``--concurrency`` in sip mode;
* the app under test: started like the runner does (:class:`~harness.app_process.AppProcess`);
* the callers: Locust users (:mod:`harness.load_locust`: one ``locust`` process, run headless,
  forking K workers of its own or waiting for ``rtsip load --worker`` ones): virtual callers, each
  call placed through the control API; or, with ``--mode sip``, SIP callers dialling the ingress
  workers' contact URIs from a softphone pool (4 calls per worker process) next to each Locust process.

Every call is accounted for: each one placed ends as completed or failed (with a reason read
from its journal), and the run stops by itself at ``--calls`` or ``--duration``.

This module starts the pieces and runs the whole thing (:func:`run_load`, :func:`run`); the rest
lives beside it, and every public name is still importable from here:

* :mod:`harness.load_plan`: the options, their checks and the sizing (:func:`plan`, :class:`Plan`);
* :mod:`harness.load_progress`: the result, live progress, Ctrl-C and the CPU/RSS sampler;
* :mod:`harness.load_locust`: the callers on Locust's engine (the users: :mod:`harness.locust_users`);
* :mod:`harness.load_sip`: what a SIP caller does (:class:`~harness.load_sip.SipDialer`) and the ingress slots;
* :mod:`harness.load_metrics` and :mod:`harness.load_report`: each call's figures and the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mock_api.webhooks import new_secret

from .load_locust import Distribution, run_callers
from .load_plan import (
    CALLS_PER_SIP_WORKER,
    FD_BASE,
    FDS_PER_CALL,
    SIP_LOAD_CALLER_FRAME_MS,
    SIP_LOAD_INGRESS_FRAME_MS,
    SIP_LOAD_MEDIA,
    SIP_MAX_PER_CORE,
    SIP_RATE_PER_WORKER,
    SIP_WORKER_RSS_MB,
    TRAILING_SILENCE_MS,
    VIRTUAL_CALLS_PER_DRIVER,
    VIRTUAL_MAX_PER_CORE,
    VIRTUAL_RATE_PER_CORE,
    LoadError,
    LoadOptions,
    Plan,
    estimate_call_s,
    fd_limit_check,
    master_address,
    plan,
)
from .load_progress import LoadResult, Progress, Stopper, descendants, proc_cpu_rss
from .load_report import print_summary, write_reports
from .scenario import SURFACE_EVENTS

__all__ = [
    "CALLS_PER_SIP_WORKER", "FDS_PER_CALL", "FD_BASE", "SIP_LOAD_CALLER_FRAME_MS",
    "SIP_LOAD_INGRESS_FRAME_MS", "SIP_LOAD_MEDIA", "SIP_MAX_PER_CORE", "SIP_RATE_PER_WORKER", "SIP_WORKER_RSS_MB",
    "TRAILING_SILENCE_MS", "VIRTUAL_CALLS_PER_DRIVER", "VIRTUAL_MAX_PER_CORE", "VIRTUAL_RATE_PER_CORE",
    "LoadError", "LoadOptions", "LoadResult", "Plan", "Progress", "Stopper", "descendants", "estimate_call_s",
    "fd_limit_check", "plan", "proc_cpu_rss", "records_json", "run", "run_load",
]


# ---- the run ------------------------------------------------------------------------------------------


async def run_load(plan_: Plan, stopper: Stopper | None = None,
                   on_started: Callable[[dict[str, int]], None] | None = None) -> LoadResult:
    """Start the mock and the app, place the calls, collect every call's record; always tears down."""
    from .app_process import AppProcess, app_argv, app_env
    from .commands.shards import running_shards
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

    def mock_args(state: str) -> list[str]:
        return ["--config", str(cfg_path), "--state-dir", str(run_dir / state), *sip]

    shards = plan_.mock_shards
    mocks: list[MockProcess] = []
    app = None
    progress = Progress(plan_, o.progress)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_after_mocks, result, mocks)  # runs last: every mock has stopped
        progress.phase = "starting the mock" if shards == 1 else f"starting {shards} mocks and haproxy"
        proxy = None
        if shards > 1:  # the mocks behind HAProxy (mock_api.shards), which owns --port
            running = await stack.enter_async_context(running_shards(
                shards, run_dir, lambda i: mock_args(f"state-{i}"), listen_port=mock_port))
            mocks.extend(running.mocks)
            proxy = running.proxy
            stack.push_async_callback(_proxy_counts, result, proxy)  # once the app has stopped, before the proxy
            base_url = proxy.base_url
            result.notes.append(f"{shards} mock processes behind haproxy ({proxy.url}); calls routed by id")
        else:
            mocks.append(await stack.enter_async_context(
                MockProcess(args=["--port", str(mock_port), *mock_args("state")], startup_timeout=60.0)))
            base_url = mocks[0].base_url
        mock = mocks[0]
        try:
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
                            **({"mock_proxy": proxy.pid} if proxy is not None else {})})
            with progress:
                progress.phase = "running"
                await run_callers(plan_, [m.url for m in mocks], result, progress, stopper,
                                  [m.pid for m in mocks] + ([proxy.pid] if proxy is not None else []),
                                  app.pid or 0, run_dir, _distribution(plan_), token=config.get("control_token"))
                progress.phase = "done" if not result.aborted else "stopped (Ctrl-C)"
                progress.tick()
        finally:
            if app is not None:
                await app.stop()
                result.app_output = [line for _, line in app.lines][-200:]
    return result


def _distribution(plan_: Plan) -> Distribution:
    """Where this run's Locust workers come from, with the ports it needs taken from the OS."""
    from mock_api.running import free_port

    o = plan_.options
    host, port = master_address(o.master_bind) if o.master else ("127.0.0.1", 0)
    needs_port = o.master or plan_.drivers > 1
    return Distribution(processes=plan_.drivers, master=o.master, bind_host=host,
                        bind_port=(port or free_port()) if needs_port else 0, expect_workers=o.expect_workers,
                        web_port=(o.web_port or free_port()) if o.web else 0)


async def _proxy_counts(result: LoadResult, proxy: Any) -> None:
    """The proxy's own counts per shard, as a note."""
    counts = await proxy.stats()
    if counts is not None:
        result.notes.append(counts.note())


def _after_mocks(result: LoadResult, mocks: list[Any]) -> None:
    result.mock_output = [line for m in mocks for line in m.output[-200:]]
    result.ended_at = time.time()


def _mock_config(plan_: Plan, app_port: int) -> dict[str, Any]:
    s = plan_.scenario
    config: dict[str, Any] = {
        "webhook_url": f"http://127.0.0.1:{app_port}{s.app.webhook_path}",
        "webhook_events": SURFACE_EVENTS[s.surface],  # a Live scenario's app takes live.transport.incoming
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


# ---- the whole thing, for the CLI --------------------------------------------------------------------


def run(options: LoadOptions) -> tuple[LoadResult | None, int]:
    """Plan (bad input → message, exit 2), run with Ctrl-C handling, print and write the reports."""
    from rich.console import Console

    console = Console(stderr=True)
    try:
        p = plan(options)
        if p.mock_shards > 1:  # the shards' proxy: not installed is bad input, said before anything starts
            _require_haproxy()
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
    return result, 0 if result.failed == 0 and lost == 0 and result.unplaced == 0 else 1


def _require_haproxy() -> None:
    from mock_api.shards import ProxyUnavailable, haproxy_path

    try:
        haproxy_path()
    except ProxyUnavailable as exc:
        raise LoadError(f"--mock-processes: {exc}") from None


def records_json(result: LoadResult) -> str:
    return json.dumps([r.to_json() for r in result.records])
