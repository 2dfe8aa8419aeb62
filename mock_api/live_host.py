"""The GPT-Live runtime of one accepted call or one primary WebSocket: a
:class:`~mock_api.live.session.LiveSession` plus its sockets, its timer, its journal, its media and its
recording. It decides nothing about the protocol (the core does); it carries inputs in and outputs out.

Rules:

1. A call accepted through GPT-Live (``call.surface == "live"``) gets one host when the call table
   starts its session (``on_call_active``); the host journals the session's :class:`LiveSettings` and
   reflection chunk (``live.settings``) and starts the core at once (the accept answered the call).
2. The call's end closes the session with ``session.closed``'s reason (:func:`close_reason`): the
   caller's BYE → ``remote_hangup``; ``/hangup`` → ``close_requested``; a worker's death or a reset
   (the call ``failed``) → ``connection_lost``; a transfer (``referred``) → ``remote_hangup``, as the
   caller's leg went away (the real reason is undocumented).
3. The session ending by itself (``session.close``, expiry) ends the call: a Live ``hangup`` fed to
   the call table (journaled with source ``session``), so a SIP leg gets its BYE.
4. Inputs reach the core one at a time, in arrival order, with their arrival time; a frame longer
   than ``BIG_FRAME_CHARS`` runs on a worker thread and later inputs wait behind it. One loop timer
   follows the core's ``next_deadline()``.
5. The journal gets every client frame (``live.client``, with its connection) and every server
   event (``live.server``, with its recipients) on the call's timeline, audio as its size and
   checksum unless the journal records audio; every event is audited as the SDK's
   ``ConnectServerEvent`` when auditing is on (:func:`audit`).
6. Each sideband has a bounded send queue (``ws_send_queue_bytes``): a client that stops reading is
   closed with 1008 and leaves the session. The core's :class:`Close` outputs close sockets: with a
   closing handshake when graceful, else the socket is dropped after what is queued.
7. Caller audio. Continuous audio (virtual callers, :meth:`LiveHost.feed_audio`) is reflected to the
   sidebands and cut into turns by the one turn detector (:class:`CallerEar`); a SIP worker's own
   turns come in through ``media_speech_started`` / ``media_audio`` / ``media_speech_stopped``. A
   turn's start is a barge-in; a finished turn is recognised off the loop (``server.recogniser()``)
   and handed to the core as speech with its span on the session timeline, turns in order.
8. Media outputs (:class:`MediaAudio`, :class:`ClearMedia`, :class:`SendDtmf`) go to ``media_sink``
   when the SIP ingress set one, and are journaled (``audio.out``, ``live.media_cleared``,
   ``live.dtmf_out``): that is what a virtual caller hears.
9. A primary WebSocket (``GET /v1/live/sessions``) gets a host of its own with no call
   (:func:`open_primary`): its journal timeline is the session's ``live_…`` id (the server timeline
   says so, ``live.session``), it counts against ``retain_ended_calls`` once it ends, and sidebands
   find it by that id once it has started. The audio its client appends comes back from the core as
   :class:`InputAudio` and is heard as a virtual caller's is (rule 7). The primary leaving before the
   session ended closes it ``connection_lost``.
10. Timeline positions of heard audio are where it was heard on the session clock: a turn that ended
    ``ago_ms`` before the end of the audio heard so far ended ``ago_ms`` before now.
11. A session started with ``store: true`` is recorded (:class:`Recording`): the caller's audio as it
    reached the mock (a primary's: what the model heard, so nothing while muted or a fixture plays)
    and what the caller was played (model replies and fixtures, cut where a barge-in cut them), on the
    session timeline at 24 kHz. The registry keeps recordings within :class:`RecordingSettings`.
12. A call's ``live_session_end`` fault is handed to the core at its making (its own timer ends the
    session); the host journals the core's ``FaultFired`` as ``fault.fired``.
13. A stored session can be forked (:func:`fork_source`, :func:`open_fork`) while it runs (what its core
    has when the fork connects; a heavy input finishes first) or once it ended (what it had at its end,
    kept while the registry keeps its recording answer). A fork is a call-less session as a primary
    WebSocket's (rule 9: its own ``live_…`` timeline, ``live.session`` on the server timeline, sidebands
    may attach), audited as the SDK's ``ForkServerEvent``; its ``live.connect`` path names the session it
    forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import wave
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, Literal, cast

from aiohttp import web
from openai.types.live import ConnectServerEvent, ForkServerEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from sipworker import turns

from . import audio, fidelity, ids, wire_json
from . import calls as c
from . import journal_entries as je
from .core_runner import CoreCall, CoreRunner, core_pool
from .journal import AUDIO_KEEP_CHARS, audio_summary
from .live import events as live_events
from .live import resource as live_resource
from .live.forks import ForkSource
from .live.outputs import ClearMedia, Close, Event, Finished, InputAudio, MediaAudio, MockBug, Output, SendDtmf
from .live.outputs import FaultFired as CoreFault
from .live.session import CloseReason, LiveSession, SelfEnd
from .live.settings import LiveSettings
from .live.validation import ConnKind, Wire
from .recognisers import Recognition, unrecognised
from .server import MockServer
from .session_host import BIG_FRAME_CHARS, POLICY_CLOSE, SEND_QUEUE_FULL, _close_unread

MediaOut = MediaAudio | ClearMedia | SendDtmf
MediaSink = Callable[[MediaOut], None]
_BYTES_PER_MS = turns.RATE * 2 // 1000  # 8 kHz PCM16


def close_reason(call: c.Call) -> CloseReason:
    """``session.closed``'s reason for how the call ended (rule 2)."""
    if call.state is c.CallState.FAILED:
        return "connection_lost"
    if call.state is c.CallState.ENDED and call.end_reason == "hangup":
        return "close_requested"
    return "remote_hangup"


