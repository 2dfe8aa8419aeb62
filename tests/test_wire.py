"""The REST answers as bytes on the wire, through clients less forgiving than the SDK's typed methods.

The SDK's ``calls.accept`` never reads the body; the SDK's generic ``client.post(..., cast_to=dict)``
(openai-agents' SIP example), ``requests``/``httpx`` ``.json()`` and ``fetch`` do, by content type.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import openai
import pytest
import requests
from openai import AsyncOpenAI, OpenAI

from mock_api.client import MockClient
from mock_api.running import RunningMock

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


def assert_api_headers(headers: Any) -> None:
    assert REQUEST_ID.match(headers["x-request-id"]), headers
    assert int(headers["openai-processing-ms"]) >= 0
    assert "aiohttp" not in headers.get("server", "").lower() and "python" not in headers.get("server", "").lower()


async def test_generic_sdk_post_accepts_like_openai_agents_does(mock: RunningMock, control: MockClient) -> None:
    """openai-agents' twilio_sip example: ``client.post(".../accept", body=..., cast_to=dict)``."""
    call_id = await control.start_call()
    client = AsyncOpenAI(api_key="sk-test", base_url=mock.base_url, max_retries=0)
    try:
        raw = await client.post(f"/realtime/calls/{call_id}/accept", cast_to=httpx.Response,
                                body={"type": "realtime", "model": "gpt-realtime", "instructions": "Hi"})
        assert raw.status_code == 200 and raw.content == b""
        assert "content-type" not in raw.headers  # nothing tells a client to parse JSON
        assert raw.headers["content-length"] == "0"
        assert_api_headers(raw.headers)
        # the generic call the example makes returns without raising (the SDK parses only JSON types)
        await client.post(f"/realtime/calls/{call_id}/hangup", body={}, cast_to=dict)
    finally:
        await client.close()
    view = await control.call(call_id)
    assert (view.state, view.end_reason) == ("ended", "hangup")


async def test_requests_json_guard_and_error_shape(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    auth = {"Authorization": "Bearer sk-test"}

    def flow() -> tuple[requests.Response, requests.Response]:
        ok = requests.post(f"{mock.base_url}/realtime/calls/{call_id}/accept", headers=auth, timeout=10,
                           json={"type": "realtime", "model": "gpt-realtime"})
        again = requests.post(f"{mock.base_url}/realtime/calls/{call_id}/accept", headers=auth, timeout=10,
                              json={"type": "realtime", "model": "gpt-realtime"})
        return ok, again

    ok, again = await asyncio.to_thread(flow)
    # the guard apps write: parse only what says it is JSON
    assert ok.status_code == 200 and not ok.content and "Content-Type" not in ok.headers
    assert_api_headers(ok.headers)
    assert again.status_code == 400 and again.headers["Content-Type"].startswith("application/json")
    assert again.json()["error"]["code"] == "call_already_accepted"
    assert_api_headers(again.headers)


async def test_every_answer_carries_the_api_headers(mock: RunningMock) -> None:
    async with httpx.AsyncClient(base_url=mock.url) as http:
        for method, path in [("POST", "/v1/realtime/calls/rtc_nope/hangup"), ("GET", "/v1/nothing-here"),
                             ("GET", "/_mock/health")]:
            r = await http.request(method, path, headers={"Authorization": "Bearer sk-test"})
            assert_api_headers(r.headers)
        assert r.status_code == 200


@pytest.mark.parametrize("kib", [256, 900])
async def test_large_bodies_are_read_whole(mock: RunningMock, control: MockClient, kib: int) -> None:
    """Long instructions arrive in many TCP segments: the body is the whole of them, up to 1 MiB."""
    call_id = await control.start_call()
    instructions = "x" * (kib * 1024)

    def accept() -> None:
        client = OpenAI(api_key="sk-test", base_url=mock.base_url, max_retries=0)
        client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime", instructions=instructions)

    await asyncio.to_thread(accept)
    view = await control.call(call_id)
    assert view.state == "active" and view.accept_body is not None and view.accept_body["instructions"] == instructions


async def test_a_body_over_the_limit_is_413(mock: RunningMock, control: MockClient) -> None:
    call_id = await control.start_call()
    client = AsyncOpenAI(api_key="sk-test", base_url=mock.base_url, max_retries=0)
    try:
        with pytest.raises(openai.APIStatusError) as exc:
            await client.realtime.calls.accept(call_id, type="realtime", instructions="x" * (2 * 1024 * 1024))
    finally:
        await client.close()
    assert exc.value.status_code == 413
    assert REQUEST_ID.match(exc.value.request_id or "")


async def test_the_websocket_handshake_is_journaled_with_the_key_masked(mock: RunningMock, control: MockClient,
                                                                        client: AsyncOpenAI) -> None:
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, type="realtime")
    async with client.realtime.connect(call_id=call_id) as conn:
        assert (await conn.recv()).type == "session.created"
    [connect] = (await control.call(call_id)).of_kind("ws.connect")
    headers = {name.lower(): value for name, value in connect.data["headers"]}
    assert connect.data["query"] == {"call_id": call_id}
    assert headers["authorization"] == "Bearer sk-******-key"  # the fixture's sk-test-key, masked
    assert "sk-test-key" not in str(connect.data)
    assert headers["user-agent"].startswith("AsyncOpenAI/Python") and "openai-beta" not in headers
