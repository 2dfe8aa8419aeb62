"""A scriptable answering agent (test UAS) over a :class:`WorkerPool` in answering role.

Why here: tests and benchmarks need a SIP server that is *not* the mock (to test the softphone
and the workers on their own), and it must drive real workers through the same public pool API
the mock's SIP ingress uses — so it doubles as a worked example of that API.

Each incoming call is handled by ``policy(call) -> Action``; the default answers with 180 then 200.
The TLS certificate and key come from the caller (e.g. ``mock_api.certs.ensure_certs``): the
workers are the lowest floor and need nothing from the mock above them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .codecs import G711, wants_opus
from .ipc import Ev, Event, Op, WorkerConfig
from .supervisor import WorkerPool, pool_configs


class TlsFiles(Protocol):
    """The TLS files of a UAS: its certificate and key, and the CA its callers trust."""

    @property
    def ca(self) -> Path: ...

    @property
    def cert(self) -> Path: ...

    @property
    def key(self) -> Path: ...


@dataclass
class Action:
    """What the agent does with an incoming call."""

    kind: str = "answer"  # answer | reject | redirect | ignore
    code: int | None = None  # reject code (default 603 in the worker) or answer code
    ring_ms: int = 0  # send 180 and wait this long before answering (0: answer at once, no 180)
    play: list[str] = field(default_factory=list)  # 8 kHz WAVs to play once answered
    record: bool = True
    vad: dict[str, Any] | None = None
    contact: str | None = None  # for redirect


@dataclass
class IncomingCall:
    ref: str
    worker: int
    data: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    recording: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {k: v for k, v in self.data.get("headers", [])}

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


Policy = Callable[[IncomingCall], Action | Awaitable[Action]]


class TestUas:
    """Answering pool + per-call policy; ``calls`` keeps everything seen, in arrival order."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        certs: TlsFiles,
        workers: int = 1,
        policy: Policy | None = None,
        front_door: bool = False,
        tcp: bool = False,
        udp: bool = False,
        srtp: str = "disabled",
        rtp_base: int | None = None,  # None: a range free at start (sipworker.ports)
        rtp_timeout_s: float = 15.0,
        frame_ms: int = 60,
        vad_frame_ms: int = 20,
        media: str = "native",
        codecs: Sequence[str] = G711,
    ) -> None:
        """``codecs``: what the UAS may answer with (naming ``opus`` loads the Opus codec into its workers)."""
        self.state_dir = Path(state_dir)
        self.certs = certs
        self.policy = policy
        template = WorkerConfig(
            name="uas",
            tls_port=0,
            tcp_port=0 if tcp else None,
            udp_port=0 if udp else None,
            cert_file=str(self.certs.cert),
            key_file=str(self.certs.key),
            srtp=srtp,
            user="uas",
            rtp_timeout_s=rtp_timeout_s,
            frame_ms=frame_ms,
            vad_frame_ms=vad_frame_ms,
            media=media,
            codecs=list(codecs),
            opus=wants_opus(codecs),
        )
        self.pool = WorkerPool(
            pool_configs(workers, template, rtp_base=rtp_base), on_event=self._on_event, front_door=front_door
        )
        self.calls: dict[str, IncomingCall] = {}
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TestUas:
        await self.pool.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.pool.stop()

    def uri(self, user: str = "proj_test", worker: int = 0, transport: str = "tls") -> str:
        return self.pool.contact_uri(worker, user, transport)

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(pred), timeout)

    async def wait_call(self, n: int = 1, timeout: float = 10.0) -> IncomingCall:
        """The n-th incoming call (1-based)."""
        await self.wait_for(lambda: len(self.calls) >= n, timeout)
        return list(self.calls.values())[n - 1]

    async def command(self, call: IncomingCall, op: Op, **args: Any) -> dict[str, Any]:
        return await self.pool.call_command(call.ref, op, **args)

    async def _on_event(self, ev: Event) -> None:
        self.events.append(ev)
        ref = ev.ref
        if ev.kind == Ev.INCOMING_CALL and ref:
            call = IncomingCall(ref=ref, worker=ev.worker or 0, data=ev.data)
            self.calls[ref] = call
            if self.policy is not None:
                task = asyncio.create_task(self._handle(call))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if ref and ref in self.calls:
            call = self.calls[ref]
            call.events.append(ev)
            if ev.kind == Ev.RECORDING:
                call.recording = ev.data.get("path")
            if ev.kind in (Ev.CALL_ENDED, Ev.CALL_FAILED):
                call.end = dict(ev.data, kind=ev.kind)
                call.ended.set()
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, call: IncomingCall) -> None:
        assert self.policy is not None
        action = self.policy(call)
        if asyncio.iscoroutine(action) or isinstance(action, asyncio.Future):
            action = await action
        assert isinstance(action, Action)
        with contextlib.suppress(Exception):
            args: dict[str, Any]
            if action.kind == "reject":
                args = {"code": action.code} if action.code else {}
                await self.command(call, Op.REJECT, **args)
            elif action.kind == "redirect":
                assert action.contact
                await self.command(call, Op.REDIRECT, contact=action.contact)
            elif action.kind == "answer":
                if action.ring_ms:
                    await self.command(call, Op.RINGING)
                    await asyncio.sleep(action.ring_ms / 1000)
                rec = str(self.state_dir / f"uas-{call.ref}.wav") if action.record else None
                args = {"play": action.play, "record": rec}
                if action.vad is not None:
                    args["vad"] = action.vad
                if action.code:
                    args["code"] = action.code
                await self.command(call, Op.ANSWER, **args)