# ---- the caller's turns: sans-I/O ------------------------------------------------------------------


@dataclass(frozen=True)
class TurnSettings:
    """How a Live call's caller turns are found in continuous audio. GPT-Live has no turn-detection
    setting (the model judges the end of an utterance), so the silence is semantic_vad's ``auto``
    eagerness: one utterance with short pauses stays one turn."""

    threshold: float = turns.DEFAULT_THRESHOLD
    prefix_padding_ms: int = 300
    silence_ms: int = turns.EAGERNESS_SILENCE_MS["auto"]
    max_turn_ms: int = 60_000  # the most audio one turn hands to the recogniser (as the SIP worker's)


@dataclass(frozen=True)
class TurnStarted:
    ago_ms: int  # the first voiced ms, this long before the end of the audio heard so far


@dataclass(frozen=True)
class TurnEnded:
    ago_ms: int  # the end of the last voiced frame, this long before the end of the audio heard so far
    pcm: bytes  # the turn at turns.RATE: prefix padding before the onset up to where the silence ran out


CallerTurn = TurnStarted | TurnEnded


class CallerEar:
    """Turns in one caller's continuous audio, by the rules of :mod:`sipworker.turns` at 8 kHz, with the
    audio of each finished turn (what the recogniser hears)."""

    def __init__(self, settings: TurnSettings | None = None) -> None:
        self.settings = s = settings or TurnSettings()
        self._frames = turns.FrameClassifier(turns.vad_mode(s.threshold), turns.floor_dbfs(s.threshold))
        self._turns = turns.TurnTracker(silence_ms=s.silence_ms)
        self._to_rate = audio.ToRate(turns.RATE)
        self._pending = b""  # 8 kHz audio short of a whole frame
        self._heard_ms = 0  # audio ms classified so far
        self._kept = bytearray()  # audio from _kept_ms on: the prefix while idle, the turn while in one
        self._kept_ms = 0
        self._onset_ms: int | None = None

    def hear(self, pcm: bytes, rate: int) -> list[CallerTurn]:
        """Feed the next audio (PCM16 at ``rate``); returns the turn boundaries it completed."""
        pcm = self._to_rate.convert(pcm, rate)
        data = self._pending + pcm
        size = self._frames.frame_bytes
        whole = len(data) // size * size
        block, self._pending = data[:whole], data[whole:]
        if not block:
            return []
        at = self._heard_ms
        self._heard_ms += whole // _BYTES_PER_MS
        self._kept += block
        out = [self._boundary(b) for b in self._turns.feed(self._frames.classify(block), at)]
        if self._onset_ms is None:  # idle: keep what a turn starting now would be padded with
            self._forget(self._heard_ms - self.settings.prefix_padding_ms - turns.MIN_SPEECH_MS)
        else:
            self._forget(self._heard_ms - self.settings.max_turn_ms)
        return out

    def _boundary(self, b: turns.Boundary) -> CallerTurn:
        if b.kind == "start":
            self._onset_ms = b.audio_ms
            return TurnStarted(self._heard_ms - b.audio_ms)
        onset = b.audio_ms if self._onset_ms is None else self._onset_ms
        start = max(self._kept_ms, turns.padded_start(onset, self.settings.prefix_padding_ms))
        lo, hi = (start - self._kept_ms) * _BYTES_PER_MS, (b.detected_ms - self._kept_ms) * _BYTES_PER_MS
        pcm = bytes(self._kept[lo:hi])
        self._onset_ms = None
        self._forget(b.detected_ms)
        return TurnEnded(self._heard_ms - b.audio_ms, pcm)

    def _forget(self, ms: int) -> None:
        """Drop the kept audio before ``ms``."""
        ms = min(ms, self._heard_ms)
        if ms > self._kept_ms:
            del self._kept[: (ms - self._kept_ms) * _BYTES_PER_MS]
            self._kept_ms = ms


# ---- the recording: sans-I/O ------------------------------------------------------------------------

REC_RATE = 24_000  # a recording's sample rate (what the sidebands hear)
_REC_BYTES_PER_MS = REC_RATE * 2 // 1000


@dataclass(frozen=True)
class RecordingSettings:
    """What ``GET /v1/live/sessions/{id}/content`` serves and how much audio the mock keeps for it. The real
    service documents neither the recording's format nor its answer for a session that was not stored."""

    max_seconds: int = 600  # per recording; audio past it is not kept (the WAV ends there: live.recording_capped)
    max_total_bytes: int = 64 * 1024 * 1024  # ended recordings beyond this leave, oldest first
    max_sessions: int = 1000  # sessions whose answer (recording or "not stored") is remembered
    unstored_status: Literal[400, 404] = 400  # the answer for a session started without store: true
    unstored_code: str = "session_not_stored"


