"""Live client events checked whole against the SDK's own Live client event types.

Rules:

- Which ``type`` values a connection takes, and the type each is checked against, are read from the
  SDK's unions: ``ClientEventParam`` / ``ClientEvent`` for the primary WebSocket,
  ``ConnectClientEventParam`` / ``ConnectClientEvent`` for a sideband, ``ForkClientEventParam`` /
  ``ForkClientEvent`` for a fork's WebSocket (its ``session.start`` takes a ``ForkSessionConfig``).
  No list is kept here.
- An event is checked by the Realtime validator's walk over the SDK TypedDict (unknown parameters
  first, then required keys, JSON types and enum members, with the service's error codes), then
  parsed by a pydantic ``TypeAdapter`` over the SDK's model union as a final guard.
- With ``strict`` off, unknown parameters are dropped (one at a time, as the walk finds them) instead
  of refused; the rest of the event is still checked.
- Audio fixtures are checked whole before anything changes: strict base64, whole PCM16 samples,
  not empty, at most :data:`FIXTURE_MAX_MS` of 24 kHz audio.
"""

from __future__ import annotations

import binascii
import copy
import re
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pydantic
import typing_extensions
from openai.types.live import (
    ClientEvent,
    ClientEventParam,
    ConnectClientEvent,
    ConnectClientEventParam,
    ForkClientEvent,
    ForkClientEventParam,
)

from .. import audio
from ..realtime.validation import ParamError, supported_values, validate_payload
from .refusals import Refusal

ConnKind = Literal["primary", "sideband"]  # a session's connections: its one primary (a fork's too) or a sideband
Wire = Literal["primary", "sideband", "fork"]  # the SDK event union a connection speaks

FIXTURE_RATE = 24000
FIXTURE_MAX_MS = 30_000
DTMF_KEYS = frozenset("0123456789ABCD*#")

_UNIONS: dict[Wire, tuple[Any, Any]] = {
    "primary": (ClientEventParam, ClientEvent),
    "sideband": (ConnectClientEventParam, ConnectClientEvent),
    "fork": (ForkClientEventParam, ForkClientEvent),
}


@cache
def _params(conn: Wire) -> dict[str, Any]:
    """``type`` value → the SDK TypedDict for it, in the union's order."""
    out: dict[str, Any] = {}
    for member in typing.get_args(_UNIONS[conn][0]):
        hints = typing_extensions.get_type_hints(member, include_extras=True)
        literal = _strip(hints["type"])
        for value in typing.get_args(literal):
            out[value] = member
    return out


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) in (typing.Annotated, typing.Required, typing.NotRequired):
        tp = typing.get_args(tp)[0]
    return tp


@cache
def _adapter(conn: Wire) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(_UNIONS[conn][1])


def client_types(conn: Wire) -> tuple[str, ...]:
    return tuple(_params(conn))


def other_kind_takes(etype: str, conn: Wire) -> bool:
    """Whether a command this connection does not take is one another kind of connection does."""
    return any(etype in _params(other) for other in _UNIONS if other != conn)


def unknown_type(etype: Any, conn: Wire) -> ParamError:
    return ParamError("invalid_value", f"Invalid value: '{etype}'. Supported values are: "
                      f"{supported_values(client_types(conn))}.", "type")


@dataclass(frozen=True)
class Checked:
    """A client event after its check: the event as the session will read it, or why it was refused."""

    event: dict[str, Any]
    error: ParamError | None


def check_event(msg: dict[str, Any], conn: Wire, *, strict: bool) -> Checked:
    """Check ``msg`` (whose ``type`` this connection takes) against its SDK type."""
    tp = _params(conn)[msg["type"]]
    event = msg
    for _ in range(256):  # each pass drops one unknown parameter; an event has few
        err = validate_payload(tp, event, "")
        if err is None or strict or err.code != "unknown_parameter" or err.param is None:
            break
        pruned = _without(event, err.param)
        if pruned is None:
            break
        event = pruned
    if err is not None:
        return Checked(msg, err)
    try:
        _adapter(conn).validate_python(event)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"][1:]) or None  # loc[0] is the union member
        return Checked(msg, ParamError("invalid_value", f"Invalid value for '{path}': {first['msg']}.", path))
    return Checked(event, None)


_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _without(event: dict[str, Any], path: str) -> dict[str, Any] | None:
    """A copy of ``event`` without the parameter at ``path`` (``a.b[0].c``), or None if it is not there."""
    steps: list[str | int] = [int(i) if i else k for k, i in _STEP.findall(path)]
    out = copy.deepcopy(event)
    node: Any = out
    for step in steps[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    if not isinstance(node, dict) or steps[-1] not in node:
        return None
    del node[steps[-1]]
    return out


def fixture_pcm(b64: str) -> bytes | tuple[Refusal, str]:
    """The fixture's PCM16 (24 kHz), or the refusal and message for audio that cannot play."""
    try:
        pcm = audio.b64decode(b64)
    except (binascii.Error, ValueError):
        return Refusal.BAD_AUDIO, "Invalid 'audio': expected base64-encoded raw PCM16 audio."
    if not pcm or len(pcm) % 2:
        return Refusal.BAD_AUDIO, "Invalid 'audio': expected a whole number of mono PCM16 samples at 24 kHz."
    ms = audio.duration_ms(pcm, FIXTURE_RATE)
    if ms > FIXTURE_MAX_MS:
        return Refusal.FIXTURE_TOO_LONG, (f"Invalid 'audio': the fixture is {ms / 1000:.2f} s long; at most "
                                          f"{FIXTURE_MAX_MS // 1000} s of 24 kHz audio can play.")
    return pcm
