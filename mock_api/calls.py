"""The call lifecycle as one explicit, sans-I/O transition table.

Fed events (REST operations, caller actions, timers), it returns what the adapters must
do (effects) or why the operation is refused. It never sleeps, sends or schedules:
the HTTP adapter, the webhook sender and the SIP ingress carry the effects out.

    ringing --accept(valid)-------> active --hangup / caller_bye--> ended
    ringing --accept(invalid)-----> failed          (the REST call still answers 200)
    ringing --reject(code)--------> rejected        (SIP final code, default 603)
    ringing --timeout-------------> no_answer
    ringing --caller_bye----------> ended           (CANCEL before answer)
    active  --refer(target)-------> referring --refer_done(2xx) / caller_bye--> referred
    referring --refer_done(other)---> active        (the transfer target declined or failed: the call goes on)
    any live state --fail---------> failed
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import ids


class CallState(enum.StrEnum):
    RINGING = "ringing"
    ACTIVE = "active"
    REFERRING = "referring"
    ENDED = "ended"
    REJECTED = "rejected"
    REFERRED = "referred"
    FAILED = "failed"
    NO_ANSWER = "no_answer"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({CallState.ENDED, CallState.REJECTED, CallState.REFERRED, CallState.FAILED, CallState.NO_ANSWER})


# ---- events fed in -------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    body: dict[str, Any]
    valid: bool = True
    error: str | None = None


@dataclass(frozen=True)
class Reject:
    status_code: int = 603


@dataclass(frozen=True)
class Refer:
    target_uri: str
    noop: bool = False


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class CallerBye:
    pass


@dataclass(frozen=True)
class ReferDone:
    """The REFER's outcome: the final status the transferee reported (NOTIFY sipfrag), 2xx = transferred."""

    status: int = 200


@dataclass(frozen=True)
class Timeout:
    sip_status: int = 408


@dataclass(frozen=True)
class Fail:
    reason: str
    sip_status: int | None = None


Event = Accept | Reject | Refer | Hangup | CallerBye | ReferDone | Timeout | Fail


# ---- effects returned ----------------------------------------------------------------


@dataclass(frozen=True)
class AnswerSip:
    """Send 200 OK with SDP on the SIP leg."""


@dataclass(frozen=True)
class SendSipFinal:
    status_code: int


@dataclass(frozen=True)
class SendRefer:
    target_uri: str


@dataclass(frozen=True)
class SendBye:
    pass


@dataclass(frozen=True)
class StartSession:
    config: dict[str, Any]


@dataclass(frozen=True)
class EndSession:
    """Close the sideband WebSocket(s) and drop the Realtime session."""

    reason: str


Effect = AnswerSip | SendSipFinal | SendRefer | SendBye | StartSession | EndSession


@dataclass(frozen=True)
class Refusal:
    """An operation the current state does not allow, in REST-error terms."""

    http_status: int
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True)
class Outcome:
    before: CallState
    after: CallState
    effects: tuple[Effect, ...] = ()
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


def not_found() -> Refusal:
    return Refusal(404, "call_id_not_found", "No session found for the provided call_id")


# ---- the call ------------------------------------------------------------------------


@dataclass
class Call:
    call_id: str
    sip_headers: list[dict[str, str]]
    transport: str = "virtual"  # "virtual" (control API) or "sip"
    media_security: str | None = None  # "rtp" | "srtp" when known
    created_at: float = 0.0  # wall clock, unix seconds
    ring_deadline: float | None = None  # monotonic seconds; None = wait forever
    state: CallState = CallState.RINGING
    sip_final_status: int | None = None
    refer_target: str | None = None
    refer_status: int | None = None  # the last REFER's final SIP status, once known
    accept_body: dict[str, Any] | None = None
    end_reason: str | None = None

    @classmethod
    def incoming(cls, sip_headers: list[dict[str, str]], **kw: Any) -> Call:
        return cls(call_id=kw.pop("call_id", None) or ids.call_id(), sip_headers=sip_headers, **kw)

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((h["value"] for h in self.sip_headers if h["name"].lower() == low), None)

    def handle(self, event: Event) -> Outcome:
        before = self.state
        if before.terminal:
            return Outcome(before, before, refusal=not_found())
        handler = _TABLE.get((before, type(event)))
        if handler is None:
            return Outcome(before, before, refusal=_refusal_for(before, event))
        after, effects = handler(self, event)
        self.state = after
        return Outcome(before, after, tuple(effects))

    def due(self, now: float) -> bool:
        """True when the no-answer timer has run out (the adapter then feeds Timeout)."""
        return self.state is CallState.RINGING and self.ring_deadline is not None and now >= self.ring_deadline


