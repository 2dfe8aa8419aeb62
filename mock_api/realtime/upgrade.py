"""Who may open a Realtime WebSocket, and how a refused one is told: a pure decision the adapter applies.

Rules (checked in this order; the first that applies decides):

1. ``?call_id=`` naming no call, or a call that is not active (or being referred) on the Realtime
   surface (one accepted through GPT-Live is gone for Realtime), is refused **before** the upgrade:
   HTTP 404 ``call_id_not_found``. So is a live call's socket that sends
   ``OpenAI-Beta: realtime=v1`` while the ``beta_header_404`` fault is on (the forum's symptom).
2. Everything else completes the 101; later refusals are an ``error`` event followed by a close
   whose reason is ``<type>.<code>``:
   a. no key, or a key the mock does not accept (an ``ek_`` client secret counts until it
      expires): ``invalid_request_error``, close 3000 (Azure's key was checked before the upgrade,
      at its front door, so an Azure path skips this rule);
   b. ``OpenAI-Beta: realtime=v1`` while the mock serves only the GA shape: close 4000
      ``beta_api_shape_disabled``;
   c. the call ended while the upgrade was in flight: close 1000 "call ended", no event;
   d. a call-less socket: ``?intent=transcription`` needs no model; a realtime one needs
      ``?model=`` (``missing_model``, close 4000), and off Azure (where any deployment name goes)
      a model that is not a realtime model is ``invalid_model``, close 4000.
3. What is left is accepted: the call's session, or a new session of the socket's own with its
   intent and model. (Over ``max_concurrent_sessions`` is the limiter's answer, not a rule here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openai.types.realtime import RealtimeSessionCreateRequest

Intent = Literal["realtime", "transcription"]

AUTH_CLOSE = 3000
SHAPE_CLOSE = 4000
MISSING_KEY_MESSAGE = "Missing bearer or basic authentication in header"
BETA_SHAPE_MESSAGE = ("The Realtime API beta shape is no longer supported. Remove the 'OpenAI-Beta: realtime=v1' "
                      "header and use the GA interface.")
MISSING_MODEL_MESSAGE = ("You must provide a model parameter, for example "
                         "wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5")

_KNOWN_MODELS = set(RealtimeSessionCreateRequest.model_fields["model"].annotation.__args__[1].__args__)  # type: ignore[union-attr]


@dataclass(frozen=True)
class UpgradeRequest:
    """What the rules read of an upgrade request and the mock's state, gathered by the adapter."""

    azure: bool
    beta: bool
    call_id: str | None
    call_live: bool  # the call exists and is active or being referred
    call_ended: bool  # the call exists and has ended (it may have ended during the upgrade)
    beta_header_404: bool  # the fault is on for this call
    key_masked: str | None  # the key as an error shows it; None when the request carries none
    key_ok: bool
    legacy_beta: bool  # the mock still serves the beta shape
    intent: str | None
    model: str | None


@dataclass(frozen=True)
class RefuseHttp:
    """Refused before the upgrade, with an HTTP error."""

    status: int
    message: str
    code: str


@dataclass(frozen=True)
class RefuseSocket:
    """Upgraded, then an ``error`` event (none when ``message`` is ``None``) and a close."""

    close_code: int
    message: str | None
    code: str | None
    reason: str | None = None  # the close reason when no error event is sent


@dataclass(frozen=True)
class Accept:
    """Upgraded and served: the call's session, or a new one with this intent and model."""

    intent: Intent
    model: str | None


Decision = RefuseHttp | RefuseSocket | Accept


def model_ok(model: str) -> bool:
    """A realtime model the SDK names, or one that looks like a realtime or audio model (newer snapshots)."""
    return model in _KNOWN_MODELS or "realtime" in model or model.startswith("gpt-audio")


def before_upgrade(req: UpgradeRequest) -> RefuseHttp | None:
    """Rule 1: the only refusals that are an HTTP answer instead of a 101."""
    if req.call_id is not None and (not req.call_live or (req.beta and req.beta_header_404)):
        return RefuseHttp(404, "No session found for the provided call_id", "call_id_not_found")
    return None


def after_upgrade(req: UpgradeRequest) -> RefuseSocket | Accept:
    """Rules 2 and 3, read after the 101 (the call's state may have changed meanwhile)."""
    if not req.azure and req.key_masked is None:
        return RefuseSocket(AUTH_CLOSE, MISSING_KEY_MESSAGE, None)
    if not req.azure and not req.key_ok:
        return RefuseSocket(AUTH_CLOSE, f"Incorrect API key provided: {req.key_masked}. You can find your API key "
                                        "at https://platform.openai.com/account/api-keys.", "invalid_api_key")
    if req.beta and not req.legacy_beta:
        return RefuseSocket(SHAPE_CLOSE, BETA_SHAPE_MESSAGE, "beta_api_shape_disabled")
    if req.call_id is not None:
        if req.call_ended:
            return RefuseSocket(1000, None, None, reason="call ended")
        return Accept("realtime", None)
    intent: Intent = "transcription" if req.intent == "transcription" else "realtime"
    if intent == "realtime" and not req.model:
        return RefuseSocket(SHAPE_CLOSE, MISSING_MODEL_MESSAGE, "missing_model")
    if req.model and intent == "realtime" and not req.azure and not model_ok(req.model):
        return RefuseSocket(SHAPE_CLOSE, f'Model "{req.model}" is not supported in realtime mode.', "invalid_model")
    return Accept(intent, req.model)
