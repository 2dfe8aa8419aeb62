"""One call's faults as typed answers: read once from the active faults, asked by the cores.

The named faults (:mod:`mock_api.faults`) are a list of switches with parameters. Instead of every
adapter looking a name up, a call's list becomes one frozen :class:`FaultScript`; the call table
(:mod:`mock_api.calls`), the webhook sender and the adapters read its typed fields and never a
fault name.

Rules:

- A call's faults are the mock's (``faults`` in the config) followed by the call's own; when one
  name appears twice, the first one counts.
- ``webhook_delay`` and ``slow_webhook`` are one hold, not two: ``webhook_delay`` wins when both are on.
- ``webhook_duplicate`` sends ``copies`` deliveries in all (2: the event once more, same webhook-id).
- ``refer_500`` answers a refer of an active call before the call table sees it: the call goes on. With
  ``refer_noop`` too, the 500 wins (nothing leaves either way).
- ``accept_slow_404`` holds the accept's answer, then fails the call (if it still rings) and answers 404.
- ``ghost_call`` is read when the call is born (``Incoming``): the call table keeps a ringing call the caller left.
- ``webhook_bad_signature`` signs with a stranger's secret only; ``webhook_rotation`` adds an
  old-secret signature in front of the right one. With both on, the bad signature wins.
- The session-layer faults (``transcription_403``, ``static_after_update``, ``voice_frozen_after_first_audio``,
  ``response_failed``, ``forced_format_static``, ``mock_bug``) are the session core's own to read
  (``mock_api.realtime``); they stay in :attr:`FaultScript.faults`.
  So does ``model_retired``, read by the accept and the session core through ``mock_api.models.RetiredModelPolicy``.
- Chance: a fault with a ``probability`` (the faults of :data:`mock_api.faults.PER_CALL`) is drawn once per
  call, before any rule above: a fault whose draw misses is as if absent (a later copy of its name may count).
  It fires when ``draw(seed, name, key, n) < probability``, ``n`` counting earlier copies of the name.
- A draw is a pure function of ``(seed, fault name, key, n)``: a hash, not a stream, so it does not depend on
  the order calls are decided in; the same seed and call key give the same decision in a replay. Each draw,
  fired or skipped, is kept in :attr:`FaultScript.draws` for the journal.
- The key names the call, so calls of one mock draw apart; it must be one a replay reproduces: the call's
  arrival number at the mock (``"1"`` for the first since the start or the last reset), not its random id.
  ``MockServer.fault_script`` passes it and journals each draw once (``fault.drawn``).
- Media faults (``media_hold``, ``media_one_way``, ``media_silence``, ``media_new_ssrc``) become
  :attr:`FaultScript.media_steps`: what the SIP ingress tells its worker, and when (seconds after the 200 it sent),
  sorted by time; a fault's end step comes ``duration_s`` after its start. Each step names its fault, so its
  firing can be journaled. ``media_loss`` becomes :attr:`FaultScript.frame_loss`: frame ``n`` of the reply audio to
  the caller is lost when ``draw(seed, "media_loss", key, n) < rate`` (a hash per frame, as for chance).
- ``media_delay`` and ``media_jitter`` become :attr:`FaultScript.media_delay`: how much later each direction's
  audio arrives. ``media_jitter`` models what a jitter spread does behind a fixed jitter buffer: its
  ``buffer_s`` is more delay to the caller, and :attr:`FaultScript.jitter_loss` loses the frames that would
  come later than the buffer (frame ``n`` when ``draw(seed, "media_jitter", key, n) < 1 - buffer_s/jitter_s``).
- ``strict_contact`` is :attr:`FaultScript.strict_contact`, read from the mock's faults (an INVITE comes before
  its call): the SIP ingress refuses a Contact that repeats a URI parameter.
- ``caller_hold_reaction`` is :attr:`FaultScript.caller_hold`: what the SIP ingress does the first time the
  caller holds the call (``bye`` or ``silence``); without it a hold changes nothing on the mock's side.
- ``caller_ssrc_reaction`` is :attr:`FaultScript.caller_ssrc`: the same answers, the first time the caller's RTP
  comes under a new SSRC; without it the audio goes on.
- A fault without ``probability`` always fires and is not drawn. ``seed`` defaults to 0; ``rtsip run`` gives
  the faults that name no seed the run's (:func:`seeded`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .faults import Fault


def draw(seed: int, name: str, key: str = "", n: int = 0) -> float:
    """A number in [0, 1) that depends on its arguments alone (a seeded hash, not an RNG stream), so draws for
    several calls, requests or events give the same answers in any order, concurrent runs included."""
    digest = hashlib.blake2b(f"{seed}\x00{name}\x00{key}\x00{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class FaultDraw:
    """One decision of chance: did ``fault`` fire for ``key`` (its call), with the draw that said so."""

    fault: str
    probability: float
    seed: int
    key: str
    n: int
    draw: float
    fired: bool

    def to_json(self) -> dict[str, Any]:
        return {"fault": self.fault, "probability": self.probability, "seed": self.seed, "key": self.key,
                "n": self.n, "draw": round(self.draw, 6), "fired": self.fired}

    def describe(self) -> str:
        verdict = "fired" if self.fired else "skipped"
        sign = "<" if self.fired else ">="
        return f"fault {self.fault} {verdict}: draw {self.draw:.4f} {sign} probability {self.probability:g} " \
               f"(seed {self.seed})"


def decide(faults: Iterable[Fault], key: str = "") -> tuple[tuple[Fault, ...], tuple[FaultDraw, ...]]:
    """The faults that fire for ``key`` (a call; ``""`` for the mock as a whole) and the draws made."""
    kept: list[Fault] = []
    draws: list[FaultDraw] = []
    copies: dict[str, int] = {}
    for fault in faults:
        extra = fault.model_extra or {}
        n = copies.get(fault.name, 0)
        copies[fault.name] = n + 1
        if "probability" not in extra:
            kept.append(fault)
            continue
        chance = float(extra["probability"])
        seed = int(fault.param("seed"))
        value = draw(seed, fault.name, key, n)
        made = FaultDraw(fault.name, chance, seed, key, n, value, value < chance)
        draws.append(made)
        if made.fired:
            kept.append(fault)
    return tuple(kept), tuple(draws)


def seeded(faults: Iterable[Fault], seed: int) -> list[Fault]:
    """Each fault with a ``probability`` and no ``seed`` of its own, given ``seed`` (a run's): a fault's own
    seed is fixed and kept, so the rest of a run can vary while it does not."""
    out: list[Fault] = []
    for fault in faults:
        extra = fault.model_extra or {}
        if "probability" in extra and "seed" not in extra:
            fault = Fault.model_validate({**fault.model_dump(), "seed": seed})
        out.append(fault)
    return out


@dataclass(frozen=True)
class DeliveryPlan:
    """How the incoming-call webhook goes out (failure modes 12 and 13)."""

    drop: bool = False  # never delivered
    delay_s: float | None = None  # held this long before the first attempt
    copies: int = 1  # deliveries in all when the first one succeeded
    stale_age_s: int | None = None  # webhook-timestamp this many seconds in the past
    bad_signature: bool = False  # signed with a secret the app does not hold
    rotation: bool = False  # an old-secret signature first, then the right one

    def timestamp(self, now: int) -> int:
        """The webhook-timestamp to send at ``now`` (unix seconds)."""
        return now - self.stale_age_s if self.stale_age_s is not None else now


MediaAction = Literal["hold", "unhold", "gate", "new_ssrc"]


@dataclass(frozen=True)
class MediaStep:
    """One thing the SIP ingress asks its worker to do to a call's media, ``at_s`` after the 200 it sent.

    ``gate`` steps carry the directions they set (``to_caller``, ``to_model``: audio passes; ``silent``: what
    goes to the caller is digital silence); the others carry no arguments."""

    at_s: float
    fault: str
    action: MediaAction
    gate: tuple[tuple[str, bool], ...] = ()
    end: bool = False  # the step that ends the fault's window
    detail: str = ""  # what fault.fired says


@dataclass(frozen=True)
class FrameLoss:
    """Which 20 ms frames of the reply audio to the caller are lost (``media_loss``, or ``media_jitter``'s late
    frames): a seeded draw per frame, salted with the fault's name so the two lose different frames."""

    rate: float
    seed: int
    key: str
    fault: str = "media_loss"

    def lost(self, n: int) -> bool:
        return draw(self.seed, self.fault, self.key, n) < self.rate

    def describe(self) -> str:
        """What ``fault.fired`` says when the first reply audio meets it."""
        if self.fault == "media_loss":
            return f"rate {self.rate:g}, seed {self.seed}: lost reply frames play as silence"
        return (f"{self.rate:.0%} of the reply frames come later than the caller's jitter buffer, seed {self.seed}: "
                "they play as silence")

    def tally(self, lost: int, frames: int) -> str:
        """What ``fault.fired`` says at the call's end."""
        why = "" if self.fault == "media_loss" else " to jitter"
        return f"lost {lost} of {frames} reply frames{why} (rate {self.rate:g}, seed {self.seed})"


@dataclass(frozen=True)
class MediaDelay:
    """How much later than sent each direction's audio arrives (``media_delay``; ``media_jitter``'s buffer)."""

    to_caller_s: float = 0.0
    to_model_s: float = 0.0

    def describe(self) -> str:
        return f"audio {self.to_caller_s:g} s late to the caller, {self.to_model_s:g} s late to the model"


def silence_lost(pcm: bytes, offset: int, loss: FrameLoss, frame_bytes: int = 320) -> tuple[bytes, int]:
    """``pcm`` (reply audio starting ``offset`` bytes into the stream) with each lost frame's bytes zeroed, and
    how many frames were lost; a frame split across two pushes is judged once, by its index in the stream."""
    out = bytearray(pcm)
    lost = 0
    first, last = offset // frame_bytes, (offset + len(pcm) - 1) // frame_bytes
    for n in range(first, last + 1) if pcm else ():
        if loss.lost(n):
            lo, hi = max(n * frame_bytes - offset, 0), min((n + 1) * frame_bytes - offset, len(pcm))
            out[lo:hi] = bytes(hi - lo)
            lost += 1 if (n + 1) * frame_bytes <= offset + len(pcm) else 0  # counted where the frame ends
    return bytes(out), lost


def _window(fault: Fault, action_on: dict[str, bool], action_off: dict[str, bool], what: str) -> list[MediaStep]:
    at, duration = float(fault.param("at_s")), float(fault.param("duration_s"))
    return [MediaStep(at, fault.name, "gate", tuple(action_on.items()), detail=f"{what} for {duration:g} s"),
            MediaStep(at + duration, fault.name, "gate", tuple(action_off.items()), end=True,
                      detail=f"{what} ended after {duration:g} s")]


def _media_steps(first: dict[str, Fault]) -> tuple[MediaStep, ...]:
    steps: list[MediaStep] = []
    hold = first.get("media_hold")
    if hold is not None:
        at, duration = float(hold.param("at_s")), float(hold.param("duration_s"))
        steps += [MediaStep(at, hold.name, "hold", detail=f"re-INVITE on hold (a=sendonly) for {duration:g} s"),
                  MediaStep(at + duration, hold.name, "unhold", end=True,
                            detail=f"re-INVITE resumes (a=sendrecv) after {duration:g} s")]
    one_way = first.get("media_one_way")
    if one_way is not None:
        way = str(one_way.param("direction"))
        steps += _window(one_way, {way: False}, {way: True}, f"one-way audio, nothing {way.replace('_', ' ')}")
    silence = first.get("media_silence")
    if silence is not None:
        steps += _window(silence, {"silent": True}, {"silent": False}, "digital silence to the caller")
    new_ssrc = first.get("media_new_ssrc")
    if new_ssrc is not None:
        steps.append(MediaStep(float(new_ssrc.param("at_s")), new_ssrc.name, "new_ssrc",
                               detail="the RTP to the caller goes on under a new SSRC"))
    return tuple(sorted(steps, key=lambda s: s.at_s))


@dataclass(frozen=True)
class FaultScript:
    """What the active faults ask of one call, as typed answers (``None``: the fault is off)."""

    faults: tuple[Fault, ...] = ()  # the ones that fire: a fault whose draw missed is not here
    draws: tuple[FaultDraw, ...] = ()  # every draw of chance made for this call, fired or skipped
    delivery: DeliveryPlan = field(default_factory=DeliveryPlan)
    accept_forced_invalid: bool = False  # accept_invalid_hangup: 200-then-fail even with strict_accept
    invalid_accept_bye_s: float | None = None  # accept_invalid_hangup's after_s: the BYE after the 200
    refer_noop: bool = False
    refer_500: str | None = None  # refer_500's body: "auto", "json" or "text"
    accept_slow_404_s: float | None = None  # accept_slow_404: the accept's answer held this long, then 404
    accept_slow_404_sip: int = 480  # and the SIP final the caller gets
    no_answer_timeout_s: float | None = None
    random_hangup_after_s: float | None = None
    ghost_call_timeout_s: float | None = None  # ghost_call: a lost CANCEL; the session ends this long after accept
    ws_drop_after_s: float | None = None
    live_end_after_s: float | None = None  # live_session_end: the Live session closes this long after its start
    live_end_reason: str = "connection_lost"  # and with this session.closed reason
    beta_header_404: bool = False
    static_audio: bool = False
    media_steps: tuple[MediaStep, ...] = ()  # the SIP ingress's media faults, in time order
    frame_loss: FrameLoss | None = None  # media_loss: the reply frames lost on the way to the caller
    caller_hold: Literal["bye", "silence"] | None = None  # caller_hold_reaction: the mock's answer to a caller's hold
    caller_ssrc: Literal["bye", "silence"] | None = None  # caller_ssrc_reaction: its answer to a new caller SSRC
    media_delay: MediaDelay | None = None  # media_delay, media_jitter: each direction's audio arrives this late
    strict_contact: bool = False  # strict_contact: an INVITE whose Contact repeats a URI parameter gets 403
    jitter_loss: FrameLoss | None = None  # media_jitter: reply frames later than the caller's jitter buffer

    @classmethod
    def of(cls, faults: Iterable[Fault], key: str = "") -> FaultScript:
        """The script of these faults (the mock's first, then the call's) for the call ``key`` names (its
        draws of chance depend on it: give a key a replay reproduces, e.g. the call's ordinal, not a random id)."""
        active, draws = decide(faults, key)
        first: dict[str, Fault] = {}
        for fault in active:
            first.setdefault(fault.name, fault)

        def number(name: str, key: str) -> float | None:
            found = first.get(name)
            return None if found is None else float(found.param(key))

        invalid = number("accept_invalid_hangup", "after_s")
        refer_500 = first.get("refer_500")
        slow = first.get("accept_slow_404")
        return cls(
            faults=active,
            draws=draws,
            delivery=_delivery(first),
            accept_forced_invalid=invalid is not None,
            invalid_accept_bye_s=invalid,
            refer_noop="refer_noop" in first,
            refer_500=None if refer_500 is None else str(refer_500.param("body")),
            accept_slow_404_s=number("accept_slow_404", "delay_s"),
            accept_slow_404_sip=480 if slow is None else int(slow.param("sip_status")),
            no_answer_timeout_s=number("no_answer_timeout", "seconds"),
            random_hangup_after_s=number("random_hangup", "after_s"),
            ghost_call_timeout_s=number("ghost_call", "timeout_s"),
            ws_drop_after_s=number("ws_drop", "after_s"),
            live_end_after_s=number("live_session_end", "after_s"),
            live_end_reason=str(first["live_session_end"].param("reason")) if "live_session_end" in first
            else "connection_lost",
            beta_header_404="beta_header_404" in first,
            static_audio="static_audio" in first,
            media_steps=_media_steps(first),
            frame_loss=None if "media_loss" not in first else FrameLoss(
                float(first["media_loss"].param("rate")), int(first["media_loss"].param("seed")), key),
            caller_hold=_reaction(first, "caller_hold_reaction"),
            caller_ssrc=_reaction(first, "caller_ssrc_reaction"),
            media_delay=_media_delay(first),
            strict_contact="strict_contact" in first,
            jitter_loss=_jitter_loss(first, key),
        )


def _media_delay(first: dict[str, Fault]) -> MediaDelay | None:
    delay, jitter = first.get("media_delay"), first.get("media_jitter")
    if delay is None and jitter is None:
        return None
    to_caller = to_model = 0.0
    if delay is not None:
        late, way = float(delay.param("delay_s")), str(delay.param("direction"))
        to_caller += late if way in ("both", "to_caller") else 0.0
        to_model += late if way in ("both", "to_model") else 0.0
    if jitter is not None:
        to_caller += float(jitter.param("buffer_s"))
    return MediaDelay(to_caller, to_model)


def _jitter_loss(first: dict[str, Fault], key: str) -> FrameLoss | None:
    jitter = first.get("media_jitter")
    if jitter is None:
        return None
    spread, buffer = float(jitter.param("jitter_s")), float(jitter.param("buffer_s"))
    late = max(0.0, 1.0 - buffer / spread) if spread > 0 else 0.0  # a frame's delay is uniform on [0, spread]
    return FrameLoss(late, int(jitter.param("seed")), key, "media_jitter")


def _reaction(first: dict[str, Fault], name: str) -> Literal["bye", "silence"] | None:
    found = first.get(name)
    if found is None:
        return None
    return "silence" if found.param("reaction") == "silence" else "bye"


def _delivery(first: dict[str, Fault]) -> DeliveryPlan:
    hold = first.get("webhook_delay") or first.get("slow_webhook")
    duplicate = first.get("webhook_duplicate")
    stale = first.get("webhook_stale_timestamp")
    return DeliveryPlan(
        drop="webhook_drop" in first,
        delay_s=None if hold is None else float(hold.param("seconds")),
        copies=1 if duplicate is None else int(duplicate.param("copies")),
        stale_age_s=None if stale is None else int(stale.param("age_s")),
        bad_signature="webhook_bad_signature" in first,
        rotation="webhook_rotation" in first,
    )


NO_FAULTS = FaultScript()
"""A call with no fault on."""
