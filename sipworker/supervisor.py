"""asyncio-side manager of a pool of SIP worker processes.  Never imports pjsua2.

Why a pool: the wheel caps a process at 4 calls and aborts the process on many errors, so
capacity is processes and a crash must cost only that process's calls.  The pool

* starts N workers (plain subprocesses of ``python -m sipworker.worker``) and waits for ``ready``;
* routes commands (by worker index or by call ``ref``) and pairs them with their replies;
* delivers every worker event upward, in order, tagged with the worker index;
* pings each worker; a worker that stops answering is killed;
* when a worker exits unexpectedly, emits ``call_failed`` for each of its live calls (so the
  mock can journal them: nothing is silently lost), ``worker_exited``, and restarts it on the same
  SIP ports (``worker_started`` with ``restarts`` incremented);
* optionally acts as a *front door*: worker 0 keeps ``front_reserve`` slots free and answers an
  INVITE it should not hold with a 302 to a worker that has a free slot (``call_redirected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TextIO

from .ipc import PJ_ETOOMANY, PROTOCOL_VERSION, Command, Ev, Event, Op, ProtocolError, WorkerConfig
from .ports import RTP_SPAN
from .ports import rtp_base as free_rtp_base

EventHandler = Callable[[Event], Awaitable[None] | None]

# The directory holding this sipworker package: the worker must import this very copy, installed or not.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIRECT_HOLD_S = 5.0  # how long a slot reserved for a redirected INVITE stays reserved


class WorkerError(RuntimeError):
    """A command failed in the worker (``status`` is the pj status code when there is one)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WorkerGone(WorkerError):
    """The worker exited before replying."""


class PoolFull(RuntimeError):
    """No worker has a free call slot."""


@dataclass
class WorkerInfo:
    """Public, read-only view of one pool member."""

    index: int
    pid: int | None = None
    ports: dict[str, int] = field(default_factory=dict)  # {"tls": 5061, "tcp": ..., "udp": ...}
    max_calls: int = 4
    calls: set[str] = field(default_factory=set)  # live call refs
    reserved: dict[str, float] = field(default_factory=dict)  # sip_call_id → expiry of a redirect
    alive: bool = False
    restarts: int = 0
    returncode: int | None = None
    media: str = ""  # the frame ports the worker reported: "native", or "python" (asked for, or fallen back to)
    codecs: list[str] = field(default_factory=list)  # the worker's codec order, as it set it (ready)
    opus_unavailable: str | None = None  # why a worker asked for Opus runs without it (ready)

    @property
    def load(self) -> int:
        now = time.monotonic()
        for k in [k for k, exp in self.reserved.items() if exp < now]:
            del self.reserved[k]
        return len(self.calls) + len(self.reserved)

    @property
    def free(self) -> int:
        return self.max_calls - self.load if self.alive else 0


def pool_configs(
    size: int,
    template: WorkerConfig,
    *,
    first_tls_port: int | None = None,
    first_tcp_port: int | None = None,
    first_udp_port: int | None = None,
    rtp_base: int | None = None,
    rtp_span: int = RTP_SPAN,
) -> list[WorkerConfig]:
    """Per-worker configs: worker 0 may get fixed (advertised) ports, others ephemeral ones.

    Each worker gets its own RTP range (``rtp_base + i * rtp_span``) so processes never race for
    the same RTP ports; without ``rtp_base``, the ranges are ports free now (:mod:`sipworker.ports`),
    so other programs on the host, other rtsip instances included, keep theirs.  Transports
    disabled in the template (``None``) stay disabled.
    """
    if rtp_base is None:
        rtp_base = free_rtp_base(size, rtp_span, template.bind)
    out = []
    for i in range(size):
        cfg = dataclasses.replace(
            template, name=f"{template.name}-{i}", rtp_port=rtp_base + i * rtp_span, rtp_port_range=rtp_span
        )
        if i == 0:
            if first_tls_port is not None and cfg.tls_port is not None:
                cfg.tls_port = first_tls_port
            if first_tcp_port is not None and cfg.tcp_port is not None:
                cfg.tcp_port = first_tcp_port
            if first_udp_port is not None and cfg.udp_port is not None:
                cfg.udp_port = first_udp_port
        out.append(cfg)
    return out


