"""Named faults: every server-side failure mode the forum threads report, by a stable name.

One registry, read by the webhook sender, the call lifecycle, the HTTP adapter, the
Realtime session core and the SIP ingress. The number in ``section`` is the failure mode's
number in docs/failure-modes.md ("-": a fault outside the numbered list); ``layer`` says which part acts on it.

Chaos: a fault read once per call (:mod:`mock_api.fault_script`) also takes ``probability`` (0 to 1, default 1)
and ``seed`` (a whole number, default 0); whether it fires for a call is a seeded draw, so a run replays
exactly. The session-layer faults refuse ``probability`` until their cores draw per request or event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class FieldProblem(ValueError):
    """A value refused inside a field: ``path`` continues the field's location (``[0].seconds``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path.lstrip('.')}: {message}")
        self.path = path

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
    seconds: tuple[str, ...] = ()  # parameters that are a finite number of seconds, 0 or more
    shares: tuple[str, ...] = ()  # parameters that are a finite number from 0 to 1
    chance: str | None = None  # what one probability draw decides ("call"), or None: the fault takes none


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
        "refer_500",
        "rest",
        "24",
        "refer answers HTTP 500 and nothing else happens (no REFER, the call stays active): the JSON server_error "
        "envelope (`body` json), Azure's plain-text `Internal Server Error` (`body` text), or by the path (`body` "
        "auto: plain text on Azure's paths).",
        {"body": "auto"},
        choices={"body": ("auto", "json", "text")},
    ),
    FaultInfo(
        "accept_slow_404",
        "rest",
        "22",
        "The accept's answer is held `delay_s` seconds; by then the service has failed the ringing call, so the "
        "accept answers 404 call_id_not_found and the caller's INVITE gets `sip_status`.",
        {"delay_s": 5.3, "sip_status": 480},
        ranges={"sip_status": (400, 699)},
    ),
    FaultInfo(
        "random_hangup", "rest", "16", "End the call from the far side after `after_s` seconds.", {"after_s": 29.0}
    ),
    FaultInfo(
        "ghost_call",
        "rest",
        "23",
        "The caller's CANCEL (or BYE) while the call rings is lost on the service's side: the call keeps ringing "
        "with its SIP leg gone, a later accept answers 200 and the session runs with no caller audio, and the "
        "call ends only `timeout_s` seconds after that accept (or at the app's hangup).",
        {"timeout_s": 30.0},
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
        "live_session_end",
        "websocket",
        "-",
        "A GPT-Live call's session ends `after_s` seconds after it starts, with session.closed `reason` "
        "(expired, connection_lost or content) to every connection; then the call gets its BYE.",
        {"after_s": 5.0, "reason": "connection_lost"},
        choices={"reason": ("expired", "connection_lost", "content")},
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
    FaultInfo(
        "response_failed",
        "session",
        "25",
        "The session's `nth` response (every response.create counts, the greeting too) and the `count` - 1 after "
        "it fail at once: response.done with status failed and the service_unavailable_error "
        "inference_service_unavailable_error an Azure deployment reported, input tokens counted, no output. The "
        "socket stays open and the turn is not used up, so a retry gets the same answer.",
        {"nth": 2, "count": 1},
        ranges={"nth": (1, 10_000), "count": (1, 10_000)},
    ),
    FaultInfo(
        "forced_format_static",
        "session",
        "27",
        "On a SIP call, an explicit audio.input.format or audio.output.format garbles the reply audio (`effect` "
        "static) or silences it (`effect` silence) while the WebSocket events stay normal: given in the accept "
        "(`via` accept), or in the accept or any later session.update (`via` any).",
        {"effect": "static", "via": "accept"},
        choices={"effect": ("static", "silence"), "via": ("accept", "any")},
    ),
    # media / SIP
    FaultInfo("static_audio", "media", "8", "Outbound RTP carries noise while WebSocket events stay normal."),
    # media at the RTP layer, carried out by the SIP ingress's workers (times count from the 200 the mock sent)
    FaultInfo(
        "media_hold",
        "sip",
        "28",
        "`at_s` seconds after the answer the mock re-INVITEs the caller on hold (a=sendonly, no audio sent), "
        "and `duration_s` later resumes it with another re-INVITE (a=sendrecv).",
        {"at_s": 2.0, "duration_s": 3.0},
        seconds=("at_s", "duration_s"),
    ),
    FaultInfo(
        "media_new_ssrc",
        "sip",
        "28",
        "`at_s` seconds after the answer the mock's RTP to the caller goes on under a new SSRC and sequence (same "
        "stream and port, no re-INVITE), as a media server or SBC failing over on the service's side would send it.",
        {"at_s": 2.0},
        seconds=("at_s",),
    ),
    FaultInfo(
        "strict_contact",
        "sip",
        "29",
        "The SIP ingress answers 403 Forbidden, and sends no webhook, to an INVITE whose Contact URI repeats a "
        "parameter (the report's FreeSWITCH sent `;transport=tls;transport=tls`); without it such a Contact is "
        "taken as any other.",
    ),
    FaultInfo(
        "caller_hold_reaction",
        "sip",
        "28",
        "What the mock does when the caller puts it on hold (a re-INVITE with a=sendonly or inactive; without this "
        "fault it goes on as before): `reaction` bye hangs up at once (a BYE), silence sends the caller no more "
        "audio for the rest of the call, resumed or not (one-way audio).",
        {"reaction": "bye"},
        choices={"reaction": ("bye", "silence")},
    ),
    FaultInfo(
        "caller_ssrc_reaction",
        "sip",
        "28",
        "What the mock does when the caller's RTP comes under a new SSRC mid-call (a carrier's session border "
        "controller failing over; without this fault the audio goes on, as pjmedia's does): `reaction` bye hangs up "
        "at once (a BYE), silence sends the caller no more audio for the rest of the call (one-way audio).",
        {"reaction": "bye"},
        choices={"reaction": ("bye", "silence")},
    ),
    FaultInfo(
        "media_one_way",
        "media",
        "-",
        "From `at_s` seconds after the answer, for `duration_s`, audio flows one way only: `direction` to_caller "
        "stops the RTP to the caller (the reply audio of the window is lost), to_model hands the model silence "
        "instead of the caller's audio.",
        {"at_s": 2.0, "duration_s": 3.0, "direction": "to_caller"},
        choices={"direction": ("to_caller", "to_model")},
        seconds=("at_s", "duration_s"),
    ),
    FaultInfo(
        "media_silence",
        "media",
        "-",
        "From `at_s` seconds after the answer, for `duration_s`, the RTP to the caller carries digital silence "
        "instead of the reply audio (packets keep flowing; the window's reply audio is lost).",
        {"at_s": 2.0, "duration_s": 3.0},
        seconds=("at_s", "duration_s"),
    ),
    FaultInfo(
        "media_loss",
        "media",
        "-",
        "A `rate` share of the reply audio's 20 ms frames to the caller are lost and played as silence (the RTP "
        "packets still go, carrying silence); which frames is a seeded draw per frame (`seed`), so a run replays.",
        {"rate": 0.2},
        shares=("rate",),
    ),
    FaultInfo(
        "media_delay",
        "media",
        "-",
        "The call's audio arrives `delay_s` later than it was sent, as over a long network path: `direction` both "
        "(a reply then reaches the caller 2 × `delay_s` later than without it), to_caller (the reply audio, and "
        "the cut a barge-in makes in it: an app that hangs up once the reply is sent cuts its last `delay_s`) or "
        "to_model (the caller's speech, its end and DTMF reach the model later).",
        {"delay_s": 0.3, "direction": "both"},
        choices={"direction": ("both", "to_caller", "to_model")},
        seconds=("delay_s",),
    ),
    FaultInfo(
        "media_jitter",
        "media",
        "-",
        "The reply audio's 20 ms frames reach the caller with a delay spread evenly over `jitter_s`, into a jitter "
        "buffer of `buffer_s`: the reply comes `buffer_s` later, and a frame later than the buffer is lost and "
        "plays as silence (a share 1 - buffer_s/jitter_s of them; which ones, a seeded draw per frame).",
        {"jitter_s": 0.08, "buffer_s": 0.04},
        seconds=("jitter_s", "buffer_s"),
    ),
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

CHANCE_PARAMS: dict[str, Any] = {"probability": 1.0, "seed": 0}
"""The parameters every fault with a ``chance`` takes: how likely it fires, and the seed of its draws."""

PER_CALL = frozenset({
    "webhook_delay", "slow_webhook", "webhook_duplicate", "webhook_bad_signature", "webhook_stale_timestamp",
    "webhook_rotation", "webhook_drop", "accept_invalid_hangup", "refer_noop", "refer_500", "accept_slow_404",
    "random_hangup", "ghost_call", "no_answer_timeout", "beta_header_404", "live_session_end", "ws_drop",
    "static_audio",
    "media_hold", "media_one_way", "media_silence", "media_loss", "caller_hold_reaction", "media_delay",
    "caller_ssrc_reaction", "media_new_ssrc",
    "media_jitter",
})
"""The faults read once per call through :class:`mock_api.fault_script.FaultScript`: one draw per call decides."""

FAULTS: dict[str, FaultInfo] = {
    f.name: replace(f, params={**f.params, **CHANCE_PARAMS}, chance="call") if f.name in PER_CALL else f
    for f in _ALL
}


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
            if key in CHANCE_PARAMS:
                _check_chance(self.name, key, value)
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
            if key in info.seconds and not (_is_number(value) and value >= 0):
                raise ValueError(f"fault {self.name!r}: {key!r} is a number of seconds, 0 or more, not {value!r}")
            if key in info.shares and not (_is_number(value) and 0 <= value <= 1):
                raise ValueError(f"fault {self.name!r}: {key!r} is a number from 0 to 1, not {value!r}")
        return self

    def param(self, key: str) -> Any:
        extra = self.model_extra or {}
        return extra.get(key, FAULTS[self.name].params[key])


def _check_chance(name: str, key: str, value: Any) -> None:
    """``probability`` is a finite number from 0 to 1 and ``seed`` a whole number of at least 0, on a fault
    decided per call; the problem names the field (``faults[0].probability``) wherever the fault arrives."""
    number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if FAULTS[name].chance is None:
        problem = f"fault {name!r} takes no {key!r}: only faults decided once per call do " \
                  f"({', '.join(sorted(PER_CALL))})"
    elif key == "probability" and not (number and 0 <= value <= 1):
        problem = f"fault {name!r} takes a probability from 0 to 1 here, not {value!r}"
    elif key == "seed" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        problem = f"fault {name!r} takes a whole number of at least 0 here, not {value!r}"
    else:
        return
    raise FieldProblem(f".{key}", problem)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _is_date(value: Any) -> bool:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str) and len(value) == 10


def find(faults: list[Fault], name: str) -> Fault | None:
    return next((f for f in faults if f.name == name), None)