class Recording:
    """One stored session's audio on its timeline, PCM16 mono at :data:`REC_RATE`: the caller's track and
    the model's, kept apart (a barge-in cuts only the model's) and mixed when read.

    Caller audio is laid where it was heard, never before the end of the caller's track (audio sent
    faster than real time stays contiguous), and right after it when it came at most ``JITTER_MS`` late (a
    late packet is not a pause); model audio plays from when it was generated or from the end of what is
    still playing, whichever is later; a cut drops model audio not yet played."""

    JITTER_MS = 200

    def __init__(self, session_id: str, max_seconds: int) -> None:
        self.session_id = session_id
        self.max_bytes = max_seconds * 1000 * _REC_BYTES_PER_MS
        self.caller = bytearray()
        self.model = bytearray()
        self.end_ms: float | None = None  # set when the session ended
        self.capped = False
        self._to_rate = {"caller": audio.ToRate(REC_RATE), "model": audio.ToRate(REC_RATE)}

    @property
    def size(self) -> int:
        return len(self.caller) + len(self.model)

    def hear(self, pcm: bytes, rate: int, now_ms: float) -> bool:
        """Caller audio that ended at ``now_ms``; True the first time audio went past the cap."""
        pcm = self._at_rate("caller", pcm, rate)
        at_ms = now_ms - len(pcm) / _REC_BYTES_PER_MS
        if at_ms - len(self.caller) / _REC_BYTES_PER_MS <= self.JITTER_MS:
            at_ms = 0.0  # on time or a little late: right after what came before
        return self._lay(self.caller, pcm, at_ms)

    def play(self, pcm: bytes, rate: int, now_ms: float) -> bool:
        """Audio played to the caller from ``now_ms`` (or after what still plays)."""
        return self._lay(self.model, self._at_rate("model", pcm, rate), now_ms)

    def cut(self, now_ms: float) -> None:
        """Model audio queued past ``now_ms`` was never played (barge-in, a fixture, the end)."""
        keep = _byte_at(now_ms)
        if len(self.model) > keep:
            del self.model[keep:]

    def finish(self, now_ms: float) -> None:
        if self.end_ms is None:
            self.cut(now_ms)
            self.end_ms = now_ms

    def length_ms(self, now_ms: float) -> float:
        """How long the recording is: the session's duration (so far), or longer when audio sent faster than
        real time was laid past it; at most the cap."""
        end = self.end_ms if self.end_ms is not None else now_ms
        laid = max(len(self.caller), len(self.model)) / _REC_BYTES_PER_MS
        return min(max(0.0, end, laid), self.max_bytes / _REC_BYTES_PER_MS)

    def tracks(self, now_ms: float) -> tuple[bytes, bytes, int]:
        """A copy of both tracks and the recording's length in bytes (cheap: take it on the loop)."""
        n = _byte_at(self.length_ms(now_ms))
        return bytes(self.caller[:n]), bytes(self.model[:n]), n

    def _at_rate(self, track: str, pcm: bytes, rate: int) -> bytes:
        return self._to_rate[track].convert(pcm, rate)

    def _lay(self, track: bytearray, pcm: bytes, at_ms: float) -> bool:
        start = max(len(track), _byte_at(at_ms))
        room = self.max_bytes - start
        hit = False
        if room < len(pcm):
            hit, self.capped = not self.capped, True
            pcm = pcm[:max(0, room)]
        if pcm:
            if start > len(track):
                track.extend(bytes(start - len(track)))
            track.extend(pcm)
        return hit


def _byte_at(ms: float) -> int:
    """The byte offset of timeline ``ms`` in a recording track (sample aligned)."""
    return max(0, round(ms * REC_RATE / 1000)) * 2


def wav(caller: bytes, model: bytes, n: int) -> bytes:
    """The two tracks mixed into a 16-bit mono WAV of ``n`` bytes of audio (zero-padded)."""
    mixed = audio.mix(caller, model)[:n]
    mixed += bytes(n - len(mixed))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(REC_RATE)
        w.writeframes(mixed)
    return buf.getvalue()


# ---- fidelity ---------------------------------------------------------------------------------------


_SERVER_UNIONS: dict[str, Any] = {"primary": ServerEvent, "sideband": ConnectServerEvent, "fork": ForkServerEvent,
                                   "nested": ResponseStreamEvent}


@cache
def _union(kind: Wire | Literal["nested"]) -> TypeAdapter[Any]:
    return TypeAdapter(_SERVER_UNIONS[kind])


def _problem(event: Any, kind: Wire | Literal["nested"]) -> str | None:
    return fidelity.parse_problem(_union(kind), event)


def audit(event: dict[str, Any], wire: Wire = "sideband") -> None:
    """When auditing is on (``fidelity.audit_path``), record an event the SDK would not parse as the member
    its type names of the union ``wire`` speaks (the primary's ``ServerEvent``, the sideband's
    ``ConnectServerEvent``, a fork's ``ForkServerEvent``), in the Realtime audit's format. A
    ``response.event``'s nested event (a plain dict to the Live models) is checked against the SDK's
    ``ResponseStreamEvent`` too."""
    path = fidelity.audit_path
    if not path:
        return
    why = _problem(event, wire)
    nested = event.get("event")
    if why is None and event.get("type") == "response.event" and isinstance(nested, dict):
        why = _problem(nested, "nested")
        if why is not None:
            why = f"nested {why}"
    if why is not None:
        union = {"primary": "ServerEvent", "sideband": "ConnectServerEvent", "fork": "ForkServerEvent"}[wire]
        with open(path, "a") as f:
            f.write(json.dumps({"type": event.get("type"), "union": union, "problem": why, "event": event}) + "\n")


