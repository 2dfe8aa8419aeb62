"""The call lifecycle as one explicit, sans-I/O transition table: every rule of a call's life lives here.

Fed events (REST operations, caller actions, fired timers), :meth:`Call.handle` returns the new
state and what the adapters must do (effects), or why the operation is refused, in REST terms.
It never sleeps, sends or schedules: ``MockServer`` runs the timers it asks for and feeds them
back as events, the HTTP adapter answers the refusal, the SIP ingress carries out the SIP effects.
What the adapters know goes in with the event: the validation problem of an accept body, the
``strict_accept`` setting, the call's :class:`~mock_api.fault_script.FaultScript`.

Rules (``python -m mock_api.calls`` prints the table they make; docs/architecture.md shows it):

1. A call is born ``ringing`` (``Incoming``) and its ring timer starts: the ``no_answer_timeout``
   fault's ``seconds``, else the mock's ``ring_timeout_s`` (null: no timer, it rings until
   something happens). When the timer fires (``Timeout``) the call ends ``no_answer`` with the SIP
   final ``no_answer_status`` (408).
2. ``accept`` while ringing:
   a. a body the session core refuses, with ``strict_accept`` on and no ``accept_invalid_hangup``
      fault: HTTP 400 naming the parameter; nothing changes, the app may accept again;
   b. any other refused body: what the real service does (failure mode 5): 200, the SIP leg is
      answered, then gets a BYE ``after_s`` later (1 s, the real leg's delay, or the fault's
      ``after_s``); the call is ``failed``;
   c. a valid body: ``active``, the SIP leg is answered and the Realtime session starts; with
      ``random_hangup`` the far side hangs up ``after_s`` later (fed back as ``CallerBye``).
3. ``reject`` while ringing: ``rejected`` with the SIP final ``status_code`` (603).
4. ``hangup``: while ringing, ``ended`` with SIP 487; later, a BYE and the session ends.
5. The caller's BYE (or CANCEL): ringing → ``ended`` (``caller_cancelled``), active → ``ended``
   (``caller_hangup``), referring → ``referred`` (the transferee left to the new target).
6. ``refer`` while active: ``referring`` and a REFER goes out; with ``refer_noop`` the 200 answers
   but nothing leaves and the call stays active.
7. The REFER's outcome (``ReferDone``): a 2xx means ``referred`` (BYE, session ends); anything else
   (declined, busy, unreachable) moves nothing: back to ``active``.
8. ``Fail`` (a worker died, a reset): any live state → ``failed``; a ringing caller gets a SIP final
   (500 unless said).
9. Timers: leaving ``ringing`` stops the ring timer; reaching a terminal state cancels every timer.
10. A terminal call answers every operation 404 ``call_id_not_found``; an operation the state does
    not take is a 400: ``call_already_accepted`` (accept/reject after ringing), ``call_not_active``
    (refer while ringing), ``refer_in_progress`` (refer while referring), else ``invalid_call_state``.
11. Two surfaces, one call: a call has a Realtime id (``rtc_``) and a GPT-Live id (``live_``), and each
    operation says which surface it came through. While the call rings either surface may accept or
    reject it; the first that succeeds picks the call's surface. From then on every operation through
    the other surface is the loser's: refused with the event's ``loser_status`` (404 by default, 409 as
    configured), ``call_id_not_found`` on Realtime, ``session_not_found`` on Live, as if that id were gone.
12. An outbound call (GPT-Live's create with a SIP transport, ``direction == "outbound"``) is born on the Live
    surface and is never offered: ``accept`` and ``reject`` from the REST API are refused 400
    ``invalid_call_state``; the callee's answer is the ``Accept`` the dialing adapter feeds with ``by_callee``.
    Everything else (hangup: a CANCEL while ringing, the far end's BYE, ``Fail``) is as for an inbound call.
13. Ghost call (the ``ghost_call`` fault, read when the call is born; failure mode 23): the caller's BYE or
    CANCEL while the call rings is lost on the service's side. The call stays ``ringing`` with
    ``caller_gone`` set (the fault's note says so) and its ring timer runs on. Nothing is sent toward the
    gone leg from then on: no answer, final status or BYE. An accept answers 200 and starts the session
    with no caller audio; the service gives up on it the fault's ``timeout_s`` after that accept (a
    ``Fail``: ``failed``, ``ghost_timeout``), unless the app hangs up first. A reject, a hangup or the
    ring timer end it as usual.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import ids
from .fault_script import NO_FAULTS, FaultScript
from .faults import Fault

Surface = Literal["realtime", "live"]
"""Which API an operation came through: ``/v1/realtime/calls/{rtc_…}`` or ``/v1/live/sessions/{live_…}``."""


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
LIVE = (CallState.RINGING, CallState.ACTIVE, CallState.REFERRING)

GHOST_TIMEOUT = "ghost_timeout"
"""The end reason of a ghost call's session when the service gives up on it (rule 13)."""

