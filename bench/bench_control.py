"""Control-plane figures: webhook delivery latency and accept latency under concurrency.

    python -m bench.bench_control [--calls 500] [--concurrency 1 100]

Everything runs on 127.0.0.1: the mock is a separate `rtsip mock` process; this process
holds the webhook receiver (which verifies each delivery with the SDK) and the official
AsyncOpenAI client doing the accepts, so client and server do not share a core.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web
from openai import AsyncOpenAI, OpenAI
from rich.console import Console
from rich.table import Table

from bench._util import summary
from harness.journal_view import JournalView
from harness.mock_process import MockProcess
from mock_api import journal_entries as je
from mock_api.client import MockClient


async def webhook_latency(calls: int) -> list[float]:
    """ms from POST /_mock/calls (request sent) to the receiver having the verified event."""
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    arrived = asyncio.Event()  # set by every delivery: the loop below rechecks which call it was
    async with MockProcess(["--port", "0", "--no-sip", "--ring-timeout", "3600"]) as mock:
        verifier = OpenAI(api_key="sk-bench", webhook_secret=mock.webhook_secret)

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            event = verifier.webhooks.unwrap(body, request.headers)
            got[event.data.call_id] = time.perf_counter()  # type: ignore[union-attr]
            arrived.set()
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        async with MockClient(mock.url) as control:
            await control.configure(webhook_url=f"http://127.0.0.1:{port}/hook")
            for _ in range(calls):
                t0 = time.perf_counter()
                call_id = await control.start_call()
                sent[call_id] = t0
                # sequential calls measure latency, not queueing
                while call_id not in got:
                    arrived.clear()
                    await arrived.wait()
        await runner.cleanup()
    return [(got[k] - sent[k]) * 1000 for k in sent]


async def accept_latency(concurrency: int, rounds: int) -> tuple[list[float], list[float]]:
    """Client-observed ms per accept, and the server's own share (journal request → response)."""
    lat: list[float] = []
    inside: list[float] = []
    args = ["--port", "0", "--no-sip", "--ring-timeout", "3600"]
    async with MockProcess(args) as mock, MockClient(mock.url) as control:
        client = AsyncOpenAI(api_key="sk-bench", base_url=mock.base_url, max_retries=0)
        for _ in range(rounds):
            ids = [await control.start_call() for _ in range(concurrency)]

            async def one(call_id: str) -> None:
                t0 = time.perf_counter()
                await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime",
                                                   instructions="bench")
                lat.append((time.perf_counter() - t0) * 1000)

            await asyncio.gather(*(one(i) for i in ids))
            for view in await control.calls():
                journal = JournalView.of_call(view)
                req, resp = journal.first(je.RestRequest), journal.first(je.RestResponse)
                assert req is not None and resp is not None, f"{view.call_id}: accept not journaled"
                inside.append(resp.t_ms - req.t_ms)
            await control.reset()
        await client.close()
    return lat, inside


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=500, help="webhooks to time (default 500)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 100], help="accept concurrency levels")
    ap.add_argument("--accepts", type=int, default=1000, help="accepts per concurrency level (default 1000)")
    args = ap.parse_args()
    table = Table(title="rtsip control plane (127.0.0.1; mock in its own process)")
    for col in ("measure", "n", "p50 ms", "p99 ms", "max ms", "server share p50/p99 ms"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    s = summary(await webhook_latency(args.calls))
    table.add_row("webhook: POST /_mock/calls → verified at receiver", str(s["n"]), f"{s['p50']:.2f}",
                  f"{s['p99']:.2f}", f"{s['max']:.2f}", "")
    for c in args.concurrency:
        lat, inside = await accept_latency(c, max(1, args.accepts // c))
        s, srv = summary(lat), summary(inside)
        table.add_row(f"accept via SDK, {c} concurrent", str(s["n"]), f"{s['p50']:.2f}", f"{s['p99']:.2f}",
                      f"{s['max']:.2f}", f"{srv['p50']:.3f} / {srv['p99']:.3f}")
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
