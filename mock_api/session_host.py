"""One session core and its sockets: the runner the WebSocket endpoint, the SIP ingress, the control API and
virtual callers all drive (it was part of ``ws.py``; it is not about WebSocket upgrades).

It decides nothing about the protocol: inputs (client frames, caller audio, speech boundaries, DTMF, timers) go
to the core in arrival order, with their arrival time; the core's outputs go out to the sockets, the journal and
the media path. A heavy input runs on a worker thread so the loop keeps serving; later inputs wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from . import fidelity, wire_json
from . import journal_entries as je
from .calls import Call
from .core_runner import CoreRunner
from .journal import AUDIO_KEEP_CHARS, audio_summary
from .realtime import events as rt_events
from .realtime.outputs import SERVER_ERROR_MESSAGE, AudioOut, ClearAudio, Close, Heard, LimitHit, MockBug, Output
from .realtime.session import RealtimeSession
from .server import MockServer

POLICY_CLOSE = 1008  # RFC 6455 "Policy Violation": a client that does not read its events
SEND_QUEUE_FULL = "send queue full"
BIG_FRAME_CHARS = 64 * 1024  # a frame this long (1.4 s of 24 kHz audio in base64) is decoded off the loop
HEAVY_TYPES = frozenset({"input_audio_buffer.commit"})  # recognises the whole input buffer at once

MediaSink = Callable[[AudioOut | ClearAudio], None]
ConfigSink = Callable[[dict[str, Any]], object]



@dataclass(frozen=True)
class ClientFrame:
    """A client frame as journaled: recorded (on the loop) just before the events it caused, so the journal
    keeps the core's order even when the frame was read on a worker thread or waited behind one."""

    view: Any


Step = Output | ClientFrame

