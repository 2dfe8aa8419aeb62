"""Mock shards: calls spread over mock processes behind one base URL, reached with the official SDK."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from mock_api import ids as ids_mod
from mock_api.client import MockClient, MockControlError
from mock_api.config import MockConfig
from mock_api.running import RunningMock, running_mock
from mock_api.shards import MAX_SHARDS, Shard, ShardRouter, route, shard_of

ACCEPT = {"type": "realtime", "model": "gpt-realtime", "instructions": "Shard test."}


def test_shard_ids_route_back_to_their_shard() -> None:
    for count in (1, 2, 3, 5, MAX_SHARDS):
        for index in range(count):
            ids = {Shard(index, count).call_id() for _ in range(40)}
            for cid in ids:
                assert cid.startswith("rtc_") and len(cid) == 36 and int(cid[4:], 16) >= 0
                assert shard_of(cid, count) == index
                assert route(f"POST /v1/realtime/calls/{cid}/accept HTTP/1.1\r\nHost: x\r\n".encode(), count) == index
                assert route(f"GET /v1/realtime?call_id={cid} HTTP/1.1\r\n".encode(), count) == index
                live = ids_mod.live_id(cid)  # the same call's GPT-Live id routes to the same shard
                assert shard_of(live, count) == index
                assert route(f"GET /v1/live/sessions/{live}/attach HTTP/1.1\r\n".encode(), count) == index
            assert len(ids) == 40  # still random


def test_requests_that_name_no_call_go_to_shard_0() -> None:
    assert route(b"GET /v1/models HTTP/1.1\r\n", 4) == 0
    assert route(b"POST /_mock/calls HTTP/1.1\r\n", 4) == 0
    assert route(b"GET /v1/realtime/calls/rtc_not-hex/x HTTP/1.1\r\n", 4) == 0
    assert shard_of("rtc_zz", 4) == 0 and shard_of("sess_abc", 4) == 0


@pytest.mark.parametrize("text", ["2/2", "0/0", "-1/3", "1", "a/b", f"0/{MAX_SHARDS + 1}"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):  # the message names the bad spec
        Shard.parse(text)


@contextlib.asynccontextmanager
async def sharded(tmp_path: Path, count: int) -> AsyncIterator[tuple[ShardRouter, list[RunningMock]]]:
    paths = [tmp_path / f"handoff-{i}.sock" for i in range(count)]
    async with contextlib.AsyncExitStack() as stack:
        mocks = [await stack.enter_async_context(running_mock(MockConfig(webhook_secret="whsec_dGVzdHNlY3JldA=="),
                                                              shard=Shard(i, count), handoff=paths[i]))
                 for i in range(count)]
        router = ShardRouter(paths)
        await router.start()
        stack.push_async_callback(router.stop)
        yield router, mocks


async def test_the_sdk_reaches_every_shard_through_one_base_url(tmp_path: Path) -> None:
    async with sharded(tmp_path, 2) as (router, mocks):
        controls = [MockClient(m.url) for m in mocks]
        client = AsyncOpenAI(api_key="sk-test", base_url=router.url + "/v1", max_retries=0)
        try:
            # calls made on each shard; the app only knows the router's URL
            ids = [await controls[i % 2].start_call() for i in range(6)]
            assert [shard_of(c, 2) for c in ids] == [0, 1, 0, 1, 0, 1]
            for cid in ids:  # one client, one kept-alive connection, calls of both shards
                await client.realtime.calls.accept(cid, **ACCEPT)  # type: ignore[arg-type]
            for cid in ids[:2]:
                async with client.realtime.connect(call_id=cid) as conn:
                    first = await conn.recv()
                    assert first.type == "session.created"
                await client.realtime.calls.hangup(cid)
            for i, cid in enumerate(ids):
                view = await controls[i % 2].call(cid)
                assert view.state in ("active", "ended"), (cid, view.state)
                with pytest.raises(MockControlError) as missing:  # the other shard never saw it
                    await controls[(i + 1) % 2].call(cid)
                assert missing.value.status == 404
            # the client kept its connection: requests for the other shard's calls were passed back
            forwarded = [m.server.forwarder.forwarded for m in mocks if m.server.forwarder is not None]
            assert len(forwarded) == 2 and sum(forwarded) >= 2, forwarded
            assert router.routed[0] >= 1 and router.routed[1] >= 1 and router.dropped == 0
            # an unknown call is answered in the API's shape by shard 0
            with pytest.raises(openai.NotFoundError):
                await client.realtime.calls.accept("rtc_" + "1" * 32, **ACCEPT)  # type: ignore[arg-type]
        finally:
            await client.close()
            for c in controls:
                await c.close()


@pytest.mark.parametrize(("args", "needle"), [
    (["--shard", "2/2", "--handoff", "/tmp/rtsip-x.sock"], "need 0 <= index < count"),
    (["--shard", "0/2"], "--shard and --handoff go together"),
    (["--shard", "x", "--handoff", "/tmp/rtsip-x.sock"], "expected INDEX/COUNT"),
])
def test_mock_cli_refuses_bad_shard_options(args: list[str], needle: str) -> None:
    res = subprocess.run([sys.executable, "-m", "harness.cli", "mock", "--port", "0", "--no-sip", *args],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert "ready" not in res.stdout


def test_router_process_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "mock_api.shards", "--port", str(port), str(tmp_path / "0.sock")],
                             capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in res.stderr, res.stderr


async def test_a_forwarded_request_is_the_clients_own(tmp_path: Path) -> None:
    """On one kept-alive connection: no header is added on the way (a JSON body without Content-Type
    is accepted on either shard), and a WebSocket upgrade that cannot be passed on is told to
    reconnect."""
    async with sharded(tmp_path, 2) as (router, mocks):
        controls = [MockClient(m.url) for m in mocks]
        try:
            ids = [await controls[i].start_call() for i in (0, 1)]
            body = json.dumps(ACCEPT).encode()
            auth = {"Authorization": "Bearer sk-test"}
            async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as http:
                for cid in ids:  # the second is forwarded: the connection belongs to shard 0
                    async with http.post(f"{router.url}/v1/realtime/calls/{cid}/accept", data=body,
                                         headers=auth) as resp:
                        assert resp.status == 200, await resp.text()
                assert sum(m.server.forwarder.forwarded for m in mocks if m.server.forwarder) == 1
                async with http.post(f"{router.url}/v1/realtime/calls/{ids[0]}/hangup", headers=auth) as resp:
                    assert resp.status == 200
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await http.ws_connect(f"{router.url}/v1/realtime?call_id={ids[1]}", headers=auth)
                assert err.value.status in (421, 404)  # 404 only if this connection went to shard 1
        finally:
            for c in controls:
                await c.close()
