"""Zero-change interception: an HTTPS CONNECT proxy that lands hard-coded OpenAI URLs on the mock.

Most real apps hard-code ``https://api.openai.com`` and ``wss://api.openai.com`` (10 of 11 public
SIP apps surveyed).  Given ``HTTPS_PROXY`` and a CA bundle (:func:`proxy_env`), their HTTP clients
send ``CONNECT api.openai.com:443`` here; the proxy answers 200, terminates the client's TLS with a
leaf certificate for that host signed by the local CA (:mod:`mock_api.certs`), and relays the
decrypted bytes — HTTP/1.1 requests with keep-alive and streaming, WebSocket upgrades, both
directions — to the mock's plain HTTP port on 127.0.0.1.  The relay is a byte pipe: the mock's own
HTTP adapter parses, routes and journals the requests exactly as it does for base-URL apps.

Only OpenAI's and Azure OpenAI's API hosts are intercepted (:data:`ALLOWED_HOSTS`).  Any other host
is refused with 403 and journaled as ``proxy.refused`` — never forwarded anywhere — and so are
plain ``http://`` absolute-form requests for other hosts.  The proxy binds 127.0.0.1 by default.

    async with running_mock(config) as mock, running_proxy(mock, state_dir) as proxy:
        env = proxy_env(proxy, proxy.ca_path)   # give these to the app under test
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sipworker.ports import PortInUse

from . import journal_entries as je
from .certs import CertStore, normalize_host
from .certs import store as cert_store
from .journal import Journal


class ServedMock(Protocol):
    """What the proxy needs of a running mock (:class:`mock_api.running.RunningMock`), named here so this
    module does not import the one that assembles the app."""

    host: str
    port: int

    @property
    def runner(self) -> object | None: ...

    @property
    def journal(self) -> Journal: ...

    async def api_only_port(self) -> int: ...

def _sdk_api_hosts() -> tuple[str, ...]:
    """The API hosts the installed SDK can be pointed at: data residency (``us.``, ``eu.``, ``jp.``...)
    and mutual-TLS (``mtls.``, ``mtls-eu.``...) hosts, read from the SDK so new regions come for free."""
    hosts = {"api.openai.com", "eu.api.openai.com", "us.api.openai.com", "mtls.api.openai.com"}
    for module in ("openai._data_residency", "openai.auth._x509"):
        with contextlib.suppress(ImportError):
            for value in vars(importlib.import_module(module)).values():
                for url in (value.values() if isinstance(value, dict) else [value]):
                    if isinstance(url, str) and url.startswith("https://") and url.endswith(".openai.com/v1"):
                        hosts.add(urlsplit(url).hostname or "")
    return tuple(sorted(h for h in hosts if h))


# Hosts whose HTTPS traffic is intercepted. ``*.`` matches exactly one label.
ALLOWED_HOSTS: tuple[str, ...] = (
    *_sdk_api_hosts(),
    "*.openai.azure.com",  # Azure OpenAI resource endpoints
    "*.cognitiveservices.azure.com",  # Azure AI Foundry resource endpoints (same /openai/v1 paths)
)
NO_PROXY = "127.0.0.1,localhost,::1"
HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT_S = 30.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOP_BY_HOP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


def host_allowed(host: str, patterns: Iterable[str] = ALLOWED_HOSTS) -> bool:
    """True when ``host`` is one of ``patterns`` (``*.suffix`` matches one extra label)."""
    try:
        name = normalize_host(host)
    except ValueError:
        return False
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            label, _, rest = name.partition(".")
            if rest == pattern[2:] and _LABEL.match(label):
                return True
        elif name == pattern:
            return True
    return False


def _split_hostport(target: str, default_port: int) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` → (host, port); ValueError when malformed."""
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep:
            raise ValueError(target)
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    host, sep, port_s = target.rpartition(":")
    if not sep:
        return target, default_port
    return host, int(port_s)


