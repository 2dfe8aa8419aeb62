"""The GPT-Live runtime of one accepted call: a :class:`~mock_api.live.session.LiveSession` plus its
sidebands, its timer, its journal and its media. It decides nothing about the protocol (the core does);
it carries inputs in and outputs out.

Rules:

1. A call accepted through GPT-Live (``call.surface == "live"``) gets one host when the call table
   starts its session (``on_call_active``); the host journals the session's :class:`LiveSettings`
   (``live.settings``) and starts the core at once (the accept answered the call).
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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

from aiohttp import web
from openai.types.live import ConnectServerEvent
from pydantic import TypeAdapter, ValidationError

from sipworker import turns

from . import audio, fidelity, wire_json
from . import calls as c
from . import journal_entries as je
from .core_runner import CoreCall, CoreRunner, core_pool
from .journal import AUDIO_KEEP_CHARS, audio_summary
from .live import events as live_events
from .live.outputs import ClearMedia, Close, Event, Finished, MediaAudio, MockBug, Output, SendDtmf
from .live.session import CloseReason, LiveSession
from .live.settings import LiveSettings
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
        self._resamplers: dict[int, audio.Resampler] = {}  # one stream per input rate
        self._pending = b""  # 8 kHz audio short of a whole frame
        self._heard_ms = 0  # audio ms classified so far
        self._kept = bytearray()  # audio from _kept_ms on: the prefix while idle, the turn while in one
        self._kept_ms = 0
        self._onset_ms: int | None = None

    def hear(self, pcm: bytes, rate: int) -> list[CallerTurn]:
        """Feed the next audio (PCM16 at ``rate``); returns the turn boundaries it completed."""
        if rate != turns.RATE:
            pcm = self._resamplers.setdefault(rate, audio.Resampler(rate, turns.RATE)).process(pcm)
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


# ---- fidelity ---------------------------------------------------------------------------------------


@cache
def _sideband_events() -> TypeAdapter[Any]:
    return TypeAdapter(ConnectServerEvent)


def audit(event: dict[str, Any]) -> None:
    """When auditing is on (``fidelity.audit_path``), record an event the SDK would not parse as the
    sideband's ``ConnectServerEvent`` member its type names, in the Realtime audit's format."""
    path = fidelity.audit_path
    if not path:
        return
    why: str | None = None
    try:
        parsed = _sideband_events().validate_python(event)
        if getattr(parsed, "type", None) != event.get("type"):
            why = f"{event.get('type')!r} parsed as {type(parsed).__name__}"
    except ValidationError as exc:
        why = str(exc).splitlines()[0] + ": " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    if why is not None:
        with open(path, "a") as f:
            f.write(json.dumps({"type": event.get("type"), "problem": why, "event": event}) + "\n")


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


Step = Output | ClientFrame


@dataclass(eq=False)
class Sideband:
    """One attached socket: its connection id in the core, its send queue and how it ended."""

    conn: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    queue: asyncio.Queue[tuple[str, Any] | None] = field(default_factory=asyncio.Queue)
    queued: int = 0  # bytes of events waiting for the client
    ending: str | None = None  # why the server closed or dropped it
    writer: asyncio.Task[None] | None = None


class LiveHost(CoreRunner):
    """One Live session core plus its sidebands, timer, journal and media (see the module's rules)."""

    def __init__(self, server: MockServer, call: c.Call, session: LiveSession,
                 turn_settings: TurnSettings | None = None) -> None:
        super().__init__()
        self.server = server
        self.call_id = call.call_id
        self.session = session
        self.sidebands: dict[str, Sideband] = {}
        self.media_sink: MediaSink | None = None
        self.ear = CallerEar(turn_settings)
        self.ending = False  # the end was asked for or happened: no more caller input
        self.finished = False  # the core said Finished
        self._conn_ids = itertools.count(1)
        self._t0 = server.clock()  # the session timeline's 0 (set again when the core starts)
        self._onset_ms: float | None = None  # the caller's turn under way: its start on the session timeline
        self._turn_audio: tuple[bytes, int] | None = None  # a SIP worker's audio of the turn ending
        self._hearing: asyncio.Task[None] | None = None  # the last turn being recognised

    @property
    def closed(self) -> bool:
        """The session is over or closing: a virtual caller stops speaking into it."""
        return self.ending

    # ---- inputs -------------------------------------------------------------------------------

    def start(self) -> None:
        self._submit(self._begin)

    def _begin(self, now: float) -> list[Step]:
        self._t0 = now
        return list(self.session.begin(now))

    def sideband(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> Sideband:
        """A new socket's connection id and send queue (it joins the session with :meth:`attach`)."""
        return Sideband(f"sideband_{next(self._conn_ids)}", ws, transport)

    def attach(self, sb: Sideband, graceful_close: bool | None) -> None:
        """The sideband joins the session: the core sends it the replay, then the session's events."""
        self.sidebands[sb.conn] = sb
        sb.writer = self._loop.create_task(self._write(sb))
        self._submit(partial(self._connect, sb.conn, graceful_close))

    def _connect(self, conn: str, graceful_close: bool | None, now: float) -> list[Output]:
        return self.session.connect(conn, "sideband", now, graceful_close=graceful_close)

    def detach(self, sb: Sideband) -> None:
        """The socket's reading ended (the client left, or the server closed it)."""
        if self.sidebands.pop(sb.conn, None) is not None:
            sb.queue.put_nowait(None)  # the writer ends after what is queued
        if not self.finished:
            self._submit(partial(self.session.disconnect, sb.conn))

    def receive(self, sb: Sideband, text: str | bytes) -> None:
        """One client frame; a big one (a fixture's audio) is read and handled on a worker thread."""
        if len(text) > BIG_FRAME_CHARS:
            self._submit(partial(self._frame, sb.conn, text, None), heavy=True)
        else:
            self._submit(partial(self._frame, sb.conn, text, self._client_view(text)))

    def _client_view(self, text: str | bytes) -> Any:
        if isinstance(text, (bytes, bytearray)):
            return {"binary_bytes": len(text)}
        try:
            event: Any = wire_json.loads(text)
        except wire_json.WireJSONError:
            event = text if len(text) <= 4096 else f"<{len(text)} characters that are not JSON>"
        return journal_view(event, self.server.journal.record_audio)

    def _frame(self, conn: str, text: str | bytes, view: Any, now: float) -> list[Step]:
        if view is None:
            view = self._client_view(text)
        return [ClientFrame(conn, view), *self.session.receive(conn, text, now)]

    def end(self, reason: CloseReason) -> None:
        """The call ended: the session closes with ``reason`` (rule 2)."""
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
        for turn in self.ear.hear(pcm, rate):
            at = self._timeline_ms(self.server.clock()) - turn.ago_ms
            if isinstance(turn, TurnStarted):
                self._turn_started(at)
            else:
                self._turn_ended(turn.pcm, turns.RATE, at)

    def reflect_audio(self, pcm: bytes, rate: int) -> None:
        """Caller audio for the sidebands only (a media path that finds its turns itself)."""
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
        self.server.journal.add(self.call_id, je.LiveHeard(
            text=got.text, recognised=got.recognised, source=got.source, reason=got.reason,
            audio_ms=round(got.audio_ms, 1), start_ms=round(start_ms), end_ms=round(end_ms),
            clip=got.clip if got.clip is not None else je.ABSENT))
        self._submit(partial(self.session.speech, got.text, start_ms, end_ms))

    # ---- running the core -----------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self.finished

    def _bug_key(self) -> str | None:
        return self.call_id

    def _run_inline(self, call: CoreCall, now: float, origin: Any) -> None:
        try:
            self.dispatch(call(now))
        except Exception as exc:  # the adapter's own bug: journaled; the caller (a socket, the media
            self.server.mock_bug(self.call_id, "live host", exc)  # clock) goes on
            self._schedule()

    # ---- outputs ----------------------------------------------------------------------------------

    def dispatch(self, outputs: Sequence[Step], origin: Any = None) -> None:
        journal = self.server.journal
        for out in outputs:
            if isinstance(out, ClientFrame):
                journal.add(self.call_id, je.LiveClient(conn=out.conn, event=out.view))
            elif isinstance(out, Event):
                self._send(out)
            elif isinstance(out, MediaAudio):
                ms = round(audio.duration_ms(out.pcm, out.rate), 1)
                journal.add(self.call_id, je.AudioOut(response_id=None, ms=ms, corrupt=False, voice=out.voice))
                self._media(out)
            elif isinstance(out, ClearMedia):
                journal.add(self.call_id, je.LiveMediaCleared(reason=out.reason))
                self._media(out)
            elif isinstance(out, SendDtmf):
                journal.add(self.call_id, je.LiveDtmfOut(digit=out.digit))
                self._media(out)
            elif isinstance(out, Close):
                self._close_socket(out)
            elif isinstance(out, Finished):
                self._finished()
            elif isinstance(out, MockBug):  # the core's own bug: journaled, never sent (its server_error is)
                journal.add(self.call_id, je.MockBug(where=out.where, error=out.error, traceback=out.traceback))
            # InputAudio is a primary WebSocket's; a call's host has none
        self._schedule()

    def _media(self, out: MediaOut) -> None:
        if self.media_sink is not None:
            self.media_sink(out)

    def _send(self, out: Event) -> None:
        body = out.event
        try:
            text = wire_json.dumps(body)
        except ValueError as exc:  # NaN/Infinity in an event is the mock's bug: the client gets server_error
            self.server.mock_bug(self.call_id, f"event {body.get('type')}", exc)
            body = live_events.server_error()
            text = wire_json.dumps(body)
        audit(body)
        self.server.journal.add(self.call_id, je.LiveServer(event=journal_view(body, self.server.journal.record_audio),
                                                            to=list(out.to)))
        for conn in out.to:
            sb = self.sidebands.get(conn)
            if sb is not None:
                self._enqueue(sb, text)

    def _enqueue(self, sb: Sideband, text: str) -> None:
        """Past ``ws_send_queue_bytes`` of unsent events the client is not reading: close it 1008 (rule 6)."""
        size = sb.queued + len(text)
        if size > self.server.config.ws_send_queue_bytes:
            self._overflow(sb)
            return
        sb.queued = size
        sb.queue.put_nowait(("text", text))

    def _overflow(self, sb: Sideband) -> None:
        if self.sidebands.pop(sb.conn, None) is None:
            return
        dropped, sb.queued = sb.queued, 0
        while not sb.queue.empty():
            sb.queue.get_nowait()
        sb.ending = SEND_QUEUE_FULL
        self.server.journal.add(self.call_id, je.LiveClose(conn=sb.conn, code=POLICY_CLOSE, reason=SEND_QUEUE_FULL,
                                                           queued_bytes=dropped,
                                                           limit=self.server.config.ws_send_queue_bytes))
        if sb.writer is not None:
            sb.writer.cancel()  # it waits on a client that does not read
        self.server.spawn(_close_unread(sb.ws, sb.transport))
        self._loop.call_soon(self._submit, partial(self.session.disconnect, sb.conn))

    def _close_socket(self, out: Close) -> None:
        sb = self.sidebands.get(out.conn)
        if sb is None:
            return
        sb.queue.put_nowait(("close", (out.code, out.reason)) if out.graceful else ("drop", None))

    def _finished(self) -> None:
        """The session is over; if the call is not, the session ended it: a Live hangup (rule 3)."""
        self.ending = self.finished = True
        reg = registry(self.server)
        if reg.hosts.get(self.call_id) is self:
            del reg.hosts[self.call_id]
        call = self.server.calls.get(self.call_id)
        if call is not None and not call.state.terminal:
            self._loop.call_soon(self._hang_up)

    def _hang_up(self) -> None:
        call = self.server.calls.get(self.call_id)
        if call is not None and not call.state.terminal:
            self.server.apply(call, c.Hangup(surface="live", loser_status=self.server.config.loser_status),
                              source="session")

    async def _write(self, sb: Sideband) -> None:
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
                    sb.ending = reason
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
    """A server's Live hosts by call id, and the choices new sessions are made with."""

    hosts: dict[str, LiveHost] = field(default_factory=dict)
    settings: LiveSettings = field(default_factory=LiveSettings)
    turns: TurnSettings = field(default_factory=TurnSettings)
    installed: bool = False


def registry(server: MockServer) -> LiveRegistry:
    return server.part(LiveRegistry)


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
    session = LiveSession.sip(dict(config) if isinstance(config, dict) else {}, session_id=call.live_id,
                              settings=reg.settings, script=server.script_for(call.call_id), now=server.clock())
    host = reg.hosts[call.call_id] = LiveHost(server, call, session, reg.turns)
    server.journal.add(call.call_id, je.LiveSettingsChosen(session_id=session.id, settings=reg.settings.journal()))
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
