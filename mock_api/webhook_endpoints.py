"""The project's webhook endpoints (``/v1/webhook_endpoints``): the store and its rules, sans-I/O.

The REST adapter (:mod:`mock_api.webhook_endpoints_rest`) parses and journals; the server asks
:meth:`WebhookEndpointStore.targets` where each outgoing event goes and with which secrets to sign it.
Nothing here sends, sleeps or reads the clock by itself: every operation takes ``now`` (unix seconds,
the store's ``clock``, which tests drive).

Rules:

1. Bodies are checked against the SDK's own param types (``WebhookCreateParams``, ``WebhookUpdateParams``,
   ``WebhookRotateSecretParams``, ``WebhookTestParams``): unknown keys, missing keys, JSON types and the
   ``event_types`` enum, worded as the real API words them (400 with ``param``).
2. The enum is the SDK's, widened with the GPT-Live types the SDK's webhook event union knows
   (``live.*``): the SDK 3.57 enum lacks them, yet Live apps subscribe to ``live.transport.incoming``.
   ``live.call.incoming`` is deprecated: an endpoint that has it keeps it, a new subscription is refused
   (``Rules.closed_to_new``). A repeated type counts once; at least one type is needed.
3. ``name`` is 1–256 characters; ``url`` at most 2048, absolute, https. Plain http is taken only for a
   loopback host (127.0.0.0/8, ::1, localhost): a local fake must reach the app on this machine. Any
   other scheme or host is refused, as the real API refuses a non-https URL.
4. The signing secret (``whsec_`` + base64 of 32 random bytes) is in the answers of create and
   rotate only; every other answer carries its hint.
5. Update: the fields given replace the old ones (``event_types`` is the complete new set);
   ``updated_at`` moves only when something really changed. A test delivery changes nothing.
6. Rotate: a new secret; ``keep_old_secret_active_for_24_hours`` keeps the replaced one signing for
   ``Rules.overlap_s`` more (24 h) on the store's clock, else every old secret dies at once.
   ``updated_at`` moves.
7. List: newest first; ``after`` is the id of the previous page's last endpoint (a deleted one still
   works as a cursor); ``limit`` 1–100, 20 by default; ``has_more``, ``first_id``, ``last_id``.
8. An unknown or deleted id is a 404.
9. ``targets(event_type, now)``: every endpoint subscribed to the type, oldest first, with the
   secrets valid at ``now`` (the newest first): a delivery is signed with each of them.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets as _random
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import urlsplit

import pydantic
import typing_extensions
from openai.types.webhooks import (
    WebhookCreateParams,
    WebhookRotateSecretParams,
    WebhookTestParams,
    WebhookUpdateParams,
)
from openai.types.webhooks.unwrap_webhook_event import UnwrapWebhookEvent

from . import ids
from .realtime.validation import ParamError, json_type_name, validate_payload

DAY_S = 24 * 3600.0


# ---- the event types, read from the SDK --------------------------------------------------------------


def _literal_strings(tp: Any) -> tuple[str, ...]:
    """Every string literal inside a (nested) type: the enum of ``List[Literal[...]]``."""
    if typing.get_origin(tp) is Literal:
        return tuple(v for v in typing.get_args(tp) if isinstance(v, str))
    return tuple(v for arg in typing.get_args(tp) for v in _literal_strings(arg))


def _event_models() -> dict[str, type[pydantic.BaseModel]]:
    """The SDK's webhook payload model of each event type (the members of ``UnwrapWebhookEvent``)."""
    union = typing.get_args(UnwrapWebhookEvent)[0]
    out: dict[str, type[pydantic.BaseModel]] = {}
    for model in typing.get_args(union):
        for value in _literal_strings(model.model_fields["type"].annotation):
            out[value] = model
    return out


SDK_EVENT_TYPES: tuple[str, ...] = _literal_strings(
    typing_extensions.get_type_hints(WebhookCreateParams, include_extras=True)["event_types"])