def _response(status: int, reason: str, body: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


@dataclass
class InterceptProxy:
    """The proxy server; build it with :func:`running_proxy`."""

    upstream_host: str
    upstream_port: int
    journal: Journal
    certs: CertStore
    host: str = "127.0.0.1"
    port: int = 0
    allow: tuple[str, ...] = ALLOWED_HOSTS
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """What ``HTTPS_PROXY`` is set to, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The CA the leaf certificates chain to (what ``SSL_CERT_FILE`` points at)."""
        return self.certs.ca_path

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=HEAD_LIMIT,
                                                      reuse_address=True)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"cannot listen on {self.host}:{self.port}: {os.strerror(exc.errno)}", self.port,
                                "proxy_port") from None
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # ---- one client connection ---------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            writer.write(_response(431, "Request Header Fields Too Large"))
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            writer.write(_response(400, "Bad Request", "rtsip proxy: not an HTTP/1.x request\n"))
            return
        method, target, _version = parts
        if method.upper() == "CONNECT":
            await self._connect(reader, writer, target)
        elif target.lower().startswith("http://"):
            await self._forward_plain(reader, writer, method, target, lines)
        else:
            writer.write(_response(400, "Bad Request", "rtsip proxy: this is an HTTPS proxy, not an API base URL; "
                                                       "set HTTPS_PROXY to it instead\n"))

    def _refuse(self, writer: asyncio.StreamWriter, method: str, host: str, port: int | None, why: str) -> None:
        self.journal.add(None, je.ProxyRefused(host=host, port=port, method=method, reason=why))
        writer.write(_response(403, "Forbidden", f"rtsip proxy: {why}; only OpenAI and Azure OpenAI API hosts "
                                                  "are intercepted, nothing is forwarded elsewhere\n"))

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str) -> None:
        try:
            host, port = _split_hostport(target, 443)
        except ValueError:
            writer.write(_response(400, "Bad Request", f"rtsip proxy: bad CONNECT target {target!r}\n"))
            return
        if not host_allowed(host, self.allow):
            self._refuse(writer, "CONNECT", host, port, f"host {host} is not intercepted")
            return
        if port != 443:
            self._refuse(writer, "CONNECT", host, port, f"port {port} is not intercepted (only 443)")
            return
        name = normalize_host(host)
        ctx = await asyncio.to_thread(self.certs.leaf_for, name)  # first use may write a leaf to disk
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            # Usually: the app does not trust the local CA (no SSL_CERT_FILE / REQUESTS_CA_BUNDLE).
            self.journal.add(None, je.ProxyTlsFailed(host=name, error=f"{type(exc).__name__}: {exc}"))
            return
        self.journal.add(None, je.ProxyConnect(host=name, port=port))
        await self._relay(reader, writer, b"", name)

    async def _forward_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                             target: str, lines: list[str]) -> None:
        url = urlsplit(target)
        host = url.hostname or ""
        try:
            port = url.port or 80
        except ValueError:  # "http://host:notaport/": refused like any request we do not intercept
            self._refuse(writer, method, host, 0, "invalid port in the request target")
            return
        if not host_allowed(host, self.allow):
            self._refuse(writer, method, host, port, f"host {host or '?'} is not intercepted")
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = [h for h in lines[1:] if h]
        upgrade = any(h.split(":", 1)[0].strip().lower() == "upgrade" for h in headers)
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        if upgrade:
            kept += [h for h in headers if h.split(":", 1)[0].strip().lower() == "connection"]
        else:
            kept.append("Connection: close")  # one request per connection, so every request is checked
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "", ""]).encode("latin-1")
        self.journal.add(None, je.ProxyConnect(host=normalize_host(host), port=port, plain=True))
        await self._relay(reader, writer, head, host)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes,
                     host: str) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError as exc:
            self.journal.add(None, je.ProxyUpstreamFailed(host=host, error=f"{type(exc).__name__}: {exc}"))
            with contextlib.suppress(Exception):
                writer.write(_response(502, "Bad Gateway", "rtsip proxy: the mock is not reachable\n"))
            return
        try:
            if first:
                up_writer.write(first)
            to_mock = asyncio.create_task(self._pipe(reader, up_writer, half_close=True))
            to_client = asyncio.create_task(self._pipe(up_reader, writer, half_close=False))
            # The mock closing its side ends the exchange; the client closing its side only
            # half-closes towards the mock, which may still be answering.
            try:
                await to_client
            finally:
                to_mock.cancel()
                to_client.cancel()
                await asyncio.gather(to_mock, to_client, return_exceptions=True)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(up_writer.wait_closed(), 1)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, half_close: bool) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            if half_close and dst.can_write_eof():
                with contextlib.suppress(Exception):
                    dst.write_eof()