INVALID_ACCEPT_BYE_S = 1.0
"""After a 200 to an invalid accept, the real SIP leg gets its BYE about a second later."""


# ---- events fed in -------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """The call was created (INVITE or ``POST /_mock/calls``): start ringing."""

    ring_timeout_s: float | None = None
    no_answer_status: int = 408
    faults: FaultScript = NO_FAULTS


@dataclass(frozen=True)
class BodyProblem:
    """Why the session core refuses an accept body, in REST-error terms."""

    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True)
class Accept:
    body: dict[str, Any]
    problem: BodyProblem | None = None  # None: a valid session config
    strict: bool = False  # strict_accept: refuse an invalid body with a 400 instead of 200-then-fail
    faults: FaultScript = NO_FAULTS
    surface: Surface = "realtime"
    loser_status: int = 404  # rule 11: the answer when the other surface already won
    by_callee: bool = False  # rule 12: an outbound call's callee answered (fed by the dialing adapter)


@dataclass(frozen=True)
class Reject:
    status_code: int = 603
    surface: Surface = "realtime"
    loser_status: int = 404


@dataclass(frozen=True)
class Refer:
    target_uri: str
    faults: FaultScript = NO_FAULTS
    surface: Surface = "realtime"
    loser_status: int = 404


@dataclass(frozen=True)
class Hangup:
    surface: Surface = "realtime"
    loser_status: int = 404


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


Event = Incoming | Accept | Reject | Refer | Hangup | CallerBye | ReferDone | Timeout | Fail


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
    after_s: float = 0.0  # how long the SIP leg lives on before the BYE goes


@dataclass(frozen=True)
class StartSession:
    config: dict[str, Any]
    surface: Surface = "realtime"  # which runtime the accepted call gets: a Realtime or a GPT-Live session


@dataclass(frozen=True)
class EndSession:
    """Close the sideband WebSocket(s) and drop the Realtime session."""

    reason: str


@dataclass(frozen=True)
class FaultActed:
    """A fault changed what the call did where no state change shows it (rule 13): journal it."""

    fault: str
    detail: str


class TimerKind(enum.StrEnum):
    RING = "ring"
    RANDOM_HANGUP = "random_hangup"
    GHOST = "ghost"  # rule 13: the service's own end of a session nobody calls into


@dataclass(frozen=True)
class StartTimer:
    """Feed ``event`` back (journaled as coming from ``source``) after ``after_s``, unless cancelled first."""

    kind: TimerKind
    after_s: float
    event: Event
    source: str


@dataclass(frozen=True)
class CancelTimer:
    kind: TimerKind


@dataclass(frozen=True)
class CancelTimers:
    """The call is over: no timer of it may fire."""


WireEffect = AnswerSip | SendSipFinal | SendRefer | SendBye | StartSession | EndSession
TimerEffect = StartTimer | CancelTimer | CancelTimers
Effect = WireEffect | TimerEffect | FaultActed
TO_SIP_LEG = (AnswerSip, SendSipFinal, SendBye)
"""Effects that act on the caller's SIP leg: none leaves once the caller is gone (rule 13)."""


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


def not_found(surface: Surface = "realtime", status: int = 404) -> Refusal:
    if surface == "live":
        return Refusal(status, "session_not_found", "No session found for the provided session_id")
    return Refusal(status, "call_id_not_found", "No session found for the provided call_id")


SurfaceEvent = Accept | Reject | Refer | Hangup


# ---- the call ------------------------------------------------------------------------


Step = tuple[CallState, list[Effect]]


