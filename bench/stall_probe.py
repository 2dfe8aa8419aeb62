"""How long a running mock's event loop stops serving: a probe in a process of its own.

    python -m bench.stall_probe URL [--interval-ms 10]   (started by :class:`StallProbe`)

The probe GETs ``URL/_mock/health`` every interval on one kept-alive connection until its stdin
closes, then prints its latencies as a :class:`Histogram` in JSON. Each answer's latency beyond the
mock's normal answer time is time the mock's loop was busy elsewhere. It runs in a process of its
own because the benchmark driving the mock holds its own GIL for tens of milliseconds at a time
(generating and judging cases, masking frames), which would be charged to the mock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 10.0  # one probe's longest wait: a stall this long is reported as this long
READY = b"probing"


class Histogram:
    """Latencies in 1 %-wide logarithmic buckets: a percentile at 1 % resolution in constant memory."""

    BASE_MS = 0.01
    STEP = math.log(1.01)

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.n = 0
        self.worst = 0.0

    def add(self, ms: float) -> None:
        self.buckets[max(0, int(math.log(max(ms, self.BASE_MS) / self.BASE_MS) / self.STEP))] += 1
        self.n += 1
        self.worst = max(self.worst, ms)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "worst": self.worst, "buckets": dict(self.buckets)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        h = cls()
        h.n, h.worst = data["n"], data["worst"]
        h.buckets = Counter({int(k): v for k, v in data["buckets"].items()})
        return h

    def percentile(self, q: float) -> float:
        if not self.n:
            return float("nan")
        rank = max(1, math.ceil(q / 100 * self.n))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(self.worst, self.BASE_MS * math.exp((bucket + 1) * self.STEP))
        return self.worst


async def probe(url: str, interval_s: float) -> Histogram:
    """Probe until stdin closes; says :data:`READY` once its connection is open."""
    stalls = Histogram()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    closed = asyncio.ensure_future(stdin.read())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        async with http.get(url + "/_mock/health") as r:  # connected before saying so
            await r.read()
        print(READY.decode(), flush=True)
        while not closed.done():
            t0 = time.perf_counter()
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                async with asyncio.timeout(TIMEOUT_S), http.get(url + "/_mock/health") as r:
                    await r.read()
            elapsed = time.perf_counter() - t0
            stalls.add(elapsed * 1000)
            await asyncio.wait([closed], timeout=max(0.0, interval_s - elapsed))
    return stalls


class StallProbe:
    """The probe process while a benchmark runs: ``async with StallProbe(url) as p: ...; h = await p.stop()``."""

    def __init__(self, url: str, interval_s: float = 0.010) -> None:
        self.url, self.interval_s = url, interval_s
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> StallProbe:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.stall_probe", self.url, "--interval-ms", str(self.interval_s * 1000),
            cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        ready = await asyncio.wait_for(self._proc.stdout.readline(), 60)
        if ready.strip() != READY:
            raise RuntimeError(f"the stall probe did not start: {ready!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def stop(self) -> Histogram:
        """Stop probing; what it measured."""
        assert self._proc is not None
        out, _ = await asyncio.wait_for(self._proc.communicate(b""), 30)
        return Histogram.from_json(json.loads(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="the mock's control URL (http://127.0.0.1:PORT)")
    ap.add_argument("--interval-ms", type=float, default=10.0, help="time between probes (default 10 ms)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(probe(args.url, args.interval_ms / 1000)).to_json()), flush=True)


if __name__ == "__main__":
    main()
