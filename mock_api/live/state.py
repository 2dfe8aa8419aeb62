"""The state one Live session keeps, and the helpers its parts share.

:class:`~.session.LiveSession` is assembled from parts: client commands (:mod:`.commands`) and the
model's speech and audio fixtures (:mod:`.playback`); the facade (:mod:`.session`) owns the
lifecycle, the caller side and the clock. This module declares what they share.

Rules:

- Pure: time comes in only as ``now`` (monotonic seconds) and the wall time at construction; ids
  only from the session's :class:`~mock_api.ids.IdSource`; reply audio files only through the
  injected loader.
- The session timeline is whole milliseconds since the session started (``session.started``).
- Transcript deltas, of the caller and of the model alike, go out with non-decreasing ``start_ms``
  (:meth:`LiveState._span` raises an earlier start to the last one): the SDK's transcript grouper
  reads a step back as a timestamp reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..ids import IdSource
from ..realtime.script import Script, Turn
from . import events as ev
from .behaviour import AudioLoader, Behaviour, Reply
from .connections import Connections
from .forks import ForkSource
from .outputs import Audience, ConnId, Output
from .refusals import Refusal
from .resource import Transport
from .responses import FunctionCall
from .settings import LiveSettings
from .timers import Timers

CloseReason = Literal["close_requested", "expired", "content", "remote_hangup", "connection_lost"]


@dataclass(frozen=True)
class SelfEnd:
    """The service ending the session by itself ``after_s`` after its start, with ``reason`` (the
    ``live_session_end`` fault: ``fault`` names it for the journal)."""

    after_s: float
    reason: CloseReason
    fault: str | None = None


@dataclass(eq=False)
class Speaking:
    """A reply in progress: it plays from ``start`` to ``end`` on the session clock."""

    reply: Reply
    start: float
    end: float
    cut: bool = False  # a barge-in, a fixture or the end stopped it: its later chunks do nothing


@dataclass(eq=False)
class Delegation:
    """One piece of delegated work and where it stands (:mod:`.delegation`)."""

    id: str
    target: str
    turn: Turn
    acknowledge: bool = True  # the automatic acknowledgement is still to be said
    calls: tuple[FunctionCall, ...] = ()  # function calls its nested response made
    answered: bool = False  # its result was said (Responses) or the app answered it (client)


@dataclass(eq=False)
class Fixture:
    """An app's audio fixture playing until ``end``."""

    client_event_id: str | None
    end: float


class LiveState:
    ids: IdSource
    settings: LiveSettings
    script: Script
    transport: Transport
    id: str
    resource: dict[str, Any] | None  # None until the session starts
    closed: bool
    muted: bool
    _audio_loader: AudioLoader
    _behaviour: Behaviour | None
    _conns: Connections
    _timers: Timers
    _t0: float  # session clock at the start (timeline 0 ms)
    _wall0: float
    _mono0: float
    _replies: list[Speaking]  # replies due or playing, in the order they play
    _fixture: Fixture | None
    _last_transcript_ms: int
    _decision_ids: set[str]
    _decision_items: dict[str, dict[str, Any]]
    _delegations: dict[str, Delegation]  # by id, in the order they were made (:mod:`.delegation`)
    _response_inputs: list[dict[str, Any]]  # response.item.create items the next response.create uses up
    _ends_after: SelfEnd | None
    fork_of: ForkSource | None  # the stored session a fork continues (:mod:`.forks`)

    def _ms(self, now: float) -> int:
        return max(0, round((now - self._t0) * 1000))

    def _wall(self, now: float) -> float:
        return self._wall0 + (now - self._mono0)

    def _span(self, start_ms: float, end_ms: float) -> tuple[int, int]:
        start = max(round(start_ms), self._last_transcript_ms)
        self._last_transcript_ms = start
        return start, max(round(end_ms), start)

    def _send(self, body: dict[str, Any], audience: Audience, sender: ConnId | None = None) -> Output:
        return self._conns.event(body, audience, sender)

    def _refuse(self, sender: ConnId, refusal: Refusal, message: str, param: str | None,
                client_event_id: str | None) -> list[Output]:
        err = ev.error(self.settings.code(refusal), message, param=param, client_event_id=client_event_id)
        return [self._send(err, Audience.SENDER, sender)]
