"""``rtsip mock`` stops cleanly within 2 s on SIGINT/SIGTERM, and at once on a second signal.

The mock runs as the user runs it (a child process, OS-chosen ports); its clients are real sockets: an
aiohttp WebSocket in the middle of a long response, and a SIP/TLS call from the softphone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from openai import AsyncOpenAI

from harness.cli import STOPPING
from harness.mock_process import MockProcess
from harness.softphone import Softphone
from mock_api.running import SHUTDOWN_CLOSE_CODE, SHUTDOWN_CLOSE_REASON
from mock_api.state import RUNNING_FILE
from tests.helpers import WebhookReceiver

STOP_S = 2.0  # what the issue asks of a clean stop: close frames sent and the process gone
LONG_REPLY = " ".join(f"word{i}" for i in range(400))  # minutes of reply audio: still streaming at the signal


def mock_process(tmp_path: Path, *args: str) -> MockProcess:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and k != "OPENAI_BASE_URL"}
    env["RTSIP_STATE_DIR"] = str(tmp_path / "state")
    return MockProcess(["--port", "0", *args], env=env, startup_timeout=60)


async def model_socket(http: aiohttp.ClientSession, mock: MockProcess) -> aiohttp.ClientWebSocketResponse:
    """A ``?model=`` socket in the middle of a long audio response (its first audio delta has arrived)."""
    ws = await http.ws_connect(mock.url.replace("http", "ws", 1) + "/v1/realtime?model=gpt-realtime",
                               headers={"Authorization": "Bearer sk-test"}, autoclose=False, autoping=True)
    await ws.send_json({"type": "response.create", "response": {"instructions": f"Say '{LONG_REPLY}'"}})
    async with asyncio.timeout(30):
        while (await ws.receive_json()).get("type") != "response.output_audio.delta":
            pass
    return ws


async def until_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[aiohttp.WSMessage, float]:
    """Read (and drop) events up to the close frame; the frame and when it came."""
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                return msg, time.monotonic()


async def after_close(ws: aiohttp.ClientWebSocketResponse) -> list[aiohttp.WSMessage]:
    """Whatever arrives after the close frame until the connection ends (this client never answers the
    close, so the mock cuts the connection once it has waited for the answer)."""
    out: list[aiohttp.WSMessage] = []
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                return out
            out.append(msg)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_closes_every_socket_and_exits_within_two_seconds(tmp_path: Path, sig: int) -> None:
    async with mock_process(tmp_path, "--no-sip") as mock, aiohttp.ClientSession() as http:
        ws = await model_socket(http, mock)
        signalled = time.monotonic()
        mock.send_signal(sig)
        close, closed_at = await until_close(ws)
        assert close.type is WSMsgType.CLOSE, close
        assert (close.data, close.extra) == (SHUTDOWN_CLOSE_CODE, SHUTDOWN_CLOSE_REASON)
        assert closed_at - signalled < STOP_S
        assert await after_close(ws) == []  # no event after the close frame
        status = await mock.wait(timeout=30)
        exited_at = time.monotonic()
        assert status == 0, "".join(mock.output)
        assert exited_at - signalled < STOP_S, f"exited {exited_at - signalled:.2f} s after the signal"
    assert not any("Traceback" in line for line in mock.output), "".join(mock.output)


async def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    async with mock_process(tmp_path, "--no-sip") as mock, aiohttp.ClientSession() as http:
        # a client that never answers the close frame holds the clean stop for the close wait
        ws = await model_socket(http, mock)
        mock.send_signal(signal.SIGTERM)
        await mock.wait_for_line(STOPPING)
        mock.send_signal(signal.SIGTERM)
        status = await mock.wait(timeout=30)
        assert status == -signal.SIGTERM, "".join(mock.output)  # killed by the signal, not a clean exit
        await ws.close()


class AcceptingApp(WebhookReceiver):
    """A voice app: accepts each incoming call with the SDK and opens its sideband socket."""

    base_url: str = ""
    http: aiohttp.ClientSession
    sockets: list[aiohttp.ClientWebSocketResponse]
    events: asyncio.Queue[dict[str, Any]]

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        event = self.deliveries[-1].event
        if event is not None:
            call_id = event.data.call_id
            client = AsyncOpenAI(api_key="sk-app", base_url=self.base_url, max_retries=0)
            await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
            ws = await self.http.ws_connect(self.base_url.replace("http", "ws", 1) + f"/realtime?call_id={call_id}",
                                            headers={"Authorization": "Bearer sk-app"}, autoclose=False)
            self.sockets.append(ws)
            await self.events.put(json.loads((await ws.receive()).data))  # session.created
        return response


async def test_a_signal_hangs_up_sip_calls_and_closes_their_sockets(tmp_path: Path) -> None:
    receiver = AcceptingApp(secret="")
    await receiver.start()
    try:
        async with mock_process(tmp_path, "--sip-port", "0", "--webhook-url", receiver.url) as mock, \
                aiohttp.ClientSession() as http:
            receiver.secret, receiver.base_url, receiver.http = mock.webhook_secret, mock.base_url, http
            receiver.sockets, receiver.events = [], asyncio.Queue()
            async with Softphone(ca=mock.ready["ca"], state_dir=tmp_path / "phone") as phone:
                call = await phone.call(mock.ready["sip"])
                assert await call.answered(timeout=30)
                created = await asyncio.wait_for(receiver.events.get(), 30)
                assert created["type"] == "session.created"
                [ws] = receiver.sockets
                signalled = time.monotonic()
                mock.send_signal(signal.SIGTERM)
                close, closed_at = await until_close(ws)
                assert (close.type, close.data) == (WSMsgType.CLOSE, SHUTDOWN_CLOSE_CODE)
                assert closed_at - signalled < STOP_S
                await call.ended(timeout=30)
                assert call.ended_by == "remote", (call.ended_by, call.end_reason)  # the mock's BYE
                await ws.close()
                status = await mock.wait(timeout=30)
                exited_at = time.monotonic()
                assert status == 0, "".join(mock.output)
                assert exited_at - signalled < STOP_S, f"exited {exited_at - signalled:.2f} s after the signal"
                assert not (tmp_path / "state" / RUNNING_FILE).exists()  # removed on the way out
    finally:
        await receiver.stop()