@dataclass
class Call:
    call_id: str
    sip_headers: list[dict[str, str]]
    transport: str = "virtual"  # "virtual" (control API) or "sip"
    media_security: str | None = None  # "rtp" | "srtp" when known
    created_at: float = 0.0  # wall clock, unix seconds
    state: CallState = CallState.RINGING
    sip_final_status: int | None = None
    refer_target: str | None = None
    refer_status: int | None = None  # the last REFER's final SIP status, once known
    accept_body: dict[str, Any] | None = None
    end_reason: str | None = None
    live_id: str = ""  # the same call's GPT-Live session id (rule 11); minted by :meth:`incoming`
    surface: Surface | None = None  # which surface accepted or rejected it first (rule 11)
    direction: Literal["inbound", "outbound"] = "inbound"  # outbound: GPT-Live dialed it (rule 12)
    ghost_timeout_s: float | None = None  # rule 13: the ghost_call fault's timeout_s, read at birth
    caller_gone: bool = False  # rule 13: the caller left while ringing, yet the call lives on

    @classmethod
    def incoming(cls, sip_headers: list[dict[str, str]], **kw: Any) -> Call:
        call_id = kw.pop("call_id", None) or ids.call_id()
        return cls(call_id=call_id, sip_headers=sip_headers, live_id=kw.pop("live_id", None) or ids.live_id(call_id),
                   **kw)

    def id_on(self, surface: Surface) -> str:
        return self.live_id if surface == "live" else self.call_id

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((h["value"] for h in self.sip_headers if h["name"].lower() == low), None)

    def handle(self, event: Event) -> Outcome:
        before = self.state
        surface: Surface = event.surface if isinstance(event, SurfaceEvent) else "realtime"
        if before.terminal:
            return Outcome(before, before, refusal=not_found(surface))
        if isinstance(event, SurfaceEvent) and self.surface is not None and surface != self.surface:
            return Outcome(before, before, refusal=not_found(surface, event.loser_status))  # rule 11
        if self.direction == "outbound" and (isinstance(event, Reject)
                                             or (isinstance(event, Accept) and not event.by_callee)):  # rule 12
            return Outcome(before, before, refusal=Refusal(400, "invalid_call_state", "An outbound session is "
                                                           "not offered: it cannot be accepted or rejected."))
        handler = _TABLE.get((before, type(event)))
        if handler is None:
            return Outcome(before, before, refusal=_refusal_for(before, event))
        result = handler(self, event)
        if isinstance(result, Refusal):
            return Outcome(before, before, refusal=result)
        after, effects = result
        self.state = after
        if self.caller_gone:  # rule 13: the leg is gone, nothing goes toward it
            effects = [e for e in effects if not isinstance(e, TO_SIP_LEG)]
        return Outcome(before, after, (*effects, *_timer_rule(before, after)))


def _timer_rule(before: CallState, after: CallState) -> tuple[Effect, ...]:
    """Rule 9: the ring timer stops when ringing ends; every timer stops when the call ends."""
    if after.terminal:
        return (CancelTimers(),)
    if before is CallState.RINGING and after is not CallState.RINGING:
        return (CancelTimer(TimerKind.RING),)
    return ()


# handlers: (call, event) -> (new state, effects) or a refusal; they may record data on the call.
Handler = Callable[[Call, Any], Step | Refusal]


def _incoming(call: Call, ev: Incoming) -> Step:
    call.ghost_timeout_s = ev.faults.ghost_call_timeout_s
    ring_s = ev.faults.no_answer_timeout_s if ev.faults.no_answer_timeout_s is not None else ev.ring_timeout_s
    if ring_s is None:
        return CallState.RINGING, []
    return CallState.RINGING, [StartTimer(TimerKind.RING, ring_s, Timeout(ev.no_answer_status), "timer")]


def _accept(call: Call, ev: Accept) -> Step | Refusal:
    problem = ev.problem
    if problem is not None and ev.strict and not ev.faults.accept_forced_invalid:
        return Refusal(400, problem.code, problem.message, problem.param)
    call.accept_body = ev.body
    call.surface = ev.surface
    if problem is not None:
        call.end_reason = f"invalid_session_config: {problem.message}"
        bye_s = ev.faults.invalid_accept_bye_s
        return CallState.FAILED, [AnswerSip(), SendBye(INVALID_ACCEPT_BYE_S if bye_s is None else bye_s),
                                  EndSession("invalid accept")]
    effects: list[Effect] = [AnswerSip(), StartSession(ev.body, ev.surface)]
    if call.caller_gone and call.ghost_timeout_s is not None:  # rule 13: no caller will ever end it
        effects.append(FaultActed("ghost_call", f"accepted after the caller left; the session ends in "
                                  f"{call.ghost_timeout_s:g} s"))
        effects.append(StartTimer(TimerKind.GHOST, call.ghost_timeout_s, Fail(GHOST_TIMEOUT), "fault"))
        return CallState.ACTIVE, effects
    hangup_s = ev.faults.random_hangup_after_s
    if hangup_s is not None:
        effects.append(StartTimer(TimerKind.RANDOM_HANGUP, hangup_s, CallerBye(), "fault"))
    return CallState.ACTIVE, effects