"""What SDK 3.57's ``webhooks.create`` types ``event_types`` as (no ``live.*`` among them)."""
EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = _event_models()
LIVE_EVENT_TYPES: tuple[str, ...] = tuple(t for t in EVENT_MODELS if t.startswith("live.") and t not in SDK_EVENT_TYPES)
DEPRECATED_EVENT_TYPES = frozenset({"live.call.incoming"})  # the SDK: "new subscriptions are not allowed"


@dataclass(frozen=True)
class Rules:
    """What the real API leaves unsaid, chosen and kept in one place (tests and the server may change it)."""

    extra_event_types: tuple[str, ...] = LIVE_EVENT_TYPES
    closed_to_new: frozenset[str] = DEPRECATED_EVENT_TYPES
    http_loopback: bool = True
    name_max: int = 256
    url_max: int = 2048
    overlap_s: float = DAY_S
    list_default: int = 20
    list_max: int = 100

    @property
    def event_types(self) -> tuple[str, ...]:
        return (*SDK_EVENT_TYPES, *(t for t in self.extra_event_types if t not in SDK_EVENT_TYPES))


@cache
def _widened(params: type, event_types: tuple[str, ...]) -> type:
    """The SDK's param TypedDict with its event-type enum widened to ``event_types``; every other field
    is the SDK's own, so an SDK upgrade changes what is checked without a word changed here."""
    hints = typing_extensions.get_type_hints(params, include_extras=True)
    enum = Literal[event_types]  # type: ignore[valid-type]

    def swap(tp: Any) -> Any:
        origin = typing.get_origin(tp)
        if origin is Literal:
            return enum
        if origin in (typing_extensions.Required, typing.Required):
            return typing_extensions.Required[swap(typing.get_args(tp)[0])]
        if origin is list:
            return list[swap(typing.get_args(tp)[0])]  # type: ignore[misc]
        return tp

    fields = {name: swap(tp) if name in ("event_types", "event_type") else tp for name, tp in hints.items()}
    return typing_extensions.TypedDict(params.__name__, fields, total=False)  # type: ignore[operator]


@cache
def _adapter(tp: type) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def _check(params: type, rules: Rules, body: Any) -> ParamError | None:
    """Rule 1: the SDK type's walk (real wording), then the SDK type itself through pydantic."""
    if not isinstance(body, dict):
        return ParamError("invalid_type", f"Invalid type for body: expected an object, but got "
                          f"{json_type_name(body)} instead.", None)
    tp = _widened(params, rules.event_types)
    problem = validate_payload(tp, body, "")
    if problem is not None:
        return problem
    try:
        _adapter(tp).validate_python(body, strict=True)
    except pydantic.ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or None
        return ParamError("invalid_value", f"Invalid value for '{where}'.", where)
    return None


# ---- what the store keeps -------------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret in the real form: ``whsec_`` + base64 of 32 random bytes (from the OS, always)."""
    return "whsec_" + base64.b64encode(_random.token_bytes(32)).decode()


def secret_hint(secret: str) -> str:
    """A masked secret (the real mask is undocumented): the prefix, three characters, the last four."""
    return secret[:9] + "*" * 6 + secret[-4:]


def new_endpoint_id() -> str:
    return "we_" + ids.current().token_hex(16)


@dataclass(frozen=True)
class OldSecret:
    secret: str
    until: float  # still signs while now < until


@dataclass
class Endpoint:
    id: str
    seq: int  # creation order: the list's newest-first order and its cursor
    created_at: int
    updated_at: int
    name: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    old: tuple[OldSecret, ...] = ()

    def secrets(self, now: float) -> tuple[str, ...]:
        """The secrets a delivery at ``now`` is signed with: the current one, then each still in its overlap."""
        return (self.secret, *(o.secret for o in self.old if now < o.until))

    def view(self) -> dict[str, Any]:
        """``WebhookEndpoint``: what every answer but create and rotate shows."""
        return {"id": self.id, "object": "webhook_endpoint", "created_at": self.created_at,
                "updated_at": self.updated_at, "name": self.name, "url": self.url,
                "event_types": list(self.event_types), "signing_secret_hint": secret_hint(self.secret)}

    def with_secret(self) -> dict[str, Any]:
        """``WebhookEndpointWithSecret``: create's and rotate's answer, the only ones carrying the secret."""
        out = self.view()
        out["signing_secret"] = self.secret
        return out


