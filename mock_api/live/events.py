"""Live server event builders: every event the Live session core emits is made here.

Rules:

- Shapes follow the SDK's Live server event models (``openai.types.live``): ``event_id`` is
  ``event_`` + 21 base62 characters from the current id source, except on the two events that have
  none (reflected ``session.input_audio.append`` and ``session.output_audio.delta``).
- ``client_event_id`` is present only when the command that caused the event carried an
  ``event_id``; an error repeats it inside ``error`` too.
- Timeline fields (``start_ms``, ``end_ms``) are whole milliseconds since the session started.
"""

from __future__ import annotations

from typing import Any

from .. import ids
from ..realtime.validation import ParamError

SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def event(type_: str, client_event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    out = {"type": type_, "event_id": ids.server_id("event"), **fields}
    if client_event_id is not None:
        out["client_event_id"] = client_event_id
    return out


def error(code: str, message: str, *, param: str | None = None, client_event_id: str | None = None,
          type_: str = "invalid_request_error") -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "code": code, "message": message, "param": param}
    if client_event_id is not None:
        body["client_event_id"] = client_event_id
    return event("error", client_event_id, error=body)


def param_error(err: ParamError, client_event_id: str | None) -> dict[str, Any]:
    return error(err.code, err.message, param=err.param, client_event_id=client_event_id)


def server_error() -> dict[str, Any]:
    """What the client sees when the mock itself failed (the journal gets the MockBug)."""
    return error("server_error", SERVER_ERROR_MESSAGE, type_="server_error")


def session_event(type_: str, resource: dict[str, Any], client_event_id: str | None) -> dict[str, Any]:
    """``session.started`` / ``session.updated``: the full resource."""
    return event(type_, client_event_id, session=resource)


def session_closed(reason: str, resource: dict[str, Any], seconds: float,
                   client_event_id: str | None) -> dict[str, Any]:
    return event("session.closed", client_event_id, reason=reason, session=resource, usage={"seconds": seconds})


def usage_updated(seconds: float) -> dict[str, Any]:
    return event("session.usage.updated", usage={"seconds": seconds})


def transcript(kind: str, delta: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    """``session.input_transcript.delta`` (kind ``input``) or ``session.output_transcript.delta``."""
    return event(f"session.{kind}_transcript.delta", delta=delta, start_ms=start_ms, end_ms=end_ms)


def output_audio(b64: str, span: tuple[int, int] | None) -> dict[str, Any]:
    """Model audio: timestamps on sidebands (reflected, PCM16 24 kHz), none on the primary."""
    out: dict[str, Any] = {"type": "session.output_audio.delta", "delta": b64}
    if span is not None:
        out["start_ms"], out["end_ms"] = span
    return out


def reflected_input(b64: str) -> dict[str, Any]:
    """Caller audio reflected to sidebands: the client command's shape, no event_id."""
    return {"type": "session.input_audio.append", "audio": b64}


def appended(kind: str, at_ms: int, client_event_id: str | None) -> dict[str, Any]:
    """``session.instructions|thinking|commentary.appended``: accepted into the timeline at ``at_ms``."""
    return event(f"session.{kind}.appended", client_event_id, start_ms=at_ms, end_ms=at_ms)


def decision_event(decision: dict[str, Any], delegation_id: str | None = None) -> dict[str, Any]:
    """A decision's result (a decision.create's, or a delegation's): no client_event_id field exists on it."""
    return event("decision.event", event={"type": "decision.completed", "decision": decision},
                 delegation_id=delegation_id)


def transport(state: str, session_id: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """``transport.ringing|answered|failed`` of an outbound leg: no client_event_id field exists on these."""
    out = event(f"transport.{state}", session_id=session_id)
    if error is not None:
        out["error"] = error
    return out
