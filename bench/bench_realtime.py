"""Realtime benchmark: client-event → first-server-event latency over real sockets, and core throughput.

    .venv/bin/python -m bench.bench_realtime [--sessions 1 200] [--events 50] [--seconds 3]

Latency: the mock runs as its own ``rtsip mock`` process (so client CPU is not charged to
the server); N concurrent ``?model=`` sockets in this process each send
``conversation.item.create`` events one at a time and time the first reply (p50/p99). The
"server share" column is the mock's own part of it, read from its journal: the time from
recording the client frame to recording the first server event it caused (each call-less
session's own timeline, ``/_mock/sessions``).

Throughput: one session core, no sockets, on a manual clock, serving calls of
``--turns`` text+audio responses each (a fresh session per call, so the conversation does
not grow without bound); counts server events per second of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from bench._util import summary
from harness.journal_view import JournalView
from harness.mock_process import MockProcess
from mock_api import journal_entries as je
from mock_api.client import MockClient
from mock_api.realtime.session import RealtimeSession

SCRIPT = {"response_latency_s": 0, "greeting": "Hello there, how can I help you today?"}


def _item(n: int) -> str:
    return json.dumps({"type": "conversation.item.create", "event_id": f"evt_bench_{n}", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}})


async def _client(http: aiohttp.ClientSession, url: str, n: int, out: list[float]) -> None:
    async with http.ws_connect(url, headers={"Authorization": "Bearer sk-bench"}, max_msg_size=0) as sock:
        await sock.receive()  # session.created
        for i in range(n):
            frame = _item(i)
            t0 = time.perf_counter()
            await sock.send_str(frame)
            await sock.receive()  # conversation.item.added
            out.append((time.perf_counter() - t0) * 1000)
            await sock.receive()  # conversation.item.done


def _server_share(entries: list[dict[str, Any]]) -> list[float]:
    """ms from each journaled client frame to the next journal entry (its first server event)."""
    shares = []
    for a, b in itertools.pairwise(JournalView(entries)):
        if isinstance(a.entry, je.WsClient) and isinstance(b.entry, je.WsServer):
            shares.append(b.t_ms - a.t_ms)
    return shares


async def latency(sessions: int, events: int) -> tuple[list[float], list[float]]:
    async with MockProcess(["--port", "0", "--no-sip"]) as mock, MockClient(mock.url) as control:
        url = mock.base_url.replace("http://", "ws://", 1) + "/realtime?model=gpt-realtime"
        samples: list[float] = []
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            await asyncio.gather(*(_client(http, url, events, samples) for _ in range(sessions)))
        shares: list[float] = []
        for session in await control.sessions():  # each ?model= socket has its own timeline
            shares += _server_share(await control.session_journal(session["id"]))
    return samples, shares


def throughput(seconds: float = 3.0, turns: int = 20) -> float:
    count, now, t0 = 0, 0.0, time.perf_counter()
    session: RealtimeSession | None = None
    done = 0
    while time.perf_counter() - t0 < seconds:
        if session is None or done == turns:
            session = RealtimeSession(script=SCRIPT, now=now)
            count += len(session.start(now))
            done = 0
        count += len(session.receive('{"type": "response.create"}', now))
        now += 10.0
        count += len(session.advance(now))
        done += 1
    return count / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 200])
    ap.add_argument("--events", type=int, default=50, help="events per session (default 50)")
    ap.add_argument("--seconds", type=float, default=3.0, help="throughput run time (default 3)")
    ap.add_argument("--turns", type=int, default=20, help="responses per session in the throughput run")
    args = ap.parse_args()
    table = Table(title="rtsip realtime (127.0.0.1; mock in its own process)")
    for col in ("measure", "n", "p50 ms", "p99 ms", "max ms", "server share p50/p99 ms"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    for n in args.sessions:
        lat, inside = await latency(n, args.events)
        s, srv = summary(lat), summary(inside)
        table.add_row(f"client event → first server event, {n} concurrent session(s)", str(s["n"]),
                      f"{s['p50']:.2f}", f"{s['p99']:.2f}", f"{s['max']:.2f}",
                      f"{srv['p50']:.3f} / {srv['p99']:.3f}")
    rate = throughput(args.seconds, args.turns)
    table.add_row(f"server events per second, one process (session core, {args.turns}-response calls)",
                  f"{rate:,.0f}", "", "", "", "")
    Console(width=150).print(table)


if __name__ == "__main__":
    asyncio.run(main())