@dataclass(frozen=True)
class Refused:
    """An operation the store will not do, in REST-error terms."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None

    @classmethod
    def bad(cls, problem: ParamError) -> Refused:
        return cls(400, problem.message, problem.code, problem.param)


@dataclass(frozen=True)
class Target:
    """Where one outgoing event goes and every secret its delivery is signed with."""

    endpoint_id: str
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Page:
    endpoints: list[Endpoint]
    has_more: bool

    def view(self) -> dict[str, Any]:
        data = [e.view() for e in self.endpoints]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": self.has_more}


@dataclass(frozen=True)
class Updated:
    endpoint: Endpoint
    changed: tuple[str, ...]  # the fields whose value changed; empty for a no-op


@dataclass(frozen=True)
class Rotated:
    endpoint: Endpoint
    old_until: float | None  # when the replaced secret stops signing; None: it already has


@dataclass(frozen=True)
class TestDelivery:
    """What ``/test`` sends: a sample event of the asked type, to the endpoint's URL, signed as usual."""

    target: Target
    event: dict[str, Any]


# ---- URL and name rules -----------------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(url: str, rules: Rules) -> ParamError | None:
    """Rule 3."""
    if len(url) > rules.url_max:
        return _too_long("url", url, rules.url_max)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        host = ""
    if not host or parts.scheme not in ("https", "http") or any(c.isspace() for c in url):
        return ParamError("invalid_url", f"Invalid 'url': '{url}' is not an absolute https URL.", "url")
    if parts.scheme == "http" and not (rules.http_loopback and is_loopback_host(host)):
        local = " (this local mock also takes http:// to a loopback host: 127.0.0.1, ::1 or localhost)" \
            if rules.http_loopback else ""
        return ParamError("invalid_url", f"Invalid 'url': webhook endpoints must use https{local}.", "url")
    return None


def _too_long(param: str, value: str, limit: int) -> ParamError:
    return ParamError("string_above_max_length", f"Invalid '{param}': string too long. Expected a string with "
                      f"maximum length {limit}, but got a string with length {len(value)} instead.", param)


def _name_problem(name: str, rules: Rules) -> ParamError | None:
    if not name:
        return ParamError("string_below_min_length", "Invalid 'name': string too short. Expected a string with "
                          "minimum length 1, but got an empty string instead.", "name")
    return _too_long("name", name, rules.name_max) if len(name) > rules.name_max else None


def _types_problem(types: list[str], rules: Rules, had: Iterable[str] = ()) -> ParamError | None:
    """Rule 2: at least one type; a deprecated one only where the endpoint already has it."""
    if not types:
        return ParamError("empty_array", "Invalid 'event_types': empty array. Expected an array with minimum "
                          "length 1, but got an empty array instead.", "event_types")
    kept = set(had)
    for i, t in enumerate(types):
        if t in rules.closed_to_new and t not in kept:
            return ParamError("invalid_value", f"Invalid 'event_types[{i}]': '{t}' is deprecated and takes no new "
                              "subscriptions; subscribe to 'live.transport.incoming'.", f"event_types[{i}]")
    return None


def _unique(types: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(types))


# ---- the store -----------------------------------------------------------------------------------------------


