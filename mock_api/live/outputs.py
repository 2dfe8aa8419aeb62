"""What a Live session core hands its adapter: server events with their recipients, and side outputs.

Rules:

- Every entry point returns a list of :data:`Output`, in the order the adapter must act on them.
- A server event is an :class:`Event`: the event (a plain dict that parses as the SDK's Live server
  event union for every connection it goes to) with its :class:`Audience`, the rule that chose the
  recipients, and ``to``, the connection ids that rule gave when the event was made. The adapter
  sends to ``to`` and nobody else; an event made while no connection matched goes to nobody (a
  sideband attaching later may get it in its replay).
- The rest are for the media path (:class:`MediaAudio`, :class:`ClearMedia`, :class:`SendDtmf`),
  the adapter's own hearing (:class:`InputAudio`), the sockets (:class:`Close`), the transport
  (:class:`Finished`) and the journal (:class:`~mock_api.realtime.outputs.MockBug`,
  :class:`FaultFired`).
- Outputs are frozen; nothing in the core changes an event once it is handed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from ..realtime.outputs import MockBug

__all__ = [
    "Audience",
    "ClearMedia",
    "Close",
    "Event",
    "FaultFired",
    "Finished",
    "InputAudio",
    "MediaAudio",
    "MockBug",
    "Output",
    "SendDtmf",
]

ConnId = str


class Audience(StrEnum):
    """Which connections an event is for."""

    ALL = "all"  # the primary and every sideband
    SIDEBANDS = "sidebands"  # sidebands only (reflected audio, transport.*)
    PRIMARY = "primary"  # the primary WebSocket only (its output audio, in its own format)
    SENDER = "sender"  # the one connection whose command this answers (errors, decision results)


@dataclass(frozen=True)
class Event:
    event: dict[str, Any]
    audience: Audience
    to: tuple[ConnId, ...]


@dataclass(frozen=True)
class MediaAudio:
    """Audio for the caller over the media path (SIP sessions): mono PCM16 at ``rate``.

    ``source`` says whether the model said it or the app's fixture is playing.
    """

    pcm: bytes
    rate: int
    source: Literal["model", "fixture"]
    voice: str | None = None


@dataclass(frozen=True)
class ClearMedia:
    """Drop model audio still queued on the media path (barge-in, a fixture starting, the end)."""

    reason: Literal["barge_in", "fixture", "closed"]


@dataclass(frozen=True)
class SendDtmf:
    """Send one DTMF key to the caller (RFC 4733 on the SIP leg)."""

    digit: str


@dataclass(frozen=True)
class InputAudio:
    """Caller audio from the primary WebSocket, decoded to PCM16, for the adapter's turn detection and
    recogniser (their result comes back as :meth:`~.session.LiveSession.speech`). Not given while the model
    input is muted or a fixture plays: the model hears silence then."""

    pcm: bytes
    rate: int


@dataclass(frozen=True)
class Close:
    """Close one connection; ``graceful``: with a WebSocket closing handshake, else drop the socket."""

    conn: ConnId
    code: int
    reason: str
    graceful: bool


@dataclass(frozen=True)
class Finished:
    """The session is over (after its ``session.closed``): the adapter ends the transport, e.g. a SIP BYE
    unless the caller already hung up (``reason`` ``remote_hangup``)."""

    reason: str


@dataclass(frozen=True)
class FaultFired:
    """A session fault acted (for the journal's ``fault.fired``), just before what it caused."""

    fault: str
    detail: str


Output = Event | MediaAudio | ClearMedia | SendDtmf | InputAudio | Close | Finished | MockBug | FaultFired
