"""Realtime benchmark: client-event → first-server-event latency over real sockets, and core throughput.

    .venv/bin/python bench/bench_realtime.py [--sessions 1 200] [--events 50]

Latency: N concurrent ``?model=`` sockets each send ``conversation.item.create`` events one at a
time and time the first reply (p50/p99). Throughput: one session core, no sockets, emitting full
text+audio responses; counts server events per second of CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
from aiohttp.test_utils import TestServer

from mock_api import realtime_rest, ws
from mock_api.http import create_app
from mock_api.realtime.session import RealtimeSession
from mock_api.server import MockServer

ITEM = json.dumps({"type": "conversation.item.create", "item": {
    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}})


async def _client(url: str, n: int, out: list[float]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(
            url, headers={"Authorization": "Bearer sk-bench"}, max_msg_size=0) as sock:
        await sock.receive()  # session.created
        for _ in range(n):
            t0 = time.perf_counter()
            await sock.send_str(ITEM)
            await sock.receive()  # conversation.item.added
            out.append((time.perf_counter() - t0) * 1000)
            await sock.receive()  # conversation.item.done


async def latency(sessions: int, events: int) -> tuple[float, float]:
    server = MockServer()
    app = create_app(server)
    ws.setup(app, server)
    realtime_rest.setup(app, server)
    http = TestServer(app, host="127.0.0.1", port=0)
    await http.start_server()
    try:
        samples: list[float] = []
        url = f"http://127.0.0.1:{http.port}/v1/realtime?model=gpt-realtime"
        await asyncio.gather(*(_client(url, events, samples) for _ in range(sessions)))
    finally:
        await http.close()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def throughput(seconds: float = 2.0) -> float:
    s = RealtimeSession(script={"response_latency_s": 0, "greeting": "Hello there, how can I help you today?"})
    count, now, t0 = 0, 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        count += len(s.receive('{"type": "response.create"}', now))
        now += 10.0
        count += len(s.advance(now))
    return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 200])
    ap.add_argument("--events", type=int, default=50)
    args = ap.parse_args()
    print("| measure | value |\n|---|---|")
    for n in args.sessions:
        p50, p99 = asyncio.run(latency(n, args.events))
        print(f"| client event → first server event, {n} session(s), p50 / p99 | {p50:.2f} ms / {p99:.2f} ms |")
    print(f"| server events per second, one process (session core) | {throughput():,.0f} |")


if __name__ == "__main__":
    main()
