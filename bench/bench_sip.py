"""Benchmark: the full rtsip SIP stack vs bare pjsua2 vs SIPp, in one run on this machine.

Stacks (``--stacks full,bare,sipp``; each concurrency step runs every selected stack):

* ``full``: Softphone pool → the mock's SIP ingress pool (``running_mock(sip=...)``), TLS, PCMU,
  two-way audio.  Calls are spread over the ingress workers' contact URIs (4 per worker); an
  in-process app verifies each webhook with the SDK, accepts and opens
  ``client.realtime.connect(call_id=...)``; the caller plays a speech fixture then quiet noise,
  the script answers with a reply that the ingress streams back for the whole window.  The window
  opens as the first reply starts and holds each reply whole, its generation (8x realtime, the
  mock's default) and its playback: the duty cycle of a model that talks all the time.  Callers
  are placed from the softphone worker paired with their ingress worker, as ``rtsip load`` does.
  Media as ``rtsip load --mode sip`` runs it: native frame ports, the callers taking received audio
  every 200 ms, the ingress every 60 ms (RTP stays 20 ms packets).
  CPU = softphone workers + ingress workers + this process (mock + app) over the steady window.
* ``bare``: ``bench/bare_pjsua2.py`` UAS/UAC process pairs (looped WAV both ways, no recorder, no
  Python frame callbacks, TCP_NODELAY set).
* ``sipp``: Debian ``sip-tester`` over TCP (no TLS in that build): concurrency with
  ``bench/sipp/uac_rtp.xml`` (looped PCMU ``rtp_stream``) against ``-sn uas -rtp_echo``, and a
  signalling-only setup-rate run ``-sn uac`` → ``-sn uas``.

Plus, per stack, a setup-rate run (INVITE → 200 p50/p95 and sustained calls/s).  ``--stacks
testuas`` runs the older softphone ↔ ``TestUas`` measurements below:

* ``hold``: P softphone workers and P answering workers carry 4·P concurrent TLS calls with
  two-way audio (both sides play speech-like noise).  After a steady window we read RTP stats
  per call and CPU per process (psutil).  Pass = every call confirmed, RTP both ways, 0 loss.
* ``rate``: calls placed back to back (≤ 4 outstanding per softphone worker, paced below the
  40 calls/s per process that the wheel tolerates: docs/architecture.md, 'What the pjsua2
  wheel imposes', item 4), BYE right after the answer; setup time = INVITE → 200 OK.

    python bench/bench_sip.py --pairs 1,2,4 --hold 10 --rate-calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # G.711 for the SIPp WAV (3.11; the project pins it)
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiohttp import web
from openai import AsyncOpenAI
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_fixtures import fixture
from harness.load import SIP_LOAD_CALLER_FRAME_MS, SIP_LOAD_INGRESS_FRAME_MS, SIP_LOAD_MEDIA
from harness.softphone import Softphone, SoftphoneCall
from mock_api.audio import load_audio, write_wav
from mock_api.certs import ensure_certs
from mock_api.config import MockConfig
from mock_api.running import RunningMock, SipOptions, running_mock
from sipworker import sip_available, sip_missing
from sipworker.ports import free_range, rtp_base
from sipworker.testing import Action, TestUas

HERE = Path(__file__).resolve().parent
PY = sys.executable

BARE_RTP_SPAN = 100  # RTP ports per bare_pjsua2.py process (its portRange)


def proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of one process; 0 once it is gone."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def box_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole box since boot; idle and I/O wait are not busy."""
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def noise_wav(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    x = np.convolve(rng.normal(0, 1, n), np.ones(3) / 3, mode="same")
    x *= 0.55 + 0.45 * np.sin(2 * np.pi * 3 * np.arange(n) / 8000)
    return write_wav(path, (x / np.max(np.abs(x)) * 9000).astype("<i2").tobytes(), 8000)


def pids(pool: Any) -> list[int]:
    return [w.pid for w in pool.workers if w.pid]


async def hold(pairs: int, seconds: float, tmp: Path) -> dict[str, Any]:
    n_calls = 4 * pairs
    audio = noise_wav(tmp / "hold.wav", seconds + 10, seed=3)
    async with (
        TestUas(
            tmp / f"uas{pairs}", certs=ensure_certs(tmp / f"uas{pairs}"), workers=pairs,
            policy=lambda c: Action(play=[str(audio)], record=False),
        ) as uas,
        Softphone(ca=uas.certs.ca, workers=pairs, state_dir=tmp / f"ph{pairs}", record=False) as phone,
    ):
        t0 = time.monotonic()
        calls: list[SoftphoneCall] = []
        for i in range(n_calls):
            target = i % pairs
            calls.append(await phone.call(uas.uri("proj_bench", worker=target), audio=[audio]))
        answered = await asyncio.gather(*(c.answered(30) for c in calls))
        setup_ms = sorted(c.marks.get("answered", 0) for c in calls)
        all_up = time.monotonic() - t0
        await asyncio.sleep(2.0)  # let jitter buffers settle before the window
        procs = pids(uas.pool) + pids(phone.pool)
        cpu0 = {p: proc_cpu_s(p) for p in procs}
        b0 = box_busy()
        w0 = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - w0
        b1 = box_busy()
        cpu = {p: proc_cpu_s(p) - cpu0[p] for p in procs}
        stats = await asyncio.gather(*(c.stats() for c in calls if not c.is_ended))
        uas_stats: list[dict[str, Any]] = []
        for w in range(pairs):
            res = await uas.pool.command(w, "stats")
            uas_stats.extend(res.get("calls", {}).values())
        for c in calls:
            await c.hangup()
        await asyncio.gather(*(c.ended(10) for c in calls), return_exceptions=True)
    both = stats + uas_stats
    cpu_total = sum(cpu.values()) / wall * 100
    return {
        "pairs": pairs,
        "processes": 2 * pairs,
        "concurrent_calls": n_calls,
        "confirmed": sum(answered),
        "rtp_both_ways": sum(1 for s in stats if s.get("rx_pkt", 0) > 0 and s.get("tx_pkt", 0) > 0),
        "uas_rtp_both_ways": sum(1 for s in uas_stats if s.get("rx_pkt", 0) > 0 and s.get("tx_pkt", 0) > 0),
        "rtp_loss": sum(int(s.get("rx_loss", 0)) for s in both),
        "max_mean_jitter_ms": round(max((s.get("rx_jitter_mean_us", 0) for s in both), default=0) / 1000, 2),
        "setup_p50_ms": setup_ms[len(setup_ms) // 2] if setup_ms else None,
        "setup_max_ms": setup_ms[-1] if setup_ms else None,
        "all_up_s": round(all_up, 2),
        "cpu_sum_pct_of_core": round(cpu_total, 1),
        "cpu_per_call_pct_of_core": round(cpu_total / n_calls, 2),
        "box_busy_pct": round((b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]) * 100, 1),
    }


async def rate(workers: int, total: int, per_proc_cps: float, tmp: Path) -> dict[str, Any]:
    async with (
        TestUas(tmp / "uas-rate", certs=ensure_certs(tmp / "uas-rate"), workers=workers,
                policy=lambda c: Action(record=False)) as uas,
        Softphone(ca=uas.certs.ca, workers=workers, state_dir=tmp / "ph-rate", record=False) as phone,
    ):
        sem = asyncio.Semaphore(4 * workers)
        setups: list[int] = []
        failed = 0
        interval = 1.0 / (per_proc_cps * workers)

        async def one(i: int) -> None:
            nonlocal failed
            async with sem:
                try:
                    call = await phone.call(uas.uri("proj_rate", worker=i % workers))
                    ok = await call.answered(10)
                    if ok:
                        setups.append(call.marks["answered"])
                    else:
                        failed += 1
                    await call.hangup()
                    await call.ended(10)
                except Exception:
                    failed += 1

        t0 = time.monotonic()
        tasks = []
        for i in range(total):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(interval)
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
    setups.sort()
    return {
        "workers_per_side": workers,
        "placed": total,
        "confirmed": len(setups),
        "failed": failed,
        "cps_achieved": round(len(setups) / wall, 1),
        "setup_p50_ms": statistics.median(setups) if setups else None,
        "setup_p95_ms": setups[int(len(setups) * 0.95) - 1] if setups else None,
    }



# ---------------------------------------------------------------------------------------------
# shared: box load, CPU windows, percentiles


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def busy_pct(sample: float = 1.0) -> float:
    b0 = box_busy()
    await asyncio.sleep(sample)
    b1 = box_busy()
    return (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]) * 100