def journal_view(event: Any, record_audio: bool) -> Any:
    """A frame or event as the journal keeps it: audio as its size and checksum unless audio is recorded
    (reflected caller audio and fixtures in ``audio``, model audio in ``session.output_audio.delta``)."""
    if record_audio or not isinstance(event, dict):
        return event
    for key in ("audio", "delta"):
        value = event.get(key)
        if (isinstance(value, str) and len(value) > AUDIO_KEEP_CHARS
                and (key == "audio" or event.get("type") == "session.output_audio.delta")):
            event = {**event, key: audio_summary(value)}
    return event


# ---- the host ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientFrame:
    """A client frame as journaled, just before the outputs it caused."""

    conn: str
    view: Any


@dataclass(frozen=True)
class Started:
    """The core sent ``session.started`` for an input that arrived at ``now``: the timeline's 0."""

    now: float


Step = Output | ClientFrame | Started
PRIMARY_CONN = "primary"


@dataclass(eq=False)
class Socket:
    """One socket of the session (the primary or a sideband): its connection id in the core, its send
    queue and how it ended."""

    conn: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    queue: asyncio.Queue[tuple[str, Any] | None] = field(default_factory=asyncio.Queue)
    queued: int = 0  # bytes of events waiting for the client
    ending: str | None = None  # why the server closed or dropped it
    close_code: int | None = None  # the code the server closed it with
    writer: asyncio.Task[None] | None = None

    @property
    def primary(self) -> bool:
        return self.conn == PRIMARY_CONN


