"""The connections attached to one Live session, who gets each event, and the replay on attach.

Rules:

- A session has at most one primary connection (the WebSocket that sent ``session.start``) and any
  number of sidebands (``/attach``); ids are the adapter's.
- An audience resolves to connection ids when the event is made: ``ALL`` every connection,
  ``SIDEBANDS`` the sidebands, ``PRIMARY`` the primary, ``SENDER`` the one that sent the command.
- Events for ``ALL`` or ``SIDEBANDS`` are remembered for the replay a new sideband gets
  (:class:`~.settings.LiveSettings`: the last ``attach_replay_events`` of them, after the
  session's ``session.started`` when ``attach_replay_started``), except reflected audio: the
  replay is a short recent history, never a media buffer.
- A sideband closes with a handshake when it asked (``graceful_close``) or, when it did not say,
  as ``graceful_close_default`` says. The primary always closes with a handshake.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .outputs import Audience, ConnId, Event
from .settings import LiveSettings
from .validation import ConnKind

_UNREPLAYED = ("session.input_audio.append", "session.output_audio.delta")


@dataclass(frozen=True)
class Connection:
    id: ConnId
    kind: ConnKind
    graceful: bool


class Connections:
    def __init__(self, settings: LiveSettings) -> None:
        self._settings = settings
        self._conns: dict[ConnId, Connection] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=settings.attach_replay_events or None)
        self._started: dict[str, Any] | None = None

    def add(self, conn: ConnId, kind: ConnKind, graceful_close: bool | None) -> Connection:
        if conn in self._conns:
            raise ValueError(f"connection {conn!r} is already attached")
        if kind == "primary" and self.primary is not None:
            raise ValueError("a Live session has one primary connection")
        graceful = True if kind == "primary" else (
            self._settings.graceful_close_default if graceful_close is None else graceful_close)
        self._conns[conn] = Connection(conn, kind, graceful)
        return self._conns[conn]

    def remove(self, conn: ConnId) -> None:
        self._conns.pop(conn, None)

    def get(self, conn: ConnId) -> Connection | None:
        return self._conns.get(conn)

    def all(self) -> list[Connection]:
        return list(self._conns.values())

    @property
    def primary(self) -> ConnId | None:
        return next((c.id for c in self._conns.values() if c.kind == "primary"), None)

    @property
    def has_sidebands(self) -> bool:
        return any(c.kind == "sideband" for c in self._conns.values())

    def event(self, body: dict[str, Any], audience: Audience, sender: ConnId | None = None) -> Event:
        """The event with its recipients as of now; remembered for replays when sidebands may see it."""
        if audience is Audience.SENDER:
            to: tuple[ConnId, ...] = (sender,) if sender is not None and sender in self._conns else ()
        else:
            to = tuple(c.id for c in self._conns.values() if audience is Audience.ALL
                       or (audience is Audience.SIDEBANDS and c.kind == "sideband")
                       or (audience is Audience.PRIMARY and c.kind == "primary"))
        if audience in (Audience.ALL, Audience.SIDEBANDS) and body.get("type") not in _UNREPLAYED:
            if body.get("type") == "session.started":
                self._started = body
            elif self._settings.attach_replay_events:
                self._recent.append(body)
        return Event(body, audience, to)

    def replay(self) -> list[dict[str, Any]]:
        """What a sideband attaching now is sent first (the same events, ids included)."""
        out = [self._started] if self._started is not None and self._settings.attach_replay_started else []
        return out + list(self._recent)
