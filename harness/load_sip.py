"""What one SIP load caller does, for ``rtsip load --mode sip`` and Locust's ``SipCaller``.

:class:`SipDialer` places a call from a softphone pool, tagged with an ``X-Rtsip-Load`` header, which
:class:`_SipResolver` maps back to the mock's call_id to read its journal; a call's RTP figures from
both ends count toward its result (:func:`_sip_call_error`). :class:`IngressSlots` is which ingress
worker takes the next call (the Locust master owns it). The pool runs in its own process next to each
Locust process (:mod:`harness.sip_caller_host`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .caller_steps import drive
from .control_walk import journal_wait, run_async
from .load_metrics import CallRecord, extract, failure, ingress_rtp
from .load_plan import (
    CALLS_PER_SIP_WORKER,
    SIP_LOAD_CALLER_FRAME_MS,
    SIP_LOAD_MEDIA,
    TRAILING_SILENCE_MS,
)
from .scenario import CallSpec, resolve_audio

# ---- the control API client, the calls in flight, the pacing -------------------------------------------


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

    async def ended_view(self, call_id: str, timeout: float = 8.0) -> Any:
        """The call's view once it holds ``sip.ended``. The mock's worker reports the leg's end (with its RTP
        counters) over its own pipe, which may come after the caller saw the BYE; past ``timeout`` the view
        is read as it is."""
        deadline = time.monotonic() + timeout
        while True:
            view = await self.view(call_id)
            if time.monotonic() > deadline or any(e.kind == "sip.ended" for e in view.entries):
                return view
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.http.close()


# ---- SIP calls -----------------------------------------------------------------------------------------


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


@dataclass
class IngressSlots:
    """The mock's SIP ingress workers and the calls each holds: a new call fills one worker before the next.

    Why: the RTP between two processes then wakes each of them once per packet time for all their calls
    (bench_sip: crossing every caller process with every ingress process cost ~40 % more RTP CPU). Worker
    0 keeps a slot free for the front door. Whoever hands out calls owns this: ``rtsip load --mode sip``,
    or the Locust master for every ``SipCaller``."""

    contacts: dict[int, str]  # ingress worker index → its contact URI
    load: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: dict[str, Any], front: str | None = None) -> IngressSlots:
        """From ``GET /_mock/sip``'s answer (``front``: the URI to use when it lists no worker contact)."""
        contacts = {int(w["index"]): str(w["contact"]) for w in status.get("workers", []) if w.get("contact")}
        return cls(contacts or {0: str(front or status.get("uri"))})

    def cap(self, worker: int) -> int:
        return CALLS_PER_SIP_WORKER - (1 if worker == 0 else 0)

    def take(self) -> tuple[int, str]:
        """The worker for the next call (the fullest one with room; the least loaded when all are full)."""
        load = {w: self.load.get(w, 0) for w in self.contacts}
        room = [w for w in load if load[w] < self.cap(w)]
        worker = max(room, key=lambda w: (load[w], -w)) if room else min(load, key=lambda w: load[w])
        self.load[worker] = load[worker] + 1
        return worker, self.contacts[worker]

    def free(self, worker: int) -> None:
        if self.load.get(worker, 0) > 0:
            self.load[worker] -= 1


