"""What the caller hears: the model's replies and the app's audio fixtures, and their reflection.

Rules:

- A reply starts ``response_latency_s`` after the caller's utterance ended, or once the replies
  already due have played (a delegation's acknowledgement, then its result, one after the other).
  Its audio is generated
  ``generation_speed`` times faster than real time: the media path (SIP) gets it as
  :class:`~.outputs.MediaAudio` (at the session's ``media_rate``, the reply made at that rate), the
  chunks due within one ``GENERATION_TICK_S`` together; a primary
  WebSocket gets one ``session.output_audio.delta`` (no timestamps, its own format) per chunk.
- Reflection follows playback: the reply's audio goes to the sidebands as ``session.output_audio.delta``
  (PCM16 24 kHz, ``start_ms``/``end_ms``), one delta per reflection chunk (``reflect_chunk_ms``, whole
  ``AUDIO_CHUNK_MS`` chunks; the service documents neither size nor cadence), at the time the chunk
  starts playing. Each ``AUDIO_CHUNK_MS`` chunk's words go out as ``session.output_transcript.delta``
  (to every connection) at the time that chunk plays, before a delta starting there. So what a barge-in
  cut before it started playing was never reflected (a reflection chunk playing when it came went out
  whole), and the output transcript stops where the caller stopped hearing.
- Barge-in (caller speech while replies are due or playing) ends them: their later chunks do
  nothing and, once audio went out, the media path drops what is queued (:class:`ClearMedia`).
  GPT-Live has no cancel event; none is sent.
- A fixture interrupts the model the same way, then plays whole (the media path gets it at once, a
  primary WebSocket as chunked deltas); ``fixture.played`` follows when its duration has elapsed,
  unless the session closed first. Fixture audio is not reflected to sidebands.
- Caller audio is reflected to sidebands as ``session.input_audio.append`` (PCM16 24 kHz, no
  event_id) in chunks of at most ``reflect_chunk_ms``, muted or not, fixture or not.
- Every reflected event costs the mock and each sideband client the same fixed work whatever its size
  (a send, a journal entry, the SDK's parse), so the chunk sets the sideband's cost per call:
  :data:`.settings.REFLECT_CHUNK_MS` is the mock's default (``LiveSettings.reflect_chunk_ms``); the
  core's own default is the finest, one ``AUDIO_CHUNK_MS`` chunk per event.
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


def reflect_chunks(reflect_chunk_ms: int) -> int:
    """Reply chunks per reflected ``session.output_audio.delta``: ``reflect_chunk_ms`` in whole ``AUDIO_CHUNK_MS``."""
    return max(1, reflect_chunk_ms // AUDIO_CHUNK_MS)


class Playback(LiveState):
    _reflect_ms: int  # the most audio one reflected event carries, a multiple of AUDIO_CHUNK_MS

    def _speak(self, reply: Reply, now: float) -> list[Output]:
        """Schedule a reply after those still due; nothing goes out before its latency has passed."""
        start = max([now + self.script.response_latency_s, *(s.end for s in self._replies)])
        durations = [audio.duration_ms(pcm, RATE) / 1000.0 for pcm, _ in reply.chunks]
        speaking = Speaking(reply, start, start + sum(durations))
        self._replies.append(speaking)
        step = AUDIO_CHUNK_MS / 1000.0 / self.script.generation_speed
        group = max(1, round(GENERATION_TICK_S / step))
        n = len(reply.chunks)
        for k0 in range(0, n, group):
            self._timers.at(start + k0 * step, partial(self._generate, speaking, range(k0, min(k0 + group, n))))
        per = reflect_chunks(self._reflect_ms)
        t = start
        for k, seconds in enumerate(durations):
            if k % per == 0 or reply.chunks[k][1]:  # a delta starts here, or words are said here
                self._timers.at(t, partial(self._reflect_output, speaking, k, per))
            t += seconds
        self._timers.at(speaking.end, partial(self._spoken, speaking))
        return []

    def _generate(self, speaking: Speaking, ks: range, now: float) -> list[Output]:
        if speaking.cut:
            return []
        reply = speaking.reply
        if self.transport == "sip" and reply.media:
            return [MediaAudio(b"".join(reply.media[k] for k in ks), reply.media_rate, "model", reply.voice)]
        chunks = [reply.chunks[k][0] for k in ks]
        if self.transport == "sip":
            return [MediaAudio(b"".join(chunks), RATE, "model", reply.voice)]
        return [self._send(ev.output_audio(self._primary_audio(pcm), None), Audience.PRIMARY) for pcm in chunks]

    def _reflect_output(self, speaking: Speaking, k: int, per: int, now: float) -> list[Output]:
        """Chunk ``k`` starts playing: its words, then (every ``per`` chunks) the reflected audio from here."""
        if speaking.cut:
            return []
        chunks = speaking.reply.chunks
        pcm, words = chunks[k]
        start = self._ms(now)
        out: list[Output] = []
        if words:
            end = start + round(audio.duration_ms(pcm, RATE))
            out.append(self._send(ev.transcript("output", words, *self._span(start, end)), Audience.ALL))
        if k % per == 0 and self._conns.has_sidebands:
            played = pcm if per == 1 else b"".join(c for c, _ in chunks[k:k + per])
            span = (start, start + round(audio.duration_ms(played, RATE)))
            out.append(self._send(ev.output_audio(audio.b64encode(played), span), Audience.SIDEBANDS))
        return out

    def _spoken(self, speaking: Speaking, now: float) -> list[Output]:
        if speaking in self._replies:
            self._replies.remove(speaking)
        return []

    def _interrupt(self, reason: Literal["barge_in", "fixture", "closed"], now: float) -> list[Output]:
        """End the replies due or in progress; clear the media path once audio started going out."""
        replies, self._replies = self._replies, []
        for speaking in replies:
            speaking.cut = True
        if not any(now >= s.start for s in replies):
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
        size = audio.samples_for_ms(self._reflect_ms, RATE) * 2
        return [self._send(ev.reflected_input(audio.b64encode(pcm24[i:i + size])), Audience.SIDEBANDS)
                for i in range(0, len(pcm24), size)]

    def _primary_audio(self, pcm24: bytes) -> str:
        """Model audio in the primary WebSocket's startup format, base64."""
        fmt = resource.output_format(self.resource or {})
        if fmt["type"] == "audio/pcm":
            return audio.b64encode(audio.resample(pcm24, RATE, int(fmt.get("rate") or RATE)))
        return audio.b64encode(audio.encode_wire(pcm24, RATE, fmt["type"]))