@asynccontextmanager
async def running_proxy(mock: ServedMock, state_dir: str | os.PathLike[str], host: str = "127.0.0.1",
                        port: int = 0, allow: Iterable[str] = ALLOWED_HOSTS) -> AsyncIterator[InterceptProxy]:
    """Run the interception proxy beside ``mock`` (relaying to its HTTP port), CA in ``state_dir/tls``."""
    certs = await asyncio.to_thread(cert_store, state_dir)
    upstream = await mock.api_only_port() if mock.runner is not None else mock.port
    proxy = InterceptProxy(mock.host, upstream, mock.journal, certs, host=host, port=port,
                           allow=tuple(allow))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def intercept_env(proxy: InterceptProxy, webhook_url: str | None = None) -> dict[str, str]:
    """:func:`proxy_env` for an app run by hand against ``rtsip mock --intercept``: the webhook's host
    joins ``NO_PROXY`` so the mock's deliveries and the app's own local calls never loop through the proxy."""
    env = proxy_env(proxy, proxy.ca_path)
    host = urlsplit(webhook_url).hostname if webhook_url else None
    if host and host not in env["NO_PROXY"].split(","):
        env["NO_PROXY"] = env["no_proxy"] = f"{env['NO_PROXY']},{host}"
    return env


def proxy_env(proxy: InterceptProxy | str, ca_path: str | os.PathLike[str]) -> dict[str, str]:
    """Environment for an app under test so its hard-coded OpenAI URLs reach the mock.

    - ``HTTPS_PROXY``/``https_proxy``: requests, httpx/httpx2 (so the openai SDK), aiohttp with
      ``trust_env=True``, websockets ≥ 15 (``wss://``), urllib.
    - ``WSS_PROXY``/``wss_proxy``: aiohttp's ``ws_connect`` looks proxies up by the ``wss`` scheme;
      websockets checks it first too.
    - ``HTTP_PROXY``/``http_proxy``: plain-HTTP calls to other hosts are refused too, not leaked.
    - ``NO_PROXY``/``no_proxy``: the app's own local traffic (127.0.0.1, localhost) stays direct.
    - ``SSL_CERT_FILE``: OpenSSL's default verify paths (``ssl.create_default_context()``: aiohttp,
      websockets, urllib) and httpx/httpx2's explicit check; ``REQUESTS_CA_BUNDLE`` and
      ``CURL_CA_BUNDLE`` for requests (which otherwise uses certifi).
    - ``OPENAI_BASE_URL``: pinned to the real default, so an inherited value cannot route an SDK app
      around the interception.
    - ``NODE_EXTRA_CA_CERTS``/``NODE_USE_ENV_PROXY``: the same for Node apps (fetch on Node 22.21+ and 24+;
      docs/interception-node.md).
    """
    url = proxy.url if isinstance(proxy, InterceptProxy) else proxy
    ca = str(Path(ca_path).resolve())
    env = {
        "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca, "CURL_CA_BUNDLE": ca, "NODE_EXTRA_CA_CERTS": ca,
        "OPENAI_BASE_URL": "https://api.openai.com/v1", "NODE_USE_ENV_PROXY": "1",
    }
    for name in ("https_proxy", "wss_proxy", "http_proxy"):
        env[name] = env[name.upper()] = url
    env["no_proxy"] = env["NO_PROXY"] = NO_PROXY
    return env