class SipDialer:
    """Places one SIP load call and returns its record: the softphone's INVITE tagged with a marker header,
    the scenario's steps, the caller's RTP figures, then the mock's view of the call found by the marker.
    Used by ``rtsip load --mode sip`` and by the Locust ``SipCaller``'s host process."""

    def __init__(self, phone: Any, control: _Control, spec: CallSpec, base: Path, phone_workers: int,
                 max_call_s: float) -> None:
        self.phone, self.control, self.spec, self.base = phone, control, spec, base
        self.phone_workers, self.max_call_s = phone_workers, max_call_s
        self.resolver = _SipResolver(control)
        self.run_id = uuid.uuid4().hex[:8]

    async def call(self, index: int, worker: int, uri: str, number: str,
                   ended: Callable[[], object] | None = None) -> CallRecord:
        """``ended``: called once the caller's side of the call is over (its ingress slot frees soon after)."""
        spec = self.spec
        rec = CallRecord(index=index, worker=worker, start=time.time())
        marker = f"{self.run_id}-{index}"
        error: str | None = None
        call = None
        try:
            async with asyncio.timeout(self.max_call_s + 30):
                call = await self.phone.call(uri, headers={**spec.headers, "X-Rtsip-Load": marker}, record=False,
                                             prefer_worker=worker % self.phone_workers, from_uri=f"tel:{number}",
                                             display_name=spec.display_name)
                if await call.answered(timeout=20):
                    await drive(spec.steps, _SipTarget(call, self.base, self.resolver, marker), spec.max_duration_s)
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
            if ended is not None:
                ended()
        sip_status = call.final_status if call is not None else None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                call_id = await self.resolver.find(marker, timeout=5)
                if call_id is not None:
                    rec.call_id = call_id
                    view = await self.control.ended_view(call_id)
                    rec.metrics = extract(view)
                    rec.state = view.state
                    rec.turns = len(rec.metrics.get("speech_end_to_audio_ms", []))
                    error = error or failure(view, sip_status=sip_status)
                    rec.rtp.update(ingress_rtp(view))
        error = _sip_call_error(rec, error, sip_status)
        rec.ok, rec.reason, rec.end = error is None, error, time.time()
        return rec


def load_phone(ca: str, workers: int, state_dir: Path, stderr: Any) -> Any:
    """The softphone pool of SIP load callers: media handed to Python every 200 ms, no recording."""
    from .softphone import Softphone

    return Softphone(ca=ca, workers=workers, state_dir=state_dir, record=False, frame_ms=SIP_LOAD_CALLER_FRAME_MS,
                     media=SIP_LOAD_MEDIA, stderr=stderr)


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


class _SipTarget:
    """A load call from the softphone: the steps stop once the call has ended, and the caller's
    hangup follows them (after its RTP figures are read)."""

    def __init__(self, call: Any, base: Path, resolver: _SipResolver, marker: str) -> None:
        self.call, self.base, self.resolver, self.marker = call, base, resolver, marker

    @property
    def over(self) -> bool:
        return bool(self.call.is_ended)

    async def answered(self, timeout: float) -> str | None:
        return None  # the steps start once the call is answered

    async def say(self, ref: str, left: float) -> bool:
        """Play the file, then wait for its length and the trailing silence the VAD needs to end the turn."""
        from mock_api import audio

        path = resolve_audio(ref, self.base)
        await self.call.play(path)
        ms = audio.duration_ms(audio.load_audio(path, 8000), 8000)
        await asyncio.sleep(min(left, (ms + TRAILING_SILENCE_MS) / 1000))
        return True

    async def dial(self, digits: str) -> bool:
        await self.call.send_dtmf(digits)
        return True

    async def hold(self, seconds: float) -> bool:
        await self.call.hold_for(seconds)
        return not self.call.is_ended

    async def new_ssrc(self) -> bool:
        """Once the mock has heard the caller's first SSRC (else a change could pass unnoticed)."""
        from .softphone import SoftphoneError

        if not await self.wait_event("sip.ssrc", 1, 10.0):
            return False
        with contextlib.suppress(SoftphoneError):  # the call has ended (just now)
            await self.call.new_ssrc()
        return not self.call.is_ended

    async def hang_up(self) -> bool:
        return False  # the caller's hangup follows the steps

    async def wait_event(self, kind: str, count: int, timeout: float) -> bool:
        """The mock's call is found by our INVITE's marker first, then its journal is polled."""
        end = time.monotonic() + timeout
        call_id = await self.resolver.find(self.marker, timeout=min(timeout, 10))
        return call_id is not None and await run_async(
            journal_wait(call_id, kind, count, end - time.monotonic()), self.resolver.control.req)

    def note(self, text: str) -> None:
        """Nothing to keep: a load call's result comes from its journal and RTP figures."""
