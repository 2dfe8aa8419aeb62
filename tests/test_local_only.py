"""Issue 15: a local tool that a web page cannot drive (Host, Origin, the control token), over real sockets."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from mock_api.client import MockClient, MockControlError
from mock_api.config import MockConfig
from mock_api.running import RunningMock, running_mock


async def get(url: str, headers: dict[str, str], method: str = "GET") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def refused(mock: RunningMock) -> list[dict[str, Any]]:
    return [e.data for e in mock.server.journal.entries(None, "http.refused")]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "rebind.attacker.test.", "api.openai.com"])
async def test_a_foreign_host_is_refused(mock: RunningMock, control: MockClient, host: str) -> None:
    for path in ("/_mock/config", "/v1/models", "/_mock/calls"):
        status, answer = await get(mock.url + path, {"Host": host, "Authorization": "Bearer sk-x"})
        assert status == 403
        assert answer["error"]["code"] == "host_not_allowed" and answer["error"]["type"] == "invalid_request_error"
    status, _ = await get(mock.url + "/_mock/reset", {"Host": host}, "POST")
    assert status == 403
    assert [r["reason"] for r in refused(mock)] == ["host"] * 4
    assert refused(mock)[0]["host"] == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8765", "LOCALHOST", "[::1]:80", "app.localhost"])
async def test_loopback_hosts_are_served(mock: RunningMock, host: str) -> None:
    status, answer = await get(mock.url + "/_mock/health", {"Host": host})
    assert status == 200 and answer["ok"] is True


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example",
                                    "file://", "chrome-extension://abc"])
async def test_a_foreign_page_is_refused(mock: RunningMock, origin: str) -> None:
    status, answer = await get(mock.url + "/_mock/calls", {"Origin": origin}, "POST")
    assert status == 403 and answer["error"]["code"] == "origin_not_allowed"
    assert mock.server.calls == {}  # the cross-site request created nothing
    assert refused(mock)[0]["origin"] == origin


async def test_a_foreign_page_cannot_open_a_socket(mock: RunningMock) -> None:
    url = mock.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await http.ws_connect(url, headers={"Origin": "https://evil.example", "Authorization": "Bearer sk-x"})
    assert handshake.value.status == 403


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://127.0.0.1:5173", "http://[::1]:8080"])
async def test_local_pages_are_served(mock: RunningMock, client: AsyncOpenAI, origin: str) -> None:
    status, answer = await get(mock.url + "/_mock/calls", {"Origin": origin}, "POST")
    assert status == 201 and answer["state"] == "ringing"


async def test_allowed_hosts_adds_a_name() -> None:
    async with running_mock(MockConfig(allowed_hosts=["devbox.lan"])) as mock:
        status, _ = await get(mock.url + "/_mock/health", {"Host": "devbox.lan:8765",
                                                           "Origin": "http://devbox.lan:3000"})
        assert status == 200


async def test_the_control_token() -> None:
    async with running_mock(MockConfig(control_token="s3cret")) as mock:
        status, answer = await get(mock.url + "/_mock/config", {})
        assert status == 401 and answer["error"]["code"] == "invalid_control_token"
        status, _ = await get(mock.url + "/_mock/config", {"Authorization": "Bearer wrong"})
        assert status == 401
        status, config = await get(mock.url + "/_mock/config", {"X-Rtsip-Token": "s3cret"})
        assert status == 200 and config["control_token"] == "<set>"  # never echoed
        status, _ = await get(mock.url + "/_mock/health", {"Authorization": "Bearer s3cret"})
        assert status == 200
        async with MockClient(mock.url, token="s3cret") as control:
            call_id = await control.start_call()
            assert (await control.call(call_id)).state == "ringing"
        async with MockClient(mock.url, token="") as control:
            with pytest.raises(MockControlError) as denied:
                await control.config()
            assert denied.value.status == 401
        # the OpenAI API itself keeps its own keys
        status, _ = await get(mock.base_url + "/models", {"Authorization": "Bearer sk-x"})
        assert status == 200
        assert [r["reason"] for r in refused(mock)] == ["control_token"] * 3
