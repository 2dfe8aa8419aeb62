"""Event-loop stalls under big audio appends: how long the mock stops serving anyone else.

    .venv/bin/python -m bench.bench_stall [--seconds 18] [--burst 10000] [--rounds 1]

The mock runs as its own ``rtsip mock`` process. A probe in a third process (so neither this
process's JSON work nor the client's frame masking is charged to the mock) asks
``GET /_mock/health`` every 5 ms on one kept-alive connection; each request's latency beyond
the mock's normal answer time is time the mock's loop was busy elsewhere. Per case, the worst
and p99 probe latency are reported. Cases, each on a fresh ``?model=`` socket:

- ``one big append``: one ``input_audio_buffer.append`` of ``--seconds`` of 24 kHz speech (18 s
  is about 1.2 MB of base64), with server_vad committing the turns inside it;
- ``burst of 20 ms appends``: ``--burst`` appends of 20 ms each, sent back to back;
- ``big append + commit + response.create``: turn detection off, then the long append, a manual
  commit (the whole item is recognised at once) and a response.

Each case ends when the mock has answered a marker event sent after the audio and every
response it started is done, so the probe covers all the work the audio caused.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from bench._util import pct
from harness.mock_process import MockProcess
from mock_api import audio

ROOT = Path(__file__).resolve().parent.parent
RATE = 24000  # audio/pcm, the socket's default input format
PROBE_INTERVAL_S = 0.005
PROBE_TIMEOUT_S = 10.0
CASE_TIMEOUT_S = 120.0
MARK_ID = "evt_stall_mark"
HEADERS = {"Authorization": "Bearer sk-bench"}


# ---- the audio -------------------------------------------------------------------------------------------


def caller_speech(seconds: float, rate: int = RATE) -> bytes:
    """``seconds`` of the committed caller fixtures one after another with 600 ms pauses between them (so
    server_vad finds real turns in it), cut to length."""
    clips = sorted((ROOT / "audio_fixtures").glob("caller_*.wav"))
    if not clips:
        raise SystemExit("no audio_fixtures/caller_*.wav to build speech from")
    want = audio.samples_for_ms(seconds * 1000, rate) * 2
    parts: list[bytes] = []
    size = 0
    while size < want:
        pcm = audio.load_audio(clips[len(parts) % len(clips)], rate) + audio.silence(600, rate)
        parts.append(pcm)
        size += len(pcm)
    return b"".join(parts)[:want]


def append_event(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")})


def marker_event() -> str:
    """A cheap event whose answer (an error naming its event_id) says the mock has read what came before."""
    return json.dumps({"type": "conversation.item.retrieve", "event_id": MARK_ID, "item_id": "item_stall_mark"})


# ---- the probe (its own process) -------------------------------------------------------------------------


async def probe(url: str) -> list[float]:
    """GET /_mock/health every PROBE_INTERVAL_S until stdin closes; every latency in ms."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    closed = asyncio.ensure_future(stdin.read())
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        async with http.get(url + "/_mock/health") as r:  # connect before saying we are ready
            await r.read()
        print("probing", flush=True)
        while not closed.done():
            t0 = time.perf_counter()
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                async with asyncio.timeout(PROBE_TIMEOUT_S), http.get(url + "/_mock/health") as r:
                    await r.read()
            elapsed = time.perf_counter() - t0
            latencies.append(elapsed * 1000)
            await asyncio.wait([closed], timeout=max(0.0, PROBE_INTERVAL_S - elapsed))
    return latencies


class Probe:
    """The probe process around one case."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Probe:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_stall", "--probe", self.url, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        ready = await asyncio.wait_for(self._proc.stdout.readline(), 60)
        if ready.strip() != b"probing":
            raise RuntimeError(f"the stall probe did not start: {ready!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def result(self) -> list[float]:
        """Stop probing; the latencies it measured."""
        assert self._proc is not None
        out, _ = await asyncio.wait_for(self._proc.communicate(b""), 30)
        return [float(v) for v in json.loads(out)]


# ---- the cases -------------------------------------------------------------------------------------------


async def _until_settled(sock: aiohttp.ClientWebSocketResponse) -> dict[str, int]:
    """Read events until the marker's answer has come and every response started has finished."""
    counts: dict[str, int] = {}
    marked = False
    async with asyncio.timeout(CASE_TIMEOUT_S):
        while not marked or counts.get("response.created", 0) > counts.get("response.done", 0):
            msg = await sock.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the socket ended mid-case: {msg.type!r} {msg.data!r}")
            event = json.loads(msg.data)
            counts[event["type"]] = counts.get(event["type"], 0) + 1
            marked = marked or event.get("error", {}).get("event_id") == MARK_ID
    return counts


