"""What the caller hears: the model's replies and the app's audio fixtures, and their reflection.

Rules:

- A reply starts ``response_latency_s`` after the caller's utterance ended. Its audio is generated
  ``generation_speed`` times faster than real time: the media path (SIP) gets it as
  :class:`~.outputs.MediaAudio`, the chunks due within one ``GENERATION_TICK_S`` together; a primary
  WebSocket gets one ``session.output_audio.delta`` (no timestamps, its own format) per chunk.
- Reflection follows playback: each ``AUDIO_CHUNK_MS`` chunk, at the time it plays, goes to the
  sidebands as ``session.output_audio.delta`` (PCM16 24 kHz, ``start_ms``/``end_ms``), after its
  ``session.output_transcript.delta`` (to every connection). So what a barge-in cut was never
  reflected, and the output transcript stops where the caller stopped hearing.
- Barge-in (caller speech while a reply is due or playing) ends the reply: its later chunks do
  nothing and, once audio went out, the media path drops what is queued (:class:`ClearMedia`).
  GPT-Live has no cancel event; none is sent.
- A fixture interrupts the model the same way, then plays whole (the media path gets it at once, a
  primary WebSocket as chunked deltas); ``fixture.played`` follows when its duration has elapsed,
  unless the session closed first. Fixture audio is not reflected to sidebands.
- Caller audio is reflected to sidebands as ``session.input_audio.append`` (PCM16 24 kHz, no
  event_id) in chunks of at most ``AUDIO_CHUNK_MS``, muted or not, fixture or not.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from .. import audio
from ..realtime.generation import AUDIO_CHUNK_MS, GENERATION_TICK_S
from . import events as ev
from . import resource
from .behaviour import RATE, Reply
from .outputs import Audience, ClearMedia, MediaAudio, Output
from .state import Fixture, LiveState, Speaking

_CHUNK_BYTES = audio.samples_for_ms(AUDIO_CHUNK_MS, RATE) * 2


class Playback(LiveState):
    def _speak(self, reply: Reply, now: float) -> list[Output]:
        """Schedule a reply; nothing goes out before its latency has passed."""
        start = now + self.script.response_latency_s
        durations = [audio.duration_ms(pcm, RATE) / 1000.0 for pcm, _ in reply.chunks]
        speaking = Speaking(reply, start, start + sum(durations))
        self._reply = speaking
        step = AUDIO_CHUNK_MS / 1000.0 / self.script.generation_speed
        group = max(1, round(GENERATION_TICK_S / step))
        n = len(reply.chunks)
        for k0 in range(0, n, group):
            self._timers.at(start + k0 * step, partial(self._generate, speaking, range(k0, min(k0 + group, n))))
        t = start
        for k, seconds in enumerate(durations):
            self._timers.at(t, partial(self._reflect_output, speaking, k))
            t += seconds
        self._timers.at(speaking.end, partial(self._spoken, speaking))
        return []

    def _generate(self, speaking: Speaking, ks: range, now: float) -> list[Output]:
        if self._reply is not speaking:
            return []
        chunks = [speaking.reply.chunks[k][0] for k in ks]
        if self.transport == "sip":
            return [MediaAudio(b"".join(chunks), RATE, "model", speaking.reply.voice)]
        return [self._send(ev.output_audio(self._primary_audio(pcm), None), Audience.PRIMARY) for pcm in chunks]

    def _reflect_output(self, speaking: Speaking, k: int, now: float) -> list[Output]:
        if self._reply is not speaking:
            return []
        pcm, words = speaking.reply.chunks[k]
        start = self._ms(now)
        end = start + round(audio.duration_ms(pcm, RATE))
        out: list[Output] = []
        if words:
            out.append(self._send(ev.transcript("output", words, *self._span(start, end)), Audience.ALL))
        if self._conns.has_sidebands:
            out.append(self._send(ev.output_audio(audio.b64encode(pcm), (start, end)), Audience.SIDEBANDS))
        return out

    def _spoken(self, speaking: Speaking, now: float) -> list[Output]:
        if self._reply is speaking:
            self._reply = None
        return []

    def _interrupt(self, reason: Literal["barge_in", "fixture", "closed"], now: float) -> list[Output]:
        """End the reply in progress; clear the media path once its audio started going out."""
        speaking, self._reply = self._reply, None
        if speaking is None or now < speaking.start:
            return []
        return [ClearMedia(reason)]

    def _play_fixture(self, pcm: bytes, client_event_id: str | None, now: float) -> list[Output]:
        out = self._interrupt("fixture", now)
        fixture = Fixture(client_event_id, now + audio.duration_ms(pcm, RATE) / 1000.0)
        self._fixture = fixture
        out.append(self._send(ev.event("session.output_audio.fixture.playing", client_event_id), Audience.ALL))
        if self.transport == "sip":
            out.append(MediaAudio(pcm, RATE, "fixture"))
        else:
            out.extend(self._send(ev.output_audio(self._primary_audio(pcm[i:i + _CHUNK_BYTES]), None),
                                  Audience.PRIMARY) for i in range(0, len(pcm), _CHUNK_BYTES))
        self._timers.at(fixture.end, partial(self._fixture_played, fixture))
        return out

    def _fixture_played(self, fixture: Fixture, now: float) -> list[Output]:
        if self._fixture is not fixture:
            return []
        self._fixture = None
        return [self._send(ev.event("session.output_audio.fixture.played", fixture.client_event_id), Audience.ALL)]

    def _reflect_input(self, pcm: bytes, rate: int) -> list[Output]:
        if not self._conns.has_sidebands or not pcm:
            return []
        pcm24 = audio.resample(pcm, rate, RATE)
        return [self._send(ev.reflected_input(audio.b64encode(pcm24[i:i + _CHUNK_BYTES])), Audience.SIDEBANDS)
                for i in range(0, len(pcm24), _CHUNK_BYTES)]

    def _primary_audio(self, pcm24: bytes) -> str:
        """Model audio in the primary WebSocket's startup format, base64."""
        fmt = resource.output_format(self.resource or {})
        if fmt["type"] == "audio/pcm":
            return audio.b64encode(audio.resample(pcm24, RATE, int(fmt.get("rate") or RATE)))
        return audio.b64encode(audio.encode_wire(pcm24, RATE, fmt["type"]))
