"""The full rtsip stack for bench_sip: Softphone pool → mock SIP ingress pool, an SDK app accepting every call.

What the comparison measures against the bare pjsua2 and SIPp peers (bench/sip_peers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosedError

from bench.sip_machine import CpuWindow, p50, p95, pids, setup_ms
from harness.load import SIP_LOAD_CALLER_FRAME_MS, SIP_LOAD_INGRESS_FRAME_MS, SIP_LOAD_MEDIA
from harness.softphone import Softphone, SoftphoneCall
from mock_api.config import MockConfig
from mock_api.running import RunningMock, SipOptions, running_mock

ACCEPT: dict[str, Any] = {
    "type": "realtime", "model": "gpt-realtime-2.1", "instructions": "You are a bench.",
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
}
LIVE_ACCEPT: dict[str, Any] = {"type": "live", "model": "gpt-live-1.1", "instructions": "You are a bench.",
                               "audio": {"output": {"voice": "marin"}}}
Surface = Literal["realtime", "live"]


@dataclass
class BenchApp:
    """An app-like webhook receiver: verify with the SDK, accept, open the call's WebSocket (the Realtime
    call socket, or the GPT-Live sideband with ``surface="live"``)."""

    mock: RunningMock
    surface: Surface = "realtime"
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
        event = "live.transport.incoming" if self.surface == "live" else "realtime.call.incoming"
        self.mock.server.config = self.mock.server.config.model_copy(
            update={"webhook_url": self.url, "webhook_events": [event]})

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
            if self.surface == "live":
                call_id = event.data.session_id  # type: ignore[union-attr]
                await self.client.live.sessions.accept(call_id, session=LIVE_ACCEPT)  # type: ignore[arg-type]
                drive = self._drive_live(call_id)
            else:
                call_id = event.data.call_id  # type: ignore[union-attr]
                await self.client.realtime.calls.accept(call_id, **ACCEPT)
                drive = self._drive(call_id)
            self.accepted += 1
            task = asyncio.create_task(drive)
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
        except ConnectionClosedError:  # the caller hung up: the real service drops the socket, as the mock does
            pass
        except Exception as exc:
            self.failures.append(repr(exc))

    async def _drive_live(self, session_id: str) -> None:
        """The sideband: reply audio arrives as ``session.output_audio.delta`` (speaking while it flows)."""
        try:
            async with self.client.live.sideband.connect(session_id=session_id) as conn:
                async for event in conn:
                    self.kinds[event.type] = self.kinds.get(event.type, 0) + 1
                    if event.type == "session.output_audio.delta":
                        self.speaking[session_id] = True
                        self.first_reply.set()
                    elif event.type == "session.closed":
                        self.speaking[session_id] = False
        except ConnectionClosedError:
            pass
        except Exception as exc:
            self.failures.append(repr(exc))


@contextlib.asynccontextmanager
async def full_stack(workers: int, tmp: Path, reply: Path, tag: str, phone_workers: int | None = None,
                     surface: Surface = "realtime", reflect_chunk_ms: int | None = None) -> Any:
    script = {"turns": [{"says": "This is a long scripted reply for the benchmark.", "audio": str(reply)}],
              "transcription_delay_s": 0.1, "response_latency_s": 0.05}
    config = MockConfig(script=script, ring_timeout_s=30)
    if reflect_chunk_ms is not None:  # GPT-Live's reflected audio per sideband event (the mock's default else)
        live = config.live.model_copy(update={"reflect_chunk_ms": reflect_chunk_ms})
        config = config.model_copy(update={"live": live})
    log = await asyncio.to_thread(open, tmp / f"phone-{tag}.log", "a")  # closed below
    try:
        sip = SipOptions(tmp / f"mock-{tag}", port=0, workers=workers, frame_ms=SIP_LOAD_INGRESS_FRAME_MS,
                         vad_frame_ms=SIP_LOAD_INGRESS_FRAME_MS, media=SIP_LOAD_MEDIA)
        async with running_mock(config, sip=sip) as mock:
            assert mock.sip is not None
            app = BenchApp(mock, surface=surface)
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


async def full_hold(n: int, seconds: float, tmp: Path, caller: Path, reply: Path, speech_s: float,
                    surface: Surface = "realtime", reflect_chunk_ms: int | None = None,
                    profile: Path | None = None) -> dict[str, Any]:
    """Hold ``n`` calls and measure the CPU of a steady window; with ``profile``, that window's work on this
    process's event loop (the mock and the app) is also written there as cProfile stats."""
    where = spread(n)
    workers = where[-1] + 1
    phone_workers = math.ceil(n / 4)
    t_start = time.monotonic()
    async with full_stack(workers, tmp, reply, f"hold{n}-{surface}", phone_workers=phone_workers,
                          surface=surface, reflect_chunk_ms=reflect_chunk_ms) as (mock, app, phone):
        reflect_ms = mock.server.config.live.reflect_chunk_ms
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
        prof = cProfile.Profile() if profile is not None else None
        win.start()
        if prof is not None:
            prof.enable()
        await asyncio.sleep(seconds)
        if prof is not None:
            prof.disable()
        cpu = win.stop()
        if prof is not None and profile is not None:
            prof.dump_stats(profile)
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
        "stack": "full", "surface": surface, "concurrent_calls": n,
        "reflect_chunk_ms": reflect_ms if surface == "live" else None, "processes": workers + math.ceil(n / 4) + 1,
        "confirmed": confirmed,
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
                ms = await setup_ms(phone, mock.sip.pool.contact_uri(i % workers, "proj_rate", "tls"))
                if ms is None:
                    failed += 1
                else:
                    setups.append(ms)

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