class SessionHost(CoreRunner):
    """One session core plus its sockets, timer pump and media sink."""

    def __init__(self, server: MockServer, session: RealtimeSession, call_id: str | None,
                 key: str | None = None) -> None:
        super().__init__()
        self.server = server
        self.session = session
        self.call_id = call_id
        # the journal timeline: the call's, or for a call-less socket its own (the session id), so that
        # such sessions leave with retain_ended_calls like calls do instead of piling up on the server's
        self.key: str | None = call_id or key
        self.sockets: dict[web.WebSocketResponse, asyncio.Queue[tuple[str, Any] | None]] = {}
        self.transports: dict[web.WebSocketResponse, asyncio.BaseTransport] = {}
        self.writers: dict[web.WebSocketResponse, asyncio.Task[None]] = {}
        self.queued: dict[web.WebSocketResponse, int] = {}  # bytes of events waiting for each socket's client
        self.ending: dict[web.WebSocketResponse, str] = {}  # the reason each socket was closed or dropped
        self.media_sink: MediaSink | None = None
        self._on_config: ConfigSink | None = None
        self.closed = False
        self.slot: str | None = None  # the concurrent-session slot a ?model= socket holds
        self._schedule()

    # ---- inputs (from sockets and the media path) -----------------------------------------

    def receive(self, text: str | bytes, origin: web.WebSocketResponse | None = None) -> None:
        """One client frame. A big one (a long audio append) is read, journaled and handed to the core on a
        worker thread; a small one on the loop, unless it is a commit (it recognises the whole buffer)."""
        if len(text) > BIG_FRAME_CHARS:
            self._submit(partial(self._frame, text, None), origin, heavy=True)
            return
        view = self._client_view(text)
        etype = view.get("type") if isinstance(view, dict) else None
        heavy = isinstance(etype, str) and etype in HEAVY_TYPES
        self._submit(partial(self._frame, text, view), origin, heavy=heavy)

    def _client_view(self, text: str | bytes) -> Any:
        """The frame as the journal keeps it (audio as its checksum), computed wherever the frame is read."""
        try:
            event: Any = (wire_json.surrogates_escaped(text, wire_json.loads(text)) if isinstance(text, str)
                          else {"binary_bytes": len(text)})
        except wire_json.WireJSONError:
            event = text if len(text) <= 4096 else f"<{len(text)} characters that are not JSON>"
        return _journal_view(event, self.server.journal.record_audio) if isinstance(event, dict) else event

    def _frame(self, text: str | bytes, view: Any, now: float) -> list[Step]:
        if view is None:
            view = self._client_view(text)
        return [ClientFrame(view), *self.session.receive(text, now)]

    def feed_audio(self, pcm: bytes, rate: int) -> None:
        """Caller audio from the SIP ingress (PCM16 at ``rate``)."""
        self._submit(partial(self.session.feed_audio, pcm, rate))

    def media_audio(self, pcm: bytes, rate: int, start_ms: int) -> None:
        """A turn's caller audio from the media path (what the fake model hears when no script says it)."""
        self._submit(partial(self.session.media_audio, pcm, rate, start_ms))

    def dtmf(self, digit: str) -> None:
        self._submit(partial(self.session.dtmf, digit))

    def media_speech_started(self, audio_ms: int) -> None:
        """The SIP worker's VAD heard the caller start speaking at ``audio_ms`` (first voiced ms)."""
        self._submit(partial(self.session.media_speech_started, audio_ms))

    def media_speech_stopped(self, audio_ms: int, detected_ms: int) -> None:
        """The SIP worker's VAD heard the caller stop (last voiced ms, and when the silence ran out)."""
        self._submit(partial(self.session.media_speech_stopped, audio_ms, detected_ms))

    # ---- running the core ---------------------------------------------------------------------

    # ---- running the core (CoreRunner) -------------------------------------------------------

    def _stopped(self) -> bool:
        return self.closed

    def _bug_key(self) -> str | None:
        return self.key

    def _thread_failed(self, exc: BaseException, origin: web.WebSocketResponse | None) -> Sequence[Step]:
        super()._thread_failed(exc, origin)
        return [rt_events.error(None, SERVER_ERROR_MESSAGE, type_="server_error")]

    @property
    def on_session_config(self) -> ConfigSink | None:
        """Called with the full effective session config now and after every ``session.updated``
        (the SIP ingress keeps its worker's VAD in step with ``turn_detection``)."""
        return self._on_config

    @on_session_config.setter
    def on_session_config(self, sink: ConfigSink | None) -> None:
        self._on_config = sink
        if sink is not None:
            sink(wire_json.copy(self.session.config))

    # ---- outputs ------------------------------------------------------------------------

    def dispatch(self, outputs: Sequence[Step], origin: web.WebSocketResponse | None = None) -> None:
        for out in outputs:
            if isinstance(out, ClientFrame):
                self.server.journal.add(self.key, je.WsClient(out.view))
            elif isinstance(out, dict):
                self._send_event(out, origin)
            elif isinstance(out, (AudioOut, ClearAudio)):
                if isinstance(out, AudioOut):
                    self.server.journal.add(self.key, je.AudioOut(response_id=out.response_id,
                                                                ms=round(len(out.pcm) / 2 * 1000 / out.rate, 1),
                                                                corrupt=out.corrupt, voice=out.voice))
                if self.media_sink is not None:
                    self.media_sink(out)
            elif isinstance(out, LimitHit):
                # a call-less session's hits stay on the server timeline, where load tests count them
                session = self.key if self.call_id is None and self.key is not None else je.ABSENT
                self.server.limit_hit(self.call_id, out.hit, "response", response_id=out.response_id, session=session)
            elif isinstance(out, Heard):
                self.server.journal.add(self.key, je.AudioHeard(**out.journal()))
            elif isinstance(out, je.ModelRetiring):  # a retiring model the session named
                self.server.journal.add(self.key, out)
            elif isinstance(out, MockBug):  # the session's own bug: journaled, never sent (its server_error is)
                self.server.journal.add(self.key, je.MockBug(where=out.where, error=out.error, traceback=out.traceback))
            elif isinstance(out, Close):
                for q in self.sockets.values():
                    q.put_nowait(("close", (out.code, out.reason)))
        self._schedule()

    def _send_event(self, out: dict[str, Any], origin: web.WebSocketResponse | None) -> None:
        try:
            text = wire_json.dumps(out)
        except ValueError as exc:  # NaN/Infinity in an event is the mock's bug: the client gets server_error
            self.server.mock_bug(self.key, f"event {out.get('type')}", exc)
            out = rt_events.error(None, SERVER_ERROR_MESSAGE, type_="server_error")
            text = wire_json.dumps(out)
        fidelity.audit(out)
        self.server.journal.add(self.key, je.WsServer(_journal_view(out, self.server.journal.record_audio)))
        if out["type"] == "session.updated" and self._on_config is not None:
            self._on_config(wire_json.copy(out["session"]))
        if out["type"] == "error" and origin is not None:  # its socket's own; gone if it left during a heavy frame
            targets = [origin] if origin in self.sockets else []
        else:
            targets = list(self.sockets)
        for ws in targets:
            self.enqueue(ws, text)

    def enqueue(self, ws: web.WebSocketResponse, text: str) -> None:
        """Queue one event for a socket; past ``ws_send_queue_bytes`` of unsent events, the client is not
        reading: the socket closes with 1008 instead of the mock's memory growing with it."""
        q = self.sockets.get(ws)
        if q is None:
            return
        size = self.queued.get(ws, 0) + len(text)
        if size > self.server.config.ws_send_queue_bytes:
            self._overflow(ws)
            return
        self.queued[ws] = size
        q.put_nowait(("text", text))

    def _overflow(self, ws: web.WebSocketResponse) -> None:
        q = self.sockets.pop(ws, None)
        if q is None:
            return
        dropped = self.queued.pop(ws, 0)
        while not q.empty():
            q.get_nowait()
        self.ending[ws] = SEND_QUEUE_FULL
        self.server.journal.add(self.key, je.WsClose(code=POLICY_CLOSE, reason=SEND_QUEUE_FULL, queued_bytes=dropped,
                                                     limit=self.server.config.ws_send_queue_bytes))
        writer = self.writers.get(ws)
        if writer is not None:
            writer.cancel()  # it waits on a client that does not read
        self.server.spawn(_close_unread(ws, self.transports.get(ws)))

    async def writer(self, ws: web.WebSocketResponse) -> None:
        q = self.sockets[ws]
        while True:
            item = await q.get()
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "text":
                    self.queued[ws] = max(0, self.queued.get(ws, 0) - len(payload))
                    await ws.send_str(payload)
                elif kind == "drop":
                    # the call ended: the connection goes away without a close frame (the client sees 1006)
                    self.ending[ws] = "dropped"
                    transport = payload
                    if transport is not None:
                        transport.close()
                    return
                else:
                    code, reason = payload
                    self.ending[ws] = reason
                    await ws.close(code=code, message=reason.encode())
                    return
            except (ConnectionError, RuntimeError):
                return

    def close(self) -> None:
        """The call ended: each socket is dropped or closed cleanly, as ``MockConfig.hangup_close`` says."""
        self.closed = True
        self._schedule()
        drop = self.call_id is not None and self.server.config.hangup_close == "drop"
        for ws, q in self.sockets.items():
            if drop:
                q.put_nowait(("drop", self.transports.get(ws)))
            else:
                q.put_nowait(("close", (1000, "call ended")))


