"""``rtsip shards``: N mocks behind HAProxy, one base URL, each call's requests on the mock that made it.

On one host it starts the N mocks (``rtsip mock --shard I/N``, one webhook secret) and the proxy, prints
the base URL and waits for Ctrl-C. With ``--hosts`` the mocks already run elsewhere: each address must
answer before the proxy starts; ``--config-only`` writes the configuration and starts nothing. The rules
of the routing are :mod:`mock_api.shards`'; :func:`running_shards` is what ``rtsip load`` starts too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import CommandError, UsageError, checks

CONFIG_FILE = "haproxy.cfg"
READY = "rtsip shards ready:"


@dataclass
class RunningShards:
    """The mocks (local ones; none with remote shards) and the proxy in front of them."""

    proxy: Any  # mock_api.shards.ProxyProcess
    mocks: list[Any]  # harness.mock_process.MockProcess, shard i at index i

    @property
    def base_url(self) -> str:
        return str(self.proxy.base_url)


@contextlib.asynccontextmanager
async def running_shards(count: int, run_dir: Path, mock_args: Callable[[int], list[str]],
                         listen_port: int = 0, startup_timeout: float = 60.0) -> AsyncIterator[RunningShards]:
    """``count`` local mocks (``mock_args(i)``: shard i's ``rtsip mock`` flags, without --port and --shard)
    behind HAProxy on 127.0.0.1 (``listen_port`` 0: a free one); everything is stopped on the way out.

    Raises :class:`mock_api.shards.ProxyUnavailable` (one line) when HAProxy cannot start."""
    from harness.mock_process import MockProcess
    from mock_api.running import free_port
    from mock_api.shards import Address, ProxyProcess, haproxy_path

    haproxy_path()  # not installed: say so before any mock starts
    mocks = [MockProcess(args=["--port", "0", "--shard", f"{i}/{count}", *mock_args(i)],
                         startup_timeout=startup_timeout) for i in range(count)]
    proxy: ProxyProcess | None = None
    try:
        started = await asyncio.gather(*(m.__aenter__() for m in mocks), return_exceptions=True)
        failed = next((r for r in started if isinstance(r, BaseException)), None)
        if failed is not None:  # every start has settled: the finally stops each one that ran
            raise failed
        shards = tuple(Address("127.0.0.1", int(m.url.rsplit(":", 1)[1])) for m in mocks)
        proxy = ProxyProcess(run_dir / CONFIG_FILE, Address("127.0.0.1", listen_port or free_port()), shards)
        await proxy.start()
        yield RunningShards(proxy, mocks)
    finally:
        if proxy is not None:
            await proxy.stop()
        await asyncio.gather(*(m.stop() for m in mocks), return_exceptions=True)


# ---- the command ---------------------------------------------------------------------------------------

EPILOG = """examples:
  rtsip shards --mocks 2                          # two mocks and HAProxy on this host
  rtsip shards --mocks 2 --hosts 10.0.0.5:8000,10.0.0.6:8000 --listen 0.0.0.0 --port 8000
  rtsip shards --mocks 2 --hosts 10.0.0.5:8000,10.0.0.6:8000 --config-only --run-dir deploy/

With --hosts, start each mock first as `rtsip mock --shard I/N --webhook-secret S` (the same S everywhere),
in the order given, and list the proxy's address in its allowed_hosts if it is not a loopback one.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "shards", help="run N mocks behind HAProxy: one base URL, each call routed to the mock that made it",
        description=__doc__.splitlines()[0] if __doc__ else None, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mocks", metavar="N", help="how many mocks (shards), 1 to 16; required")
    p.add_argument("--hosts", action="append", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                   help="the mocks already run there (shard I is the I-th address): start none here")
    p.add_argument("--listen", default="127.0.0.1", metavar="HOST", help="the proxy's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="the proxy's port: the base URL's (default: a free one)")
    p.add_argument("--run-dir", type=Path, metavar="DIR",
                   help=f"where {CONFIG_FILE} and the mocks' state go (default: a new temporary directory)")
    p.add_argument("--config-only", action="store_true", help="with --hosts: write the configuration, start nothing")
    p.add_argument("--webhook-url", metavar="URL", help="the app's webhook URL (every local mock posts there)")
    p.add_argument("--webhook-secret", metavar="SECRET",
                   help="the secret every local mock signs with (default: $OPENAI_WEBHOOK_SECRET, else a new one)")
    p.add_argument("--mock-config", type=Path, metavar="FILE",
                   help="settings file for every local mock (what `rtsip mock` reads from a file)")
    p.set_defaults(func=cmd_shards)


def _hosts(args: argparse.Namespace) -> list[Any] | None:
    from mock_api.shards import Address

    if args.hosts is None:
        return None
    texts = [t.strip() for group in args.hosts for t in group.split(",") if t.strip()]
    try:
        hosts = [Address.parse(t) for t in texts]
    except ValueError as exc:
        raise UsageError(f"--hosts {exc}") from None
    if len(hosts) != args.mocks:
        raise UsageError(f"--hosts names {len(hosts)} mocks but --mocks is {args.mocks}: one address per shard")
    return hosts


def check(args: argparse.Namespace) -> list[Any] | None:
    """The command line's mistakes, before anything starts; the remote shards' addresses."""
    from mock_api.shards import MAX_SHARDS

    if args.mocks is None:
        raise UsageError("--mocks is required: how many mocks (shards) to put behind the proxy")
    try:
        args.mocks = int(args.mocks)
    except ValueError:
        raise UsageError(f"--mocks {args.mocks!r}: expected a whole number") from None
    if not 1 <= args.mocks <= MAX_SHARDS:
        raise UsageError(f"--mocks must be between 1 and {MAX_SHARDS} (got {args.mocks})")
    checks.port(args.port, "--port")
    hosts = _hosts(args)
    if args.config_only and hosts is None:
        raise UsageError("--config-only needs --hosts (local mocks get their ports when they start)")
    if hosts is not None and (args.webhook_url or args.webhook_secret or args.mock_config):
        raise UsageError("--webhook-url, --webhook-secret and --mock-config set up local mocks: with --hosts, "
                         "give them to each `rtsip mock --shard I/N` instead")
    if args.webhook_url is not None:
        checks.http_url(args.webhook_url, "--webhook-url")
    if args.mock_config is not None:
        checks.mock_settings(args.mock_config, "--mock-config")
    if args.port and not args.config_only and _taken(args.listen, args.port):
        raise UsageError(f"--port {args.port}: {args.listen}:{args.port} is already taken; pick another, or 0 for "
                         "a free one")
    if args.run_dir is not None and args.run_dir.exists() and not args.run_dir.is_dir():
        raise UsageError(f"--run-dir {args.run_dir}: is not a directory")
    return hosts


def _taken(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def cmd_shards(args: argparse.Namespace) -> int:
    hosts = check(args)
    from mock_api.shards import ProxyUnavailable, haproxy_path

    if not args.config_only:
        try:
            haproxy_path()
        except ProxyUnavailable as exc:
            raise UsageError(str(exc)) from None
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="rtsip-shards-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_serve(args, hosts, run_dir))
    except ProxyUnavailable as exc:
        raise CommandError(str(exc)) from None


async def _serve(args: argparse.Namespace, hosts: list[Any] | None, run_dir: Path) -> int:
    from mock_api.running import free_port
    from mock_api.shards import Address, ProxyPlan, ProxyProcess, haproxy_config, probe

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listen = Address(args.listen, args.port or free_port(args.listen))
    if hosts is not None:
        answers = await asyncio.gather(*(probe(h) for h in hosts))
        for i, (host, why) in enumerate(zip(hosts, answers, strict=True)):
            if why is not None:  # before any call: the proxy would fail every one of this shard's calls
                raise UsageError(f"--hosts: shard {i} at {host} does not answer: {why}")
        if args.config_only:
            path = run_dir / CONFIG_FILE
            path.write_text(haproxy_config(ProxyPlan(listen, tuple(hosts))))
            print(f"wrote {path}; run it with: haproxy -db -f {path}")
            return 0
        async with ProxyProcess(run_dir / CONFIG_FILE, listen, tuple(hosts)) as proxy:
            print(f"{READY} base_url={proxy.base_url} config={proxy.config_path} "
                  f"shards={','.join(map(str, hosts))}", flush=True)
            await _until(stop, proxy)
        return 0
    secret = args.webhook_secret or os.environ.get("OPENAI_WEBHOOK_SECRET")
    if not secret:
        from mock_api.webhooks import new_secret

        secret = new_secret()  # rule 6: one secret for every shard

    def mock_args(i: int) -> list[str]:
        return ["--no-sip", "--state-dir", str(run_dir / f"state-{i}"), "--webhook-secret", secret,
                *(["--webhook-url", args.webhook_url] if args.webhook_url else []),
                *(["--config", str(args.mock_config)] if args.mock_config else [])]

    async with running_shards(args.mocks, run_dir, mock_args, listen.port) as shards:
        controls = ",".join(m.url for m in shards.mocks)
        print(f"{READY} base_url={shards.base_url} webhook_secret={secret} config={shards.proxy.config_path} "
              f"mocks={controls}", flush=True)
        await _until(stop, shards.proxy, shards.mocks)
    return 0


async def _until(stop: asyncio.Event, proxy: Any, mocks: list[Any] | None = None) -> None:
    """Serve until a signal, or until the proxy dies (a dead mock is only its own calls' failure)."""
    waiter = asyncio.ensure_future(stop.wait())
    exited = asyncio.ensure_future(proxy.wait())
    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
    for task in (waiter, exited):
        task.cancel()
    if proxy.returncode is not None:
        print(f"rtsip shards: haproxy exited ({proxy.returncode})", file=sys.stderr, flush=True)
    for i, m in enumerate(mocks or []):
        if m.returncode is not None:
            print(f"rtsip shards: mock {i} had exited ({m.returncode})", file=sys.stderr, flush=True)
