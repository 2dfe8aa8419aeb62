"""``rtsip load --mode virtual``: virtual callers placed through the mock's control API.

K driver processes (``spawn``) each place a share of the calls (:class:`_Share`) and send each
call's record back over a queue; :func:`_run_virtual`, in the load process, starts them, gathers
the records and counts the calls of a driver that died as failed. The control API client, the
pacing and the journal polling at the top are shared with sip mode (:mod:`harness.load_sip`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .control_walk import run_async, virtual_call
from .load_metrics import CallRecord, extract, failure
from .load_plan import SETTLE_S, Plan
from .load_progress import LoadResult, Progress, Stopper, _Sampler
from .scenario import CallSpec

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


class _Inflight:
    """The calls in flight, each holding one of ``limit`` slots until its task ends, however it ends."""

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, call: Coroutine[Any, Any, None]) -> None:
        """Run ``call`` in a slot taken with ``slots.acquire()``; the slot is freed when it ends."""
        task = asyncio.create_task(call)
        self.tasks.add(task)
        task.add_done_callback(self._release)

    def _release(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()

    def cancel(self) -> None:
        for t in list(self.tasks):
            t.cancel()

    async def drain(self) -> None:
        """Until every call has ended (a call's own failure is in its record, not raised here)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


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
    inflight = _Inflight(share.concurrency)
    pacer = _Pacer(share.rate, share.start_at)
    aborted = asyncio.Event()

    async def watch() -> None:
        while not aborted.is_set():
            if abort.is_set() or time.time() > share.hard_stop_at:
                aborted.set()
                inflight.cancel()
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        for i in share.indices:
            await inflight.slots.acquire()
            await pacer.wait()
            if stop.is_set() or aborted.is_set() or time.time() > share.stop_placing_at:
                inflight.slots.release()
                break
            out.put(("placed", share.worker, i, time.time()))
            inflight.start(_virtual_call(control, spec, Path(share.base), i, share, out))
        await inflight.drain()
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
            await run_async(virtual_call(spec.steps, spec.max_duration_s, rec.call_id, base, spec.speed),
                            control.req)
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


# ---- virtual callers: the load process's side ---------------------------------------------------------


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