@dataclass
class WebhookEndpointStore:
    """One project's webhook endpoints. ``clock`` is the wall clock (unix seconds) the REST adapter reads
    for ``now``; tests replace it to step across the 24 h overlap without waiting."""

    rules: Rules = field(default_factory=Rules)
    clock: Callable[[], float] = time.time
    make_secret: Callable[[], str] = new_secret
    _endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _cursors: dict[str, int] = field(default_factory=dict)  # every id ever listed, deleted ones too
    _seq: int = 0

    def clear(self) -> None:
        self._endpoints.clear()
        self._cursors.clear()

    def event_types(self) -> list[str]:
        """``GET /v1/webhook_event_types``: every type an endpoint may name."""
        return list(self.rules.event_types)

    def get(self, endpoint_id: str) -> Endpoint | Refused:
        found = self._endpoints.get(endpoint_id)
        if found is None:
            return Refused(404, f"No webhook endpoint found with id '{endpoint_id}'.", "not_found",
                           "webhook_endpoint_id")
        return found

    def create(self, body: Any, now: float) -> Endpoint | Refused:
        problem = _check(WebhookCreateParams, self.rules, body) or _name_problem(body["name"], self.rules) \
            or _url_problem(body["url"], self.rules) or _types_problem(body["event_types"], self.rules)
        if problem is not None:
            return Refused.bad(problem)
        self._seq += 1
        endpoint = Endpoint(id=new_endpoint_id(), seq=self._seq, created_at=int(now), updated_at=int(now),
                            name=body["name"], url=body["url"], event_types=_unique(body["event_types"]),
                            secret=self.make_secret())
        self._endpoints[endpoint.id] = endpoint
        self._cursors[endpoint.id] = endpoint.seq
        return endpoint

    def update(self, endpoint_id: str, body: Any, now: float) -> Updated | Refused:
        endpoint = self.get(endpoint_id)
        if isinstance(endpoint, Refused):
            return endpoint
        problem = _check(WebhookUpdateParams, self.rules, body)
        if problem is None and "name" in body:
            problem = _name_problem(body["name"], self.rules)
        if problem is None and "url" in body:
            problem = _url_problem(body["url"], self.rules)
        if problem is None and "event_types" in body:
            problem = _types_problem(body["event_types"], self.rules, had=endpoint.event_types)
        if problem is not None:
            return Refused.bad(problem)
        changed: list[str] = []
        if "name" in body and body["name"] != endpoint.name:
            endpoint.name = body["name"]
            changed.append("name")
        if "url" in body and body["url"] != endpoint.url:
            endpoint.url = body["url"]
            changed.append("url")
        if "event_types" in body and set(body["event_types"]) != set(endpoint.event_types):
            endpoint.event_types = _unique(body["event_types"])
            changed.append("event_types")
        if changed:
            endpoint.updated_at = int(now)
        return Updated(endpoint, tuple(changed))

    def delete(self, endpoint_id: str) -> Endpoint | Refused:
        endpoint = self.get(endpoint_id)
        if not isinstance(endpoint, Refused):
            del self._endpoints[endpoint_id]
        return endpoint

    def rotate(self, endpoint_id: str, body: Any, now: float) -> Rotated | Refused:
        endpoint = self.get(endpoint_id)
        if isinstance(endpoint, Refused):
            return endpoint
        problem = _check(WebhookRotateSecretParams, self.rules, body)
        if problem is not None:
            return Refused.bad(problem)
        keep = body.get("keep_old_secret_active_for_24_hours", False)
        until = now + self.rules.overlap_s if keep else None
        # an earlier overlap runs to its own end; a rotation without one (a leaked secret) stops every old secret
        endpoint.old = () if until is None else \
            (OldSecret(endpoint.secret, until), *(o for o in endpoint.old if now < o.until))
        endpoint.secret = self.make_secret()
        endpoint.updated_at = int(now)
        return Rotated(endpoint, until)

    def test(self, endpoint_id: str, body: Any, now: float) -> TestDelivery | Refused:
        endpoint = self.get(endpoint_id)
        if isinstance(endpoint, Refused):
            return endpoint
        problem = _check(WebhookTestParams, self.rules, body)
        if problem is not None:
            return Refused.bad(problem)
        target = Target(endpoint.id, endpoint.url, endpoint.secrets(now))
        return TestDelivery(target, sample_event(body["event_type"], now))

    def page(self, query: Mapping[str, str]) -> Page | Refused:
        """Rule 7, from the query string as it arrived."""
        limit = _limit(query.get("limit"), self.rules)
        if isinstance(limit, Refused):
            return limit
        after = query.get("after")
        newest = sorted(self._endpoints.values(), key=lambda e: e.seq, reverse=True)
        if after:
            seq = self._cursors.get(after)
            if seq is None:
                return Refused(400, f"Invalid 'after': '{after}' is not a webhook endpoint id of this project.",
                               "invalid_value", "after")
            newest = [e for e in newest if e.seq < seq]
        return Page(newest[:limit], has_more=len(newest) > limit)

    def targets(self, event_type: str, now: float) -> list[Target]:
        """Rule 9: where an outgoing ``event_type`` goes. The server calls this once per event."""
        return [Target(e.id, e.url, e.secrets(now)) for e in sorted(self._endpoints.values(), key=lambda e: e.seq)
                if event_type in e.event_types]


