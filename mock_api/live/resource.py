"""The Live session resource (``session`` in session.started/updated/closed) and what may change in it.

Rules:

- The resource holds the fields of the SDK's ``SessionResource`` only: ``id``, ``model``,
  ``status`` (always ``"active"``, even in the last snapshot), ``expires_at`` (unix seconds), and the
  startup config with the server's defaults filled in: voice ``marin``, delegation
  ``{"type": "client", "acknowledgement_delay_ms": 0}`` (400 for decisions), ``store`` false, and on
  a primary WebSocket the audio format (PCM16 24 kHz unless the start said otherwise). SIP sessions
  carry no audio format: their media format is negotiated.
- ``session.update`` changes ``delegation`` and ``triggers`` only. Any other startup field named in an
  update is refused as immutable. The delegation type cannot change (no delegation counts as
  ``client``); sub-settings omitted from the update keep their values, one level down included
  (``responses.tools`` replaces the tools, ``responses`` without ``tools`` keeps them). ``triggers``
  replaces the list; ``[]`` disables them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from openai.types.live import SessionConfig, SessionResource

from .refusals import Refusal

Transport = Literal["sip", "websocket"]

DEFAULT_VOICE = "marin"
DEFAULT_FORMAT = {"type": "audio/pcm", "rate": 24000}
UPDATABLE = ("delegation", "triggers")
_ACK_DELAY_MS = {"client": 0, "responses": 0, "decisions": 400}


def build(session_id: str, config: dict[str, Any], expires_at: int, transport: Transport) -> dict[str, Any]:
    """The resolved resource for a started session, from the accept body's / session.start's ``session``."""
    res: dict[str, Any] = {"id": session_id, "model": config["model"], "status": "active", "expires_at": expires_at}
    for key in SessionResource.model_fields:
        if key not in res and config.get(key) is not None:
            res[key] = copy.deepcopy(config[key])
    audio = res.setdefault("audio", {})
    audio.setdefault("output", {}).setdefault("voice", DEFAULT_VOICE)
    if transport == "websocket":
        audio.setdefault("format", dict(DEFAULT_FORMAT))
    else:
        audio.pop("format", None)
    res["delegation"] = _with_default_delay(res.get("delegation") or {"type": "client"})
    res.setdefault("store", False)
    return res


def _with_default_delay(delegation: dict[str, Any]) -> dict[str, Any]:
    out = dict(delegation)
    out.setdefault("acknowledgement_delay_ms", _ACK_DELAY_MS.get(out["type"], 0))
    return out


def delegation_type(res: dict[str, Any]) -> str:
    return str((res.get("delegation") or {}).get("type", "client"))


def voice(res: dict[str, Any]) -> Any:
    return ((res.get("audio") or {}).get("output") or {}).get("voice", DEFAULT_VOICE)


def output_format(res: dict[str, Any]) -> dict[str, Any]:
    """The primary WebSocket's audio format (SIP sessions have none: PCM16 24 kHz is assumed)."""
    return dict((res.get("audio") or {}).get("format") or DEFAULT_FORMAT)


@dataclass(frozen=True)
class Refused:
    refusal: Refusal
    message: str
    param: str


def immutable_field(update: dict[str, Any]) -> Refused | None:
    """A startup field named in a session.update (checked before the update's own type check, so the
    answer does not depend on whether unknown parameters are refused)."""
    for key in update:
        if key in SessionConfig.model_fields and key not in UPDATABLE:
            return Refused(Refusal.IMMUTABLE_FIELD, f"Invalid 'session.{key}': '{key}' cannot be changed after "
                           "the session started; session.update changes only 'delegation' and 'triggers'.",
                           f"session.{key}")
    return None


def updated(res: dict[str, Any], update: dict[str, Any]) -> dict[str, Any] | Refused:
    """The resource after a (type-checked) session.update, or why it is refused; ``res`` is not changed."""
    new = copy.deepcopy(res)
    if "delegation" in update:
        change = update["delegation"]
        current = res.get("delegation") or {"type": "client"}
        wanted = "client" if change is None else change["type"]
        if wanted != current["type"]:
            return Refused(Refusal.DELEGATION_TYPE_CHANGE, f"Invalid 'session.delegation.type': the session "
                           f"delegates to '{current['type']}' and cannot change to '{wanted}'.",
                           "session.delegation.type")
        merged = copy.deepcopy(current)
        for key, value in (change or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **copy.deepcopy(value)}
            else:
                merged[key] = copy.deepcopy(value)
        new["delegation"] = merged
    if "triggers" in update:
        new["triggers"] = copy.deepcopy(list(update["triggers"]))
    return new