def _reject(call: Call, ev: Reject) -> Step:
    call.surface = ev.surface
    call.sip_final_status = ev.status_code
    call.end_reason = "rejected"
    return CallState.REJECTED, [SendSipFinal(ev.status_code)]


def _refer(call: Call, ev: Refer) -> Step:
    call.refer_target = ev.target_uri
    if ev.faults.refer_noop:
        return call.state, []
    return CallState.REFERRING, [SendRefer(ev.target_uri)]


def _hangup(call: Call, ev: Hangup) -> Step:
    call.end_reason = "hangup"
    if call.state is CallState.RINGING:
        call.sip_final_status = 487
        return CallState.ENDED, [SendSipFinal(487)]
    return CallState.ENDED, [SendBye(), EndSession("hangup")]


def _caller_bye(call: Call, ev: CallerBye) -> Step:
    if call.state is CallState.RINGING and call.ghost_timeout_s is not None and call.direction == "inbound":
        if call.caller_gone:
            return CallState.RINGING, []
        call.caller_gone = True  # rule 13: the CANCEL is lost, the call rings on without its leg
        return CallState.RINGING, [FaultActed("ghost_call", "the caller hung up while ringing; the call still "
                                              "rings, so an accept will succeed")]
    if call.state is CallState.REFERRING:
        call.end_reason = "referred"
        return CallState.REFERRED, [EndSession("referred")]
    call.end_reason = "caller_cancelled" if call.state is CallState.RINGING else "caller_hangup"
    return CallState.ENDED, [EndSession(call.end_reason)]


def _refer_done(call: Call, ev: ReferDone) -> Step:
    call.refer_status = ev.status
    if not 200 <= ev.status < 300:  # declined (603), busy, unreachable: nothing moved, the call goes on
        return CallState.ACTIVE, []
    call.end_reason = "referred"
    return CallState.REFERRED, [SendBye(), EndSession("referred")]


def _timeout(call: Call, ev: Timeout) -> Step:
    call.sip_final_status = ev.sip_status
    call.end_reason = "no_answer"
    return CallState.NO_ANSWER, [SendSipFinal(ev.sip_status)]


def _fail(call: Call, ev: Fail) -> Step:
    call.end_reason = ev.reason
    effects: list[Effect] = [EndSession(ev.reason)]
    if call.state is CallState.RINGING:
        call.sip_final_status = ev.sip_status or 500
        effects.insert(0, SendSipFinal(call.sip_final_status))
    return CallState.FAILED, effects