# handlers: (call, event) -> (new state, effects); they may record data on the call.
Handler = Callable[[Call, Any], tuple[CallState, list[Effect]]]


def _accept(call: Call, ev: Accept) -> tuple[CallState, list[Effect]]:
    call.accept_body = ev.body
    if not ev.valid:
        call.end_reason = f"invalid_session_config: {ev.error}"
        return CallState.FAILED, [AnswerSip(), SendBye(), EndSession("invalid accept")]
    return CallState.ACTIVE, [AnswerSip(), StartSession(ev.body)]


def _reject(call: Call, ev: Reject) -> tuple[CallState, list[Effect]]:
    call.sip_final_status = ev.status_code
    call.end_reason = "rejected"
    return CallState.REJECTED, [SendSipFinal(ev.status_code)]


def _refer(call: Call, ev: Refer) -> tuple[CallState, list[Effect]]:
    call.refer_target = ev.target_uri
    if ev.noop:
        return call.state, []
    return CallState.REFERRING, [SendRefer(ev.target_uri)]


def _hangup(call: Call, ev: Hangup) -> tuple[CallState, list[Effect]]:
    call.end_reason = "hangup"
    if call.state is CallState.RINGING:
        call.sip_final_status = 487
        return CallState.ENDED, [SendSipFinal(487)]
    return CallState.ENDED, [SendBye(), EndSession("hangup")]


def _caller_bye(call: Call, ev: CallerBye) -> tuple[CallState, list[Effect]]:
    if call.state is CallState.REFERRING:
        call.end_reason = "referred"
        return CallState.REFERRED, [EndSession("referred")]
    call.end_reason = "caller_cancelled" if call.state is CallState.RINGING else "caller_hangup"
    return CallState.ENDED, [EndSession(call.end_reason)]


def _refer_done(call: Call, ev: ReferDone) -> tuple[CallState, list[Effect]]:
    call.refer_status = ev.status
    if not 200 <= ev.status < 300:  # declined (603), busy, unreachable: nothing moved, the call goes on
        return CallState.ACTIVE, []
    call.end_reason = "referred"
    return CallState.REFERRED, [SendBye(), EndSession("referred")]


def _timeout(call: Call, ev: Timeout) -> tuple[CallState, list[Effect]]:
    call.sip_final_status = ev.sip_status
    call.end_reason = "no_answer"
    return CallState.NO_ANSWER, [SendSipFinal(ev.sip_status)]


def _fail(call: Call, ev: Fail) -> tuple[CallState, list[Effect]]:
    call.end_reason = ev.reason
    effects: list[Effect] = [EndSession(ev.reason)]
    if call.state is CallState.RINGING:
        call.sip_final_status = ev.sip_status or 500
        effects.insert(0, SendSipFinal(call.sip_final_status))
    return CallState.FAILED, effects


R, A, F = CallState.RINGING, CallState.ACTIVE, CallState.REFERRING
_TABLE: dict[tuple[CallState, type], Handler] = {
    (R, Accept): _accept,
    (R, Reject): _reject,
    (R, Hangup): _hangup,
    (R, CallerBye): _caller_bye,
    (R, Timeout): _timeout,
    (R, Fail): _fail,
    (A, Refer): _refer,
    (A, Hangup): _hangup,
    (A, CallerBye): _caller_bye,
    (A, Fail): _fail,
    (F, Hangup): _hangup,
    (F, CallerBye): _caller_bye,
    (F, ReferDone): _refer_done,
    (F, Fail): _fail,
}


def _refusal_for(state: CallState, event: Event) -> Refusal:
    if isinstance(event, Accept):
        return Refusal(400, "call_already_accepted", "This call has already been accepted.")
    if isinstance(event, Reject):
        return Refusal(400, "call_already_accepted", "Cannot reject a call that has already been accepted.")
    if isinstance(event, Refer) and state is CallState.RINGING:
        return Refusal(400, "call_not_active", "Cannot refer a call that has not been accepted.")
    if isinstance(event, Refer):
        return Refusal(400, "refer_in_progress", "A refer is already in progress for this call.")
    return Refusal(400, "invalid_call_state", f"Operation not allowed while the call is {state.value}.")
