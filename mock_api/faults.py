"""Named faults: every server-side failure mode the forum threads report, by a stable name.

One registry, read by the webhook sender, the call lifecycle, the HTTP adapter, the
Realtime session core and the SIP ingress. The number in ``section`` is the failure mode's
number in docs/failure-modes.md ("-": a fault outside the numbered list); ``layer`` says which part acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Layer = Literal["webhook", "rest", "websocket", "session", "media", "sip"]


@dataclass(frozen=True)
class FaultInfo:
    name: str
    layer: Layer
    section: str
    summary: str
    params: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the values a word parameter may take
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # inclusive bounds of a whole-number parameter
    dates: tuple[str, ...] = ()  # parameters that are a YYYY-MM-DD date, or "" for none


_ALL = [
    # webhook delivery (failure modes 12 and 13)
    FaultInfo(
        "webhook_delay", "webhook", "12", "Hold each delivery for `seconds` before sending it.", {"seconds": 2.0}
    ),
    FaultInfo(
        "slow_webhook",
        "webhook",
        "12",
        "Alias of webhook_delay with a delay long enough to miss the no-answer timer.",
        {"seconds": 6.0},
    ),
    FaultInfo(
        "webhook_duplicate", "webhook", "-", "Deliver every event twice with the same webhook-id.", {"copies": 2}
    ),
    FaultInfo("webhook_bad_signature", "webhook", "13", "Sign with a different secret than the one the app holds."),
    FaultInfo(
        "webhook_stale_timestamp",
        "webhook",
        "13",
        "Send a webhook-timestamp older than the SDK's 300 s tolerance.",
        {"age_s": 600},
    ),
    FaultInfo(
        "webhook_rotation",
        "webhook",
        "13",
        "Send two v1 signatures, an old-secret one first, as during secret rotation.",
    ),
    FaultInfo("webhook_drop", "webhook", "12", "Never deliver the webhook (the call then times out unanswered)."),
    # REST / call lifecycle
    FaultInfo(
        "accept_invalid_hangup",
        "rest",
        "5",
        "Force the real 200-then-fail answer to an invalid accept body even with strict_accept on; "
        "the SIP leg gets its BYE `after_s` seconds after the 200.",
        {"after_s": 1.0},
    ),
    FaultInfo("refer_noop", "rest", "14", "refer answers 200 but no REFER leaves and the call stays active."),
    FaultInfo(
        "random_hangup", "rest", "16", "End the call from the far side after `after_s` seconds.", {"after_s": 29.0}
    ),
    FaultInfo(
        "no_answer_timeout",
        "rest",
        "12",
        "Fail an unanswered call after `seconds` (default timer is in the config).",
        {"seconds": 5.0},
    ),
    # WebSocket
    FaultInfo(
        "beta_header_404",
        "websocket",
        "10",
        "An OpenAI-Beta header on a call_id socket gets 404 call_id_not_found (2025 behaviour) "
        "instead of beta_api_shape_disabled.",
    ),
    FaultInfo(
        "ws_drop",
        "websocket",
        "16",
        "Drop the sideband socket without a close frame after `after_s` seconds.",
        {"after_s": 2.0},
    ),
    # session core
    FaultInfo("transcription_403", "session", "6", "Every user turn's transcription fails with 403 Forbidden."),
    FaultInfo(
        "static_after_update",
        "session",
        "7",
        "A session.update without audio formats on a G.711 call resets formats to audio/pcm 24 kHz "
        "and corrupts outbound media.",
    ),
    FaultInfo(
        "voice_frozen_after_first_audio",
        "session",
        "17",
        "Voice changes after the first audio output are silently ignored (session.updated keeps the old voice) "
        "instead of refused with cannot_update_voice.",
    ),
    FaultInfo(
        "model_retired",
        "session",
        "-",
        "Refuse a model on a shutdown list (mock_api.models) as if its date had passed: `when` listed refuses "
        "every listed model, after_shutdown only those past their date (what happens without the fault too). "
        "The answer is configurable: HTTP `status` on accept, `type`, `code` and `message` (`{model}` is the "
        "name) on accept and in the WebSocket error event. `today` (YYYY-MM-DD) judges the dates as of that day.",
        {"when": "listed", "status": 404, "type": "invalid_request_error", "code": "model_not_found",
         "message": "The model `{model}` does not exist or you do not have access to it.", "today": ""},
        choices={"when": ("listed", "after_shutdown")},
        ranges={"status": (400, 599)},
        dates=("today",),
    ),
    # media / SIP
    FaultInfo("static_audio", "media", "8", "Outbound RTP carries noise while WebSocket events stay normal."),
    # debugging the harness itself
    FaultInfo(
        "mock_bug",
        "session",
        "-",
        "Debug only: the session core raises on each client event of type `event`, as a bug in the mock "
        "would. The client gets the real server_error, the journal a mock.bug with the traceback, and "
        "`rtsip run` and the pytest plugin fail the test as the mock's fault, not the app's.",
        {"event": "response.create"},
    ),
]

FAULTS: dict[str, FaultInfo] = {f.name: f for f in _ALL}


def unknown_fault(name: str) -> str:
    """What to tell someone who named a fault that does not exist: the valid names, so no lookup is needed."""
    return f"unknown fault {name!r}; known faults: {', '.join(sorted(FAULTS))}"


class Fault(BaseModel):
    """One active fault, e.g. ``{"name": "webhook_delay", "seconds": 3}`` or just ``"ws_drop"``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in FAULTS:
            raise ValueError(unknown_fault(name))
        return name

    @model_validator(mode="after")
    def _known_params(self) -> Fault:
        info = FAULTS[self.name]
        for key, value in (self.model_extra or {}).items():
            if key not in info.params:
                raise ValueError(
                    f"fault {self.name!r} takes no parameter {key!r}; it takes: {', '.join(info.params) or 'none'}"
                )
            words = info.choices.get(key)
            if words is not None and value not in words:
                raise ValueError(f"fault {self.name!r}: {key!r} is one of {', '.join(words)}, not {value!r}")
            bounds = info.ranges.get(key)
            if bounds is not None and (not isinstance(value, int) or isinstance(value, bool)
                                       or not bounds[0] <= value <= bounds[1]):
                raise ValueError(f"fault {self.name!r}: {key!r} is a whole number from {bounds[0]} to {bounds[1]}, "
                                 f"not {value!r}")
            if key in info.dates and value != "" and not _is_date(value):
                raise ValueError(f"fault {self.name!r}: {key!r} is a date (YYYY-MM-DD), not {value!r}")
        return self

    def param(self, key: str) -> Any:
        extra = self.model_extra or {}
        return extra.get(key, FAULTS[self.name].params[key])


def _is_date(value: Any) -> bool:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str) and len(value) == 10


def find(faults: list[Fault], name: str) -> Fault | None:
    return next((f for f in faults if f.name == name), None)