R, A, F = CallState.RINGING, CallState.ACTIVE, CallState.REFERRING
_TABLE: dict[tuple[CallState, type], Handler] = {
    (R, Incoming): _incoming,
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


# ---- the table as a diagram (docs/architecture.md) ---------------------------------------------


def _examples() -> list[tuple[str, Event]]:
    """One event of each kind and variant the rules tell apart, each with the words the diagram uses."""
    def script(*names: str) -> FaultScript:
        return FaultScript.of(Fault(name=n) for n in names)

    bad = BodyProblem("unknown_parameter", "Unknown parameter: 'x'.", "x")
    return [
        ("incoming", Incoming(30.0)),
        ("incoming, ring_timeout_s null", Incoming(None)),
        ("accept", Accept({"type": "realtime"})),
        ("accept + random_hangup", Accept({"type": "realtime"}, faults=script("random_hangup"))),
        ("accept, invalid body", Accept({}, bad)),
        ("accept, invalid body, strict_accept", Accept({}, bad, strict=True)),
        ("accept, invalid body, strict_accept + accept_invalid_hangup",
         Accept({}, bad, strict=True, faults=script("accept_invalid_hangup"))),
        ("accept (live)", Accept({"type": "live", "model": "gpt-live-1.1"}, surface="live")),
        ("reject", Reject()),
        ("reject (live)", Reject(486, surface="live")),
        ("refer", Refer("tel:1")),
        ("refer + refer_noop", Refer("tel:1", faults=script("refer_noop"))),
        ("hangup", Hangup()),
        ("hangup (live)", Hangup(surface="live")),
        ("caller bye", CallerBye()),
        ("refer done, 2xx", ReferDone(202)),
        ("refer done, not 2xx", ReferDone(603)),
        ("timeout (ring timer)", Timeout()),
        ("fail", Fail("worker died")),
    ]


def _kind(label: str) -> str:
    """An example's event kind without its variant: "accept, invalid body" → "accept"."""
    return label.split(",")[0].split(" +")[0]


def _effect_text(effect: Effect) -> str:
    if isinstance(effect, StartTimer):
        return f"StartTimer({effect.kind.value} → {type(effect.event).__name__})"
    if isinstance(effect, CancelTimer):
        return f"CancelTimer({effect.kind.value})"
    if isinstance(effect, SendBye) and effect.after_s:
        return "SendBye(after_s)"
    if isinstance(effect, SendSipFinal):
        return f"SendSipFinal({effect.status_code})"
    return type(effect).__name__


@dataclass
class _Diagram:
    moves: list[tuple[str, str, str, str]] = field(default_factory=list)  # state, event, next, effects
    refusals: dict[tuple[str, str], str] = field(default_factory=dict)  # (state, event) -> answer


def _explore() -> _Diagram:
    """Every example event fed to a fresh call in every live state: what the table does, not what it says."""
    out = _Diagram()
    for state in LIVE:
        for label, event in _examples():
            # past ringing, the call was accepted on the Realtime surface: Live operations are the loser's
            call = Call(call_id="rtc_diagram", sip_headers=[], state=state,
                        surface=None if state is CallState.RINGING else "realtime")
            result = call.handle(event)
            if result.refusal is not None:  # a rule's own refusal keeps its variant; the rest are per kind
                kind = label if (state, type(event)) in _TABLE else _kind(label)
                out.refusals.setdefault((state.value, kind), f"{result.refusal.http_status} {result.refusal.code}")
                continue
            effects = ", ".join(_effect_text(e) for e in result.effects) or "none"
            out.moves.append((state.value, label, result.after.value, effects))
    return out


def lifecycle_diagram() -> str:
    """The transition table as Markdown: a state diagram, every move with its effects, every refusal."""
    found = _explore()
    targets: dict[tuple[str, str], set[str]] = {}
    for state, label, after, _ in found.moves:
        targets.setdefault((state, _kind(label)), set()).add(after)
    arrows: dict[tuple[str, str], list[str]] = {}
    for state, label, after, _ in found.moves:
        # a kind that leads to one state is named plainly; one that forks is named with its variant
        forks = len(targets[(state, _kind(label))]) > 1
        name = ",".join(label.split(",")[:2]) if forks else _kind(label)
        source = "[*]" if label.startswith("incoming") else state
        names = arrows.setdefault((source, after), [])
        if name not in names:
            names.append(name)
    lines = ["```mermaid", "stateDiagram-v2"]
    lines += [f"    {a} --> {b}: {' / '.join(names)}" for (a, b), names in arrows.items()]
    lines += [f"    {s.value} --> [*]" for s in CallState if s.terminal]
    lines += ["```", "", "| state | event | next state | effects |", "|---|---|---|---|"]
    lines += [f"| {s} | {e} | {n} | {fx} |" for s, e, n, fx in found.moves]
    lines += ["", "| state | event | refused with |", "|---|---|---|"]
    lines += [f"| {s} | {e} | {answer} |" for (s, e), answer in found.refusals.items()]
    terminal = ", ".join(s.value for s in CallState if s.terminal)
    gone, live_gone = not_found(), not_found("live")
    lines.append(f"| {terminal} | any | {gone.http_status} {gone.code} (Live: {live_gone.code}) |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- lifecycle table: generated by `python -m mock_api.calls --write docs/architecture.md` -->"
END = "<!-- end of the generated lifecycle table -->"


def with_diagram(doc: str) -> str:
    """``doc`` with the text between :data:`BEGIN` and :data:`END` replaced by the current diagram."""
    head, sep, rest = doc.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the document has no {BEGIN!r} … {END!r} markers")
    return f"{head}{BEGIN}\n{lifecycle_diagram()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mock_api.calls",
                                     description="Print the call lifecycle table, or write it into a document.")
    parser.add_argument("--write", metavar="DOC", type=Path,
                        help="replace the generated part of DOC (between its markers) with the current table")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(lifecycle_diagram())
        return 0
    args.write.write_text(with_diagram(args.write.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
