"""Start the mock inside the current event loop: what the CLI, the tests and the plugin share."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import os
import random
import socket
import traceback
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sipworker import require_sip
from sipworker.ports import PortInUse

from . import errors
from . import journal_entries as je
from .config import MockConfig
from .http import create_app
from .journal import SERVER, Journal
from .server import MockServer
from .shards import Shard

if TYPE_CHECKING:
    from .sip import SipIngress


@dataclass(frozen=True)
class SipOptions:
    """The SIP ingress: where it listens, how many worker processes (4 calls each) it runs, and how
    its workers hand call audio to Python (media, frame sizes: :class:`sipworker.ipc.WorkerConfig`)."""

    state_dir: Path
    port: int = 5061
    workers: int = 1
    record: bool = False
    frame_ms: int = 60
    vad_frame_ms: int = 20
    media: str = "native"
    opus: bool = True  # the workers offer and answer Opus when its codec factory is built (sipworker/opus)
    opus_rate: int = 48000

    def __post_init__(self) -> None:
        from sipworker.ipc import WorkerConfig

        # ValueError says what is wrong
        WorkerConfig(frame_ms=self.frame_ms, vad_frame_ms=self.vad_frame_ms, media=self.media)


@dataclass(frozen=True)
class TlsOptions:
    """An HTTPS/WSS listener beside the plain one, serving the same app with a certificate from the local CA
    in ``state_dir`` (what the ``AzureOpenAI`` client needs: it always opens its socket as ``wss://``).
    ``port`` 0 lets the OS choose."""

    state_dir: Path
    port: int = 0


# Shutdown. aiohttp closes no WebSocket by itself: its cleanup waits (60 s by default) for every handler,
# and a socket's handler runs until the client leaves. So the mock closes its sockets itself, first.
SHUTDOWN_CLOSE_CODE = 1001  # RFC 6455 "going away": the server is going down (the real service's code is unknown)
SHUTDOWN_CLOSE_REASON = "going away"
CLOSE_WAIT_S = 0.8  # a client that does not answer the close frame within this loses the connection
HANDLER_WAIT_S = 0.3  # aiohttp's wait for in-flight requests at cleanup (then again after cancelling them)


class OpenSockets:
    """Every WebSocket the app has upgraded and not yet closed (``on_response_prepare`` sees each upgrade)."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    async def track(self, request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            self._sockets.add(response)

    def __len__(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    async def close_all(self, code: int = SHUTDOWN_CLOSE_CODE, reason: str = SHUTDOWN_CLOSE_REASON,
                        wait: float = CLOSE_WAIT_S) -> None:
        """Send every open socket its close frame at once, then give the clients ``wait`` s to answer;
        a socket that has not by then is cut (its transport closed), so shutdown never waits on a client."""
        await asyncio.gather(*(_close(ws, code, reason, wait) for ws in list(self._sockets) if not ws.closed))


async def _close(ws: web.WebSocketResponse, code: int, reason: str, wait: float) -> None:
    with suppress(Exception):  # a socket that is already gone needs nothing more
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), wait)


MALLOC_ARENAS = 2
"""glibc's malloc arenas a serving mock may use. By default glibc gives threads arenas of their own, up to 8 a
core; the threads that parse big bodies and fingerprint new sounds each left one holding freed memory, and
the mock's RSS grew in steps under the fuzz campaign while its journal stayed at 1 MB."""

MALLOC_MMAP_THRESHOLD = 128 * 1024
"""A block this large or larger is glibc's own mapping, unmapped when freed. glibc's default starts here but
moves: each such block freed raises the threshold to its size (up to 32 MiB), so after the first 1 MiB body
every body up to that size came from the arenas. A body is read, copied and parsed while other requests
allocate around it; once freed, those copies were holes the arenas kept (the live heap stayed at 25 MB and
the pymalloc arenas at 53 while RSS took steps of 20 MB under the fuzz campaign). Set, it stays put."""

MALLOC_TRIM_THRESHOLD = 128 * 1024
"""Free memory at the top of an arena past this goes back to the kernel. Set, like the threshold above, so
glibc does not raise it either (it doubles the mmap threshold it moved to)."""


