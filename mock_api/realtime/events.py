"""Server event builders: every event the session core emits is made here.

Keeping the shapes in one place makes the SDK-parse guarantee (every event validates as
``RealtimeServerEvent``) a property of a small module rather than of scattered dicts.
"""

from __future__ import annotations

from typing import Any

from .. import ids
from .validation import ParamError

CLIENT_EVENT_TYPES = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "session.input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)
"""The list the real server names in its ``invalid_value`` message for ``type``."""

SIP_ONLY_CLIENT_EVENTS = ("output_audio_buffer.clear",)


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": ids.server_id("event"), **fields}


def obfuscation() -> str:
    """GA deltas carry random padding; drawn from the current id source so a seeded session replays."""
    return ids.obfuscation()


def delta(type_: str, **fields: Any) -> dict[str, Any]:
    return event(type_, **fields, obfuscation=obfuscation())


def error(
    code: str | None,
    message: str,
    *,
    param: str | None = None,
    event_id: str | None = None,
    type_: str = "invalid_request_error",
) -> dict[str, Any]:
    return event("error", error={"type": type_, "code": code, "message": message, "param": param,
                                 "event_id": event_id})


def param_error(err: ParamError, event_id: str | None) -> dict[str, Any]:
    return error(err.code, err.message, param=err.param, event_id=event_id)
