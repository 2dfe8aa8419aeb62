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
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from bench.stall_probe import Histogram, StallProbe
from harness.mock_process import MockProcess
from mock_api import audio

ROOT = Path(__file__).resolve().parent.parent
RATE = 24000  # audio/pcm, the socket's default input format
PROBE_INTERVAL_S = 0.005
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


async def run_case(base_url: str, case: Case, frames: dict[str, list[str]]) -> tuple[Histogram, dict[str, int]]:
    """One case on a fresh socket while the probe runs: the probe's latencies and the events counted."""
    async with aiohttp.ClientSession() as http:
        sock = await _open(http, base_url)
        try:
            async with StallProbe(base_url.removesuffix("/v1"), PROBE_INTERVAL_S) as p:
                counts = await case(sock, frames)
                latencies = await p.stop()
        finally:
            await sock.close()
    return latencies, counts


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=18.0, help="audio in the big append (default 18 s)")
    ap.add_argument("--burst", type=int, default=10_000, help="20 ms appends in the burst (default 10000)")
    ap.add_argument("--rounds", type=int, default=1, help="times each case runs (default 1)")
    args = ap.parse_args()
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
                    table.add_row(name, f"{lat.worst:.1f}", f"{lat.percentile(99):.1f}",
                                  f"{lat.percentile(50):.2f}", str(lat.n), events)
    Console(width=180).print(table)


if __name__ == "__main__":
    asyncio.run(main())