class LiveHost(CoreRunner):
    """One Live session core plus its sockets, timer, journal, media and recording (see the module's rules)."""

    def __init__(self, server: MockServer, session: LiveSession, *, call_id: str | None = None,
                 turn_settings: TurnSettings | None = None) -> None:
        super().__init__()
        self.server = server
        self.call_id = call_id
        self.key = call_id or session.id  # the journal timeline: the call's, else the session's own (rule 9)
        self.session = session
        self.sockets: dict[str, Socket] = {}
        self.media_sink: MediaSink | None = None
        self.ear = CallerEar(turn_settings)
        self.recording: Recording | None = None
        self.started = False  # session.started went out
        self.ending = False  # the end was asked for or happened: no more caller input
        self.finished = False  # the core said Finished
        self.slot: str | None = None  # the concurrent-session slot a primary WebSocket holds
        self._conn_ids = itertools.count(1)
        self._t0 = server.clock()  # the session timeline's 0 (set again when the core starts)
        self._onset_ms: float | None = None  # the caller's turn under way: its start on the session timeline
        self._turn_audio: tuple[bytes, int] | None = None  # a SIP worker's audio of the turn ending
        self._hearing: asyncio.Task[None] | None = None  # the last turn being recognised

    @property
    def closed(self) -> bool:
        """The session is over or closing: a virtual caller stops speaking into it."""
        return self.ending

    @property
    def sidebands(self) -> dict[str, Socket]:
        return {k: v for k, v in self.sockets.items() if not v.primary}

    # ---- inputs -------------------------------------------------------------------------------

    def start(self) -> None:
        self._submit(self._begin)

    def _begin(self, now: float) -> list[Step]:
        return self._with_start(now, self.session.begin(now))

    def _with_start(self, now: float, outputs: Sequence[Output], was_started: bool = False) -> list[Step]:
        """The outputs, after a :class:`Started` marker when this input started the session."""
        if not was_started and self.session.resource is not None:
            return [Started(now), *outputs]
        return list(outputs)

    def sideband(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> Socket:
        """A new socket's connection id and send queue (it joins the session with :meth:`attach`)."""
        return Socket(f"sideband_{next(self._conn_ids)}", ws, transport)

    def primary(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> Socket:
        """The primary WebSocket's socket (it joins with :meth:`attach`)."""
        return Socket(PRIMARY_CONN, ws, transport)

    def attach(self, sb: Socket, graceful_close: bool | None = None) -> None:
        """The socket joins the session: a sideband gets the replay, then the session's events."""
        self.sockets[sb.conn] = sb
        sb.writer = self._loop.create_task(self._write(sb))
        self._submit(partial(self._connect, sb.conn, "primary" if sb.primary else "sideband", graceful_close))

    def _connect(self, conn: str, kind: ConnKind, graceful_close: bool | None, now: float) -> list[Output]:
        return self.session.connect(conn, kind, now, graceful_close=graceful_close)

    def detach(self, sb: Socket) -> None:
        """The socket's reading ended (the client left, or the server closed it). The primary leaving
        first ends the session, ``connection_lost`` (rule 9)."""
        if self.sockets.pop(sb.conn, None) is not None:
            sb.queue.put_nowait(None)  # the writer ends after what is queued
        if not self.finished:
            self._submit(partial(self.session.disconnect, sb.conn))
            if sb.primary:
                self.end("connection_lost")

    def receive(self, sb: Socket, text: str | bytes) -> None:
        """One client frame; a big one (a fixture's or a long append's audio) is read on a worker thread."""
        if len(text) > BIG_FRAME_CHARS:
            self._submit(partial(self._frame, sb.conn, text, None), heavy=True)
        else:
            self._submit(partial(self._frame, sb.conn, text, self._client_view(text)))

    def _client_view(self, text: str | bytes) -> Any:
        if isinstance(text, (bytes, bytearray)):
            return {"binary_bytes": len(text)}
        try:
            event: Any = wire_json.surrogates_escaped(text, wire_json.loads(text))
        except wire_json.WireJSONError:
            event = text if len(text) <= 4096 else f"<{len(text)} characters that are not JSON>"
        return journal_view(event, self.server.journal.record_audio)

    def _frame(self, conn: str, text: str | bytes, view: Any, now: float) -> list[Step]:
        if view is None:
            view = self._client_view(text)
        was_started = self.session.resource is not None
        return [ClientFrame(conn, view), *self._with_start(now, self.session.receive(conn, text, now), was_started)]

    def end(self, reason: CloseReason) -> None:
        """The call ended or the primary left: the session closes with ``reason`` (rule 2)."""
        if self.ending:
            return
        self.ending = True
        self._submit(partial(self.session.close, reason))

    def dtmf(self, digit: str) -> None:
        """A key the caller pressed."""
        self._submit(partial(self.session.dtmf, digit))

    def feed_audio(self, pcm: bytes, rate: int) -> None:
        """Continuous caller audio (a virtual caller): reflected, and cut into turns here (rule 7)."""
        if self.ending:
            return
        self._submit(partial(self.session.feed_audio, pcm, rate))
        self._hear(pcm, rate)

    def _hear(self, pcm: bytes, rate: int) -> None:
        """Continuous caller audio the model hears: recorded, and cut into turns (rules 7, 10, 11)."""
        now_ms = self._timeline_ms(self.server.clock())
        self._record("hear", pcm, rate, now_ms)
        for turn in self.ear.hear(pcm, rate):
            at = now_ms - turn.ago_ms
            if isinstance(turn, TurnStarted):
                self._turn_started(at)
            else:
                self._turn_ended(turn.pcm, turns.RATE, at)

    def reflect_audio(self, pcm: bytes, rate: int) -> None:
        """Caller audio for the sidebands only (a media path that finds its turns itself)."""
        self._record("hear", pcm, rate, self._timeline_ms(self.server.clock()))
        self._submit(partial(self.session.feed_audio, pcm, rate))

    def media_speech_started(self, audio_ms: int) -> None:
        """A SIP worker heard the caller start (decided ``MIN_SPEECH_MS`` after the first voiced ms)."""
        self._turn_started(self._timeline_ms(self.server.clock()) - turns.MIN_SPEECH_MS)

    def media_audio(self, pcm: bytes, rate: int, start_ms: int) -> None:
        """A SIP worker's audio of the turn that is ending (comes just before its stop)."""
        self._turn_audio = (pcm, rate)

    def media_speech_stopped(self, audio_ms: int, detected_ms: int) -> None:
        """A SIP worker heard the caller stop: last voiced ms ``audio_ms``, decided at ``detected_ms``."""
        pcm, rate = self._turn_audio or (b"", turns.RATE)
        self._turn_audio = None
        if pcm:  # the SIP worker hands over only each turn's audio: that much is reflected to the sidebands
            self.reflect_audio(pcm, rate)
        self._turn_ended(pcm, rate, self._timeline_ms(self.server.clock()) - (detected_ms - audio_ms))

    def _timeline_ms(self, now: float) -> float:
        return max(0.0, (now - self._t0) * 1000.0)

    def timeline_ms(self) -> float:
        """Now on the session timeline (ms since session.started)."""
        return self._timeline_ms(self.server.clock())

    def _turn_started(self, at_ms: float) -> None:
        self._onset_ms = at_ms
        self._submit(partial(self.session.speech_started, round(at_ms)))

    def _turn_ended(self, pcm: bytes, rate: int, end_ms: float) -> None:
        start = self._onset_ms if self._onset_ms is not None else end_ms - audio.duration_ms(pcm, rate)
        self._onset_ms = None
        previous = self._hearing
        self._hearing = self.server.spawn(self._recognise(pcm, rate, max(0.0, start), max(start, end_ms), previous))

    async def _recognise(self, pcm: bytes, rate: int, start_ms: float, end_ms: float,
                         previous: asyncio.Task[None] | None) -> None:
        got = await recognise(self.server, pcm, rate)
        if previous is not None and not previous.done():
            await asyncio.wait({previous})  # turns reach the core in the order they were spoken
        if self.ending:
            return
        self.server.journal.add(self.key, je.LiveHeard(
            text=got.text, recognised=got.recognised, source=got.source, reason=got.reason,
            audio_ms=round(got.audio_ms, 1), start_ms=round(start_ms), end_ms=round(end_ms),
            clip=got.clip if got.clip is not None else je.ABSENT))
        self._submit(partial(self.session.speech, got.text, start_ms, end_ms))

    # ---- running the core -----------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self.finished

    def _bug_key(self) -> str | None:
        return self.key

    def _run_inline(self, call: CoreCall, now: float, origin: Any) -> None:
        try:
            self.dispatch(call(now))
        except Exception as exc:  # the adapter's own bug: journaled; the caller (a socket, the media
            self.server.mock_bug(self.key, "live host", exc)  # clock) goes on
            self._schedule()

    # ---- outputs ----------------------------------------------------------------------------------

    def dispatch(self, outputs: Sequence[Step], origin: Any = None) -> None:
        journal = self.server.journal
        heard: list[InputAudio] = []
        for out in outputs:
            if isinstance(out, ClientFrame):
                journal.add(self.key, je.LiveClient(conn=out.conn, event=out.view))
            elif isinstance(out, Started):
                self._started(out.now)
            elif isinstance(out, Event):
                self._send(out)
            elif isinstance(out, InputAudio):  # a primary's audio: heard once the rest is out (rule 9)
                heard.append(out)
            elif isinstance(out, MediaAudio):
                ms = round(audio.duration_ms(out.pcm, out.rate), 1)
                journal.add(self.key, je.AudioOut(response_id=None, ms=ms, corrupt=False, voice=out.voice))
                self._record("play", out.pcm, out.rate, self._timeline_ms(self.server.clock()))
                self._media(out)
            elif isinstance(out, ClearMedia):
                journal.add(self.key, je.LiveMediaCleared(reason=out.reason))
                if self.recording is not None:
                    self.recording.cut(self._timeline_ms(self.server.clock()))
                self._media(out)
            elif isinstance(out, SendDtmf):
                journal.add(self.key, je.LiveDtmfOut(digit=out.digit))
                self._media(out)
            elif isinstance(out, Close):
                self._close_socket(out)
            elif isinstance(out, Finished):
                self._finished()
            elif isinstance(out, MockBug):  # the core's own bug: journaled, never sent (its server_error is)
                journal.add(self.key, je.MockBug(where=out.where, error=out.error, traceback=out.traceback))
            elif isinstance(out, CoreFault):
                journal.add(self.key, je.FaultFired(fault=out.fault, detail=out.detail))
        for got in heard:
            if not self.ending:
                self._hear(got.pcm, got.rate)
        self._schedule()

    def _started(self, now: float) -> None:
        """The session started: its timeline's 0; recorded from now on when it is stored (rule 11)."""
        self._t0 = now
        self.started = True
        resource = self.session.resource or {}
        reg = registry(self.server)
        if resource.get("store") is True:
            self.recording = Recording(self.session.id, reg.recording.max_seconds)
        reg.remember(self.session.id, self.recording)

    def _record(self, how: str, pcm: bytes, rate: int, now_ms: float) -> None:
        rec = self.recording
        if rec is None or rec.end_ms is not None or not pcm:
            return
        capped = rec.hear(pcm, rate, now_ms) if how == "hear" else rec.play(pcm, rate, now_ms)
        if capped:
            self.server.journal.add(self.key, je.LiveRecordingCapped(
                session_id=rec.session_id, max_seconds=registry(self.server).recording.max_seconds,
                at_ms=round(now_ms)))

    def _media(self, out: MediaOut) -> None:
        if self.media_sink is not None:
            self.media_sink(out)

    def _send(self, out: Event) -> None:
        body = out.event
        try:
            text = wire_json.dumps(body)
        except ValueError as exc:  # NaN/Infinity in an event is the mock's bug: the client gets server_error
            self.server.mock_bug(self.key, f"event {body.get('type')}", exc)
            body = live_events.server_error()
            text = wire_json.dumps(body)
        to_primary = PRIMARY_CONN in out.to
        if to_primary:
            audit(body, "fork" if self.session.fork_of is not None else "primary")
            if body.get("type") == "session.output_audio.delta" and self.recording is not None:
                self._record_primary_output(body)
        if not to_primary or len(out.to) > 1:
            audit(body)
        self.server.journal.add(self.key, je.LiveServer(event=journal_view(body, self.server.journal.record_audio),
                                                        to=list(out.to)))
        for conn in out.to:
            sb = self.sockets.get(conn)
            if sb is not None:
                self._enqueue(sb, text)

    def _record_primary_output(self, body: dict[str, Any]) -> None:
        """Model audio sent to the primary, in its startup format: what its caller is played."""
        fmt = live_resource.output_format(self.session.resource or {})
        data = audio.b64decode(body["delta"])
        if fmt["type"] == "audio/pcm":
            pcm, rate = data, int(fmt.get("rate") or REC_RATE)
        else:
            pcm, rate = audio.decode_wire(data, fmt["type"])
        self._record("play", pcm, rate, self._timeline_ms(self.server.clock()))

    def _enqueue(self, sb: Socket, text: str) -> None:
        """Past ``ws_send_queue_bytes`` of unsent events the client is not reading: close it 1008 (rule 6)."""
        size = sb.queued + len(text)
        if size > self.server.config.ws_send_queue_bytes:
            self._overflow(sb)
            return
        sb.queued = size
        sb.queue.put_nowait(("text", text))

    def _overflow(self, sb: Socket) -> None:
        if self.sockets.pop(sb.conn, None) is None:
            return
        dropped, sb.queued = sb.queued, 0
        while not sb.queue.empty():
            sb.queue.get_nowait()
        sb.ending = SEND_QUEUE_FULL
        self.server.journal.add(self.key, je.LiveClose(conn=sb.conn, code=POLICY_CLOSE, reason=SEND_QUEUE_FULL,
                                                       queued_bytes=dropped,
                                                       limit=self.server.config.ws_send_queue_bytes))
        if sb.writer is not None:
            sb.writer.cancel()  # it waits on a client that does not read
        self.server.spawn(_close_unread(sb.ws, sb.transport))
        self._loop.call_soon(self._submit, partial(self.session.disconnect, sb.conn))
        if sb.primary:
            self._loop.call_soon(self.end, "connection_lost")

    def _close_socket(self, out: Close) -> None:
        sb = self.sockets.get(out.conn)
        if sb is None:
            return
        sb.queue.put_nowait(("close", (out.code, out.reason)) if out.graceful else ("drop", None))

    def _finished(self) -> None:
        """The session is over. A call-less one leaves the registry and its timeline may retire; a call's
        session ending by itself ends the call: a Live hangup (rule 3)."""
        self.ending = self.finished = True
        reg = registry(self.server)
        if self.recording is not None:
            self.recording.finish(self._timeline_ms(self.server.clock()))
        source = self.session.fork_source()
        if source is not None and self.session.id in reg.recordings:  # what a later fork continues (rule 13)
            reg.sources[self.session.id] = source
        reg.evict_recordings()
        if self.call_id is None:
            if reg.sessions.get(self.session.id) is self:
                del reg.sessions[self.session.id]
            if self.slot is not None:
                self.server.limits.end_session(self.slot)
                self.slot = None
            self.server.session_ended(self.key)
            return
        if reg.hosts.get(self.call_id) is self:
            del reg.hosts[self.call_id]
        call = self.server.calls.get(self.call_id)
        if call is not None and not call.state.terminal:
            self._loop.call_soon(self._hang_up)

    def _hang_up(self) -> None:
        call = self.server.calls.get(self.call_id or "")
        if call is not None and not call.state.terminal:
            self.server.apply(call, c.Hangup(surface="live", loser_status=self.server.config.loser_status),
                              source="session")

    async def _write(self, sb: Socket) -> None:
        while True:
            item = await sb.queue.get()
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "text":
                    sb.queued = max(0, sb.queued - len(payload))
                    await sb.ws.send_str(payload)
                elif kind == "drop":  # no closing handshake: the client sees 1006 after what was sent
                    sb.ending = "dropped"
                    if sb.transport is not None:
                        sb.transport.close()  # flushes what is buffered first
                    return
                else:
                    code, reason = payload
                    sb.ending, sb.close_code = reason, code
                    await sb.ws.close(code=code, message=reason.encode())
                    return
            except (ConnectionError, RuntimeError):
                return


async def recognise(server: MockServer, pcm: bytes, rate: int) -> Recognition:
    """What the caller said in one turn, found off the loop (a plug-in answers with a Future)."""
    ms = audio.duration_ms(pcm, rate)
    if not pcm:
        return unrecognised(ms, "no audio to recognise")
    try:
        ear = server.recogniser()
        got: Recognition | Future[Recognition] = await asyncio.get_running_loop().run_in_executor(
            core_pool(), ear, pcm, rate)
        if isinstance(got, Future):
            got = await asyncio.wrap_future(got)
    except Exception as exc:  # a broken recogniser hears nothing; it never takes the call down
        return unrecognised(ms, f"recogniser failed: {exc!r}")
    return got


# ---- the server's Live calls --------------------------------------------------------------------------


@dataclass
class LiveRegistry:
    """A server's Live hosts (by call id; a primary WebSocket's by session id), their recordings, and the
    choices new sessions are made with."""

    hosts: dict[str, LiveHost] = field(default_factory=dict)
    sessions: dict[str, LiveHost] = field(default_factory=dict)  # call-less: primary WebSockets' hosts
    turns: TurnSettings = field(default_factory=TurnSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    # by session id, oldest first: a stored session's recording, None for one started without store: true
    recordings: OrderedDict[str, Recording | None] = field(default_factory=OrderedDict)
    sources: dict[str, ForkSource] = field(default_factory=dict)  # ended stored sessions, for forks (rule 13)
    installed: bool = False

    def remember(self, session_id: str, rec: Recording | None) -> None:
        """A session started: what its content download will answer."""
        self.recordings[session_id] = rec
        self.recordings.move_to_end(session_id)
        self.evict_recordings()

    def evict_recordings(self) -> None:
        """Past ``max_sessions`` answers or ``max_total_bytes`` of audio, the oldest ended sessions' go (a
        session still running keeps its recording, bounded by ``max_seconds``)."""
        limits = self.recording
        ended = [sid for sid, rec in self.recordings.items() if rec is None or rec.end_ms is not None]
        total = sum(rec.size for rec in self.recordings.values() if rec is not None)
        for sid in ended:
            if len(self.recordings) <= limits.max_sessions and total <= limits.max_total_bytes:
                break
            rec = self.recordings.pop(sid)
            self.sources.pop(sid, None)
            total -= rec.size if rec is not None else 0


def registry(server: MockServer) -> LiveRegistry:
    return server.part(LiveRegistry)


def live_settings(server: MockServer) -> LiveSettings:
    """The choices a new Live session is made with: the mock config's ``live`` (``PUT /_mock/config``)."""
    return server.config.live


def media_rate(body: dict[str, Any]) -> int:
    """A SIP Live session's model audio rate: replies are made at the leg's 8 kHz, but a stored session's
    recording keeps 24 kHz model audio."""
    return REC_RATE if body.get("store") is True else turns.RATE


def find_session(server: MockServer, session_id: str) -> LiveHost | None:
    """The running host of a Live session id: a call's (accepted through GPT-Live) or a primary WebSocket's."""
    call = server.call_on("live", session_id)
    if call is not None:
        return None if call.state.terminal else get_host(server, call.call_id)
    return registry(server).sessions.get(session_id)


def open_primary(server: MockServer) -> LiveHost:
    """A primary WebSocket's session and host (rule 9), unstarted until its ``session.start``."""
    settings = live_settings(server)
    session = LiveSession.websocket(settings=settings, script=server.script_for(None), now=server.clock(),
                                    session_id=_call_less_id(server), reflect_chunk_ms=settings.reflect_chunk_ms)
    return _opened(server, session, None)


async def fork_source(server: MockServer, session_id: str) -> ForkSource | Literal["unknown", "not_stored"]:
    """What a fork of ``session_id`` continues (rule 13): ``unknown`` for an id that never started (or whose
    answer is no longer kept), ``not_stored`` for one started without ``store: true``."""
    reg = registry(server)
    if session_id not in reg.recordings:
        return "unknown"
    if reg.recordings[session_id] is None:
        return "not_stored"
    host = find_session(server, session_id)
    if host is not None and not host.finished:
        await host.settled()  # a heavy input runs on a thread: read the core once it is done
        if not host.finished:
            source = host.session.fork_source()
            return source if source is not None else "not_stored"
    return reg.sources.get(session_id, "unknown")


def open_fork(server: MockServer, source: ForkSource) -> LiveHost:
    """A fork's session and host (rule 13), unstarted until its ``session.start``."""
    settings = live_settings(server)
    session = LiveSession.fork(source, settings=settings, now=server.clock(), session_id=_call_less_id(server),
                               reflect_chunk_ms=settings.reflect_chunk_ms)
    return _opened(server, session, source.session_id)


def _call_less_id(server: MockServer) -> str | None:
    """A shard mints the ids its proxy routes back to it (``mock_api.shards``); None: the core mints its own."""
    return ids.live_id(server.shard.call_id()) if server.shard is not None else None


def _opened(server: MockServer, session: LiveSession, forked_from: str | None) -> LiveHost:
    reg = registry(server)
    host = reg.sessions[session.id] = LiveHost(server, session, turn_settings=reg.turns)
    server.journal.add(None, je.LiveSessionOpened(session=session.id,
                                                  forked_from=je.ABSENT if forked_from is None else forked_from))
    server.journal.add(host.key, je.LiveSettingsChosen(session_id=session.id,
                                                       settings=live_settings(server).journal()))
    return host


def get_host(server: MockServer, call_id: str) -> LiveHost | None:
    """The Live host of an active call (the control API's virtual caller, the SIP ingress)."""
    return registry(server).hosts.get(call_id)


def host_for_call(server: MockServer, call: c.Call) -> LiveHost | None:
    """The call's Live host, made now if the call is active on the Live surface and has none yet (so a
    caller of this does not depend on the order the call-active callbacks run in)."""
    reg = registry(server)
    host = reg.hosts.get(call.call_id)
    if host is not None or call.surface != "live" or call.state not in (c.CallState.ACTIVE, c.CallState.REFERRING):
        return host
    config = (call.accept_body or {}).get("session")
    chosen = live_settings(server)
    faults = server.fault_script(call.call_id)
    ends = None if faults.live_end_after_s is None else SelfEnd(  # the core's timer (rule 12)
        faults.live_end_after_s, cast(CloseReason, faults.live_end_reason), "live_session_end")
    body = dict(config) if isinstance(config, dict) else {}
    session = LiveSession.sip(body, session_id=call.live_id, settings=chosen, script=server.script_for(call.call_id),
                              now=server.clock(), ends_after=ends, reflect_chunk_ms=chosen.reflect_chunk_ms,
                              media_rate=media_rate(body))
    host = reg.hosts[call.call_id] = LiveHost(server, session, call_id=call.call_id, turn_settings=reg.turns)
    server.journal.add(call.call_id, je.LiveSettingsChosen(session_id=session.id,
                                                           settings=chosen.journal()))
    host.start()
    return host


def install(server: MockServer) -> None:
    """Run a Live session for every call accepted through GPT-Live, and close it when the call ends."""
    reg = registry(server)
    if reg.installed:
        return
    reg.installed = True

    def active(call: c.Call) -> None:
        if call.surface == "live":
            with contextlib.suppress(RuntimeError):  # no running loop: nothing can run a session
                host_for_call(server, call)

    def ended(call: c.Call) -> None:
        host = reg.hosts.pop(call.call_id, None)
        if host is not None:
            host.end(close_reason(call))

    server.on_call_active(active)
    server.on_call_ended(ended)
