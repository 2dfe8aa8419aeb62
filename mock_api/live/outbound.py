"""Outbound GPT-Live calls, sans-I/O: what a ``POST /v1/live/sessions`` body must be, what trunk URL may be
dialed, and how the dialed leg's SIP progress becomes ``transport.*`` events.

Rules:

1. The body is an object with exactly ``session`` and ``transport``. ``session`` is checked against the
   SDK's ``MediaSessionConfigParam`` (so ``audio.format``, which SIP negotiates, is an unknown parameter),
   then its ``model`` must be non-blank.
2. ``transport.type`` ``"sip"`` is an outbound call; ``"webrtc"`` is refused with
   ``OutboundSettings.webrtc_status`` / ``webrtc_code`` (rtsip does not emulate WebRTC and never answers
   with a fake SDP); anything else is ``invalid_value`` on ``transport.type``.
3. The SIP transport's shape is not in SDK 3.57 (it types only ``webrtc`` for create), so it is checked by
   this module's own pydantic model :class:`SipTransport`: ``destination`` and ``trunk.caller_number``
   are E.164 (``+`` and 2–15 digits, no leading 0); ``trunk.auth`` is ``{"type": "digest", "username",
   "password"}`` with a username that has a non-space character and at most 256 bytes, a password of at
   most 4096 bytes, neither holding CR, LF or NUL. Unknown keys are ``unknown_parameter``.
4. ``trunk.provider_url`` is ``sips:host[:port][;transport=tcp]`` and nothing else: TLS only, default
   port 5061, an IPv6 host in brackets, no userinfo, path, URI headers or other parameters.
5. With ``rules == "real"`` the trunk host may not be a local name (``localhost``, ``*.localhost``,
   ``*.local``, ``*.internal``, a name without a dot) nor a literal private, loopback, link-local,
   unspecified, multicast or broadcast IP: 400 ``refused_host_code`` on ``transport.trunk.provider_url``,
   as the real service refuses them. ``"local"`` (the default) allows them, or nothing could be dialed.
6. A leg (:class:`Leg`, fed events and the clock's ``now``; every input first runs what fell due by
   ``now``, so a late input sees the same leg a punctual timer would have) is born ``waiting``
   (:meth:`Leg.created`). It dials (:class:`Dial`) when the first sideband attaches (``waited_for``
   ``"sideband"``) or ``sideband_wait_s`` after its creation (``"timeout"``; 0: at once). The call ending
   before the dial fails the leg at once: SIP 487 "hung up before the dial" (journaled without a SIP status).
7. Once dialed the leg goes ``dialing`` → ``ringing`` (the worker's ``EARLY`` call state:
   ``transport.ringing``, once) → ``answered`` (``CONNECTING`` or ``CONFIRMED``: ``transport.answered``) →
   ``ended`` (the leg's end); or from ``dialing``/``ringing`` to ``failed`` (``transport.failed``) on the
   leg's end without an answer (its final status), an INVITE that could not be sent (no status), or the ring
   cap: ``ring_timeout_s`` after the dial, SIP 408. Every transition happens once; events after ``failed``
   or ``ended`` change nothing. :meth:`Leg.next_deadline` says when the next timed rule falls due.
8. A failure's ``error`` is ``{"type": "call_error", "code", "message"}``; the code comes from the SIP
   status and reason (:func:`failure_code`), renamed by ``OutboundSettings.failure_codes``. The session then
   closes ``close_requested`` when the app hung up, else ``failed_close_reason``; a call not over yet is
   failed (:class:`FailCall`: the call table's SIP final CANCELs a leg still ringing).
9. An answer to a call not over is accepted on the call table (:class:`AcceptCall`); an answer to a call
   that ended meanwhile (the app hung up as the callee answered) is journaled, not sent to the session, and
   the leg gets a BYE (:class:`HangUp`).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from openai.types.live.media_session_config_param import MediaSessionConfigParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..realtime.validation import ParamError, validate_payload

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
DEFAULT_TLS_PORT = 5061
USERNAME_MAX_BYTES = 256
PASSWORD_MAX_BYTES = 4096
_FORBIDDEN_CHARS = ("\r", "\n", "\x00")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")

Rules = Literal["local", "real"]


class OutboundSettings(BaseModel):
    """Choices for outbound Live calls the real API leaves open or that a local bench must relax."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Rules = Field("local", description="'local': loopback and private trunks may be dialed (the default: "
                         "the only way to test offline); 'real': refused with a 400 as the real service does.")
    refused_host_code: str = Field("invalid_value", description="error.code of a trunk refused under 'real' rules.")
    webrtc_status: int = Field(400, ge=400, le=599, description="HTTP status of a WebRTC create (not emulated).")
    webrtc_code: str = Field("unsupported_transport", description="error.code of a WebRTC create.")
    ring_timeout_s: float = Field(180.0, gt=0, description="Ringing cap: past it the dial fails 'no_answer'.")
    max_call_s: int = Field(7200, gt=0, description="Answered-call cap: the session then closes 'expired'.")
    sideband_wait_s: float = Field(5.0, ge=0, description="The dial starts when the first sideband attaches, or "
                                   "after this long without one (0: at once), so a fast local failure is not "
                                   "over before the app can hear about it.")
    failure_codes: dict[str, str] = Field(default_factory=dict, description="transport.failed codes to use instead "
                                          "of the defaults (keys: the default codes).")
    failed_close_reason: Literal["connection_lost", "remote_hangup", "close_requested"] = Field(
        "connection_lost", description="session.closed's reason after transport.failed (undocumented).")
    srtp: Literal["mandatory", "optional"] = Field(
        "mandatory", description="The leg's media offer: 'mandatory' (RTP/SAVP with SDES keys only: a trunk "
        "without SRTP answers 488, transport.failed 'media_not_acceptable', as the real service requires SRTP); "
        "'optional': plain RTP when the trunk will not do SRTP.")

    def journal(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---- the create body ---------------------------------------------------------------------------------------


class DigestAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["digest"]
    username: str
    password: str

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expected a username with a non-space character")
        if len(v.encode()) > USERNAME_MAX_BYTES:
            raise ValueError(f"expected at most {USERNAME_MAX_BYTES} bytes")
        return _no_breaks(v)

    @field_validator("password")
    @classmethod
    def _password(cls, v: str) -> str:
        if len(v.encode()) > PASSWORD_MAX_BYTES:
            raise ValueError(f"expected at most {PASSWORD_MAX_BYTES} bytes")
        return _no_breaks(v)


class Trunk(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    provider_url: str
    auth: DigestAuth | None = None
    caller_number: str | None = None

    @field_validator("caller_number")
    @classmethod
    def _caller(cls, v: str | None) -> str | None:
        return v if v is None else _e164(v)


class SipTransport(BaseModel):
    """The outbound SIP transport of a create body (shape from the API's newer OpenAPI spec, not SDK 3.57)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["sip"]
    destination: str
    trunk: Trunk

    @field_validator("destination")
    @classmethod
    def _destination(cls, v: str) -> str:
        return _e164(v)


def _e164(v: str) -> str:
    if not E164.match(v):
        raise ValueError("expected an E.164 number such as +14155550123")
    return v


def _no_breaks(v: str) -> str:
    if any(ch in v for ch in _FORBIDDEN_CHARS):
        raise ValueError("must not contain CR, LF or NUL")
    return v


@dataclass(frozen=True)
class TrunkUrl:
    """A checked ``sips:`` provider URL."""

    host: str  # as written (IPv6 with its brackets)
    port: int

    def request_uri(self, user: str) -> str:
        """What the dialing SIP stack sends the INVITE to: TLS to the trunk, ``user`` the destination."""
        return f"sip:{user}@{self.host}:{self.port};transport=tls"


@dataclass(frozen=True)
class Outbound:
    """A valid create body, ready to dial."""

    session: dict[str, Any]
    destination: str
    trunk: TrunkUrl
    username: str | None
    password: str | None
    caller_number: str | None


@dataclass(frozen=True)
class Refused:
    """A create refused before anything is dialed: HTTP ``status`` with the error envelope's fields."""

    status: int
    code: str
    message: str
    param: str | None


def check_create(body: Any, settings: OutboundSettings) -> Outbound | Refused:
    """Rules 1–5: the create body as something to dial, or why not."""
    if not isinstance(body, dict):
        return Refused(400, "invalid_type", "Invalid type for body: expected an object.", None)
    for key in body:
        if key not in ("session", "transport"):
            return Refused(400, "unknown_parameter", f"Unknown parameter: '{key}'.", str(key))
    for key in ("session", "transport"):
        if key not in body:
            return Refused(400, "missing_required_parameter", f"Missing required parameter: '{key}'.", key)
    transport = body["transport"]
    if not isinstance(transport, dict):
        return Refused(400, "invalid_type", "Invalid type for 'transport': expected an object.", "transport")
    kind = transport.get("type")
    if kind == "webrtc":
        return Refused(settings.webrtc_status, settings.webrtc_code, "WebRTC transports are not emulated by this "
                       "mock: create a SIP session (transport.type 'sip') or test WebRTC against the real "
                       "service.", "transport.type")
    if kind != "sip":
        return Refused(400, "invalid_value", f"Invalid value for 'transport.type': {kind!r}. Supported values are: "
                       "'sip' and 'webrtc'.", "transport.type")
    problem = session_problem(body["session"])
    if problem is not None:
        return Refused(400, problem.code, problem.message, problem.param)
    try:
        sip = SipTransport.model_validate(transport)
    except ValidationError as exc:
        return _pydantic_refusal(exc)
    url = parse_trunk_url(sip.trunk.provider_url)
    if isinstance(url, str):
        return Refused(400, "invalid_value", f"Invalid 'transport.trunk.provider_url': {url}",
                       "transport.trunk.provider_url")
    if settings.rules == "real":
        why = refused_host(url.host)
        if why is not None:
            return Refused(400, settings.refused_host_code, f"Invalid 'transport.trunk.provider_url': {why} hosts "
                           "cannot be dialed.", "transport.trunk.provider_url")
    auth = sip.trunk.auth
    return Outbound(session=dict(body["session"]), destination=sip.destination, trunk=url,
                    username=auth.username if auth else None, password=auth.password if auth else None,
                    caller_number=sip.trunk.caller_number)


def session_problem(session: Any) -> ParamError | None:
    """Rule 1: the SDK's ``MediaSessionConfigParam``, then a non-blank model."""
    problem = validate_payload(MediaSessionConfigParam, session, "session")
    if problem is not None:
        return problem
    if not str(session["model"]).strip():
        return ParamError("invalid_value", "Invalid 'session.model': expected a non-empty string.", "session.model")
    return None


def _pydantic_refusal(exc: ValidationError) -> Refused:
    err = exc.errors()[0]
    param = ".".join(["transport", *map(str, err["loc"])])
    kind = err["type"]
    if kind == "extra_forbidden":
        return Refused(400, "unknown_parameter", f"Unknown parameter: '{param}'.", param)
    if kind == "missing":
        return Refused(400, "missing_required_parameter", f"Missing required parameter: '{param}'.", param)
    if kind.endswith("_type") or kind in ("model_type", "model_attributes_type"):
        return Refused(400, "invalid_type", f"Invalid type for '{param}': {err['msg']}.", param)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return Refused(400, "invalid_value", f"Invalid value for '{param}': {msg}.", param)


def parse_trunk_url(url: str) -> TrunkUrl | str:
    """Rule 4: the URL's host and port, or what is wrong with it."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() != "sips":
        return "expected a sips: URL (TLS signalling only)"
    if any(ch in rest for ch in "@/?"):
        return "no userinfo, path or URI headers are allowed"
    hostport, *params = rest.split(";")
    for param in params:
        name, _, value = param.partition("=")
        if name.lower() != "transport" or value.lower() != "tcp":
            return f"the only parameter allowed is transport=tcp, not {param!r}"
    if len(params) > 1:
        return "transport=tcp may appear once"
    if hostport.startswith("["):
        end = hostport.find("]")
        host, tail = hostport[: end + 1], hostport[end + 1:]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    else:
        host, _, port_text = hostport.partition(":")
        tail = ":" + port_text if port_text else ""
        if not _HOSTNAME.match(host):
            return f"{host!r} is not a host name or address"
    port = DEFAULT_TLS_PORT
    if tail:
        if not tail.startswith(":") or not tail[1:].isdigit() or not 0 < int(tail[1:]) < 65536:
            return f"{tail!r} is not a port"
        port = int(tail[1:])
    return TrunkUrl(host, port)


def refused_host(host: str) -> str | None:
    """Rule 5: why the real service would not dial ``host`` (a kind of host), or None."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        low = bare.lower().rstrip(".")
        if low == "localhost" or low.endswith(_LOCAL_SUFFIXES) or "." not in low:
            return "local"
        return None
    for attr, name in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                       ("is_unspecified", "unspecified"), ("is_multicast", "multicast"),
                       ("is_private", "private")):
        if getattr(ip, attr):
            return name
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    return None


# ---- the leg -------------------------------------------------------------------------------------------------


class LegState(enum.StrEnum):
    WAITING = "waiting"  # created, the dial not sent yet (rule 6)
    DIALING = "dialing"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"
    FAILED = "failed"


TransportState = Literal["ringing", "answered", "failed"]
CloseReason = Literal["connection_lost", "remote_hangup", "close_requested"]
WaitedFor = Literal["sideband", "timeout"]

RING_STATES = frozenset({"EARLY"})  # rule 7: the worker's call states that mean a provisional response
ANSWER_STATES = frozenset({"CONNECTING", "CONFIRMED"})  # ... and a 2xx
_OPEN = (LegState.WAITING, LegState.DIALING, LegState.RINGING)  # the states a leg can still fail from
_DIALED = (LegState.DIALING, LegState.RINGING)  # the dial is out, no answer yet: the ring cap runs


@dataclass(frozen=True)
class Dial:
    """Send the INVITE now; ``waited_for`` says what ended the wait for a sideband (rule 6)."""

    waited_for: WaitedFor


@dataclass(frozen=True)
class TransportEvent:
    """A ``transport.*`` event: journaled with the SIP status and reason that caused it, and sent to the
    session unless ``to_session`` is off (rule 9); ``error`` and ``close_reason`` only for ``failed``."""

    state: TransportState
    error: dict[str, Any] | None = None
    sip_status: int | None = None
    sip_reason: str | None = None
    close_reason: CloseReason | None = None
    to_session: bool = True


@dataclass(frozen=True)
class FailCall:
    """Fail the call on the call table (rule 8): a leg still ringing gets its CANCEL from there."""

    reason: str


@dataclass(frozen=True)
class AcceptCall:
    """The callee answered: accept the call on the Live surface with the create's session (rule 9)."""


@dataclass(frozen=True)
class HangUp:
    """BYE an answered leg whose call is already over (rule 9)."""


Action = Dial | TransportEvent | FailCall | AcceptCall | HangUp

_TLS_WORDS = ("tls", "ssl", "certificate", "cert")


def failure_code(status: int, reason: str) -> str:
    """Rule 8's default code for a final SIP status (0: no response at all) and its reason text."""
    low = reason.lower()
    if status in (401, 407):
        return "authentication_failed"
    if status == 487:  # the leg was cancelled: the app hung up while it rang
        return "cancelled"
    if any(word in low for word in _TLS_WORDS):
        return "tls_failed"
    if status in (486, 600):
        return "busy"
    if status in (408, 480) or (status == 0 and "timeout" in low):
        return "no_answer"
    if status in (404, 484, 604):
        return "not_found"
    if status in (488, 606):
        return "media_not_acceptable"
    if status == 603:
        return "declined"
    if status in (0, 502, 503):
        return "connection_failed"
    return "sip_error"


class Leg:
    """One outbound leg (rules 6–9): fed what happened and when, it returns what to do."""

    def __init__(self, settings: OutboundSettings) -> None:
        self.settings = settings
        self.state = LegState.WAITING
        self.failure: dict[str, Any] | None = None
        self._dial_by: float | None = None  # rule 6: when the wait for a sideband ends
        self._ring_by: float | None = None  # rule 7: the ring cap
        self._call_over = False  # the call ended on the call table (hung up, failed)
        self._by_app = False  # ... because the app hung up

    @property
    def over(self) -> bool:
        return self.state in (LegState.ENDED, LegState.FAILED)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing timed is pending)."""
        if self.state is LegState.WAITING:
            return self._dial_by
        return self._ring_by if self.state in _DIALED else None

    # ---- inputs ---------------------------------------------------------------------------------------------

    def created(self, now: float) -> list[Action]:
        """The create was answered: the wait for a sideband starts (rule 6)."""
        if self._dial_by is None:
            self._dial_by = now + self.settings.sideband_wait_s
        return self.tick(now)

    def tick(self, now: float) -> list[Action]:
        """The clock moved: the sideband wait or the ring cap may be over."""
        if self.state is LegState.WAITING and self._dial_by is not None and now >= self._dial_by:
            return self._dial(now, "timeout")
        if self.state in _DIALED and self._ring_by is not None and now >= self._ring_by:
            return self._fail(408, f"no answer within {self.settings.ring_timeout_s:g} s", 408, "ring timeout")
        return []

    def sideband_attached(self, now: float) -> list[Action]:
        out = self.tick(now)
        if self.state is LegState.WAITING:
            out.extend(self._dial(now, "sideband"))
        return out

    def call_ended(self, now: float, *, by_app: bool) -> list[Action]:
        """The call is over on the call table: ``by_app`` when the app hung up."""
        out = self.tick(now)
        if self._call_over:
            return out
        self._call_over, self._by_app = True, by_app
        if self.state is LegState.WAITING:
            out.extend(self._fail(487, "hung up before the dial", None, "hangup"))
        return out

    def dial_refused(self, now: float, why: str) -> list[Action]:
        """The INVITE could not be sent (no SIP stack, a bad URI, no free slot)."""
        return self.tick(now) + self._fail(0, why, None, why)

    def sip_state(self, now: float, state: str, status: int | None, reason: str | None) -> list[Action]:
        """A call state of the dialed leg, as the SIP worker names it (rule 7)."""
        out = self.tick(now)
        if state in RING_STATES and self.state is LegState.DIALING:
            self.state = LegState.RINGING
            out.append(TransportEvent("ringing", sip_status=status, sip_reason=reason))
        elif state in ANSWER_STATES and self.state in _DIALED:
            self.state = LegState.ANSWERED
            out.append(TransportEvent("answered", sip_status=status, sip_reason=reason,
                                      to_session=not self._call_over))
            out.append(HangUp() if self._call_over else AcceptCall())
        return out

    def sip_ended(self, now: float, status: int, reason: str) -> list[Action]:
        """The dialed leg is gone: its final status (0: none) when it was never answered."""
        out = self.tick(now)
        if self.state in _DIALED:
            return out + self._fail(status, reason, status, reason)
        if self.state is LegState.ANSWERED:
            self.state = LegState.ENDED
        return out

    # ---- rules ----------------------------------------------------------------------------------------------

    def _dial(self, now: float, waited_for: WaitedFor) -> list[Action]:
        self.state = LegState.DIALING
        self._ring_by = now + self.settings.ring_timeout_s
        return [Dial(waited_for)]

    def _fail(self, status: int, reason: str, sip_status: int | None, sip_reason: str) -> list[Action]:
        if self.state not in _OPEN:
            return []
        self.state = LegState.FAILED
        default = failure_code(status, reason)
        code = self.settings.failure_codes.get(default, default)
        what = f"SIP {status} {reason}".strip() if status else (reason or "no response")
        self.failure = {"type": "call_error", "code": code, "message": f"The outbound call failed: {what}."}
        close: CloseReason = "close_requested" if self._by_app else self.settings.failed_close_reason
        out: list[Action] = [TransportEvent("failed", self.failure, sip_status, sip_reason, close)]
        if not self._call_over:
            self._call_over = True
            out.append(FailCall(f"outbound call failed: {code}"))
        return out
