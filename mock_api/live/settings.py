"""The choices a fake GPT-Live session makes where the real service's behaviour is not documented.

Rules:

- Every undocumented behaviour the session core depends on is one field here, with a default and a
  description of what it decides; the core reads nothing else for these choices. The adapter
  journals the whole model once per session (:meth:`LiveSettings.journal`), so a run's record says
  which fake it was talking to.
- Error codes the service does not document are named refusals (:mod:`.refusals`); ``error_codes``
  renames any of them without touching the core.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .refusals import Refusal


class LiveSettings(BaseModel):
    """Undocumented GPT-Live behaviour, chosen once per session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attach_replay_events: int = Field(
        5, ge=0, description="How many recent server events a sideband gets replayed when it attaches (the SDK "
        "speaks of a 'short replay'; the API reference says none: 0). Reflected audio, errors and events sent to "
        "one connection only are never replayed.")
    attach_replay_started: bool = Field(
        True, description="Whether the replay on attach begins with the session's session.started, even when it "
        "is older than the last attach_replay_events events.")
    usage_period_s: float = Field(
        10.0, gt=0, description="Seconds between session.usage.updated events (cumulative, whole seconds).")
    greets_first: bool = Field(
        False, description="Whether the model speaks first once the session starts, saying the script's "
        "greeting (else its default_reply), before the caller says anything.")
    graceful_close_default: bool = Field(
        False, description="Whether a sideband that did not ask (no graceful_close query) gets a WebSocket "
        "closing handshake at session end; without one its socket is dropped.")
    strict_unknown_fields: bool = Field(
        True, description="Refuse a client event with a field its SDK type does not declare (unknown_parameter); "
        "off: such fields are ignored.")
    require_delegation_id: bool = Field(
        True, description="Refuse an instructions/thinking/commentary append that omits delegation_id (the SDK "
        "types make it required, nullable); off: an omitted one counts as null.")
    expires_after_s: int = Field(
        7200, gt=0, description="Session lifetime: expires_at is this long after the start, and the session then "
        "closes with reason 'expired'.")
    error_codes: dict[Refusal, str] = Field(
        default_factory=dict, description="Error codes to use instead of the defaults for the named refusals.")

    def code(self, refusal: Refusal) -> str:
        """The ``error.code`` a refusal is reported with."""
        return self.error_codes.get(refusal, refusal.default_code)

    def journal(self) -> dict[str, Any]:
        """Every choice, for the session's journal entry."""
        return self.model_dump(mode="json")