def _limit(raw: str | None, rules: Rules) -> int | Refused:
    if raw is None:
        return rules.list_default
    try:
        value = int(raw)
    except ValueError:
        return Refused(400, f"Invalid type for 'limit': expected an integer, but got '{raw}' instead.",
                       "invalid_type", "limit")
    if value < 1:
        return Refused(400, f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {value} "
                       "instead.", "integer_below_min_value", "limit")
    if value > rules.list_max:
        return Refused(400, f"Invalid 'limit': integer above maximum value. Expected a value <= {rules.list_max}, "
                       f"but got {value} instead.", "integer_above_max_value", "limit")
    return value


# ---- sample events for /test ----------------------------------------------------------------------------------

_SAMPLE_SIP_HEADERS = [{"name": "From", "value": "sip:+15550100@test.invalid"},
                       {"name": "To", "value": "sip:+15550199@test.invalid"},
                       {"name": "Call-ID", "value": "webhook-endpoint-test"}]


def sample_event(event_type: str, now: float) -> dict[str, Any]:
    """A test delivery's event: the real envelope; its ``data`` built from the SDK's model of the type
    (each required field given a plausible value), so it validates as the SDK's model of that type."""
    model = EVENT_MODELS.get(event_type)
    data_field = model.model_fields.get("data") if model is not None else None
    family = event_type.rsplit(".", 1)[0]
    data = _sample(data_field.annotation, family) if data_field is not None else {"id": _sample_id(family)}
    return {"object": "event", "id": ids.webhook_event_id(), "type": event_type, "created_at": int(now),
            "data": data}


_ID_PREFIXES = {"batch": "batch_", "response": "resp_", "eval.run": "evalrun_", "fine_tuning.job": "ftjob-",
                "video": "video_", "agent.environment": "env_", "agent.session": "sess_", "safety.alert": "alert_"}
_FIELD_SAMPLES: dict[str, Callable[[], Any]] = {
    "call_id": ids.call_id,
    "session_id": lambda: "live_" + ids.current().token_hex(16),
    "sip_headers": lambda: [dict(h) for h in _SAMPLE_SIP_HEADERS],
    "environment_type": lambda: "none",
}


def _sample_id(family: str) -> str:
    return _ID_PREFIXES.get(family, family.replace(".", "_") + "_") + "test_" + ids.current().token_hex(8)


def _sample(model: Any, family: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if not info.is_required():
            continue
        make = _FIELD_SAMPLES.get(name)
        out[name] = make() if make is not None else _sample_value(info.annotation, name, family)
    return out


def _sample_value(tp: Any, name: str, family: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return _sample(tp, family)
    if origin is list:
        return []
    if tp is int:
        return 0
    if tp is bool:
        return False
    if tp is float:
        return 0.0
    if tp is str:
        return _sample_id(family) if name == "id" else "test"
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    return _sample_value(members[0], name, family) if members else None