class _Proc:
    """One worker process and its pipes (one incarnation; a restart makes a new one)."""

    def __init__(self, pool: WorkerPool, index: int, cfg: WorkerConfig) -> None:
        self.pool = pool
        self.index = index
        self.cfg = cfg
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.reader: asyncio.Task[None] | None = None
        self.pinger: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> dict[str, Any]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = await asyncio.create_subprocess_exec(
            self.pool.python,
            "-m",
            "sipworker.worker",
            "--config",
            self.cfg.to_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.pool.stderr,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the parent, which shuts us down
            limit=1 << 24,
            env=env,
        )
        self.reader = asyncio.create_task(self._read(), name=f"sipworker-{self.index}-reader")
        try:
            ready = await asyncio.wait_for(asyncio.shield(self.ready), self.pool.start_timeout)
        except Exception:
            self.kill()
            raise
        if ready.get("protocol") != PROTOCOL_VERSION:
            self.kill()
            raise WorkerError(f"worker speaks protocol {ready.get('protocol')}, we speak {PROTOCOL_VERSION}")
        self.pinger = asyncio.create_task(self._ping_loop(), name=f"sipworker-{self.index}-ping")
        return ready

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def send(self, op: str, args: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise WorkerGone(f"worker {self.index} is not running")
        req = next(self.pool._req_ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[req] = fut
        try:
            self.proc.stdin.write(Command(op=op, args=args, req=req).encode())
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.pending.pop(req, None)
            raise WorkerGone(f"worker {self.index}: {exc}") from exc
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(req, None)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.pool.ping_interval)
            try:
                await self.send(Op.PING.value, {}, self.pool.ping_timeout)
            except WorkerGone:
                return
            except TimeoutError:
                self.pool._emit(
                    Event(
                        Ev.LOG.value,
                        {"level": "error", "msg": f"worker {self.index} ping timeout; killing"},
                        worker=self.index,
                    )
                )
                self.kill()
                return

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stream = self.proc.stdout
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                break
            try:
                ev = Event.from_line(line)
            except ProtocolError as exc:
                self.pool._emit(
                    Event(Ev.LOG.value, {"level": "error", "msg": f"bad event line: {exc}"}, worker=self.index)
                )
                continue
            ev.worker = self.index
            if ev.kind == Ev.REPLY:
                fut = self.pending.get(int(ev.data.get("req", -1)))
                if fut is not None and not fut.done():
                    if ev.data.get("ok"):
                        fut.set_result(ev.data.get("result") or {})
                    else:
                        fut.set_exception(WorkerError(str(ev.data.get("error")), ev.data.get("status")))
                continue
            if ev.kind == Ev.READY:
                if not self.ready.done():
                    self.ready.set_result(ev.data)
                continue
            self.pool._on_worker_event(self, ev)
        rc = await self.proc.wait()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(WorkerGone(f"worker {self.index} exited (rc {rc})"))
        if not self.ready.done():
            self.ready.set_exception(WorkerGone(f"worker {self.index} exited before ready (rc {rc})"))
        if self.pinger is not None:
            self.pinger.cancel()
        self.pool._on_worker_exit(self, rc)


class WorkerPool:
    """A supervised pool of SIP workers.  Use as ``async with WorkerPool(configs, on_event=...)``.

    Events reach ``on_event`` (sync or async callable, called in order from one task) or, without
    a handler, an internal queue read with :meth:`events` / :meth:`next_event`.
    """

    def __init__(
        self,
        configs: list[WorkerConfig],
        *,
        on_event: EventHandler | None = None,
        restart: bool = True,
        front_door: bool = False,
        front_reserve: int = 1,
        ping_interval: float = 2.0,
        ping_timeout: float = 3.0,
        start_timeout: float = 15.0,
        command_timeout: float = 10.0,
        python: str = sys.executable,
        stderr: int | TextIO | None = None,
    ) -> None:
        if not configs:
            raise ValueError("a pool needs at least one worker")
        self.configs = list(configs)
        self.on_event = on_event
        self.restart = restart
        self.front_door = front_door and len(configs) > 1
        self.front_reserve = front_reserve
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.python = python
        self.stderr = stderr
        self.workers = [WorkerInfo(index=i, max_calls=min(4, c.max_calls)) for i, c in enumerate(configs)]
        self._procs: list[_Proc | None] = [None] * len(configs)
        self._req_ids = itertools.count(1)
        self._refs = itertools.count(1)
        self._owner: dict[str, int] = {}  # call ref → worker index
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._restarts: set[asyncio.Task[None]] = set()
        self._running = False

    # -- lifecycle
    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._running = True
        if self.on_event is not None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="sipworker-dispatch")
        try:
            await asyncio.gather(*(self._spawn(i) for i in range(len(self.configs))))
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, index: int) -> None:
        proc = _Proc(self, index, self.configs[index])
        self._procs[index] = proc
        ready = await proc.start()
        info = self.workers[index]
        info.pid, info.alive, info.returncode = ready.get("pid"), True, None
        info.max_calls = int(ready.get("max_calls", 4))
        info.media = str(ready.get("media", "python"))
        info.codecs = [str(c) for c in ready.get("codecs") or []]
        info.opus_unavailable = ready.get("opus_unavailable")
        info.ports = {k[:-5]: int(v) for k, v in ready.items() if k.endswith("_port") and v is not None}
        # Pin the ports we got so a restart reuses them (contacts stay valid).
        cfg = self.configs[index]
        for key, port in info.ports.items():
            setattr(cfg, f"{key}_port", port)
        self._emit(
            Event(
                Ev.WORKER_STARTED.value,
                {
                    "worker": index,
                    "pid": info.pid,
                    "restarts": info.restarts,
                    **{f"{k}_port": v for k, v in info.ports.items()},
                },
                worker=index,
            )
        )

    async def stop(self, timeout: float = 3.0) -> None:
        """Ask every worker to shut down (they hang up their calls), kill stragglers."""
        self._running = False
        for t in list(self._restarts):
            t.cancel()
        procs = [p for p in self._procs if p is not None and p.proc is not None]
        for p in procs:
            p.stopping = True
            with contextlib.suppress(WorkerError, TimeoutError, OSError):
                assert p.proc is not None and p.proc.stdin is not None
                if p.proc.returncode is None:
                    p.proc.stdin.write(Command(op=Op.SHUTDOWN.value, req=0).encode())
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(p.proc.stdin.drain(), 0.5)

        async def _wait(p: _Proc) -> None:
            assert p.proc is not None
            try:
                await asyncio.wait_for(p.proc.wait(), timeout)
            except TimeoutError:
                p.kill()
                await p.proc.wait()
            if p.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.reader, 1.0)

        await asyncio.gather(*(_wait(p) for p in procs), return_exceptions=True)
        if self._dispatcher is not None:
            await self._queue.put(Event("_stop"))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dispatcher, 2.0)
            self._dispatcher = None

    # -- commands
    async def command(self, worker: int, op: str | Op, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        proc = self._procs[worker]
        if proc is None:
            raise WorkerGone(f"worker {worker} not started")
        return await proc.send(str(op), args, timeout or self.command_timeout)

    def owner(self, ref: str) -> int:
        try:
            return self._owner[ref]
        except KeyError:
            raise KeyError(f"unknown call ref {ref!r}") from None

    async def call_command(self, ref: str, op: str | Op, **args: Any) -> dict[str, Any]:
        """Send a per-call command (answer, reject, play, ...) to the worker that owns ``ref``."""
        return await self.command(self.owner(ref), op, ref=ref, **args)

    def pick_worker(
        self, exclude: int | None = None, skip: Collection[int] = (), prefer: int | None = None
    ) -> int | None:
        """``prefer`` if it has a free slot, else the least-loaded live worker with one.

        The front door's reserve counts as used.  ``prefer`` lets a caller keep the calls between
        two processes together: one RTP wake-up then serves all of them (see ``Softphone.call``).
        """
        best: tuple[int, int] | None = None
        for w in self.workers:
            if w.index == exclude or w.index in skip or not w.alive:
                continue
            free = w.free - (self.front_reserve if self.front_door and w.index == 0 else 0)
            if free > 0 and w.index == prefer:
                return w.index
            if free > 0 and (best is None or free > best[0]):
                best = (free, w.index)
        return best[1] if best else None

    async def make_call(
        self, uri: str, *, ref: str | None = None, worker: int | None = None, prefer: int | None = None, **args: Any
    ) -> tuple[str, dict[str, Any]]:
        """Place a call from ``worker``, else from ``prefer`` or another with a free slot.

        Returns (ref, reply).  Raises PoolFull.
        """
        ref = ref or f"call-{os.getpid()}-{next(self._refs)}"
        if worker is not None:
            return ref, await self._make_call_on(worker, ref, uri, args)
        full: set[int] = set()
        while True:
            picked = self.pick_worker(skip=full, prefer=prefer)
            if picked is None:
                raise PoolFull("no SIP worker has a free call slot")
            try:
                return ref, await self._make_call_on(picked, ref, uri, args)
            except WorkerGone:
                raise
            except WorkerError as exc:
                if exc.status != PJ_ETOOMANY:
                    raise
                # we counted its slot free on call_ended, pjsua frees it a moment later: try another worker
                full.add(picked)

    async def _make_call_on(self, worker: int, ref: str, uri: str, args: dict[str, Any]) -> dict[str, Any]:
        info = self.workers[worker]
        self._owner[ref] = worker
        info.calls.add(ref)
        try:
            return await self.command(worker, Op.MAKE_CALL, ref=ref, uri=uri, **args)
        except WorkerGone:
            raise  # the exit handler reports call_failed for this ref
        except BaseException:
            info.calls.discard(ref)
            self._owner.pop(ref, None)
            raise

    def contact_uri(self, worker: int, user: str, transport: str = "tls", host: str | None = None) -> str:
        """The URI of ``user`` at ``worker`` over ``transport`` (for redirects and tests)."""
        info = self.workers[worker]
        port = info.ports.get(transport)
        if port is None:
            raise KeyError(f"worker {worker} has no {transport} transport")
        host = host or self.configs[worker].bind
        tp = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user}@{host}:{port}{tp}" if user else f"sip:{host}:{port}{tp}"

    def kill(self, worker: int, sig: int = signal.SIGKILL) -> None:
        """Kill a worker process (tests, chaos): the pool reports its calls failed and restarts it."""
        proc = self._procs[worker]
        if proc is not None and proc.proc is not None and proc.proc.returncode is None:
            proc.proc.send_signal(sig)

    async def wait_worker_alive(self, worker: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.workers[worker].alive:
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {worker} did not come back")
            await asyncio.sleep(0.05)

    # -- events
    async def next_event(self, timeout: float | None = None) -> Event:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    def _emit(self, ev: Event) -> None:
        self._queue.put_nowait(ev)

    async def _dispatch(self) -> None:
        assert self.on_event is not None
        while True:
            ev = await self._queue.get()
            if ev.kind == "_stop":
                return
            try:
                res = self.on_event(ev)
                if inspect.isawaitable(res):
                    await res
            except Exception as exc:  # a broken handler must not stop event delivery
                print(f"sipworker pool: event handler failed on {ev.kind}: {exc!r}", file=sys.stderr)

    def _on_worker_event(self, proc: _Proc, ev: Event) -> None:
        if self._procs[proc.index] is not proc:
            return  # a late line from a previous incarnation
        info = self.workers[proc.index]
        ref = ev.ref
        if ev.kind == Ev.INCOMING_CALL and ref:
            info.calls.add(ref)
            self._owner[ref] = proc.index
            info.reserved.pop(str(ev.data.get("sip_call_id", "")), None)
            if self.front_door and proc.index == 0 and self._redirect_if_needed(info, ev):
                return
        elif ev.kind == Ev.CALL_ENDED and ref:
            info.calls.discard(ref)
            self._owner.pop(ref, None)
        self._emit(ev)

    def _redirect_if_needed(self, front: WorkerInfo, ev: Event) -> bool:
        """Front door: keep ``front_reserve`` slots free on worker 0 by 302-ing the overflow."""
        if len(front.calls) <= front.max_calls - self.front_reserve:
            return False
        target = self.pick_worker(exclude=0)
        if target is None:
            return False  # nowhere to send it; the front holds it in its reserve slot
        ref = ev.ref
        assert ref is not None
        sip_call_id = str(ev.data.get("sip_call_id", ""))
        self.workers[target].reserved[sip_call_id] = time.monotonic() + REDIRECT_HOLD_S
        contact = self.contact_uri(target, str(ev.data.get("user", "")), str(ev.data.get("transport") or "tls"))
        self._emit(
            Event(
                Ev.CALL_REDIRECTED.value,
                {"ref": ref, "sip_call_id": sip_call_id, "to_worker": target, "contact": contact},
                worker=0,
            )
        )

        async def _send() -> None:
            try:
                await self.command(0, Op.REDIRECT, ref=ref, contact=contact)
            except (WorkerError, KeyError, TimeoutError) as exc:
                self.workers[target].reserved.pop(sip_call_id, None)
                self._emit(Event(Ev.LOG.value, {"level": "error", "msg": f"redirect {ref}: {exc}"}, worker=0))

        task = asyncio.create_task(_send())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)
        return True

    def _on_worker_exit(self, proc: _Proc, rc: int) -> None:
        if self._procs[proc.index] is not proc:
            return
        info = self.workers[proc.index]
        info.alive, info.returncode = False, rc
        expected = proc.stopping or not self._running
        for ref in sorted(info.calls):
            self._owner.pop(ref, None)
            self._emit(
                Event(
                    Ev.CALL_FAILED.value,
                    {
                        "ref": ref,
                        "reason": "worker_exited" if expected else "worker_died",
                        "worker": proc.index,
                        "returncode": rc,
                    },
                    worker=proc.index,
                )
            )
        info.calls.clear()
        info.reserved.clear()
        # A process that never became ready is retried by the _restart loop that spawned it, not here:
        # two loops would race for the same ports.
        was_ready = proc.ready.done() and not proc.ready.cancelled() and proc.ready.exception() is None
        restarting = self._running and self.restart and not expected and was_ready
        self._emit(
            Event(
                Ev.WORKER_EXITED.value,
                {"worker": proc.index, "pid": info.pid, "returncode": rc, "restarting": restarting},
                worker=proc.index,
            )
        )
        if restarting:
            task = asyncio.create_task(self._restart(proc.index))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self, index: int) -> None:
        delay = 0.2
        while self._running:
            self.workers[index].restarts += 1
            try:
                await self._spawn(index)
                return
            except (WorkerError, TimeoutError, OSError) as exc:
                self._emit(
                    Event(
                        Ev.LOG.value,
                        {"level": "error", "msg": f"restart of worker {index} failed: {exc}"},
                        worker=index,
                    )
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
