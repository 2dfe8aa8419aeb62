"""One GPT-Live session, sans-I/O: client frames, caller speech, audio, DTMF and a clock in; outputs out.

One session is one call's (or one primary WebSocket's) Live runtime. The adapters own sockets,
tasks and timers; this class owns the protocol. Every entry point takes ``now`` (monotonic
seconds) and returns a list of :data:`~.outputs.Output`; ``next_deadline()`` says when to call
:meth:`LiveSession.advance` again.

Rules:

- Three ways in: :meth:`LiveSession.sip` for an accepted SIP call (started by :meth:`begin`, with
  the accept body's ``session``), :meth:`LiveSession.websocket` for a primary WebSocket (started
  by its ``session.start``), :meth:`LiveSession.fork` for a fork's WebSocket (started by its
  ``session.start`` over a stored session's :class:`~.forks.ForkSource`, :mod:`.forks`; its primary
  connection speaks the SDK's fork unions). :meth:`fork_source` is what a fork of this session gets.
  Connections come and go with :meth:`connect` / :meth:`disconnect`; a sideband gets the short
  replay (:mod:`.connections`) when it attaches.
- A client frame is checked before anything changes: JSON, a ``type`` this kind of connection
  takes (a command only the other kind takes is refused as such), then the whole event against
  its SDK type (:mod:`.validation`); before ``session.started`` every command but
  ``session.start`` is refused. A refused command changes nothing.
- Caller side: :meth:`speech_started` (barge-in) and :meth:`speech` (recognised words with
  their span: input transcript deltas, then the scripted reply) are dropped while the model input
  is muted or a fixture plays; :meth:`feed_audio` is reflected to sidebands always (at most
  ``reflect_chunk_ms`` of audio per event, :mod:`.playback`); :meth:`dtmf`
  becomes ``transport.dtmf.received`` on the sidebands.
- Timers due by ``now`` run before the input is handled and again after it, in due order; usage
  goes out every ``usage_period_s`` (whole seconds since the start, cumulative) and the session
  closes ``expired`` after ``expires_after_s``. A session made with ``ends_after``
  (:class:`~.state.SelfEnd`, the ``live_session_end`` fault) closes by itself that long after its
  start with the given reason, after a :class:`~.outputs.FaultFired` for the journal.
- A caller's utterance is answered by the script (:mod:`.behaviour`) or delegated (:mod:`.delegation`).
- The end happens once (:meth:`close` or ``session.close``): ``session.closed`` with the reason and
  final usage to every connection, a :class:`~.outputs.Close` for each, then
  :class:`~.outputs.Finished`. Later input is ignored.
- An outbound call's leg reports its progress through :meth:`leg_progress`: ``transport.ringing`` /
  ``transport.answered`` to the sidebands (the session itself starts with :meth:`begin` after the answer);
  ``transport.failed`` is followed by ``session.closed`` (the given reason) and the end, the resource then
  being the one the session would have started with.
- Nothing raises out of an entry point: a bug of ours becomes the ``server_error`` event and a
  :class:`~.outputs.MockBug` for the journal. Each entry point draws ids from the session's
  source, so one seed, clock and input replay byte for byte.
"""

from __future__ import annotations

import functools
import math
import re
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any, Concatenate, ParamSpec

from .. import audio, wire_json
from .. import ids as idgen
from ..realtime.generation import AUDIO_CHUNK_MS
from ..realtime.script import Script
from . import events as ev
from . import resource
from .behaviour import RATE, AudioLoader, Behaviour
from .commands import Commands
from .connections import Connections
from .forks import ForkSource, source_of, start_problem
from .outbound import TransportState
from .outputs import Audience, ClearMedia, Close, ConnId, Event, FaultFired, Finished, MockBug, Output
from .refusals import Refusal
from .resource import Transport
from .settings import LiveSettings
from .state import CloseReason, SelfEnd
from .timers import Timers
from .validation import ConnKind, Wire, check_event, client_types, other_kind_takes, unknown_type

