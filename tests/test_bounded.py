"""Issue 15: bodies read whole, bounded memory, backpressure, a loop that keeps serving (a real mock, real sockets)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.journal import HEAD_CHARS, audio_summary, text_summary
from mock_api.running import RunningMock, running_mock
from tests.helpers import until

AUTH = {"Authorization": "Bearer sk-test-key"}


def ws_url(mock: RunningMock, query: str = "model=gpt-realtime") -> str:
    return mock.url.replace("http://", "ws://") + "/v1/realtime?" + query


async def ringing(control: MockClient) -> str:
    return await control.start_call()


# ---- bodies read whole up to the limit, a shaped 413 past it ------------------------------------------


@pytest.mark.parametrize("size", [256 * 1024, 900 * 1024])
async def test_long_instructions_accept_whole(client: AsyncOpenAI, control: MockClient, size: int) -> None:
    call_id = await ringing(control)
    await client.realtime.calls.accept(call_id, type="realtime", instructions="x" * size)
    view = await control.call(call_id)
    assert view.state == "active"
    assert view.accept_body is not None and len(view.accept_body["instructions"]) == size


async def test_body_past_the_limit_is_a_shaped_413(mock: RunningMock, control: MockClient) -> None:
    call_id = await ringing(control)
    body = json.dumps({"type": "realtime", "instructions": "x" * (1 << 20)}).encode()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{mock.base_url}/realtime/calls/{call_id}/accept", data=body,
                             headers={**AUTH, "Content-Type": "application/json"}) as r:
            assert r.status == 413
            err = (await r.json())["error"]
        async with http.post(f"{mock.base_url}/realtime/client_secrets", data=body,
                             headers={**AUTH, "Content-Type": "application/json"}) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
    assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large"
    assert (await control.call(call_id)).state == "ringing"


async def test_websocket_message_past_the_limit_closes_1009(mock: RunningMock, control: MockClient) -> None:
    await control.configure(ws_max_message_bytes=64 * 1024)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(mock), headers=AUTH) as sock:
        created = await sock.receive_json()
        await sock.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (80 * 1024)}))
        msg = await sock.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert sock.close_code == 1009
    key = created["session"]["id"]
    closes = await until(lambda: [e for e in mock.server.journal.entries(key, "ws.close")], what="ws.close")
    assert closes[0].data.get("reason") == "message too big"
    assert [e.data["limit"] for e in mock.server.journal.entries(key, "ws.too_big")] == [64 * 1024]


# ---- call-less sessions: their own timelines, retained like calls, spilled to a file ---------------------


async def open_session(mock: RunningMock, events: list[dict[str, Any]] | None = None) -> str:
    """One ?model= socket that sends ``events`` and closes; returns its session id (its timeline's key)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(mock), headers=AUTH) as sock:
        created = await sock.receive_json()
        for event in events or []:
            await sock.send_str(json.dumps(event))
    return str(created["session"]["id"])


@pytest.fixture
async def small_mock(tmp_path: Path) -> AsyncIterator[RunningMock]:
    config = MockConfig(retain_ended_calls=2, journal_file=str(tmp_path / "journal.jsonl"))
    async with running_mock(config) as m:
        yield m


async def test_sessions_have_their_own_timelines_and_leave_like_calls(small_mock: RunningMock,
                                                                     tmp_path: Path) -> None:
    mock = small_mock
    async with MockClient(mock.url) as control:
        keys = [await open_session(mock) for _ in range(4)]

        async def retained() -> list[str]:
            sessions = await control.sessions()
            return [s["id"] for s in sessions] if len(sessions) == 2 and all(s["ended"] for s in sessions) else []

        assert await until(retained, what="only the last two sessions kept") == keys[2:]
        journal = await control.session_journal(keys[3])
        assert [e["kind"] for e in journal][:2] == ["ws.connect", "ws.server"] and journal[-1]["kind"] == "ws.close"
        server = await control.server_journal()
    # not on the shared timeline: only the small ws.session pointer is
    assert not [e for e in server if e["kind"] in ("ws.connect", "ws.server", "ws.client")]
    assert [e["data"]["session"] for e in server if e["kind"] == "ws.session"] == keys
    mock.server.journal.flush_spill()  # the spill file is written by a thread of its own
    spilled = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [r["id"] for r in spilled] == keys[:2]
    assert spilled[0]["entries"][-1]["kind"] == "ws.close"


async def test_retention_is_on_by_default() -> None:
    assert MockConfig().retain_ended_calls == 1000


def append(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


async def test_audio_is_journaled_as_size_and_checksum(mock: RunningMock) -> None:
    audio = append(b"\x01\x02" * 4800)
    key = await open_session(mock, [audio])
    sent = await until(lambda: [e.data["event"] for e in mock.server.journal.entries(key, "ws.client")],
                       what="the append in the journal")
    assert sent[0]["audio"] == audio_summary(audio["audio"])


async def test_record_audio_keeps_the_bytes() -> None:
    async with running_mock(MockConfig(record_audio=True)) as mock:
        audio = append(b"\x01\x02" * 4800)
        key = await open_session(mock, [audio])
        sent = await until(lambda: [e.data["event"] for e in mock.server.journal.entries(key, "ws.client")],
                           what="the append in the journal")
    assert sent[0]["audio"] == audio["audio"]


# ---- paging -------------------------------------------------------------------------------------------


async def test_journal_and_call_views_page(mock: RunningMock, control: MockClient) -> None:
    for _ in range(5):
        await ringing(control)
    for n in range(5):
        mock.server.journal.record(None, "test.filler", n=n)
    async with aiohttp.ClientSession() as http:
        async with http.get(mock.url + "/_mock/journal?limit=2") as r:
            first = await r.json()
        async with http.get(f"{mock.url}/_mock/journal?after={first['next_after']}&limit=1000") as r:
            rest = await r.json()
        async with http.get(mock.url + "/_mock/journal?limit=soon") as r:
            bad = (r.status, (await r.json())["error"]["param"])
        call_id = (await control.calls(entries=False))[0].call_id
        async with http.get(f"{mock.url}/_mock/calls/{call_id}?after=0&limit=1") as r:
            page = await r.json()
        async with http.get(mock.url + "/_mock/calls?limit=2") as r:
            calls = await r.json()
    assert len(first["entries"]) == 2 and rest["next_after"] is None
    assert [e["seq"] for e in first["entries"] + rest["entries"]] == [
        e.seq for e in mock.server.journal.entries(None)]
    assert bad == (400, "limit")
    assert len(page["entries"]) == 1 and page["next_after"] == page["entries"][0]["seq"]
    assert len(calls["calls"]) == 2 and calls["next_after"] == calls["calls"][1]["call_id"]
    assert len(await control.calls()) == 5  # the client reads every page
    assert len((await control.call(call_id)).entries) == len(list(mock.server.journal.entries(call_id)))


# ---- backpressure ---------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


LONG_REPLY = {"default_reply": "A long answer that goes on. " * 40, "ms_per_char": 60, "generation_speed": 50,
              "response_latency_s": 0}
QUEUE_LIMIT = 2 * 1024 * 1024


async def ten_long_replies(sock: aiohttp.ClientWebSocketResponse) -> str:
    """Ask for ten out-of-band audio replies of about a minute each; returns the session id."""
    key = str((await sock.receive_json())["session"]["id"])
    for n in range(10):
        await sock.send_str(json.dumps({"type": "response.create", "event_id": f"oob{n}",
                                        "response": {"conversation": "none"}}))
    return key


async def test_a_client_that_reads_nothing_is_closed_1008(tmp_path: Path) -> None:
    from harness.mock_process import MockProcess

    settings = tmp_path / "mock.json"
    settings.write_text(json.dumps({"script": LONG_REPLY, "ws_send_queue_bytes": QUEUE_LIMIT}))
    async with MockProcess(["--port", "0", "--no-sip", "--state-dir", str(tmp_path / "state"),
                            "--config", str(settings)]) as mock, MockClient(mock.url) as control, \
            aiohttp.ClientSession() as http:
        url = mock.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
        before = rss_mb(mock.pid)
        async with http.ws_connect(url, headers=AUTH, max_msg_size=0) as sock:
            key = await ten_long_replies(sock)

            async def closed() -> list[dict[str, Any]]:
                return [e["data"] for e in await control.session_journal(key) if e["kind"] == "ws.close"]

            closes = await until(closed, timeout=60, what="the socket closed for its full send queue")
            grown = rss_mb(mock.pid) - before
            kinds = set()
            async with asyncio.timeout(30):  # now read: what was sent before the close, then the close frame
                while (msg := await sock.receive()).type == aiohttp.WSMsgType.TEXT:
                    kinds.add(json.loads(msg.data)["type"])
            # the close frame comes after what was buffered (the mock does not wait for the client's reply)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008 and msg.extra == "send queue full"
    assert closes[0]["code"] == 1008 and closes[0]["reason"] == "send queue full"
    assert closes[0]["queued_bytes"] <= QUEUE_LIMIT
    assert "response.output_audio.delta" in kinds
    # Ten replies would queue about 40 MB of base64 for this client; the queue kept at most its limit. What RSS
    # still grows by is the generation of ten one-minute replies at once (the same with a client that reads).
    print(f"RSS {before:.0f} MB, {grown:+.0f} MB when the socket was closed")
    assert grown < 150, f"RSS grew {grown:.0f} MB"


# ---- the loop keeps serving ------------------------------------------------------------------------------


async def worst_stall_ms(mock: RunningMock, work: Any) -> float:
    """Run ``work`` while GET /_mock/health is timed every 10 ms on its own connection: the worst answer time."""
    stop = asyncio.Event()
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                t = time.perf_counter()
                async with http.get(mock.url + "/_mock/health") as r:
                    await r.read()
                worst = max(worst, (time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.01)

    task = asyncio.create_task(probe())
    try:
        await work
    finally:
        stop.set()
        await task
    return worst


async def test_a_burst_of_appends_does_not_hold_the_loop(mock: RunningMock) -> None:
    frame = json.dumps(append(b"\x00\x01" * 480))  # 20 ms at 24 kHz

    async def burst() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(mock), headers=AUTH) as sock:
            await sock.receive_json()
            for _ in range(10_000):
                await sock.send_str(frame)
            await sock.send_str(json.dumps({"type": "input_audio_buffer.clear"}))
            while (await sock.receive_json())["type"] != "input_audio_buffer.cleared":
                pass

    stall = await worst_stall_ms(mock, burst())
    print(f"worst loop stall during 10,000 appends: {stall:.1f} ms")
    assert stall < 1000  # it was 4.2 s; the figure itself is printed (machine-dependent)


async def test_reading_a_big_journal_does_not_hold_the_loop(mock: RunningMock) -> None:
    for n in range(200):  # about 20,000 entries on one timeline
        mock.server.journal.record(None, "test.filler", n=n, text="x" * 200)
    key = await open_session(mock, [{"type": "session.update", "session": {"type": "realtime"}}] * 100)

    async def read() -> None:
        async with aiohttp.ClientSession() as http, http.get(mock.url + "/_mock/journal?limit=20000") as r:
            assert r.status == 200
            assert len((await r.json())["entries"]) > 200
        async with aiohttp.ClientSession() as http, http.get(f"{mock.url}/_mock/sessions/{key}") as r:
            assert len((await r.json())["entries"]) > 200

    stall = await worst_stall_ms(mock, read())
    print(f"worst loop stall while reading the journal: {stall:.1f} ms")
    assert stall < 1000


# ---- the journal bounded by bytes -------------------------------------------------------------------------

BIG_PROMPT = "Speak like a pirate. " + "y" * (900 * 1024)


async def big_updates(mock: RunningMock, n: int) -> str:
    """A ?model= socket that sends ``n`` session.update of 0.9 MB instructions, each once the last one's
    session.updated is read (so all of them are journaled); returns the session id. The socket closes
    afterwards."""
    update = json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": BIG_PROMPT}})
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(mock), headers=AUTH,
                                                                max_msg_size=8 << 20) as sock:
        key = str((await sock.receive_json())["session"]["id"])
        for _ in range(n):
            await sock.send_str(update)
            while (event := await sock.receive_json())["type"] != "session.updated":
                assert event["type"] != "error", event
    return key


async def session_view(mock: RunningMock, key: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{mock.url}/_mock/sessions/{key}") as r:
        assert r.status == 200
        view: dict[str, Any] = await r.json()
    return view


async def test_a_hundred_big_session_updates_keep_the_journal_small(mock: RunningMock) -> None:
    journal = mock.server.journal
    key = await big_updates(mock, 100)
    line = journal.timeline(key)
    assert line is not None and line.truncated >= 100  # each prompt cut, on the way in and in the echo
    assert journal.bytes < 2 << 20 < (journal.max_bytes or 0)  # 180 MB went through; it was 183 MB held
    view = await session_view(mock, key)
    sent = [e["data"]["event"] for e in view["entries"] if e["kind"] == "ws.client"]
    assert len(sent) == 100 and "dropped" not in view
    assert {e["session"]["instructions"] for e in sent} == {text_summary(BIG_PROMPT)}
    assert text_summary(BIG_PROMPT).endswith(BIG_PROMPT[:HEAD_CHARS])


async def test_a_timeline_over_its_byte_cap_drops_its_oldest_and_says_so() -> None:
    async with running_mock(MockConfig(journal_max_string_chars=1 << 20)) as mock:  # prompts kept whole
        journal = mock.server.journal
        cap = 16 << 10  # big entries are held packed (0.9 MB of one letter is a few KB), so a small cap
        journal.max_timeline_bytes = cap
        key = await big_updates(mock, 30)  # about 55 MB of events through one timeline
        line = journal.timeline(key)
        assert line is not None and line.size_bytes <= cap and journal.bytes <= cap + (1 << 20)
        view = await session_view(mock, key)
    assert view["dropped"] == line.dropped > 0
    written = 1 + 1 + 30 + 30  # ws.connect, session.created, then each update and its session.updated
    kinds = [e["kind"] for e in view["entries"]]
    assert len(view["entries"]) - kinds.count("ws.close") + view["dropped"] == written
    newest = [e for e in view["entries"] if e["kind"] == "ws.client"][-1]
    assert newest["data"]["event"]["session"]["instructions"] == BIG_PROMPT  # what is kept is kept whole


def big_schema(props: int = 3000) -> dict[str, Any]:
    """A tool whose parameters are thousands of small dicts: small as JSON, several times that as objects."""
    properties = {f"field_{i}": {"type": "string", "description": f"field number {i}"} for i in range(props)}
    return {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": properties}}


async def test_big_tool_schemas_are_held_packed_and_read_back_whole(client: AsyncOpenAI, mock: RunningMock,
                                                                    control: MockClient) -> None:
    """Ended calls with a large schema kept every dict as an object: 60 of them grew the mock by 270 MB."""
    tool = big_schema()
    ids = []
    for _ in range(3):
        call_id = await ringing(control)
        await client.realtime.calls.accept(call_id, type="realtime", tools=[tool])  # type: ignore[list-item]
        await client.realtime.calls.hangup(call_id)
        ids.append(call_id)
    server, journal = mock.server, mock.server.journal
    for call_id in ids:
        line = journal.timeline(call_id)
        assert line is not None and line.segments  # the accept entry went packed as it was written
        assert server.calls[call_id].accept_body is None  # the ended call keeps its body compressed
        view = await control.call(call_id)
        assert view.state == "ended" and view.accept_body is not None
        assert view.accept_body["tools"][0]["parameters"] == tool["parameters"]
        (request,) = [e for e in journal.entries(call_id, "rest.request") if e.data["op"] == "accept"]
        assert request.data["body"]["tools"][0]["parameters"] == tool["parameters"]  # decoded for the reader
    assert journal.bytes < 1 << 20  # three bodies of about 200 KB each, held as compressed blobs