async def wait_quiet(max_wait: float, threshold: float = 15.0) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until the box is below ``threshold`` % busy; report what it was."""
    t0 = time.monotonic()
    busy = await busy_pct()
    while busy > threshold and time.monotonic() - t0 < max_wait:
        busy = await busy_pct(2.0)
    return {"busy_before_pct": round(busy, 1), "loadavg_before": loadavg(), "waited_s": round(time.monotonic() - t0, 1)}


class CpuWindow:
    """CPU seconds of a set of processes, and of the whole box, between start() and stop()."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.cpu0 = {p: proc_cpu_s(p) for p in self.pids}
        self.b0 = box_busy()
        self.w0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.w0
        b1 = box_busy()
        cpu = {p: proc_cpu_s(p) - self.cpu0[p] for p in self.pids}
        total = sum(cpu.values()) / wall * 100
        box = (b1[0] - self.b0[0]) / max(1.0, b1[1] - self.b0[1]) * 100
        ncpu = os.cpu_count() or 1
        return {"cpu_sum_pct_of_core": round(total, 1), "box_busy_pct": round(box, 1),
                # what else ran meanwhile: box busy (in % of one core) minus what we measured
                "other_pct_of_core": round(max(0.0, box * ncpu - total), 1), "window_s": round(wall, 2),
                "per_pid": {str(p): round(v / wall * 100, 2) for p, v in cpu.items()}}


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def quiet_wav(path: Path, speech: Path | None, seconds: float) -> Path:
    """``speech`` (if any) then near-silence (±2 LSB dither, below any VAD) for ``seconds``."""
    pcm = load_audio(speech, 8000) if speech is not None else b""
    rng = np.random.default_rng(11)
    tail = rng.integers(-2, 3, int(8000 * seconds)).astype("<i2").tobytes()
    return write_wav(path, pcm + tail, 8000)


def ulaw_wav(src: Path, dst: Path) -> Path:
    """A G.711 µ-law WAV (format 7) for SIPp's rtp_stream."""
    pcm = load_audio(src, 8000)
    u = audioop.lin2ulaw(pcm, 2)
    fmt = struct.pack("<IHHIIHHH", 18, 7, 1, 8000, 8000, 1, 8, 0)
    dst.write_bytes(b"RIFF" + struct.pack("<I", 4 + 26 + 8 + len(u)) + b"WAVE" + b"fmt " + fmt + b"data"
                    + struct.pack("<I", len(u)) + u)
    return dst


# ---------------------------------------------------------------------------------------------
# full rtsip stack: Softphone pool → mock SIP ingress pool, an SDK app accepting every call


ACCEPT: dict[str, Any] = {
    "type": "realtime", "model": "gpt-realtime", "instructions": "You are a bench.",
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
}


