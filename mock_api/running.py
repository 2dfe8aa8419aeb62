"""Start the mock inside the current event loop: what the CLI, the tests and the plugin share."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from sipworker.ports import PortInUse

from .config import MockConfig
from .http import create_app
from .server import MockServer
from .shards import HandoffReceiver, Shard, ShardForwarder

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


@dataclass
class RunningMock:
    server: MockServer
    host: str
    port: int
    sip: SipIngress | None = None
    runner: web.AppRunner | None = None
    tls_port: int | None = None  # the HTTPS/WSS listener, once started
    tls_ca: Path | None = None  # the CA an app trusts for it (SSL_CERT_FILE)

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
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an app passes as ``OPENAI_BASE_URL``."""
        return self.url + "/v1"


@asynccontextmanager
async def running_mock(config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                       sip: SipOptions | None = None, shard: Shard | None = None,
                       handoff: Path | None = None, tls: TlsOptions | None = None) -> AsyncIterator[RunningMock]:
    """``shard`` and ``handoff``: this mock is one of several behind a ShardRouter (mock_api.shards).
    ``tls``: also serve HTTPS/WSS (``RunningMock.tls_url``).

    A taken ``port``, ``sip.port`` or ``tls.port`` raises :class:`sipworker.ports.PortInUse`; its
    ``setting`` ("port", "sip_port" or "tls_port") says which one."""
    server = MockServer(config, shard=shard)
    runner = web.AppRunner(create_app(server), access_log=None, handle_signals=False)
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
    receiver = None
    try:
        if handoff is not None:
            assert runner.server is not None
            receiver = HandoffReceiver(handoff, runner.server)
            server.shard_port, server.forwarder = bound, ShardForwarder()
            receiver.start()
        mock = RunningMock(server, host, bound, None, runner)
        if tls is not None:
            await mock.start_tls(tls.state_dir, tls.port)
        if sip is not None:
            from .sip import SipIngress  # only SIP users pay for the worker pool

            ingress = SipIngress(server, sip.state_dir, host=host, port=sip.port, workers=sip.workers,
                                 record=sip.record, frame_ms=sip.frame_ms, vad_frame_ms=sip.vad_frame_ms,
                                 media=sip.media)
            await ingress.start()
            mock.sip = ingress
        yield mock
    finally:
        if receiver is not None:
            receiver.stop()
        if server.forwarder is not None:
            await server.forwarder.close()
        if ingress is not None:
            await ingress.stop()
        await runner.cleanup()
        await warming


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