async def _close_unread(ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
    """Close a socket whose client stopped reading: the close frame goes after what is already buffered (the
    client sees it once it reads again) and the connection goes away rather than wait on the client."""
    with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
        await asyncio.wait_for(ws.close(code=POLICY_CLOSE, message=SEND_QUEUE_FULL.encode(), drain=False), 2.0)
    if transport is not None and not transport.is_closing():
        transport.close()  # flushes what is buffered first, then closes


class Registry:
    def __init__(self) -> None:
        self.calls: dict[str, SessionHost] = {}


def _registry(server: MockServer) -> Registry:
    return server.part(Registry)


def get_session(server: MockServer, call_id: str) -> SessionHost | None:
    """The session host of an active call, for the SIP ingress (feed_audio, dtmf, media_sink)."""
    return _registry(server).calls.get(call_id)


def _host_for_call(server: MockServer, call: Call) -> SessionHost:
    reg = _registry(server)
    host = reg.calls.get(call.call_id)
    if host is None:
        session = RealtimeSession(
            kind="realtime", transport="sip", config=call.accept_body or {"type": "realtime"},
            model=(call.accept_body or {}).get("model"), script=server.script_for(call.call_id),
            faults=server.faults_for(call.call_id), now=server.clock(), limiter=server.limits,
            recogniser=server.recogniser().offloading(),
        )
        host = reg.calls[call.call_id] = SessionHost(server, session, call.call_id)
    return host



def _journal_view(event: dict[str, Any], record_audio: bool = False) -> dict[str, Any]:
    """Reply audio and appended audio are journaled as their size and checksum unless the journal records
    audio (the journal itself would summarise an append's audio the same way, on the loop; done here, it
    happens wherever the frame is read, a worker thread for a long one)."""
    if record_audio:
        return event
    if event.get("type") == "response.output_audio.delta" and isinstance(event.get("delta"), str):
        return {**event, "delta": audio_summary(event["delta"])}
    if isinstance(event.get("audio"), str) and len(event["audio"]) > AUDIO_KEEP_CHARS:
        return {**event, "audio": audio_summary(event["audio"])}
    return event
