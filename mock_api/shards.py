"""Calls spread over several mock processes behind one base URL, routed by HAProxy.

Rules (the proxy's configuration is written from them, :func:`haproxy_config`):

1. A shard is a whole mock (calls, sessions, virtual callers, journal) started as ``rtsip mock --shard I/N``.
   It mints call ids whose first hex digit ``d`` has ``d % N == I`` (:meth:`Shard.call_id`); the same call's
   GPT-Live id ``live_…`` carries the same digit (``ids.live_id``). So routing needs no shared table.
2. A request that names a call goes to the shard that owns it: the id as a path segment
   (``/v1/realtime/calls/{id}/…``, ``/v1/live/sessions/{id}/…``, ``/_mock/calls/{id}…``, Azure's prefixes too)
   or as the ``call_id`` query parameter (the Realtime WebSocket). The path wins when both name one.
3. A request that names no call goes to any shard that is up (round robin).
4. Each request is routed on its own (HTTP keep-alive, not per connection): no shard ever forwards to
   another, and a WebSocket upgrade is tunnelled to its owner (``timeout tunnel``).
5. A shard that is down fails only its own calls: the proxy answers their requests 503 in the API's error
   envelope, their WebSockets close; call-less requests go to the shards still up.
6. Every shard signs webhooks with the same secret (the caller of ``rtsip mock --shard`` passes one).

HAProxy (Debian's ``haproxy``) rather than nginx: it routes on a query parameter (``url_param``) as easily
as on the path, answers its own errors in a body we choose per status (``http-error``), marks a dead shard
down by health checks, and tells us it is ready over the systemd notify socket instead of being polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .subprocesses import stop_group

MAX_SHARDS = 16  # one hex digit of the call id
HAPROXY_PACKAGE = "haproxy"  # Debian's package name, for the one-line error when it is missing
_HEX = "0123456789abcdef"
_READY_TIMEOUT_S = 20.0
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Shard:
    """This process's place among ``count`` shards."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count <= {MAX_SHARDS}")

    def call_id(self) -> str:
        """`rtc_` + 32 hex (the spec's form) whose first digit routes to this shard (rule 1)."""
        return f"rtc_{secrets.choice(self.digits())}{secrets.token_hex(16)[1:]}"

    def digits(self) -> str:
        """The first hex digits of this shard's ids."""
        return "".join(d for i, d in enumerate(_HEX) if i % self.count == self.index)

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (as given to ``rtsip mock --shard``)."""
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/2") from None
        return cls(index, count)


def shard_of(call_id: str, count: int) -> int | None:
    """The shard that made ``call_id``; None for an id of another form (never made by a shard)."""
    found = re.fullmatch(r"(?:rtc|live)_([0-9a-f])[0-9a-f]{31}", call_id)
    return int(found.group(1), 16) % count if found else None


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT``; ValueError names the bad text."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
        return cls(host.strip("[]"), int(port))


# ---- the configuration (sans-I/O) --------------------------------------------------------------------

_ID_TAIL = "[0-9a-f]{31}"
# what the proxy answers itself, in the API's envelope, so the SDK raises its usual status errors (rule 5)
_PROXY_ERRORS = {502: "The server had an error while processing your request. Sorry about that!",
                 503: "The server is overloaded or not ready yet.",
                 504: "The server had an error while processing your request. Sorry about that!"}


@dataclass(frozen=True)
class ProxyPlan:
    """Everything the configuration depends on; ``stats`` is the admin socket rtsip reads counts from."""

    listen: Address
    shards: tuple[Address, ...]
    stats: Path | None = None
    maxconn: int = 4000
    threads: int = 1
    check_interval_ms: int = 1000
    tunnel_timeout_s: int = 3600  # a call's WebSocket may be quiet this long
    server_timeout_s: int = 600  # a control request may wait this long for its answer

    def __post_init__(self) -> None:
        if not 1 <= len(self.shards) <= MAX_SHARDS:
            raise ValueError(f"{len(self.shards)} shards: need 1 to {MAX_SHARDS}")


def haproxy_config(plan: ProxyPlan) -> str:
    """HAProxy's configuration for ``plan`` (rules 2-5)."""
    n = len(plan.shards)
    lines = [
        f"# rtsip shards: {n} mocks behind {plan.listen}; a call's shard is its id's first hex digit mod {n}",
        "global",
        f"    maxconn {plan.maxconn}",
        f"    nbthread {plan.threads}",
        "    log stderr format short local0 notice",
        *([f"    stats socket {plan.stats} mode 600 level user"] if plan.stats is not None else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        f"    maxconn {plan.maxconn}",
        "    timeout connect 5s",
        "    timeout http-request 30s",
        f"    timeout client {plan.server_timeout_s}s",
        f"    timeout server {plan.server_timeout_s}s",
        f"    timeout tunnel {plan.tunnel_timeout_s}s",
        "    timeout client-fin 5s",
        "    retries 2",
        *(f"    http-error status {status} content-type application/json string '{_error_body(message)}'"
          for status, message in sorted(_PROXY_ERRORS.items())),
        "",
        "frontend api",
        f"    bind {plan.listen}",
    ]
    for i in range(n):
        digits = Shard(i, n).digits()
        lines += [
            f"    acl shard{i}_path path_reg /(rtc|live)_[{digits}]{_ID_TAIL}(/|$)",
            f"    acl shard{i}_query url_param(call_id) -m reg ^(rtc|live)_[{digits}]{_ID_TAIL}$",
        ]
    # the path first (rule 2): one acl per shard, tried in shard order
    lines += [f"    use_backend shard{i} if shard{i}_path" for i in range(n)]
    lines += [f"    use_backend shard{i} if shard{i}_query" for i in range(n)]
    lines += ["    default_backend any", ""]
    check = f"check inter {plan.check_interval_ms}ms fall 2 rise 1"
    for i, addr in enumerate(plan.shards):
        lines += [f"backend shard{i}", f"    server shard{i} {addr} {check}", ""]
    lines += ["backend any", "    balance roundrobin", "    option redispatch"]
    lines += [f"    server shard{i} {addr} {check}" for i, addr in enumerate(plan.shards)]
    return "\n".join(lines) + "\n"


def _error_body(message: str) -> str:
    import json

    body = json.dumps(errors.envelope(message, "server_error", None, None), separators=(",", ":"))
    assert "'" not in body  # the config quotes it with single quotes
    return body


@dataclass(frozen=True)
class ShardCounts:
    """What the proxy saw per shard, from its ``show stat``."""

    requests: tuple[int, ...]  # requests routed to each shard's own backend (calls)
    any_requests: int  # call-less requests (rule 3)
    proxy_errors: int  # answers the proxy made itself (5xx: a shard down or gone mid-answer)
    down: tuple[int, ...]  # shards marked down at the time

    def note(self) -> str:
        down = f", down: {', '.join(f'shard {i}' for i in self.down)}" if self.down else ""
        return (f"haproxy: requests per shard {list(self.requests)}, call-less {self.any_requests}, "
                f"answered by the proxy {self.proxy_errors}{down}")


def parse_stats(text: str, count: int) -> ShardCounts:
    """``show stat`` (CSV, its header line starts with ``# ``) into per-shard counts."""
    rows = list(csv.DictReader(text.lstrip("# ").splitlines()))
    requests = [0] * count
    anyreq = answered_5xx = 0
    down: list[int] = []
    for row in rows:
        px, sv = row.get("pxname", ""), row.get("svname", "")
        if px == "api" and sv == "FRONTEND":
            answered_5xx = int(row.get("hrsp_5xx") or 0)
        if sv != "BACKEND":
            continue
        total = int(row.get("req_tot") or row.get("stot") or 0)
        if px == "any":
            anyreq = total
        elif px.startswith("shard") and px[5:].isdigit() and int(px[5:]) < count:
            requests[int(px[5:])] = total
            if row.get("status") == "DOWN":
                down.append(int(px[5:]))
    # the frontend's 5xx include the shards' own; the proxy's are those no server answered
    served_5xx = sum(int(r.get("hrsp_5xx") or 0) for r in rows if r.get("svname") not in ("FRONTEND", "BACKEND"))
    return ShardCounts(tuple(requests), anyreq, max(0, answered_5xx - served_5xx), tuple(down))


# ---- the proxy process (adapter) ---------------------------------------------------------------------


class ProxyUnavailable(RuntimeError):
    """HAProxy cannot be started (not installed, a bad configuration, a taken port): one line to show."""


def haproxy_path() -> str:
    """The ``haproxy`` binary (``$RTSIP_HAPROXY``, else PATH, then Debian's /usr/sbin), or ProxyUnavailable
    naming the package."""
    given = os.environ.get("RTSIP_HAPROXY")
    if given:
        found = shutil.which(given)
    else:
        found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise ProxyUnavailable(f"haproxy is not installed: install Debian's `{HAPROXY_PACKAGE}` package "
                               f"(apt-get install {HAPROXY_PACKAGE})")
    return found


def default_maxconn() -> int:
    """Connections the proxy may hold: two descriptors each (app side, shard side) within our limit."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, min(100_000, (soft - 200) // 2))


async def probe(addr: Address, timeout: float = _PROBE_TIMEOUT_S) -> str | None:
    """None when an HTTP server answers at ``addr``; else why not (one line)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr.host, addr.port), timeout)
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
    try:
        writer.write(f"GET /_mock/health HTTP/1.1\r\nHost: {addr.host}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return None if line.startswith(b"HTTP/1.") else f"not an HTTP server (answered {line[:40]!r})"
    except (OSError, TimeoutError) as exc:
        return f"no HTTP answer within {timeout:g} s ({type(exc).__name__})"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class ProxyProcess:
    """HAProxy in the foreground (master-worker, ``-Ws``), told ready over a notify socket, stopped by us."""

    config_path: Path
    listen: Address
    shards: tuple[Address, ...]
    threads: int = 1
    output: list[str] = field(default_factory=list)
    counts: ShardCounts | None = None  # read just before it stops
    _proc: asyncio.subprocess.Process | None = None
    _sock_dir: Path | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    def write_config(self) -> ProxyPlan:
        self._sock_dir = Path(tempfile.mkdtemp(prefix="rtsip-haproxy-"))  # AF_UNIX paths must stay short
        plan = ProxyPlan(self.listen, self.shards, stats=self._sock_dir / "stats.sock", maxconn=default_maxconn(),
                         threads=self.threads)
        self.config_path.write_text(haproxy_config(plan))
        return plan

    async def start(self) -> None:
        binary = haproxy_path()
        self.write_config()
        assert self._sock_dir is not None
        notify_path = self._sock_dir / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                binary, "-Ws", "-f", str(self.config_path), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
            self._reader = asyncio.create_task(self._drain())
            ready = asyncio.ensure_future(_await_ready(notify))
            exited = asyncio.ensure_future(self._proc.wait())
            done, _ = await asyncio.wait({ready, exited}, timeout=_READY_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in (ready, exited):
                if task not in done:
                    task.cancel()
            if ready not in done:
                await self.stop()
                why = "exited" if exited in done else f"was not ready within {_READY_TIMEOUT_S:g} s"
                raise ProxyUnavailable(f"haproxy {why}: {self._alert()}")
        finally:
            notify.close()

    def _alert(self) -> str:
        """HAProxy's own reason, on one line (its ALERT lines, else its last line)."""
        lines = [line.strip() for line in self.output if line.strip()]
        alerts = [line for line in lines if "ALERT" in line]
        return " ".join((alerts or lines[-1:]) or ["no output"])[:400]

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.output.append(raw.decode(errors="replace"))

    async def wait(self) -> int:
        """Until HAProxy exits; its status."""
        assert self._proc is not None
        return await self._proc.wait()

    async def stats(self) -> ShardCounts | None:
        """The proxy's counts now, or None when its stats socket does not answer."""
        if self._sock_dir is None:
            return None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self._sock_dir / "stats.sock")), 2.0)
            writer.write(b"show stat\n")
            text = (await asyncio.wait_for(reader.read(), 2.0)).decode(errors="replace")
            writer.close()
        except (OSError, TimeoutError):
            return None
        return parse_stats(text, len(self.shards))

    async def stop(self, timeout: float = 5.0) -> int | None:
        if self._proc is not None and self._proc.returncode is None:
            self.counts = await self.stats()  # SIGTERM makes the master stop its worker at once (hard stop)
        code = await stop_group(self._proc, self._reader, timeout)
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        return code

    async def __aenter__(self) -> ProxyProcess:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def _await_ready(notify: socket.socket) -> None:
    """Until HAProxy's master says ``READY=1`` (sd_notify), which it does once its worker serves."""
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.sock_recv(notify, 4096)
        if b"READY=1" in data.split(b"\n"):
            return
