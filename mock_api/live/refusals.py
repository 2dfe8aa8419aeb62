"""The commands a Live session refuses, by name, with the error code each is reported with.

The service documents these refusals but not their codes, so each has a descriptive default code
(``invalid_request_error`` is always the type) that :class:`~.settings.LiveSettings.error_codes`
can rename. Parameter errors found by the SDK types (unknown, missing, wrong type) keep the codes
the Realtime validator gives them (``unknown_parameter``...), which the service documents.
"""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    """Why a command was refused; the value is its default ``error.code``."""

    NOT_ON_THIS_CONNECTION = "invalid_event_for_connection"  # session.start on a sideband, dtmf on a primary
    NOT_STARTED = "session_not_started"
    ALREADY_STARTED = "session_already_started"
    IMMUTABLE_FIELD = "immutable_parameter"
    DELEGATION_TYPE_CHANGE = "delegation_type_mismatch"
    FIXTURE_ACTIVE = "fixture_already_active"
    FIXTURE_TOO_LONG = "audio_fixture_too_long"
    BAD_AUDIO = "invalid_audio"
    APPEND_DURING_FIXTURE = "fixture_playing"
    CONTENT_TOO_LONG = "content_too_long"
    DELEGATION_NOT_FOUND = "delegation_not_found"
    DELEGATION_ID_WITH_RESPONSES = "delegation_id_not_allowed"
    DTMF_NOT_SIP = "dtmf_not_supported"
    BAD_DTMF = "invalid_dtmf_event"
    DECISION_ID_REUSED = "duplicate_event_id"
    NO_DECISIONS = "decisions_not_configured"
    ITEM_NOT_FOUND = "item_not_found"
    NO_RESPONSES_DELEGATION = "responses_delegation_required"
    TOOL_OUTPUT_MISSING = "tool_output_missing"  # response.create continuing a delegation with a call unanswered
    FORK_MODEL = "unknown_parameter"  # a fork's session.start naming a model (the SDK's fork config has none)
    FORK_CLIENT = "unsupported_parameter"  # client permissions on a WebSocket fork (WebRTC forks only)

    @property
    def default_code(self) -> str:
        return self.value
