"""Issue 15: a client secret minted by the mock opens the Realtime socket until it expires (real sockets, the SDK)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from openai import AsyncOpenAI, AuthenticationError

from mock_api.client import MockClient
from mock_api.running import RunningMock


async def mint(client: AsyncOpenAI, seconds: int = 600) -> tuple[str, int]:
    secret = await client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": seconds}, session={"type": "realtime"})
    assert secret.value.startswith("ek_")
    return secret.value, secret.expires_at


async def test_a_minted_key_opens_the_socket(mock: RunningMock, client: AsyncOpenAI) -> None:
    key, _ = await mint(client)
    browser = AsyncOpenAI(api_key=key, base_url=mock.base_url, max_retries=0)
    try:
        async with browser.realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
    finally:
        await browser.close()


async def test_a_browser_sends_it_as_a_subprotocol(mock: RunningMock, client: AsyncOpenAI) -> None:
    key, _ = await mint(client)
    url = mock.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http, http.ws_connect(
            url, protocols=("realtime", "openai-insecure-api-key." + key), headers={"Origin": "http://localhost:3000"},
    ) as sock:
        assert (await sock.receive_json())["type"] == "session.created"
        assert sock.protocol == "realtime"


async def test_a_key_never_minted_is_refused(mock: RunningMock) -> None:
    stranger = AsyncOpenAI(api_key="ek_" + "x" * 32, base_url=mock.base_url, max_retries=0)
    try:
        async with stranger.realtime.connect(model="gpt-realtime") as conn:
            event = await conn.recv()
            assert event.type == "error" and event.error.code == "invalid_api_key"
    finally:
        await stranger.close()


async def test_server_side_controls_still_want_a_standard_key(mock: RunningMock, client: AsyncOpenAI,
                                                             control: MockClient) -> None:
    key, _ = await mint(client)
    call_id = await control.start_call()
    browser = AsyncOpenAI(api_key=key, base_url=mock.base_url, max_retries=0)
    try:
        with pytest.raises(AuthenticationError):
            await browser.realtime.calls.accept(call_id, type="realtime")
    finally:
        await browser.close()


async def test_an_expired_key_is_refused_the_real_way(mock: RunningMock, client: AsyncOpenAI) -> None:
    key, expires_at = await mint(client, seconds=10)  # the shortest lifetime the API allows
    url = mock.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as sock:
            assert (await sock.receive_json())["type"] == "session.created"
        # waiting on the wall clock itself: no event says "now it has expired", the mock checks time.time()
        while time.time() < expires_at:  # noqa: ASYNC110
            await asyncio.sleep(min(0.5, max(0.01, expires_at - time.time())))
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as sock:
            event = await sock.receive_json()
            await sock.receive()
    assert event["type"] == "error" and event["error"]["code"] == "invalid_api_key"
    assert sock.close_code == 3000
