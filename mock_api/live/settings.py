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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..realtime.generation import AUDIO_CHUNK_MS
from .refusals import Refusal

REFLECT_CHUNK_MS = 500  # the mock's default reflection chunk (bench/bench_live.py: its cost against 100 ms)
MAX_REFLECT_CHUNK_MS = 2000  # past it a barge-in would leave seconds of never-played audio reflected


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
    require_tool_outputs: bool = Field(
        True, description="A response.create continuing a delegated response is refused while one of its function "
        "calls has no function_call_output (the Responses API's 'No tool output found'); off: it continues anyway.")
    expires_after_s: int = Field(
        7200, gt=0, description="Session lifetime: expires_at is this long after the start, and the session then "
        "closes with reason 'expired'.")
    acknowledgement: str = Field(
        "One moment.", min_length=1, description="What the model says as the automatic acknowledgement of a "
        "delegation (after the session's acknowledgement_delay_ms); the service's wording is not documented.")
    acknowledgement_cancelled_by: Literal["any_append", "naming_append"] = Field(
        "any_append", description="Which commentary/thinking appends cancel a pending acknowledgement: any "
        "(the API reference: 'any commentary or thinking append cancels all pending automatic "
        "acknowledgements'), or only one naming that delegation's id.")
    fork_inherits_audio_format: bool = Field(
        True, description="Whether a fork whose session.start gives no audio.format keeps the stored session's "
        "WebSocket format (a SIP session has none); off: PCM16 24 kHz. The format is per connection and the API "
        "reference does not say what an omitted one inherits.")
    reflect_chunk_ms: int = Field(
        REFLECT_CHUNK_MS, ge=AUDIO_CHUNK_MS, le=MAX_REFLECT_CHUNK_MS, multiple_of=AUDIO_CHUNK_MS,
        description="The most audio one event reflected to a sideband carries (session.output_audio.delta, "
        "session.input_audio.append; the service's chunking is not documented). Fewer, bigger events cost the mock "
        "and the app less; a barge-in may cut a reply inside a chunk already reflected.")
    error_codes: dict[Refusal, str] = Field(
        default_factory=dict, description="Error codes to use instead of the defaults for the named refusals.")

    def code(self, refusal: Refusal) -> str:
        """The ``error.code`` a refusal is reported with."""
        return self.error_codes.get(refusal, refusal.default_code)

    def journal(self) -> dict[str, Any]:
        """Every choice, for the session's journal entry."""
        return self.model_dump(mode="json")
