"""Start the mock inside the current event loop: what the CLI, the tests and the plugin share."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

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


@dataclass
class RunningMock:
    server: MockServer
    host: str
    port: int
    sip: SipIngress | None = None

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
                       handoff: Path | None = None) -> AsyncIterator[RunningMock]:
    """``shard`` and ``handoff``: this mock is one of several behind a ShardRouter (mock_api.shards)."""
    server = MockServer(config, shard=shard)
    runner = web.AppRunner(create_app(server), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1])  # the real port when 0 was asked for
    ingress = None
    receiver = None
    try:
        if handoff is not None:
            assert runner.server is not None
            receiver = HandoffReceiver(handoff, runner.server)
            server.shard_port, server.forwarder = bound, ShardForwarder()
            receiver.start()
        if sip is not None:
            from .sip import SipIngress  # only SIP users pay for the worker pool

            ingress = SipIngress(server, sip.state_dir, host=host, port=sip.port, workers=sip.workers,
                                 record=sip.record, frame_ms=sip.frame_ms, vad_frame_ms=sip.vad_frame_ms,
                                 media=sip.media)
            await ingress.start()
        yield RunningMock(server, host, bound, ingress)
    finally:
        if receiver is not None:
            receiver.stop()
        if server.forwarder is not None:
            await server.forwarder.close()
        if ingress is not None:
            await ingress.stop()
        await runner.cleanup()


# Ports handed to other processes (an app under test) come from below the kernel's ephemeral range
# (32768-60999 here), so an outgoing connection cannot take one between our check and the app's bind.
# RTP ranges start at 20000 (SIP ingress) and 30000 (softphone).
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