def tune_malloc(arenas: int = MALLOC_ARENAS) -> None:
    """Tune glibc's malloc for a serving mock before it starts its threads: cap its arenas
    (``mallopt(M_ARENA_MAX)``) and pin the thresholds for giving memory back (:data:`MALLOC_MMAP_THRESHOLD`,
    :data:`MALLOC_TRIM_THRESHOLD`). A no-op where the C library is not glibc. A serving process only, like
    :func:`freeze_startup_heap`."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
    libc.mallopt(m_arena_max, arenas)
    libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
    libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)


def freeze_startup_heap() -> None:
    """Take what exists once the mock is up out of the garbage collector's sight (a serving process only).

    Importing the SDK's types, pydantic and aiohttp leaves some 120,000 long-lived objects that every full
    collection walks again: about 70 ms with the event loop stopped, whatever the request that triggered it
    (the fuzz campaign's worst stalls were such collections, not its cases). Frozen, a full collection
    walks only what serving has made since. Not for a mock inside a test process: freezing there would
    pin the test's own garbage.
    """
    gc.collect()
    gc.freeze()


@dataclass
class RunningMock:
    server: MockServer
    host: str
    port: int
    sip: SipIngress | None = None
    runner: web.AppRunner | None = None
    tls_port: int | None = None  # the HTTPS/WSS listener, once started
    tls_ca: Path | None = None  # the CA an app trusts for it (SSL_CERT_FILE)
    sockets: OpenSockets = field(default_factory=OpenSockets)
    stopping: bool = False  # set by stop_serving: no new connections, every socket closed
    _closing: asyncio.Task[None] | None = None

    async def stop_serving(self) -> None:
        """The first step of shutting down, before calls are hung up: stop accepting connections and send
        every open WebSocket its 1001 "going away", so no session sends anything more. The clients' answers
        are awaited by :meth:`wait_closed` (meanwhile the SIP calls get their BYE). Idempotent."""
        if self.stopping:
            return
        self.stopping = True
        if self.runner is not None:
            for site in list(self.runner.sites):
                await site.stop()
        self._closing = asyncio.ensure_future(self.sockets.close_all())
        await asyncio.sleep(0)  # one loop turn: each socket's close starts by writing its close frame

    async def wait_closed(self) -> None:
        """Every socket closed (its client answered, or CLOSE_WAIT_S ran out and it was cut)."""
        if self._closing is not None:
            await self._closing

    async def start_tls(self, state_dir: Path, port: int = 0) -> int:
        """Serve the same app over HTTPS/WSS on ``host:port`` (closed with the mock); returns the port.

        A taken port raises :class:`sipworker.ports.PortInUse` with ``setting`` "tls_port"."""
        from . import certs

        if self.runner is None:
            raise RuntimeError("this mock was not started by running_mock")
        context = await asyncio.get_running_loop().run_in_executor(None, certs.https_context, state_dir)
        site = web.TCPSite(self.runner, self.host, port, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"cannot listen on {self.host}:{port}: {os.strerror(exc.errno)}", port,
                                "tls_port") from None
            raise
        self.tls_port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.tls_ca = certs.ca_path(state_dir)
        return self.tls_port

    @property
    def tls_url(self) -> str:
        """``https://host:port``: what an ``AzureOpenAI`` app passes as ``azure_endpoint``."""
        if self.tls_port is None:
            raise RuntimeError("no HTTPS/WSS listener: start the mock with tls=TlsOptions(...)")
        return f"https://{self.host}:{self.tls_port}"

    @property
    def tls_base_url(self) -> str:
        """``https://host:port/v1``: ``OPENAI_BASE_URL`` for an app that wants TLS to the mock."""
        return self.tls_url + "/v1"

    async def api_only_port(self) -> int:
        """A second listener on ``host`` serving the OpenAI API without the ``/_mock/`` control API
        (what the interception proxy relays to); closed with the mock."""
        if self.runner is None:
            raise RuntimeError("this mock was not started by running_mock")
        site = web.TCPSite(self.runner, self.host, 0, reuse_address=True)
        await site.start()
        port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.server.api_only_ports.add(port)
        return port

    @property
    def journal(self) -> Journal:
        return self.server.journal

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an app passes as ``OPENAI_BASE_URL``."""
        return self.url + "/v1"


@asynccontextmanager
async def running_mock(config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                       sip: SipOptions | None = None, shard: Shard | None = None,
                       tls: TlsOptions | None = None) -> AsyncIterator[RunningMock]:
    """``shard``: this mock is one of several behind a proxy that routes by call id (mock_api.shards).
    ``tls``: also serve HTTPS/WSS (``RunningMock.tls_url``).

    A taken ``port``, ``sip.port`` or ``tls.port`` raises :class:`sipworker.ports.PortInUse`; its
    ``setting`` ("port", "sip_port" or "tls_port") says which one. ``sip`` without pjsua2 installed raises
    :class:`sipworker.SipUnavailable` (its message is the one line to show) before anything listens."""
    if sip is not None:  # else each worker would die on `import pjsua2`, deep in its pipe
        require_sip("or start the mock without sip= (HTTP and WebSocket only)")
    server = MockServer(config, shard=shard)
    app = create_app(server)
    sockets = OpenSockets()
    app.on_response_prepare.append(sockets.track)
    runner = _ApiRunner(app, server.journal, access_log=None, handle_signals=False, shutdown_timeout=HANDLER_WAIT_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"cannot listen on {host}:{port}: {os.strerror(exc.errno)}", port, "port") from None
        raise
    bound = int(runner.addresses[0][1])  # the real port when 0 was asked for
    # the fingerprint index (~0.7 s, once per process) is built off the loop now, not at the first unscripted turn
    warming = asyncio.get_running_loop().run_in_executor(None, server.recogniser().warm)
    ingress = None
    mock = RunningMock(server, host, bound, None, runner, sockets=sockets)
    try:
        if tls is not None:
            await mock.start_tls(tls.state_dir, tls.port)
        if sip is not None:
            from .sip import SipIngress  # only SIP users pay for the worker pool

            ingress = SipIngress(server, sip.state_dir, host=host, port=sip.port, workers=sip.workers,
                                 record=sip.record, frame_ms=sip.frame_ms, vad_frame_ms=sip.vad_frame_ms,
                                 media=sip.media, opus=sip.opus, opus_rate=sip.opus_rate)
            await ingress.start()
            mock.sip = ingress
        yield mock
    finally:
        # Order matters: sockets first (sessions stop sending), then the SIP calls (their BYE, the workers
        # exit), then aiohttp (in-flight requests get HANDLER_WAIT_S), then the journal's last word.
        await mock.stop_serving()
        if ingress is not None:
            await ingress.stop()
        await mock.wait_closed()
        await runner.cleanup()
        flush_journal(server.journal)
        await warming


SPILL_FLUSH_S = 10.0  # at most this long at shutdown for the spill file to take what is still queued


def flush_journal(journal: Journal) -> None:
    """At shutdown, a journal with a spill file writes every timeline still in memory there, so a run
    that ends leaves its whole record on disk; without one, memory is all there was."""
    if journal.spill is None:
        return
    for key in [*journal.call_ids(), SERVER]:
        journal.forget(key)
    journal.flush_spill(SPILL_FLUSH_S)


# ---- unparseable requests -------------------------------------------------------------------------


class _ApiRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what never reached the app (a garbage request line, a header
    past the limits, a crash outside the middlewares) in the API's error envelope, journaled, instead of a
    plain-text 400 and a traceback on stderr."""

    journal: Journal | None = None

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of an answer went out: the connection is all that is left
            raise ConnectionError("response already started; cannot send an error response")
        if self.journal is not None:
            _journal_error(self.journal, request, status, exc, message)
        if status >= 500:
            response = errors.rest_error(status, "The server had an error while processing your request. "
                                         "Sorry about that!", type="server_error")
        else:
            response = errors.rest_error(status, "We could not parse your HTTP request: "
                                         f"{_one_line(message or str(exc or 'malformed request'))}")
        response.force_close()
        return response


def _journal_error(journal: Journal, request: BaseRequest, status: int, exc: BaseException | None,
                   message: str | None) -> None:
    """A 4xx here is the client's malformed request; a 5xx is an exception of ours (``mock.bug``)."""
    if status >= 500 and exc is not None:
        tb = "".join(traceback.format_exception(exc))[-8000:]
        journal.add(None, je.MockBug(where="http", error=repr(exc)[:500], traceback=tb))
    else:
        journal.add(None, je.HttpMalformed(status=status, error=_one_line(message or repr(exc)), peer=request.remote))


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


class _ApiServer(web.Server):
    journal: Journal | None = None

    def __call__(self) -> RequestHandler:
        handler = _ApiRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.journal = self.journal
        return handler


class _ApiRunner(web.AppRunner):
    """An AppRunner whose connections answer with :class:`_ApiRequestHandler` (aiohttp has no setting for it)."""

    def __init__(self, app: web.Application, journal: Journal, **kwargs: object) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self._journal = journal

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ApiServer  # same object, same state: only which handler class it builds changes
        server.journal = self._journal  # type: ignore[attr-defined]
        return server


# Ports handed to other processes (an app under test) come from below the kernel's ephemeral range
# (32768-60999 here), so an outgoing connection cannot take one between our check and the app's bind,
# and below sipworker.ports.RTP_PORTS, where the SIP workers' RTP ranges are chosen.
_APP_PORTS = range(10000, 19999)
_RNG = random.SystemRandom()  # not the global RNG, which tests may seed


def free_port(host: str = "127.0.0.1") -> int:
    """The one place that finds a free port for another process to bind (tests bind 0 where they can)."""
    for _ in range(200):
        port = _RNG.choice(_APP_PORTS)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # everything tried was busy: let the kernel pick
        s.bind((host, 0))
        return int(s.getsockname()[1])
