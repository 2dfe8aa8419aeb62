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
- ``webhook_bad_signature`` signs with a stranger's secret only; ``webhook_rotation`` adds an
  old-secret signature in front of the right one. With both on, the bad signature wins.
- The session-layer faults (``transcription_403``, ``static_after_update``, ``voice_frozen_after_first_audio``,
  ``mock_bug``) are the session core's own to read (``mock_api.realtime``); they stay in :attr:`FaultScript.faults`.
  So does ``model_retired``, read by the accept and the session core through ``mock_api.models.RetiredModelPolicy``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .faults import Fault


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


@dataclass(frozen=True)
class FaultScript:
    """What the active faults ask of one call, as typed answers (``None``: the fault is off)."""

    faults: tuple[Fault, ...] = ()
    delivery: DeliveryPlan = field(default_factory=DeliveryPlan)
    accept_forced_invalid: bool = False  # accept_invalid_hangup: 200-then-fail even with strict_accept
    invalid_accept_bye_s: float | None = None  # accept_invalid_hangup's after_s: the BYE after the 200
    refer_noop: bool = False
    no_answer_timeout_s: float | None = None
    random_hangup_after_s: float | None = None
    ws_drop_after_s: float | None = None
    beta_header_404: bool = False
    static_audio: bool = False

    @classmethod
    def of(cls, faults: Iterable[Fault]) -> FaultScript:
        """The script of these faults (the mock's first, then the call's)."""
        active = tuple(faults)
        first: dict[str, Fault] = {}
        for fault in active:
            first.setdefault(fault.name, fault)

        def number(name: str, key: str) -> float | None:
            found = first.get(name)
            return None if found is None else float(found.param(key))

        invalid = number("accept_invalid_hangup", "after_s")
        return cls(
            faults=active,
            delivery=_delivery(first),
            accept_forced_invalid=invalid is not None,
            invalid_accept_bye_s=invalid,
            refer_noop="refer_noop" in first,
            no_answer_timeout_s=number("no_answer_timeout", "seconds"),
            random_hangup_after_s=number("random_hangup", "after_s"),
            ws_drop_after_s=number("ws_drop", "after_s"),
            beta_header_404="beta_header_404" in first,
            static_audio="static_audio" in first,
        )


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
