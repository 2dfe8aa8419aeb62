"""Virtual callers: a call with no SIP leg whose caller still speaks, on the real clock.

The control API feeds a fixture's audio into the call's Realtime session in 20 ms frames
paced like RTP, so VAD, transcription and responses happen exactly as on a SIP call, and
the app under test cannot tell the difference on its webhook, REST and WebSocket sides.
"""

from __future__ import annotations

import asyncio
import time

from . import audio
from .journal import Journal
from .ws import SessionHost

FRAME_MS = 20
RATE = 8000  # what a G.711 SIP leg delivers


async def speak(host: SessionHost, journal: Journal, call_id: str, pcm: bytes, *, rate: int = RATE,
                label: str = "", speed: float = 1.0, trailing_silence_ms: int = 800) -> float:
    """Feed ``pcm`` then silence (so VAD can end the turn); returns the audio ms sent."""
    pcm = pcm + audio.silence(trailing_silence_ms, rate)
    total_ms = audio.duration_ms(pcm, rate)
    journal.record(call_id, "caller.say", label=label, ms=round(total_ms, 1), speed=speed)
    start = time.monotonic()
    sent_ms = 0.0
    for frame in audio.frames(pcm, rate, FRAME_MS):
        if host.closed:
            journal.record(call_id, "caller.say_cut", label=label, sent_ms=sent_ms)
            return sent_ms
        host.feed_audio(frame, rate)
        sent_ms += FRAME_MS
        delay = start + sent_ms / 1000.0 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    journal.record(call_id, "caller.said", label=label, ms=round(sent_ms, 1))
    return sent_ms