@dataclass
class BenchApp:
    """An app-like webhook receiver: verify with the SDK, accept, open the call's WebSocket."""

    mock: RunningMock
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    speaking: dict[str, bool] = field(default_factory=dict)  # call_id → output audio playing now
    first_reply: asyncio.Event = field(default_factory=asyncio.Event)  # some call's reply audio has started
    kinds: dict[str, int] = field(default_factory=dict)  # event type → count (for the report)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        secret = self.mock.server.config.webhook_secret
        self.client = AsyncOpenAI(api_key="sk-app", base_url=self.mock.base_url, webhook_secret=secret,
                                  max_retries=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.mock.server.config = self.mock.server.config.model_copy(update={"webhook_url": self.url})

    async def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.client.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = self.client.webhooks.unwrap(body, request.headers)
            call_id = event.data.call_id  # type: ignore[union-attr]
            await self.client.realtime.calls.accept(call_id, **ACCEPT)
            self.accepted += 1
            task = asyncio.create_task(self._drive(call_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        except Exception as exc:
            self.failures.append(repr(exc))
        return web.json_response({"received": True})

    async def _drive(self, call_id: str) -> None:
        try:
            async with self.client.realtime.connect(call_id=call_id) as conn:
                async for event in conn:
                    self.kinds[event.type] = self.kinds.get(event.type, 0) + 1
                    if event.type == "output_audio_buffer.started":
                        self.speaking[call_id] = True
                        self.first_reply.set()
                    elif event.type in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
                        self.speaking[call_id] = False
        except Exception as exc:
            self.failures.append(repr(exc))


@contextlib.asynccontextmanager
async def full_stack(workers: int, tmp: Path, reply: Path, tag: str, phone_workers: int | None = None) -> Any:
    script = {"turns": [{"says": "This is a long scripted reply for the benchmark.", "audio": str(reply)}],
              "transcription_delay_s": 0.1, "response_latency_s": 0.05}
    config = MockConfig(script=script, ring_timeout_s=30)
    log = await asyncio.to_thread(open, tmp / f"phone-{tag}.log", "a")  # closed below
    try:
        sip = SipOptions(tmp / f"mock-{tag}", port=0, workers=workers, frame_ms=SIP_LOAD_INGRESS_FRAME_MS,
                         vad_frame_ms=SIP_LOAD_INGRESS_FRAME_MS, media=SIP_LOAD_MEDIA)
        async with running_mock(config, sip=sip) as mock:
            assert mock.sip is not None
            app = BenchApp(mock)
            await app.start()
            try:
                async with Softphone(ca=mock.sip.certs.ca, workers=phone_workers or workers,
                                     state_dir=tmp / f"phone-{tag}", record=False,
                                     frame_ms=SIP_LOAD_CALLER_FRAME_MS, media=SIP_LOAD_MEDIA, stderr=log) as phone:
                    yield mock, app, phone
            finally:
                await app.stop()
    finally:
        log.close()


REPLY_SLACK_S = 4.0  # the full stack's reply outlasts the window by this much (calls come up over ~2 s)
FRONT_RESERVE = 1  # the ingress's worker 0 (front door) keeps a slot free and 302s its 4th call away


def spread(n: int) -> list[int]:
    """Ingress worker per call: 4 per worker, 4 - FRONT_RESERVE on worker 0."""
    out: list[int] = []
    w = 0
    while len(out) < n:
        out.extend([w] * min(n - len(out), 4 - (FRONT_RESERVE if w == 0 else 0)))
        w += 1
    return out


async def full_hold(n: int, seconds: float, tmp: Path, caller: Path, reply: Path, speech_s: float) -> dict[str, Any]:
    where = spread(n)
    workers = where[-1] + 1
    phone_workers = math.ceil(n / 4)
    t_start = time.monotonic()
    async with full_stack(workers, tmp, reply, f"hold{n}", phone_workers=phone_workers) as (mock, app, phone):
        reserve = getattr(mock.sip.pool, "front_reserve", FRONT_RESERVE)
        assert reserve == FRONT_RESERVE, f"ingress front_reserve is {reserve}"
        started_s = time.monotonic() - t_start
        t0 = time.monotonic()
        calls: list[SoftphoneCall] = []
        failed_invite = 0
        for i in range(n):
            try:
                uri = mock.sip.pool.contact_uri(where[i], "proj_bench", "tls")
                calls.append(await phone.call(uri, audio=[caller], prefer_worker=where[i] % phone_workers))
            except Exception:
                failed_invite += 1
        answered = await asyncio.gather(*(c.answered(30) for c in calls))
        all_up = time.monotonic() - t0
        setups = [float(c.marks["answered"]) for c in calls if "answered" in c.marks]
        # The window opens as the first reply starts and holds each reply whole: its generation (the
        # mock's default, 8x realtime) and its playback, as for a model that talks all the time.  The
        # reply lasts REPLY_SLACK_S longer than the window, so calls answered later still play at its end.
        await asyncio.wait_for(app.first_reply.wait(), speech_s + 10)
        ingress_pids, caller_pids = pids(mock.sip.pool), pids(phone.pool)
        win = CpuWindow([*ingress_pids, *caller_pids, os.getpid()])
        win.start()
        await asyncio.sleep(seconds)
        cpu = win.stop()
        replying = sum(1 for v in app.speaking.values() if v)
        stats = await asyncio.gather(*(c.stats() for c in calls if not c.is_ended))
        ing: list[dict[str, Any]] = []
        for w in range(workers):
            res = await mock.sip.pool.command(w, "stats")
            ing.extend(res.get("calls", {}).values())
        early = [c.is_ended for c in calls]
        ended_early = sum(early)
        statuses = sorted({int(c.final_status or 0) for c, a in zip(calls, answered, strict=True) if not a})
        for c in calls:
            with contextlib.suppress(Exception):
                await c.hangup()
        await asyncio.gather(*(c.ended(10) for c in calls), return_exceptions=True)
    both = stats + ing
    main_pct = cpu["per_pid"].get(str(os.getpid()), 0.0)

    def part(group: list[int]) -> float:
        return round(sum(cpu["per_pid"].get(str(p), 0.0) for p in group), 2)

    # where the CPU goes: the two SIP endpoints (what bare pjsua2 also runs) and the mock + app
    split = {"callers_pct_of_core": part(caller_pids), "ingress_pct_of_core": part(ingress_pids),
             "mock_app_pct_of_core": main_pct}
    split["sip_endpoints_per_call_pct"] = round((split["callers_pct_of_core"] + split["ingress_pct_of_core"]) / n, 3)
    confirmed = sum(answered)
    loss = sum(int(s.get("rx_loss", 0)) for s in both)
    two_way = sum(1 for s in stats if s.get("rx_pkt", 0) > 0 and s.get("tx_pkt", 0) > 0)
    return {
        "stack": "full", "concurrent_calls": n, "processes": workers + math.ceil(n / 4) + 1, "confirmed": confirmed,
        "failed": failed_invite + sum(1 for a, e in zip(answered, early, strict=True) if not a or e),
        "ingress_workers": workers, "rtp_both_ways": two_way,
        "ingress_rtp_both_ways": sum(1 for s in ing if s.get("rx_pkt", 0) > 0 and s.get("tx_pkt", 0) > 0),
        "failed_statuses": statuses, "replying_in_window": replying, "app_events": dict(app.kinds),
        "app_failures": len(app.failures),
        "rtp_loss": loss,
        "max_mean_jitter_ms": round(max((s.get("rx_jitter_mean_us", 0) for s in both), default=0) / 1000, 2),
        "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups), "all_up_s": round(all_up, 2),
        "start_s": round(started_s, 1), "main_process_pct": main_pct, **split,
        "ok": (confirmed == n and ended_early == 0 and loss == 0 and two_way == n and replying == n
               and not app.failures),
        **{k: v for k, v in cpu.items() if k != "per_pid"},
        "cpu_per_call_pct_of_core": round(cpu["cpu_sum_pct_of_core"] / n, 3),
    }


async def full_rate(workers: int, total: int, cps: float, tmp: Path, reply: Path) -> dict[str, Any]:
    async with full_stack(workers, tmp, reply, "rate") as (mock, app, phone):
        sem = asyncio.Semaphore(4 * workers - FRONT_RESERVE)
        setups: list[float] = []
        failed = 0

        async def one(i: int) -> None:
            nonlocal failed
            async with sem:
                try:
                    call = await phone.call(mock.sip.pool.contact_uri(i % workers, "proj_rate", "tls"))
                    if await call.answered(10):
                        setups.append(float(call.marks["answered"]))
                    else:
                        failed += 1
                    await call.hangup()
                    await call.ended(10)
                except Exception:
                    failed += 1

        ingress_pids, caller_pids = pids(mock.sip.pool), pids(phone.pool)
        win = CpuWindow([*ingress_pids, *caller_pids, os.getpid()])
        win.start()
        t0 = time.monotonic()
        tasks = []
        for i in range(total):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, t0 + (i + 1) / cps - time.monotonic()))
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
        cpu = win.stop()
    return {"stack": "full", "placed": total, "confirmed": len(setups), "failed": failed, "target_cps": cps,
            "workers_per_side": workers, "cps_achieved": round(len(setups) / wall, 1),
            "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups), "app_failures": len(app.failures),
            **{k: v for k, v in cpu.items() if k != "per_pid"}}


# ---------------------------------------------------------------------------------------------
# bare pjsua2: bench/bare_pjsua2.py UAS/UAC pairs


class Proc:
    """A bare_pjsua2.py process driven over JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, *args: str, log: Any) -> Proc:
        p = await asyncio.create_subprocess_exec(PY, str(HERE / "bare_pjsua2.py"), *args, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE, stderr=log)
        return cls(p)

    async def line(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"bare_pjsua2 pid {self.proc.pid} exited (rc {self.proc.returncode})")
        result: dict[str, Any] = json.loads(raw)
        return result

    async def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def bare_hold(n: int, seconds: float, tmp: Path, wav: Path, certs: Any) -> dict[str, Any]:
    pairs = math.ceil(n / 4)
    log = await asyncio.to_thread(open, tmp / f"bare-{n}.log", "a")
    uas: list[Proc] = []
    uac: list[Proc] = []
    uas_rtp, uac_rtp = rtp_base(pairs, BARE_RTP_SPAN), rtp_base(pairs, BARE_RTP_SPAN)
    try:
        t_start = time.monotonic()
        uas = list(await asyncio.gather(*(Proc.spawn(
            "uas", "--cert", str(certs.cert), "--key", str(certs.key), "--wav", str(wav),
            "--rtp-port", str(uas_rtp + BARE_RTP_SPAN * i), log=log) for i in range(pairs))))
        ports = [int((await u.line())["port"]) for u in uas]
        t0 = time.monotonic()
        uac = list(await asyncio.gather(*(Proc.spawn(
            "uac", "--ca", str(certs.ca), "--target", f"sip:proj_bench@127.0.0.1:{ports[i]};transport=tls",
            "--calls", str(min(4, n - 4 * i)), "--wav", str(wav), "--rtp-port", str(uac_rtp + BARE_RTP_SPAN * i),
            log=log)
            for i in range(pairs))))
        ready = [await c.line(40) for c in uac]
        all_up = time.monotonic() - t0
        setups = [float(x) for r in ready for x in r["setup_ms"]]
        failed = sum(int(r["failed"]) for r in ready)
        await asyncio.sleep(2.0)
        win = CpuWindow([p.proc.pid for p in uas + uac])
        win.start()
        await asyncio.sleep(seconds)
        cpu = win.stop()
        rows: list[dict[str, Any]] = []
        for p in uas + uac:
            await p.send("stats")
        for p in uas + uac:
            rows.extend((await p.line())["calls"])
    finally:
        await asyncio.gather(*(p.close() for p in uas + uac))
        log.close()
    loss = sum(int(r.get("rx_loss", 0)) for r in rows)
    two_way = sum(1 for r in rows if r.get("rx_pkt", 0) > 0 and r.get("tx_pkt", 0) > 0)
    return {
        "stack": "bare", "concurrent_calls": n, "processes": 2 * pairs, "confirmed": len(setups), "failed": failed,
        "rtp_both_ways": two_way // 2 if two_way else 0, "rtp_loss": loss,
        "max_mean_jitter_ms": round(max((r.get("rx_jitter_mean_us", 0) for r in rows), default=0) / 1000, 2),
        "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups), "all_up_s": round(all_up, 2),
        "start_s": round(t0 - t_start, 1),
        "ok": failed == 0 and len(setups) == n and loss == 0 and two_way == 2 * n,
        **{k: v for k, v in cpu.items() if k != "per_pid"},
        "cpu_per_call_pct_of_core": round(cpu["cpu_sum_pct_of_core"] / n, 3),
    }


# ---------------------------------------------------------------------------------------------
# SIPp (Debian sip-tester) over TCP


async def _sipp(args: list[str], cwd: Path, log: Path) -> asyncio.subprocess.Process:
    with await asyncio.to_thread(open, log, "w") as f:
        return await asyncio.create_subprocess_exec("sipp", *args, cwd=cwd, stdout=f, stderr=asyncio.subprocess.STDOUT,
                                                    stdin=asyncio.subprocess.DEVNULL)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _sipp_counts(text: str) -> tuple[int, int]:
    def last(label: str) -> int:
        found = re.findall(label + r"\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return int(found[-1]) if found else 0

    return last("Successful call"), last("Failed call")


def sipp_ports() -> int:
    """SIPp's SIP ports, P for the UAS and P + 1 for the UAC, free for TCP and UDP (-t t1/tn/u1)."""
    return free_range(2, kinds=(socket.SOCK_STREAM, socket.SOCK_DGRAM))


def sipp_media_ports(calls: int) -> int:
    """A UAC's ``-mp``: its call k sends from -mp + 4 (k - 1) (SIPp's [auto_media_port], modulo 10000),
    RTP and RTCP for audio and video."""
    return free_range(4 * min(calls, 2500) + 4)


async def sipp_hold(n: int, seconds: float, tmp: Path, transport: str, ramp_cps: float = 100.0) -> dict[str, Any]:
    port = sipp_ports()
    d = tmp / f"sipp-hold{n}"
    d.mkdir(exist_ok=True)
    shutil.copy(tmp / "sipp_ulaw.wav", d / "sipp_ulaw.wav")
    ramp = n / ramp_cps
    hold_ms = int((ramp + 2 + seconds + 1) * 1000)
    uas = await _sipp(["-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(port), "-rtp_echo", "-mi",
                       "127.0.0.1", "-mp", str(free_range(4)), "-nostdin"], d, d / "uas.log")
    await asyncio.sleep(0.5)
    uac = await _sipp(["127.0.0.1:" + str(port), "-sf", str(HERE / "sipp" / "uac_rtp.xml"), "-t", transport, "-i",
                       "127.0.0.1", "-p", str(port + 1), "-mi", "127.0.0.1", "-mp", str(sipp_media_ports(n)),
                       "-r", str(ramp_cps),
                       "-l", str(n), "-m", str(n), "-d", str(hold_ms), "-nostdin", "-trace_rtt", "-rtt_freq", "1"],
                      d, d / "uac.log")
    await asyncio.sleep(ramp + 2)
    win = CpuWindow([uas.pid, uac.pid])
    win.start()
    await asyncio.sleep(seconds)
    cpu = win.stop()
    try:
        rc = await asyncio.wait_for(uac.wait(), hold_ms / 1000 + 30)
    except TimeoutError:
        await _stop(uac)
        rc = -1
    await _stop(uas)
    ok_calls, failed = _sipp_counts((d / "uac.log").read_text(errors="replace"))
    echoed = re.findall(r"(\d+)\s+Total echo RTP pckts 1st stream", (d / "uas.log").read_text(errors="replace"))
    echo = int(echoed[-1]) if echoed else 0
    expected = int(n * hold_ms / 1000 * 50)
    setups = _rtt(d)
    return {
        "stack": "sipp", "transport": transport, "concurrent_calls": n, "processes": 2, "confirmed": ok_calls,
        "failed": failed + (n - ok_calls - failed), "rc": rc, "rtp_echoed_pkts": echo,
        "rtp_expected_pkts": expected, "rtp_loss": None,
        "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups),
        "ok": rc == 0 and ok_calls == n and echo >= 0.97 * expected,
        **{k: v for k, v in cpu.items() if k != "per_pid"},
        "cpu_per_call_pct_of_core": round(cpu["cpu_sum_pct_of_core"] / n, 3),
    }


def _rtt(d: Path) -> list[float]:
    out: list[float] = []
    for f in d.glob("*_rtt.csv"):
        for line in f.read_text().splitlines():
            parts = line.split(";")
            if len(parts) >= 2 and parts[1].replace(".", "", 1).isdigit():
                out.append(float(parts[1]))
    return out


async def sipp_rate(cps: float, total: int, tmp: Path, transport: str) -> dict[str, Any]:
    port = sipp_ports()
    d = tmp / "sipp-rate"
    d.mkdir(exist_ok=True)
    uas = await _sipp(["-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(port), "-nostdin"], d,
                      d / "uas.log")
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    uac = await _sipp(["127.0.0.1:" + str(port), "-sn", "uac", "-t", transport, "-i", "127.0.0.1", "-p",
                       str(port + 1), "-r", str(cps), "-m", str(total), "-nostdin", "-trace_rtt", "-rtt_freq", "1"],
                      d, d / "uac.log")
    win = CpuWindow([uas.pid, uac.pid])
    win.start()
    try:
        rc = await asyncio.wait_for(uac.wait(), total / cps + 60)
    except TimeoutError:
        await _stop(uac)
        rc = -1
    wall = time.monotonic() - t0
    cpu = win.stop()
    await _stop(uas)
    ok_calls, failed = _sipp_counts((d / "uac.log").read_text(errors="replace"))
    setups = _rtt(d)
    return {"stack": "sipp", "transport": transport, "placed": total, "confirmed": ok_calls, "failed": failed,
            "rc": rc, "target_cps": cps, "cps_achieved": round(ok_calls / wall, 1),
            "setup_p50_ms": p50(setups), "setup_p95_ms": p95(setups), "setup_resolution_ms": 1,
            **{k: v for k, v in cpu.items() if k != "per_pid"}}


# ---------------------------------------------------------------------------------------------
# driver


async def run_once(label: str, k: int, quiet_wait: float,
                   run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """One run after waiting for a quiet box."""
    quiet = await wait_quiet(quiet_wait)
    r: dict[str, Any]
    try:
        r = await run()
    except Exception as exc:
        r = {"ok": False, "error": repr(exc), "other_pct_of_core": 0.0}
    r.update(quiet)
    r["run"] = k + 1
    print(f"[{label} run {k + 1}] {json.dumps(r)}", flush=True)
    return r


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU per call (a failed run wins: failures are never averaged away).

    Why the median: on this box the same stack's CPU per call moves by up to 1.7× between runs, more
    than any difference between stacks, and picking the "quietest" run of each stack separately can
    favour either one."""
    failed = [r for r in runs if not r.get("ok")]
    ordered = sorted(runs, key=lambda r: float(r.get("cpu_per_call_pct_of_core") or 0.0))
    best = dict(failed[0] if failed else ordered[(len(ordered) - 1) // 2])
    keep = ("run", "ok", "other_pct_of_core", "busy_before_pct", "cpu_per_call_pct_of_core", "rtp_loss", "failed")
    best["runs"] = [{key: r.get(key) for key in keep} for r in runs]
    return best


async def measure(label: str, repeat: int, quiet_wait: float,
                  run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``repeat`` times; keep the median run."""
    return median_run([await run_once(label, k, quiet_wait, run) for k in range(repeat)])


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


@dataclass
class _Media:
    """The audio and certificates every stack's runs share, made once per comparison."""

    tmp: Path
    certs: Any
    caller: Path
    reply: Path
    loop_wav: Path
    speech_s: float


def _media(tmp: Path, hold: float) -> _Media:
    from mock_api.certs import ensure_certs

    certs = ensure_certs(tmp / "bare-certs")
    speech = fixture("caller_confirm")
    caller = quiet_wav(tmp / "caller.wav", speech.path, hold + 60)
    reply = noise_wav(tmp / "reply.wav", hold + REPLY_SLACK_S, seed=5)
    loop_wav = noise_wav(tmp / "loop.wav", 20, seed=3)
    ulaw_wav(loop_wav, tmp / "sipp_ulaw.wav")
    return _Media(tmp, certs, caller, reply, loop_wav, speech.duration_ms / 1000)


async def _hold_steps(args: argparse.Namespace, stacks: list[str], steps: list[int], m: _Media,
                      results: dict[str, Any]) -> None:
    """Hold calls at each step, stack by stack, until a stack fails or saturates the box."""
    stopped: set[str] = set()
    for n in steps:
        def runner(stack: str, n: int = n) -> Callable[[], Awaitable[dict[str, Any]]]:
            if stack == "full":
                return lambda: full_hold(n, args.hold, m.tmp, m.caller, m.reply, m.speech_s)
            if stack == "bare":
                return lambda: bare_hold(n, args.hold, m.tmp, m.loop_wav, m.certs)
            return lambda: sipp_hold(n, args.hold, m.tmp, args.sipp_transport)

        active = [s for s in stacks if s not in stopped]
        # the stacks take turns, run by run, so a box that drifts over minutes affects each alike
        per_stack: dict[str, list[dict[str, Any]]] = {s: [] for s in active}
        for k in range(args.repeat):
            for stack in active:
                per_stack[stack].append(await run_once(f"{stack} hold {n}", k, args.quiet_wait, runner(stack)))
        if {"full", "bare"} <= set(active):
            results.setdefault("ratio_by_round", {})[str(n)] = [
                round(f["cpu_per_call_pct_of_core"] / b["cpu_per_call_pct_of_core"], 2)
                for f, b in zip(per_stack["full"], per_stack["bare"], strict=True)
                if f.get("ok") and b.get("ok") and b.get("cpu_per_call_pct_of_core")]
        for stack in active:
            r = median_run(per_stack[stack])
            r.setdefault("concurrent_calls", n)
            r.setdefault("stack", stack)
            results["hold"][stack].append(r)
            own_busy = float(r.get("cpu_sum_pct_of_core") or 0.0) / (os.cpu_count() or 1)
            if not r.get("ok") or own_busy >= args.saturated:
                stopped.add(stack)  # failed, or the stack itself saturates the box (others' load excluded)


async def _rates(args: argparse.Namespace, stacks: list[str], m: _Media, results: dict[str, Any]) -> None:
    """The call setup rate of the stacks that have a rate test (full and sipp)."""
    for stack in stacks:
        if stack == "full":
            def rrun() -> Awaitable[dict[str, Any]]:
                return full_rate(args.rate_workers, args.rate_calls, args.rate_cps, m.tmp, m.reply)
        elif stack == "sipp":
            def rrun() -> Awaitable[dict[str, Any]]:
                return sipp_rate(args.sipp_cps, args.sipp_calls, m.tmp, "t1")
        else:
            continue
        results["rate"][stack] = await measure(f"{stack} rate", args.repeat, args.quiet_wait, rrun)


def _summary_table(args: argparse.Namespace, stacks: list[str], steps: list[int], results: dict[str, Any]) -> Table:
    """One row per stack: the most calls it held and its setup figures; fills ``results["summary"]``."""
    names = {"full": "full rtsip stack (TLS, softphone→ingress+app)", "bare": "bare pjsua2 pairs (TLS)",
             "sipp": f"SIPp ({args.sipp_transport}, rtp_stream → rtp_echo)"}
    summary = Table(title=f"SIP stacks on this box ({os.cpu_count()} cores, hold {args.hold:g} s, steps {args.steps})")
    for col in ("stack", "max concurrent (0 failed, 0 loss)", "CPU % core / call @max", "setup p50 / p95 ms",
                "sustained calls/s (0 failed)", "box busy @max"):
        summary.add_column(col)
    results["summary"] = {}
    for stack in stacks:
        rows = results["hold"][stack]
        good = [r for r in rows if r.get("ok")]
        best = good[-1] if good else None
        rate = results["rate"].get(stack)
        if rate is not None and rate.get("failed", 1) == 0:
            setup = f"{fmt(rate.get('setup_p50_ms'))} / {fmt(rate.get('setup_p95_ms'))}"
            cps = fmt(rate.get("cps_achieved"))
        elif best is not None:
            setup = f"{fmt(best.get('setup_p50_ms'))} / {fmt(best.get('setup_p95_ms'))} (ramp)"
            cps = "not measured" if rate is None else f"failed ({rate.get('failed')})"
        else:
            setup, cps = "–", "–"
        limit = ""
        if best is not None and rows and rows[-1] is best and best["concurrent_calls"] == steps[-1]:
            limit = "+ (top step)"
        summary.add_row(names[stack], (f"{best['concurrent_calls']}{limit}" if best else "none"),
                        fmt(best.get("cpu_per_call_pct_of_core")) if best else "–", setup, cps,
                        f"{fmt(best.get('box_busy_pct'))} %" if best else "–")
        results["summary"][stack] = {"max_ok_calls": best["concurrent_calls"] if best else None,
                                     "cpu_per_call_pct_of_core": best.get("cpu_per_call_pct_of_core") if best else None,
                                     "setup": setup, "cps": cps}
    return summary


def _steps_table(stacks: list[str], results: dict[str, Any]) -> Table:
    """Every step of every stack (the median run of each)."""
    steps_t = Table(title="per step (median run of each)")
    for col in ("stack", "calls", "procs", "confirmed", "failed", "RTP 2-way", "loss", "jitter ms", "setup p50/p95",
                "CPU % core", "CPU/call", "box busy %", "other load % core", "ok"):
        steps_t.add_column(col)
    for stack in stacks:
        for r in results["hold"][stack]:
            two_way = (f"{r.get('rtp_echoed_pkts')}/{r.get('rtp_expected_pkts')} pkts echoed" if stack == "sipp"
                       else fmt(r.get("rtp_both_ways")))
            steps_t.add_row(stack, fmt(r.get("concurrent_calls")), fmt(r.get("processes")), fmt(r.get("confirmed")),
                            fmt(r.get("failed")), two_way, fmt(r.get("rtp_loss")), fmt(r.get("max_mean_jitter_ms")),
                            f"{fmt(r.get('setup_p50_ms'))}/{fmt(r.get('setup_p95_ms'))}",
                            fmt(r.get("cpu_sum_pct_of_core")), fmt(r.get("cpu_per_call_pct_of_core")),
                            fmt(r.get("box_busy_pct")), fmt(r.get("other_pct_of_core")),
                            "yes" if r.get("ok") else ("no: " + str(r.get("error", ""))[:40]))
    return steps_t


def _rate_table(results: dict[str, Any]) -> Table:
    """Call setup rate per stack that had a rate test."""
    rate_t = Table(title="call setup rate")
    for col in ("stack", "placed", "confirmed", "failed", "target cps", "achieved cps", "setup p50/p95 ms",
                "CPU % core", "box busy %"):
        rate_t.add_column(col)
    for stack, r in results["rate"].items():
        rate_t.add_row(stack, fmt(r.get("placed")), fmt(r.get("confirmed")), fmt(r.get("failed")),
                       fmt(r.get("target_cps")), fmt(r.get("cps_achieved")),
                       f"{fmt(r.get('setup_p50_ms'))}/{fmt(r.get('setup_p95_ms'))}",
                       fmt(r.get("cpu_sum_pct_of_core")), fmt(r.get("box_busy_pct")))
    return rate_t


def _full_vs_bare(results: dict[str, Any], console: Console) -> None:
    """Full stack over bare pjsua2 CPU at equal calls, and where the full stack's CPU goes."""
    f, b = results["summary"].get("full", {}), results["summary"].get("bare", {})
    if f.get("cpu_per_call_pct_of_core") and b.get("cpu_per_call_pct_of_core"):
        # compare at the same step where both passed
        common = {r["concurrent_calls"]: r for r in results["hold"]["bare"] if r.get("ok")}
        pairs = [(r["concurrent_calls"], r["cpu_per_call_pct_of_core"] / common[r["concurrent_calls"]][
            "cpu_per_call_pct_of_core"]) for r in results["hold"]["full"] if r.get("ok") and r["concurrent_calls"]
            in common]
        results["full_vs_bare_cpu_ratio"] = {str(n): round(x, 2) for n, x in pairs}
        console.print("full / bare CPU per call at equal calls (medians): "
                      + ", ".join(f"{n} calls: {x:.2f}×" for n, x in pairs) + " (issue 6 target ≤ 1.5×)")
        for n, by_round in results.get("ratio_by_round", {}).items():
            console.print(f"  {n} calls, full / bare run by run: {', '.join(f'{x:.2f}×' for x in by_round)}")
        split_t = Table(title="full stack: where the CPU goes (% of a core per call, steady window)")
        for col in ("calls", "callers", "ingress", "mock + app", "total", "bare pjsua2", "total ÷ bare",
                    "SIP endpoints ÷ bare"):
            split_t.add_column(col)
        ratios: dict[str, Any] = {}
        for r in results["hold"]["full"]:
            n = r["concurrent_calls"]
            if not r.get("ok") or n not in common or "callers_pct_of_core" not in r:
                continue
            bare = common[n]["cpu_per_call_pct_of_core"]
            ends = r["sip_endpoints_per_call_pct"]
            ratios[str(n)] = round(ends / bare, 2)
            split_t.add_row(str(n), fmt(r["callers_pct_of_core"] / n), fmt(r["ingress_pct_of_core"] / n),
                            fmt(r["mock_app_pct_of_core"] / n), fmt(r["cpu_per_call_pct_of_core"]), fmt(bare),
                            f"{r['cpu_per_call_pct_of_core'] / bare:.2f}×", f"{ends / bare:.2f}×")
        results["sip_endpoints_vs_bare_cpu_ratio"] = ratios
        console.print(split_t)


async def compare(args: argparse.Namespace) -> int:
    stacks = [s for s in args.stacks.split(",") if s]
    steps = [int(x) for x in args.steps.split(",") if x]
    if "sipp" in stacks and shutil.which("sipp") is None:
        print("sipp not found (apt-get install sip-tester): skipping it", file=sys.stderr)
        stacks.remove("sipp")
    results: dict[str, Any] = {"cpus": os.cpu_count(), "steps": steps, "hold_s": args.hold, "repeat": args.repeat,
                               "loadavg_start": loadavg(), "hold": {s: [] for s in stacks}, "rate": {}}
    console = Console(width=220)
    with tempfile.TemporaryDirectory(prefix="rtsip-bench-") as dname:
        media = _media(Path(dname), args.hold)
        await _hold_steps(args, stacks, steps, media, results)
        if args.rate_calls:
            await _rates(args, stacks, media, results)
    results["loadavg_end"] = loadavg()
    summary = _summary_table(args, stacks, steps, results)
    console.print(_steps_table(stacks, results))
    if results["rate"]:
        console.print(_rate_table(results))
    console.print(summary)
    _full_vs_bare(results, console)
    console.print(f"load average start {results['loadavg_start']} end {results['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0

async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", default="full,bare,sipp", help="comma list of full,bare,sipp (or 'testuas')")
    ap.add_argument("--steps", default="16,32,64,96,128,150", help="concurrent-call steps (stop at a failure)")
    ap.add_argument("--hold", type=float, default=8.0, help="steady measurement window in seconds")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per configuration, the stacks taking turns; the median run of each is reported")
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="max s to wait for a quiet box before a run")
    ap.add_argument("--saturated", type=float, default=95.0,
                    help="the stack's own CPU (%% of all cores) at which it stops stepping")
    ap.add_argument("--rate-calls", type=int, default=300, help="calls for the full-stack setup-rate run (0 skips)")
    ap.add_argument("--rate-workers", type=int, default=4, help="full stack: workers per side in the rate run")
    ap.add_argument("--rate-cps", type=float, default=30.0, help="full stack: total calls/s offered")
    ap.add_argument("--sipp-transport", default="t1", choices=["t1", "tn", "u1"], help="SIPp hold transport")
    ap.add_argument("--sipp-cps", type=float, default=500.0)
    ap.add_argument("--sipp-calls", type=int, default=5000)
    ap.add_argument("--pairs", default="1,2,4", help="testuas: softphone/UAS worker pairs for 'hold'")
    ap.add_argument("--json", type=Path, help="also write results here")
    args = ap.parse_args()
    if not sip_available():  # every stack here runs pjsua2 (or SIPp against it)
        print(f"bench_sip: {sip_missing()}", file=sys.stderr)
        return 2
    if args.stacks != "testuas":
        return await compare(args)
    args.rate_cps = args.rate_cps / args.rate_workers
    results: dict[str, Any] = {"cpus": os.cpu_count(), "hold": [], "rate": None}
    with tempfile.TemporaryDirectory(prefix="rtsip-bench-") as d:
        tmp = Path(d)
        for p in [int(x) for x in args.pairs.split(",") if x]:
            r = await hold(p, args.hold, tmp)
            results["hold"].append(r)
            print(json.dumps(r), flush=True)
        if args.rate_calls:
            results["rate"] = await rate(args.rate_workers, args.rate_calls, args.rate_cps, tmp)
            print(json.dumps(results["rate"]), flush=True)
    print(
        "\n| procs | calls | confirmed | RTP both ways | loss | max jitter ms | setup p50/max ms | CPU % core | "
        "CPU/call | box busy % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["hold"]:
        print(
            f"| {r['processes']} | {r['concurrent_calls']} | {r['confirmed']} | "
            f"{r['rtp_both_ways']}/{r['uas_rtp_both_ways']} | {r['rtp_loss']} | {r['max_mean_jitter_ms']} | "
            f"{r['setup_p50_ms']}/{r['setup_max_ms']} | {r['cpu_sum_pct_of_core']} | "
            f"{r['cpu_per_call_pct_of_core']} | {r['box_busy_pct']} |"
        )
    if results["rate"]:
        r = results["rate"]
        print(
            f"\nsetup rate: {r['confirmed']}/{r['placed']} confirmed, {r['cps_achieved']} cps, "
            f"setup p50 {r['setup_p50_ms']} ms, p95 {r['setup_p95_ms']} ms ({r['workers_per_side']} workers/side)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
