"""Mock shards behind HAProxy: calls spread over mocks behind one base URL, reached with the official SDK."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import websockets
from openai import AsyncOpenAI

from harness.commands.shards import running_shards
from mock_api import ids as ids_mod
from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.running import RunningMock, running_mock
from mock_api.shards import (
    MAX_SHARDS,
    Address,
    ProxyPlan,
    ProxyProcess,
    ProxyUnavailable,
    Shard,
    haproxy_config,
    haproxy_path,
    shard_of,
)

ROOT = Path(__file__).resolve().parents[1]
ACCEPT: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime", "instructions": "Shard test."}
LIVE_SESSION: dict[str, Any] = {"type": "live", "model": "gpt-live-1.1", "instructions": "Shard test."}
SECRET = "whsec_dGVzdHNlY3JldA=="



def _has_haproxy() -> bool:
    try:
        haproxy_path()
    except ProxyUnavailable:
        return False
    return True


needs_haproxy = pytest.mark.skipif(not _has_haproxy(), reason="haproxy is not installed (Debian package `haproxy`)")


def test_shard_ids_route_back_to_their_shard() -> None:
    for count in (1, 2, 3, 5, MAX_SHARDS):
        for index in range(count):
            ids = {Shard(index, count).call_id() for _ in range(40)}
            for cid in ids:
                assert cid.startswith("rtc_") and len(cid) == 36 and int(cid[4:], 16) >= 0
                assert shard_of(cid, count) == index
                live = ids_mod.live_id(cid)  # the same call's GPT-Live id routes to the same shard
                assert shard_of(live, count) == index
            assert len(ids) == 40  # still random
    assert shard_of("rtc_zz", 4) is None and shard_of("sess_abc", 4) is None


@pytest.mark.parametrize("text", ["2/2", "0/0", "-1/3", "1", "a/b", f"0/{MAX_SHARDS + 1}"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):  # the message names the bad spec
        Shard.parse(text)


@needs_haproxy
def test_the_configuration_is_one_haproxy_accepts(tmp_path: Path) -> None:
    shards = tuple(Address("127.0.0.1", 20001 + i) for i in range(MAX_SHARDS))
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(ProxyPlan(Address("127.0.0.1", 20000), shards)))
    res = subprocess.run([haproxy_path(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


@contextlib.asynccontextmanager
async def behind_haproxy(tmp_path: Path, count: int) -> AsyncIterator[tuple[ProxyProcess, list[RunningMock]]]:
    """``count`` in-process shards (one webhook secret) and a real HAProxy in front of them."""
    async with contextlib.AsyncExitStack() as stack:
        mocks = [await stack.enter_async_context(running_mock(MockConfig(webhook_secret=SECRET),
                                                              shard=Shard(i, count)))
                 for i in range(count)]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # a port from the OS, released for HAProxy just before it binds
        port = sock.getsockname()[1]
        sock.close()
        proxy = ProxyProcess(tmp_path / "haproxy.cfg", Address("127.0.0.1", port),
                             tuple(Address(m.host, m.port) for m in mocks))
        await stack.enter_async_context(proxy)
        yield proxy, mocks


@needs_haproxy
async def test_the_sdk_reaches_every_shard_through_one_base_url(tmp_path: Path) -> None:
    async with behind_haproxy(tmp_path, 2) as (proxy, mocks):
        controls = [MockClient(m.url) for m in mocks]
        through = MockClient(proxy.url)  # the control API through the proxy too
        client = AsyncOpenAI(api_key="sk-test", base_url=proxy.base_url, max_retries=0)
        try:
            ids = [await controls[i % 2].start_call() for i in range(6)]
            assert [shard_of(c, 2) for c in ids] == [0, 1, 0, 1, 0, 1]
            for cid in ids[:4]:  # one client, kept-alive connections, calls of both shards
                await client.realtime.calls.accept(cid, **ACCEPT)
            for cid in ids[:2]:  # the Realtime WebSocket, `?call_id=`, of a call of each shard
                async with client.realtime.connect(call_id=cid) as conn:
                    first = await conn.recv()
                    assert first.type == "session.created"
                await client.realtime.calls.hangup(cid)
            for i, cid in enumerate(ids[:4]):
                view = await through.call(cid)  # /_mock/calls/{id} reached its owner through the proxy
                assert view.call_id == cid and view.state in ("active", "ended"), (cid, view.state)
                assert (await controls[i % 2].call(cid)).state == view.state
            # the Live paths: accept and attach by the live_ id of a call of each shard
            for i, cid in enumerate(ids[4:]):
                live_id = (await controls[i].call(cid)).live_id
                await client.live.sessions.accept(live_id, session=LIVE_SESSION)  # type: ignore[arg-type]
                async with client.live.sideband.connect(session_id=live_id) as side:
                    assert (await side.recv()).type == "session.started"
                assert (await controls[i].call(cid)).surface == "live"
            # call-less requests reach a shard that answers them
            assert [m.id for m in (await client.models.list()).data]
            assert (await through.config())["ring_timeout_s"] > 0  # the control API's call-less reads too
            # an id no shard made is answered in the API's shape by the shard its digit names
            with pytest.raises(openai.NotFoundError):
                await client.realtime.calls.accept("rtc_" + "1" * 32, **ACCEPT)
            counts = await proxy.stats()
            assert counts is not None and counts.requests[0] >= 5 and counts.requests[1] >= 6, counts
            assert counts.any_requests >= 2 and counts.proxy_errors == 0 and counts.down == (), counts
        finally:
            await client.close()
            for c in [*controls, through]:
                await c.close()


@needs_haproxy
async def test_a_dead_shard_fails_its_calls_and_only_them(tmp_path: Path) -> None:
    """Two `rtsip mock --shard` processes behind HAProxy; one is killed with its calls in flight."""
    args = ["--no-sip", "--webhook-secret", SECRET]
    async with running_shards(2, tmp_path, lambda i: [*args, "--state-dir", str(tmp_path / f"s{i}")]) as shards:
        controls = [MockClient(m.url) for m in shards.mocks]
        client = AsyncOpenAI(api_key="sk-test", base_url=shards.base_url, max_retries=0)
        try:
            ids = [await controls[i % 2].start_call() for i in range(4)]  # shards 0, 1, 0, 1
            for cid in ids:
                await client.realtime.calls.accept(cid, **ACCEPT)
            async with client.realtime.connect(call_id=ids[0]) as alive, \
                    client.realtime.connect(call_id=ids[1]) as doomed:
                assert (await alive.recv()).type == "session.created"
                assert (await doomed.recv()).type == "session.created"
                shards.mocks[1].send_signal(signal.SIGKILL)
                assert await shards.mocks[1].wait(10) == -signal.SIGKILL
                with pytest.raises(websockets.ConnectionClosedError):  # its socket is gone with it, no close frame
                    await _until_closed(doomed)
                # shard 0's call goes on: its socket answers, its controls work
                await alive.session.update(session={"type": "realtime", "instructions": "Still here."})
                while (event := await alive.recv()).type != "session.updated":
                    assert event.type != "error", event
            with pytest.raises(openai.InternalServerError) as gone:  # the dead shard's other call fails
                await client.realtime.calls.hangup(ids[3])
            assert gone.value.status_code == 503 and gone.value.body is not None  # the API's envelope
            # on the wire, as a requests/fetch app reads it: JSON in the API's error envelope, not HAProxy's HTML
            async with aiohttp.ClientSession() as raw, \
                    raw.post(f"{shards.base_url}/realtime/calls/{ids[3]}/hangup",
                             headers={"Authorization": "Bearer sk-test"}) as resp:
                assert resp.status == 503 and resp.content_type == "application/json", resp.headers
                body = await resp.json()
            assert body == {"error": {"message": "The server is overloaded or not ready yet.",
                                      "type": "server_error", "param": None, "code": None}}, body
            await client.realtime.calls.hangup(ids[2])
            fresh = await controls[0].start_call()  # new calls keep coming on the shard that lives
            await client.realtime.calls.accept(fresh, **ACCEPT)
            assert (await controls[0].call(fresh)).state == "active"
            for _ in range(4):  # call-less requests go to the shard still up
                assert (await client.models.list()).data
        finally:
            await client.close()
            for c in controls:
                await c.close()
        counts = await shards.proxy.stats()
        assert counts is not None and counts.proxy_errors >= 1, counts


async def _until_closed(conn: Any) -> None:
    while True:
        await conn.recv()


@pytest.mark.parametrize(("args", "needle"), [
    (["--shard", "2/2"], "need 0 <= index < count"),
    (["--shard", "x"], "expected INDEX/COUNT"),
])
def test_mock_cli_refuses_bad_shard_options(args: list[str], needle: str) -> None:
    res = subprocess.run([sys.executable, "-m", "harness.cli", "mock", "--port", "0", "--no-sip", *args],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert "ready" not in res.stdout


def _rtsip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_shards_without_haproxy_name_the_package() -> None:
    res = _rtsip("shards", "--mocks", "2", env={"RTSIP_HAPROXY": "/nonexistent/haproxy"})
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "Debian" in line and "`haproxy`" in line and "ready" not in res.stdout


@needs_haproxy
def test_a_shard_address_that_does_not_answer_is_refused(tmp_path: Path) -> None:
    with socket.socket() as quiet:  # bound, never listening: a connection is refused
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        res = _rtsip("shards", "--mocks", "1", "--hosts", f"127.0.0.1:{port}", "--run-dir", str(tmp_path))
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert f"shard 0 at 127.0.0.1:{port} does not answer" in line and "ready" not in res.stdout
    assert not (tmp_path / "haproxy.cfg").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--mocks", "0"], "--mocks must be between 1 and 16"),
    (["--mocks", "2", "--hosts", "127.0.0.1:1"], "--hosts names 1 mocks but --mocks is 2"),
    (["--mocks", "1", "--hosts", "nohost"], "expected HOST:PORT"),
    (["--mocks", "1", "--config-only"], "--config-only needs --hosts"),
])
def test_shards_cli_refuses_bad_input(args: list[str], needle: str) -> None:
    res = _rtsip("shards", *args)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_shards_cli_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _rtsip("shards", "--mocks", "2", "--port", str(port))
    assert res.returncode == 2 and f"--port {port}: 127.0.0.1:{port} is already taken" in res.stderr, res.stderr


@needs_haproxy
async def test_config_only_for_shards_that_run_elsewhere(tmp_path: Path) -> None:
    """`--hosts` probes each mock, then `--config-only` writes a configuration HAProxy accepts, for them."""
    async with running_mock(MockConfig(webhook_secret=SECRET), shard=Shard(0, 1)) as mock:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.cli", "shards", "--mocks", "1", "--hosts", f"{mock.host}:{mock.port}",
            "--config-only", "--run-dir", str(tmp_path), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    config = tmp_path / "haproxy.cfg"
    assert f"wrote {config}" in out.decode()
    assert f"server shard0 {mock.host}:{mock.port} " in config.read_text()
    check = await asyncio.create_subprocess_exec(haproxy_path(), "-c", "-f", str(config),
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    said, _ = await asyncio.wait_for(check.communicate(), 30)
    assert check.returncode == 0, said.decode()
