"""Forking a stored Live session, sans-I/O: what a fork inherits and what its ``session.start`` may change.

A fork (``GET /v1/live/sessions/{session_id}/fork``) is a new session that continues a stored one. Rules:

1. Only a session started with ``store: true`` can be forked; :func:`source_of` snapshots what it has so far
   (running or ended): its resolved resource, its script and the script turns already used, its Decision
   items. A session that was not stored has no source.
2. The fork's ``session.start`` carries a ``ForkSessionConfig`` (may be ``{}``). Before its type check (so the
   answer does not depend on ``strict_unknown_fields``), a ``model`` is refused (the model is inherited,
   :data:`~.refusals.Refusal.FORK_MODEL`) and so is ``client`` (frontend permissions exist only for WebRTC
   forks, :data:`~.refusals.Refusal.FORK_CLIENT`).
3. ``delegation`` (type ``responses``, the SDK type says so) is taken only when the stored session delegates
   to Responses (else :data:`~.refusals.Refusal.DELEGATION_TYPE_CHANGE`), and merges as a ``session.update``'s
   does; ``store`` replaces the stored value; omitted settings are inherited.
4. ``audio.format`` is the fork socket's format. Without one the fork keeps the stored session's WebSocket
   format when ``LiveSettings.fork_inherits_audio_format`` says so and the stored session had one (a SIP
   session has none), else PCM16 24 kHz.
5. The fork starts with a new ``live_`` id, a new ``expires_at`` and its own timeline from 0; its model,
   voice, instructions, input, triggers and conversation (script position, Decision items) are the source's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..realtime.script import Script
from . import resource
from .refusals import Refusal
from .resource import Transport
from .settings import LiveSettings

_PER_SESSION = ("id", "status", "expires_at")  # resource fields a fork gets anew


@dataclass(frozen=True)
class ForkSource:
    """A stored session as a fork finds it (rule 1); never changed once taken."""

    session_id: str
    resource: dict[str, Any]
    transport: Transport
    script: Script
    used_turns: frozenset[int]
    decision_items: tuple[tuple[str, dict[str, Any]], ...]


def source_of(session_id: str, res: dict[str, Any] | None, transport: Transport, script: Script,
              used_turns: set[int], decision_items: dict[str, dict[str, Any]]) -> ForkSource | None:
    """Rule 1: the snapshot of a started, stored session, or None."""
    if res is None or res.get("store") is not True:
        return None
    return ForkSource(session_id, copy.deepcopy(res), transport, script, frozenset(used_turns),
                      tuple((k, copy.deepcopy(v)) for k, v in decision_items.items()))


@dataclass(frozen=True)
class Refused:
    refusal: Refusal
    message: str
    param: str


def start_problem(start: Any) -> Refused | None:
    """Rule 2, on the raw ``session`` of a fork's ``session.start`` (before its type check)."""
    if not isinstance(start, dict):
        return None  # the type check answers it
    if "model" in start:
        return Refused(Refusal.FORK_MODEL, "Invalid 'session.model': a fork inherits the stored session's model; "
                       "omit 'model'.", "session.model")
    if "client" in start:
        return Refused(Refusal.FORK_CLIENT, "Invalid 'session.client': client permissions are supported only for "
                       "WebRTC forks.", "session.client")
    return None


def config_for(source: ForkSource, start: dict[str, Any], settings: LiveSettings) -> dict[str, Any] | Refused:
    """Rules 3-5: the fork's startup config (a type-checked ``ForkSessionConfig`` over the source's resource)."""
    base = {k: v for k, v in copy.deepcopy(source.resource).items() if k not in _PER_SESSION}
    if start.get("delegation") is not None:
        merged = resource.updated(source.resource, {"delegation": start["delegation"]})
        if isinstance(merged, resource.Refused):
            return Refused(merged.refusal, merged.message, merged.param)
        base["delegation"] = merged["delegation"]
    if start.get("store") is not None:
        base["store"] = start["store"]
    audio = base.setdefault("audio", {})
    wanted = (start.get("audio") or {}).get("format")
    if wanted is not None:
        audio["format"] = copy.deepcopy(wanted)
    elif not (settings.fork_inherits_audio_format and source.transport == "websocket"):
        audio.pop("format", None)  # the default format (resource.build)
    return base
