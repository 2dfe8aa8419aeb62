"""What a session core hands its adapter: server events and the side outputs next to them.

Rules:

- Every entry point of the core returns a list of :data:`Output`, in the order the adapter must act
  on them. Server events are plain dicts (each parses as the SDK's ``RealtimeServerEvent``); the
  rest are for the media path (:class:`AudioOut`, :class:`ClearAudio`), the socket (:class:`Close`)
  or the journal (:class:`LimitHit`, :class:`Heard`, :class:`MockBug`).
- Outputs are frozen: once handed out, nothing in the core changes them. Items inside events are
  copies (:func:`public_item`) for the same reason.
- Random-looking fields (``event_id``, delta ``obfuscation``) come from :mod:`mock_api.ids`'s
  current source, which the session sets, so a seeded session replays byte for byte.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from ..journal_entries import ModelRetiring
from ..limits import Hit
from ..recognisers import Recognition
from . import events as ev
from .turn_plan import Assignment


@dataclass(frozen=True)
class AudioOut:
    """Reply audio for the media path (SIP sessions): PCM16 at ``rate``.

    ``corrupt`` asks the media path to garble it the way the forum's static-audio
    failures did (PCM16 sent as G.711); WebSocket events stay normal.
    """

    pcm: bytes
    rate: int
    response_id: str
    item_id: str
    corrupt: bool = False
    voice: str | None = None  # the voice the response speaks in (fixed at response.created)


@dataclass(frozen=True)
class ClearAudio:
    """Drop reply audio queued on the media path (barge-in, output_audio_buffer.clear)."""

    response_id: str | None


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class LimitHit:
    """A response refused over the tokens-per-minute budget, for the adapter to journal (``limits.hit``)."""

    hit: Hit
    response_id: str


@dataclass(frozen=True)
class Heard:
    """What the caller said in a committed audio item and who decided it, for the adapter to
    journal (``audio.heard``): the script, a fingerprint match, a plug-in, or nobody (with why)."""

    item_id: str
    recognition: Recognition
    turn: Assignment | None = None  # the script turn that answers it (turn_plan's rules)

    def journal(self) -> dict[str, Any]:
        script = {"script": self.turn.journal()} if self.turn is not None else {}
        return {"item_id": self.item_id, **self.recognition.journal(), **script}


@dataclass(frozen=True)
class MockBug:
    """An exception inside the mock itself, not a scripted fault. The client gets the real
    ``server_error``; the adapter journals this as ``mock.bug`` (with the traceback), and runs and the
    pytest plugin fail on it, so nobody mistakes a bug of ours for one of their app."""

    where: str  # which entry point: receive, audio, timer
    error: str
    traceback: str

    def journal(self) -> dict[str, Any]:
        return {"where": self.where, "error": self.error, "traceback": self.traceback}


Output = dict[str, Any] | AudioOut | ClearAudio | Close | LimitHit | Heard | MockBug | ModelRetiring

SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def mock_bug(where: str, exc: BaseException) -> list[Output]:
    """What a session answers when its own code raised: the bug for the journal, the API's error for the client."""
    tb = "".join(traceback.format_exception(exc))[-8000:]  # bounded: the journal keeps every one
    return [MockBug(where, repr(exc)[:500], tb), ev.error(None, SERVER_ERROR_MESSAGE, type_="server_error")]


def public_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as GA events show it: no audio bytes.

    A copy two levels deep (the item and its content parts) is enough: the session only ever
    mutates an item's own keys and its parts' keys (status, content, arguments, transcript),
    never anything nested deeper, so the event cannot change after it was sent.
    """
    out = dict(item)
    content = item.get("content")
    if isinstance(content, list):
        out["content"] = [{k: v for k, v in part.items() if k != "audio"} if isinstance(part, dict) else part
                          for part in content]
    return out
