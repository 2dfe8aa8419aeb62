"""Calls spread over several mock processes (``rtsip load --mock-processes N``).

Each shard is a whole mock (calls, sessions, virtual callers, journal) on its own port, so the
sessions of a big virtual load use more than one core.  The app under test keeps a single base
URL: a :class:`ShardRouter` listens there, reads the request line of each new connection without
consuming it (``MSG_PEEK``) and passes the socket itself to the shard that owns the call
(``SCM_RIGHTS`` over a Unix datagram socket).  The app's bytes, credentials included, reach that
shard untouched, and the router never relays traffic.  A shard's call ids carry its number in their
first hex digit, so routing needs no shared table.

Only a connection's first request decides where it goes, and clients keep connections alive: a
later request on a handed-over connection (its local port is the router's, not the shard's) that
names another shard's call is passed on by a :class:`ShardForwarder`, over a fresh connection to
the router, and its answer returned with its status, body and headers.  Account-wide limits
(concurrent sessions, per-minute budgets) would be per shard here, so ``rtsip load`` refuses to
combine them with shards.  Control-API requests that name no call (``/_mock/journal``, the call
list, ``PUT /_mock/config``) reach shard 0 through the router; each shard answers them for itself
on its own port.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import re
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

MAX_SHARDS = 16  # one hex digit of the call id
_CALL_ID = re.compile(rb"(rtc|live)_[0-9a-f]{32}")  # a call's Realtime id, or its GPT-Live id (same first digit)
_PEEK_BYTES = 8192
_PEEK_TIMEOUT_S = 10.0
_HANDOFF_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Shard:
    """This process's place among ``count`` shards."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count <= {MAX_SHARDS}")

    def call_id(self) -> str:
        """`rtc_` + 32 hex (the spec's form) whose first digit routes to this shard."""
        digits = [d for d in range(16) if d % self.count == self.index]
        return f"rtc_{secrets.choice(digits):x}{secrets.token_hex(16)[1:]}"

    def owns(self, path_qs: str) -> bool:
        """Whether a request (path and query, as a shard has parsed them) names this shard's call."""
        return route(path_qs.encode(), self.count) == self.index

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (as given to ``rtsip mock --shard``)."""
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/2") from None
        return cls(index, count)


def shard_of(call_id: str, count: int) -> int:
    """The shard that made ``call_id``; ids of another form (never made by a shard) go to shard 0."""
    prefix = next((p for p in ("rtc_", "live_") if call_id.startswith(p)), None)
    if count > 1 and prefix is not None and len(call_id) > len(prefix):
        with contextlib.suppress(ValueError):
            return int(call_id[len(prefix)], 16) % count
    return 0


def route(head: bytes, count: int) -> int:
    """Shard for a request, from its request line: the call id in its path or query, else shard 0."""
    found = _CALL_ID.search(head.split(b"\r\n", 1)[0])
    return shard_of(found.group().decode(), count) if found else 0


# hop-by-hop and framing headers: the forwarding connection sets its own
_NOT_FORWARDED = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
                            "te", "trailer", "proxy-connection"})
# what an aiohttp client would add of its own: a forwarded request carries only the client's headers
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class ShardForwarder:
    """Passes a request that reached the wrong shard on a kept-alive connection back through the router."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = 0

    async def forward(self, request: web.Request, body: bytes, router: tuple[str, int]) -> web.Response:
        """``body``: the request's, already read within the mock's size limit."""
        if self._session is None:
            # a fresh connection per request, so the router routes each by its only request line;
            # nothing added or decoded on the way: the other shard sees the client's request
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                                  auto_decompress=False, skip_auto_headers=_AUTO_HEADERS)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED)
        self.forwarded += 1
        async with self._session.request(request.method, f"http://{router[0]}:{router[1]}{request.path_qs}",
                                         headers=headers, data=body or None, allow_redirects=False) as upstream:
            data = await upstream.read()
            out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED)
            return web.Response(status=upstream.status, body=data, headers=out)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ShardRouter:
    """Accepts the app's connections on one port and hands each to the shard its first request names."""

    def __init__(self, handoffs: list[Path], host: str = "127.0.0.1", port: int = 0) -> None:
        self.handoffs = [str(p) for p in handoffs]
        self.host, self.port = host, port
        self.routed = [0] * len(handoffs)  # connections per shard
        self.dropped = 0  # connections closed before their request line arrived, or whose shard was gone
        self._listener: socket.socket | None = None
        self._out: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def waiting(self) -> int:
        """Connections accepted whose request line has not arrived yet."""
        return len(self._conns)

    async def start(self) -> None:
        self._listener = socket.create_server((self.host, self.port), backlog=1024)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._task = asyncio.create_task(self._accept(), name="shard-router")

    async def stop(self) -> None:
        for task in [self._task, *self._conns]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._conns] if t is not None), return_exceptions=True)
        for sock in (self._listener, self._out):
            if sock is not None:
                sock.close()

    async def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError:  # out of descriptors for a moment: the connection waits in the backlog
                await asyncio.sleep(0.05)
                continue
            task = asyncio.create_task(self._hand_over(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        with conn:
            head = await _peek_head(conn)
            if not head:
                self.dropped += 1
                return
            shard = route(head, len(self.handoffs))
            try:
                await self._send_fd(conn.fileno(), self.handoffs[shard])
            except OSError:  # that shard is gone: the client sees its connection close
                self.dropped += 1
                return
            self.routed[shard] += 1
        # our copy closes here; the shard holds its own descriptor of the same connection

    async def _send_fd(self, fd: int, path: str) -> None:
        """A gone shard (refused, no socket) fails at once; a full queue (a burst of connects against
        net.unix.max_dgram_qlen, 10 here, while the shard's loop is busy) is retried for a while."""
        assert self._out is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _HANDOFF_TIMEOUT_S
        while True:
            try:
                self._out.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
                                  socket.MSG_DONTWAIT, path)
                return
            except BlockingIOError:
                if loop.time() > deadline:
                    raise OSError(f"shard at {path} took no connection for {_HANDOFF_TIMEOUT_S:g} s") from None
                await asyncio.sleep(0.002)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # readiness can fire again before the reader is removed
        ready.set_result(None)


async def _peek_head(conn: socket.socket) -> bytes:
    """The first bytes of the request, left in the socket for the shard to read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PEEK_TIMEOUT_S
    while loop.time() < deadline:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), _wake, ready)
        try:
            await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
        except TimeoutError:
            return b""
        finally:
            loop.remove_reader(conn.fileno())
        try:
            head = conn.recv(_PEEK_BYTES, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        except OSError:
            return b""  # reset before it said anything
        if not head:
            return b""  # closed before it said anything
        if b"\r\n" in head or len(head) >= _PEEK_BYTES:
            return head
        await asyncio.sleep(0.001)  # a request line split over segments: the socket stays readable
    return b""


class HandoffReceiver:
    """A shard's end: connections the router passes in are served as if accepted here."""

    def __init__(self, path: Path, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        self.path = path
        self._factory = protocol_factory
        self._sock: socket.socket | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._receive)

    def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _receive(self) -> None:
        assert self._sock is not None
        while True:
            try:
                _msg, fds, flags, _addr = socket.recv_fds(self._sock, 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            if flags & socket.MSG_CTRUNC:  # out of descriptors here: that client's connection is lost
                print(f"rtsip mock: a connection handed over on {self.path} was lost (no descriptor left; "
                      "raise `ulimit -n`)", file=sys.stderr, flush=True)
            for fd in fds:
                task = asyncio.ensure_future(self._serve(socket.socket(fileno=fd)))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # the app hung up in between


# ---- the router as its own process (rtsip load starts it; the load process stays out of the path) ----

ROUTER_READY = "rtsip shard router ready:"


async def _serve_router(port: int, handoffs: list[Path]) -> None:
    import signal

    router = ShardRouter(handoffs, port=port)
    await router.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{ROUTER_READY} url={router.url}", flush=True)
    await stop.wait()
    waiting = router.waiting
    await router.stop()
    print(f"rtsip shard router: routed {router.routed}, dropped {router.dropped}, still waiting for a request line "
          f"{waiting}", flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mock_api.shards", description=ShardRouter.__doc__)
    ap.add_argument("--port", type=int, default=0, help="the base URL's port (0: a free one)")
    ap.add_argument("handoffs", nargs="+", type=Path, metavar="SOCKET", help="each shard's --handoff socket, in order")
    args = ap.parse_args(argv)
    if len(args.handoffs) > MAX_SHARDS:
        print(f"at most {MAX_SHARDS} shards", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_router(args.port, args.handoffs))
    except OSError as exc:
        print(f"rtsip shard router: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