async def _open(http: aiohttp.ClientSession, base_url: str) -> aiohttp.ClientWebSocketResponse:
    url = base_url.replace("http://", "ws://", 1) + "/realtime?model=gpt-realtime"
    sock = await http.ws_connect(url, headers=HEADERS, max_msg_size=0)
    await sock.receive()  # session.created
    return sock


async def big_append(sock: aiohttp.ClientWebSocketResponse, frames: dict[str, list[str]]) -> dict[str, int]:
    await sock.send_str(frames["big"][0])
    await sock.send_str(marker_event())
    return await _until_settled(sock)


async def burst(sock: aiohttp.ClientWebSocketResponse, frames: dict[str, list[str]]) -> dict[str, int]:
    for frame in frames["burst"]:
        await sock.send_str(frame)
    await sock.send_str(marker_event())
    return await _until_settled(sock)


async def commit_and_respond(sock: aiohttp.ClientWebSocketResponse, frames: dict[str, list[str]]) -> dict[str, int]:
    await sock.send_str(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"turn_detection": None}}}}))
    while json.loads((await sock.receive()).data)["type"] != "session.updated":
        pass
    await sock.send_str(frames["big"][0])
    await sock.send_str(json.dumps({"type": "input_audio_buffer.commit"}))
    await sock.send_str(json.dumps({"type": "response.create"}))
    await sock.send_str(marker_event())
    return await _until_settled(sock)


Case = Callable[[aiohttp.ClientWebSocketResponse, dict[str, list[str]]], Awaitable[dict[str, int]]]


async def run_case(base_url: str, case: Case, frames: dict[str, list[str]]) -> tuple[list[float], dict[str, int]]:
    """One case on a fresh socket while the probe runs: the probe's latencies and the events counted."""
    async with aiohttp.ClientSession() as http:
        sock = await _open(http, base_url)
        try:
            async with Probe(base_url.removesuffix("/v1")) as p:
                counts = await case(sock, frames)
                latencies = await p.result()
        finally:
            await sock.close()
    return latencies, counts


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=18.0, help="audio in the big append (default 18 s)")
    ap.add_argument("--burst", type=int, default=10_000, help="20 ms appends in the burst (default 10000)")
    ap.add_argument("--rounds", type=int, default=1, help="times each case runs (default 1)")
    ap.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the probe's own process
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(await probe(args.probe)), flush=True)
        return
    speech = caller_speech(args.seconds)
    twenty = list(audio.frames(speech, RATE, 20, pad=True))
    frames = {"big": [append_event(speech)],
              "burst": [append_event(twenty[i % len(twenty)]) for i in range(args.burst)]}
    cases: list[tuple[str, Case]] = [
        (f"one big append ({len(frames['big'][0]) / 1e6:.2f} MB, {args.seconds:g} s, server_vad)", big_append),
        (f"burst of {args.burst:,} 20 ms appends", burst),
        ("big append + commit + response.create (no VAD)", commit_and_respond),
    ]
    table = Table(title="rtsip mock loop stalls (probe: GET /_mock/health every 5 ms, its own process)")
    for col in ("case", "worst stall ms", "p99 ms", "p50 ms", "probes", "events"):
        table.add_column(col, justify="left" if col in ("case", "events") else "right")
    with tempfile.TemporaryDirectory(prefix="rtsip-bench-stall-") as state:
        async with MockProcess(["--port", "0", "--no-sip", "--state-dir", state]) as mock:
            for name, case in cases:
                for _ in range(args.rounds):
                    lat, counts = await run_case(mock.base_url, case, frames)
                    events = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in sorted(counts.items())
                                       if k.startswith(("input_audio_buffer.", "response.done")))
                    table.add_row(name, f"{max(lat):.1f}", f"{pct(lat, 99):.1f}", f"{pct(lat, 50):.2f}",
                                  str(len(lat)), events)
    Console(width=180).print(table)


if __name__ == "__main__":
    asyncio.run(main())