__all__ = ["CloseReason", "LiveSession", "SelfEnd"]

_APPENDS = ("session.instructions.append", "session.thinking.append", "session.commentary.append")

_P = ParamSpec("_P")


def _entry(where: str) -> Callable[[Callable[Concatenate[LiveSession, _P], list[Output]]],
                                   Callable[Concatenate[LiveSession, _P], list[Output]]]:
    """An entry point: ids from the session's source; an exception becomes a MockBug and ``server_error``."""
    def wrap(fn: Callable[Concatenate[LiveSession, _P], list[Output]]
             ) -> Callable[Concatenate[LiveSession, _P], list[Output]]:
        @functools.wraps(fn)
        def run(self: LiveSession, /, *args: _P.args, **kwargs: _P.kwargs) -> list[Output]:
            with idgen.using(self.ids):
                try:
                    return fn(self, *args, **kwargs)
                except Exception as exc:  # a bug must not take the call down
                    sender = args[0] if where == "receive" and args and isinstance(args[0], str) else None
                    return self._bug(where, exc, sender)
        return run
    return wrap


class LiveSession(Commands):
    def __init__(
        self,
        *,
        transport: Transport,
        config: dict[str, Any] | None = None,
        session_id: str | None = None,
        settings: LiveSettings | None = None,
        script: Script | dict[str, Any] | None = None,
        ids: idgen.IdSource | None = None,
        now: float = 0.0,
        wall: float | None = None,
        audio_loader: AudioLoader = audio.load_audio,
        ends_after: SelfEnd | None = None,
        fork_of: ForkSource | None = None,
        reflect_chunk_ms: int = AUDIO_CHUNK_MS,
        media_rate: int = RATE,
    ) -> None:
        if transport == "sip" and config is None:
            raise ValueError("a SIP Live session is made from its accepted session config")
        if reflect_chunk_ms < AUDIO_CHUNK_MS or reflect_chunk_ms % AUDIO_CHUNK_MS:
            raise ValueError(f"reflect_chunk_ms must be a positive multiple of {AUDIO_CHUNK_MS}")
        self._reflect_ms = reflect_chunk_ms  # reflected audio per sideband event (:mod:`.playback`)
        self._media_rate = media_rate  # the SIP media path's rate: replies are made at it too (:mod:`.behaviour`)
        self.ids = ids or idgen.current()  # today: the OS; IdSource(seed) replays
        self.settings = settings or LiveSettings()
        self.script = Script.load(script)
        self.transport = transport
        self._config = config
        self._audio_loader = audio_loader
        self._mono0 = self._t0 = now
        self._wall0 = time.time() if wall is None else wall
        with idgen.using(self.ids):
            self.id = session_id or idgen.server_id("live")
        self.resource = None
        self.closed = False
        self.close_reason: CloseReason | None = None
        self.muted = False
        self._behaviour = None
        self._conns = Connections(self.settings)
        self._timers = Timers()
        self._replies = []
        self._fixture = None
        self._last_transcript_ms = 0
        self._decision_ids = set()
        self._decision_items = {}
        self._delegations = {}
        self._response_inputs = []
        self._ends_after = ends_after
        self.fork_of = fork_of

    @classmethod
    def sip(cls, config: dict[str, Any], **kwargs: Any) -> LiveSession:
        """An accepted inbound SIP call; ``config`` is the accept body's ``session``. Call :meth:`begin`."""
        return cls(transport="sip", config=config, **kwargs)

    @classmethod
    def websocket(cls, **kwargs: Any) -> LiveSession:
        """A primary WebSocket's session, unstarted until its ``session.start``."""
        return cls(transport="websocket", **kwargs)

    @classmethod
    def fork(cls, source: ForkSource, **kwargs: Any) -> LiveSession:
        """A fork's session, continuing ``source`` (its script included) once its ``session.start`` came."""
        return cls(transport="websocket", script=source.script, fork_of=source, **kwargs)

    def fork_source(self) -> ForkSource | None:
        """What a fork of this session starts from now; None unless it started with ``store: true``."""
        used = self._behaviour.used_turns() if self._behaviour is not None else set()
        return source_of(self.id, self.resource, self.transport, self.script, used, self._decision_items)

    # ---- entry points -------------------------------------------------------------------------

    @_entry("begin")
    def begin(self, now: float) -> list[Output]:
        """Start a SIP session once its call is answered: ``session.started`` (for the replay), the usage clock."""
        if self.resource is not None or self._config is None:
            return []
        return self._start(self._config, now, None) + self._timers.run_due(now)

    @_entry("connect")
    def connect(self, conn: ConnId, kind: ConnKind, now: float, *, graceful_close: bool | None = None
                ) -> list[Output]:
        """A connection attached: the primary WebSocket, or a sideband (``graceful_close`` from its query)."""
        out = self._timers.run_due(now)
        attached = self._conns.add(conn, kind, graceful_close)
        if self.closed:
            return [*out, Close(conn, 1000, "session closed", attached.graceful)]
        if kind == "sideband":
            out.extend(Event(body, Audience.SENDER, (conn,)) for body in self._conns.replay())
        return out

    @_entry("disconnect")
    def disconnect(self, conn: ConnId, now: float) -> list[Output]:
        """A connection went away; the session goes on (the adapter decides whether that ends it)."""
        self._conns.remove(conn)
        return self._timers.run_due(now)

    @_entry("receive")
    def receive(self, conn: ConnId, text: str | bytes, now: float) -> list[Output]:
        """One WebSocket frame from connection ``conn``."""
        out = self._timers.run_due(now)
        if not self.closed:
            out.extend(self._receive(conn, text, now))
        out.extend(self._timers.run_due(now))
        return out

    @_entry("audio")
    def feed_audio(self, pcm: bytes, rate: int, now: float) -> list[Output]:
        """Caller audio from the media path (PCM16 at ``rate``): reflected to the sidebands."""
        out = self._timers.run_due(now)
        if self._live():
            out.extend(self._reflect_input(pcm, rate))
        return out

    @_entry("speech")
    def speech_started(self, at_ms: int, now: float) -> list[Output]:
        """The caller started speaking (timeline ``at_ms``): the model stops talking (barge-in)."""
        out = self._timers.run_due(now)
        if self._hears():
            out.extend(self._interrupt("barge_in", now))
        return out

    @_entry("speech")
    def speech(self, text: str, start_ms: float, end_ms: float, now: float) -> list[Output]:
        """The caller said ``text`` from ``start_ms`` to ``end_ms`` (session timeline): transcript, then a reply."""
        out = self._timers.run_due(now)
        if not self._hears():
            return out
        out.extend(self._interrupt("barge_in", now))
        pieces = re.findall(r"\S+\s*", text)
        if not pieces:
            return out
        total = sum(len(p) for p in pieces)
        done = 0
        for piece in pieces:
            a = start_ms + (end_ms - start_ms) * done / total
            done += len(piece)
            b = start_ms + (end_ms - start_ms) * done / total
            out.append(self._send(ev.transcript("input", piece, *self._span(a, b)), Audience.ALL))
        assert self._behaviour is not None
        turn = self._behaviour.turn_for(text)
        if self._delegates(turn):
            assert turn is not None
            out.extend(self._delegate(turn, now))
        else:
            out.extend(self._speak(self._behaviour.reply(turn), now))
        out.extend(self._timers.run_due(now))
        return out

    @_entry("dtmf")
    def dtmf(self, digit: str, now: float) -> list[Output]:
        """A key the caller pressed (RFC 4733 on the SIP leg)."""
        out = self._timers.run_due(now)
        if self._live():
            out.append(self._send(ev.event("transport.dtmf.received", event=digit), Audience.SIDEBANDS))
        return out

    @_entry("transport")
    def leg_progress(self, state: TransportState, now: float, error: dict[str, Any] | None = None,
                  close_reason: CloseReason = "connection_lost") -> list[Output]:
        """An outbound leg's progress: ``ringing`` / ``answered`` / ``failed`` (with its ``call_error``)."""
        out = self._timers.run_due(now)
        if self.closed:
            return out
        out.append(self._send(ev.transport(state, self.id, error), Audience.SIDEBANDS))
        if state == "failed":
            if self.resource is None and self._config is not None:  # session.closed carries a resource
                expires_at = int(self._wall(now)) + self.settings.expires_after_s
                self.resource = resource.build(self.id, self._config, expires_at, self.transport)
                self._t0 = now
            out.extend(self._close(close_reason, now, None))
        return out

    @_entry("close")
    def close(self, reason: CloseReason, now: float) -> list[Output]:
        """The end from outside: ``remote_hangup`` (caller BYE), ``close_requested`` (REST hangup),
        ``connection_lost``, ``expired``, ``content``."""
        out = self._timers.run_due(now)
        out.extend(self._close(reason, now, None))
        return out

    @_entry("timer")
    def advance(self, now: float) -> list[Output]:
        """Run the timers due by ``now``: reply chunks, fixture ends, usage, expiry."""
        return self._timers.run_due(now)

    def next_deadline(self) -> float | None:
        return None if self.closed else self._timers.next_due()

    # ---- lifecycle ------------------------------------------------------------------------------

    def _live(self) -> bool:
        return self.resource is not None and not self.closed

    def _hears(self) -> bool:
        """Whether the model hears the caller now: not while muted or while a fixture plays."""
        return self._live() and not self.muted and self._fixture is None

    def _start(self, config: dict[str, Any], now: float, client_event_id: str | None) -> list[Output]:
        self._t0 = now
        expires_at = int(self._wall(now)) + self.settings.expires_after_s
        self.resource = resource.build(self.id, config, expires_at, self.transport)
        self._behaviour = Behaviour(self.script, self._audio_loader, resource.voice(self.resource),
                                    media_rate=self._media_rate if self.transport == "sip" else RATE)
        if self.fork_of is not None:  # the stored session's conversation goes on here
            self._behaviour.continue_from(self.fork_of.used_turns)
            self._decision_items = {k: dict(v) for k, v in self.fork_of.decision_items}
        out = [self._send(ev.session_event("session.started", self.resource, client_event_id), Audience.ALL)]
        self._timers.at(now + self.settings.usage_period_s, self._usage_tick)
        self._timers.at(now + self.settings.expires_after_s, self._expire)
        if self._ends_after is not None:
            self._timers.at(now + self._ends_after.after_s, partial(self._self_end, self._ends_after))
        if self.settings.greets_first:
            out.extend(self._speak(self._behaviour.greeting(), now))
        return out

    def _seconds(self, now: float) -> float:
        """Billable seconds so far: whole seconds since the start."""
        return float(max(0, math.floor(now - self._t0 + 1e-9)))

    def _usage_tick(self, now: float) -> list[Output]:
        if not self._live():
            return []
        self._timers.at(now + self.settings.usage_period_s, self._usage_tick)
        return [self._send(ev.usage_updated(self._seconds(now)), Audience.ALL)]

    def _expire(self, now: float) -> list[Output]:
        return self._close("expired", now, None)

    def _self_end(self, end: SelfEnd, now: float) -> list[Output]:
        if self.closed:
            return []
        fired: list[Output] = []
        if end.fault is not None:
            fired.append(FaultFired(end.fault, f"session closed {end.reason} {end.after_s:g} s after its start"))
        return fired + self._close(end.reason, now, None)

    def _close(self, reason: CloseReason, now: float, client_event_id: str | None) -> list[Output]:
        if self.closed:
            return []
        out = self._interrupt("closed", now)
        if self._fixture is not None:
            self._fixture = None  # cancelled: no fixture.played
            out.append(ClearMedia("closed"))
        self.closed = True
        self.close_reason = reason
        self._timers.clear()
        if self.resource is not None:
            out.append(self._send(ev.session_closed(reason, self.resource, self._seconds(now), client_event_id),
                                  Audience.ALL))
        out.extend(Close(c.id, 1000, "session closed", c.graceful) for c in self._conns.all())
        out.append(Finished(reason))
        return out

    # ---- client frames ---------------------------------------------------------------------------

    def _receive(self, conn_id: ConnId, text: str | bytes, now: float) -> list[Output]:
        conn = self._conns.get(conn_id)
        if conn is None:
            raise ValueError(f"frame from unknown connection {conn_id!r}")

        def refuse(code: str, message: str, param: str | None = None, cid: str | None = None) -> list[Output]:
            err = ev.error(code, message, param=param, client_event_id=cid)
            return [self._send(err, Audience.SENDER, conn_id)]

        if isinstance(text, (bytes, bytearray)):
            return refuse("invalid_event", "Expected a text WebSocket message; binary frames are not supported.")
        try:
            msg = wire_json.loads(text)
        except wire_json.WireJSONError as exc:
            return refuse("invalid_json", f"Invalid event: failed to parse JSON value. {exc}")
        if not isinstance(msg, dict):
            return refuse("invalid_event", "Invalid event: expected a JSON object.")
        cid = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
        lone = wire_json.lone_surrogate_in(text, msg)
        if lone is not None:  # kept, it would break every answer that shows it (the journal, an echoed item)
            return refuse("invalid_value", wire_json.lone_surrogate_message(lone), lone or None,
                          cid if lone != "event_id" else None)
        if "type" not in msg:
            return refuse("missing_required_parameter", "Missing required parameter: 'type'.", "type", cid)
        etype = msg["type"]
        wire: Wire = "fork" if conn.kind == "primary" and self.fork_of is not None else conn.kind
        if not isinstance(etype, str) or etype not in client_types(wire):
            if isinstance(etype, str) and other_kind_takes(etype, wire):
                return self._refuse(conn_id, Refusal.NOT_ON_THIS_CONNECTION, f"'{etype}' cannot be sent on a "
                                    f"{wire} connection.", "type", cid)
            err = unknown_type(etype, wire)
            return refuse(err.code, err.message, err.param, cid)
        if wire == "fork" and etype == "session.start" and self.resource is None:
            bad = start_problem(msg.get("session"))
            if bad is not None:
                return self._refuse(conn_id, bad.refusal, bad.message, bad.param, cid)
        if etype == "session.update" and isinstance(msg.get("session"), dict):
            immutable = resource.immutable_field(msg["session"])
            if immutable is not None:
                return self._refuse(conn_id, immutable.refusal, immutable.message, immutable.param, cid)
        if etype in _APPENDS and not self.settings.require_delegation_id:
            msg.setdefault("delegation_id", None)
        checked = check_event(msg, wire, strict=self.settings.strict_unknown_fields)
        if checked.error is not None:
            err = checked.error
            return refuse(err.code, err.message, err.param, cid)
        if self.resource is None and etype != "session.start":
            return self._refuse(conn_id, Refusal.NOT_STARTED, "The session has not started: send session.start "
                                "and wait for session.started before other commands.", None, cid)
        handler = getattr(self, "_on_" + etype.replace(".", "_"))
        result: list[Output] = handler(conn, checked.event, now, cid)
        return result

    def _bug(self, where: str, exc: BaseException, sender: ConnId | None) -> list[Output]:
        tb = "".join(traceback.format_exception(exc))[-8000:]  # bounded, as the Realtime core's
        bug = MockBug(where, repr(exc)[:500], tb)
        audience = Audience.SENDER if sender is not None else Audience.ALL
        return [bug, self._send(ev.server_error(), audience, sender)]
