"""Bytes that are not HTTP, sent to the REST port, get a 400 in the API's error envelope, are journaled
as ``http.malformed``, and leave no traceback on the mock's output (it ran as ``rtsip mock`` does)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from harness.mock_process import MockProcess

GARBAGE = {
    "not_http": b"\x16\x03\x01\x02\x00 hello, not http\r\n\r\n",
    "bad_request_line": b"GET\r\n\r\n",
    "bad_version": b"GET /v1/models HTTP/9.x\r\nHost: 127.0.0.1\r\n\r\n",
    "bad_header": b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
    "line_too_long": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad_chunk": b"POST /v1/realtime/calls/x/accept HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\n{}\r\n0\r\n\r\n",
}


async def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a fresh connection; the status, headers and body of the answer (read to EOF:
    the mock closes a connection it could not parse)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
async def mock(tmp_path: Path) -> AsyncIterator[MockProcess]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    async with MockProcess(["--port", "0", "--no-sip"], env={**env, "RTSIP_STATE_DIR": str(tmp_path)}) as m:
        yield m


async def test_garbage_gets_a_400_in_the_api_shape_and_no_traceback(mock: MockProcess) -> None:
    port = int(mock.url.rsplit(":", 1)[1])
    for name, data in GARBAGE.items():
        status, headers, body = await raw_exchange(port, data)
        assert status == 400, (name, status, body[:200])
        assert headers["content-type"].startswith("application/json"), (name, headers)
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and error["message"], (name, error)
        assert set(error) == {"message", "type", "param", "code"}, (name, error)
    async with aiohttp.ClientSession() as http:
        async with http.get(mock.url + "/_mock/journal") as resp:
            entries = (await resp.json())["entries"]
        # the mock keeps serving on new connections
        async with http.get(mock.url + "/_mock/health") as resp:
            assert resp.status == 200
    malformed = [e for e in entries if e["kind"] == "http.malformed"]
    assert len(malformed) == len(GARBAGE) and all(e["data"]["status"] == 400 for e in malformed), malformed
    assert await mock.stop() == 0
    output = "".join(mock.output)
    assert "Traceback" not in output and "Error handling request" not in output, output
