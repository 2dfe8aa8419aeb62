"""Virtual callers: a call with no SIP leg whose caller still speaks, on the real clock.

The control API feeds a fixture's audio into the call's session (Realtime, or GPT-Live's host,
:mod:`mock_api.live_host`) paced like RTP, so
VAD, transcription and responses happen exactly as on a SIP call, and the app under test
cannot tell the difference on its webhook, REST and WebSocket sides.

One media clock per server feeds every speaking caller, :data:`TICK_MS` of audio a tick, the
way pjmedia's conference clock serves every port of a process: thousands of concurrent
callers then cost one timer, not one sleeping task per 20 ms frame each. The session still
sees whole 20 ms frames at their audio times, so turn boundaries are the same; only the
wall-clock moment a boundary is noticed moves, by at most one tick.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from . import audio
from . import journal_entries as je
from .journal import Journal
from .server import MockServer


class CallerLine(Protocol):
    """What a virtual caller speaks into: a Realtime session host or a GPT-Live host."""

    @property
    def server(self) -> MockServer: ...

    @property
    def closed(self) -> bool: ...

    def feed_audio(self, pcm: bytes, rate: int) -> None: ...

FRAME_MS = 20
RATE = 8000  # what a G.711 SIP leg delivers
TICK_MS = 100  # audio per clock tick: what a typical Realtime client sends per append


@dataclass
class _Speaker:
    host: CallerLine
    journal: Journal
    call_id: str
    label: str
    pcm: bytes
    rate: int
    speed: float
    start: float
    done: asyncio.Future[float]
    frame_bytes: int = 0
    sent: int = 0  # bytes fed so far
    total_frames: int = field(init=False)

    def __post_init__(self) -> None:
        self.frame_bytes = audio.frame_bytes(self.rate, FRAME_MS)
        self.total_frames = -(-len(self.pcm) // self.frame_bytes)

    @property
    def sent_ms(self) -> float:
        return min(self.sent // self.frame_bytes, self.total_frames) * FRAME_MS

    def feed(self, now: float) -> bool:
        """Feed what is due by ``now`` (one frame ahead, like RTP); True once all is sent."""
        if self.done.done():
            return True
        if self.host.closed:
            self.journal.add(self.call_id, je.CallerSayCut(label=self.label, sent_ms=self.sent_ms))
            self.done.set_result(self.sent_ms)
            return True
        due_frames = min(self.total_frames, int((now - self.start) * 1000.0 * self.speed / FRAME_MS) + 1)
        end = due_frames * self.frame_bytes
        if end > self.sent:
            chunk = self.pcm[self.sent : end]
            if len(chunk) % self.frame_bytes:
                chunk += bytes(self.frame_bytes - len(chunk) % self.frame_bytes)
            self.sent = end
            self.host.feed_audio(chunk, self.rate)
        if due_frames >= self.total_frames:
            self.journal.add(self.call_id, je.CallerSaid(label=self.label, ms=round(self.sent_ms, 1)))
            self.done.set_result(self.sent_ms)
            return True
        return False


class MediaClock:
    """Feeds every speaking caller of one server from a single task that runs while any speaks."""

    def __init__(self, tick_ms: int = TICK_MS) -> None:
        self.tick_s = tick_ms / 1000.0
        self._speakers: list[_Speaker] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, sp: _Speaker) -> None:
        if not sp.feed(time.monotonic()):
            self._speakers.append(sp)
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_s
        while self._speakers:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += self.tick_s
            now = time.monotonic()
            if next_tick < now:  # fell behind (a saturated loop): do not burst to catch up on ticks
                next_tick = now + self.tick_s
            self._speakers = [sp for sp in self._speakers if not sp.feed(now)]


async def speak(host: CallerLine, journal: Journal, call_id: str, pcm: bytes, *, rate: int = RATE,
                label: str = "", speed: float = 1.0, trailing_silence_ms: int = 800) -> float:
    """Feed ``pcm`` then silence (so VAD can end the turn); returns the audio ms sent."""
    pcm = pcm + audio.silence(trailing_silence_ms, rate)
    journal.add(call_id, je.CallerSay(label=label, ms=round(audio.duration_ms(pcm, rate), 1), speed=speed))
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    host.server.part(MediaClock).add(_Speaker(host, journal, call_id, label, pcm, rate, speed, time.monotonic(), done))
    return await done
