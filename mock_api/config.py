"""The mock's runtime configuration: one pydantic model, set at start and by PUT /_mock/config."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .faults import FAULTS, Fault, FieldProblem
from .journal import MAX_BYTES as JOURNAL_MAX_BYTES
from .journal import MAX_STRING_CHARS as JOURNAL_MAX_STRING_CHARS
from .live.outbound import OutboundSettings
from .live.settings import LiveSettings

DEFAULT_RETAIN_ENDED = 1000
MAX_SIZE_SETTING = 1 << 30  # a byte limit beyond 1 GiB is a typo; aiohttp mis-reads frames past 2**32
WS_MAX_MESSAGE_BYTES = 24 * 1024 * 1024
"""A client frame's limit: the largest append the session takes (15 MiB of audio) as base64 (20 MiB) plus room
for the event around it. Past it the socket closes with 1009 (the real limit is not documented)."""
WS_SEND_QUEUE_BYTES = 16 * 1024 * 1024
"""What may wait for a client that does not read (about four minutes of 24 kHz reply audio as base64); past
it the socket closes with 1008 "send queue full" (what the real service does is not documented)."""


def check_faults(faults: list[Fault]) -> list[Fault]:
    """Each fault's parameters have the type and range its default has (a number of seconds is a finite
    number, at least 0), so a bad value is refused when received instead of failing later inside a timer."""
    for i, fault in enumerate(faults):
        for key, value in (fault.model_extra or {}).items():
            default = FAULTS[fault.name].params[key]
            if isinstance(default, bool) or not isinstance(default, int | float):
                continue
            where = f"[{i}].{key}"
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise FieldProblem(where, f"fault {fault.name!r} takes a number here, not {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise FieldProblem(where, f"fault {fault.name!r} takes a whole number here, not {value!r}")
            if value < 0:
                raise FieldProblem(where, f"fault {fault.name!r} takes a number of at least 0 here, not {value!r}")
    return faults


def check_script(script: dict[str, Any] | None) -> dict[str, Any] | None:
    """A behaviour script is checked as a whole when received (every session reads it later), kept as given."""
    if script is not None:
        from .realtime.script import Script  # the session core's own model of a script

        check_faults(Script.model_validate(script).faults)
    return script


CheckedFaults = Annotated[list[Fault], AfterValidator(check_faults)]
"""Faults whose parameters are checked on receipt (config, config patches, new calls)."""
CheckedScript = Annotated[dict[str, Any] | None, AfterValidator(check_script)]
"""A behaviour script checked as a whole on receipt, kept as given."""


class RetryPolicy(BaseModel):
    """Bounded exponential backoff for webhook delivery (the real service retries for 72 h)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_attempts: int = Field(5, ge=1, le=50)
    initial_delay_s: float = Field(0.2, ge=0)
    max_delay_s: float = Field(5.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    timeout_s: float = Field(5.0, gt=0, description="Per-attempt time to wait for the receiver's answer.")

    def delay(self, attempt: int) -> float:
        """Delay before attempt number ``attempt + 1`` (``attempt`` counts from 1)."""
        return min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))


class LimitsConfig(BaseModel):
    """OpenAI-side limits (429s, failed responses, ``rate_limits.updated``); every cap is off (None) by default.

    Budgets refill continuously over ``window_s`` (60 s, as the real per-minute limits do; tests
    shorten it so a spent budget comes back within a second).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_concurrent_sessions: int | None = Field(
        None, ge=0, description="Active calls plus ?model= sockets; an accept beyond it answers 429.")
    requests_per_minute: int | None = Field(
        None, gt=0, description="REST call controls (accept, reject, refer, hangup); beyond it 429.")
    tokens_per_minute: int | None = Field(
        None, gt=0, description="Response tokens, shared by all sessions; a response over it fails.")
    window_s: float = Field(60.0, gt=0, description="Period over which the per-minute budgets refill.")


AzureAcceptField = Literal["type", "model", "instructions"]
IncomingEventType = Literal["realtime.call.incoming", "live.transport.incoming", "live.call.incoming"]
DEFAULT_WEBHOOK_EVENTS: tuple[IncomingEventType, ...] = ("realtime.call.incoming",)
AZURE_ACCEPT_REQUIRED: list[AzureAcceptField] = ["type", "model", "instructions"]
AZURE_API_VERSIONS = ["2024-10-01-preview", "2025-04-01-preview", "2025-08-28"]
"""Dated ``api-version`` values the mock serves on the ``AzureOpenAI`` client's ``/openai/realtime...`` paths by
default. Which versions Azure serves SIP calls on is undocumented: these are the Realtime ones it names."""


class MockConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_events: list[IncomingEventType] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS),
        description="What one incoming call sends to webhook_url: realtime.call.incoming (a Realtime app), "
        "live.transport.incoming (a GPT-Live app), live.call.incoming (Live's deprecated name, for an old "
        "subscription). A call fires every one listed; the first accept on either surface wins.")
    loser_status: Literal[404, 409] = Field(
        404, description="The answer to an operation through the surface that lost a call (Realtime or GPT-Live): "
        "undocumented; 404 as if the id were gone, or 409.")
    live: LiveSettings = Field(
        default_factory=LiveSettings, description="GPT-Live sessions: the choices the fake makes where the real "
        "service's behaviour is undocumented (replay on attach, usage period, greeting, closing handshake, strict "
        "fields, lifetime, error codes). Each session journals the ones it ran with (live.settings).")
    live_outbound: OutboundSettings = Field(
        default_factory=OutboundSettings, description="Outbound GPT-Live calls (POST /v1/live/sessions with a SIP "
        "transport): 'rules' local (loopback trunks may be dialed) or real (refused as the real service does), "
        "SRTP on the leg, ring and call caps, transport.failed codes. Journaled with each live.create.")
    live_rtp_status: int | None = Field(
        None, ge=300, le=699, description="GPT-Live requires SRTP: a call whose offer had none (its webhook says "
        "sip_media_security 'rtp') accepted through Live gets this SIP final (e.g. 488); None answers it.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    api_keys: list[str] | None = Field(
        None, description="Accepted API keys; None accepts any key that starts with 'sk-'."
    )
    strict_accept: bool = Field(False, description="Answer an invalid accept body with 400 instead of 200-then-fail.")
    azure_api_versions: list[str] = Field(
        default_factory=lambda: list(AZURE_API_VERSIONS),
        description="api-version values accepted on the AzureOpenAI client's dated paths (/openai/realtime...); "
        "another answers 400 'API version not supported', none at all 404 'Resource not found'.")
    azure_accept_required: list[AzureAcceptField] = Field(
        default_factory=lambda: list(AZURE_ACCEPT_REQUIRED),
        description="What an accept on an Azure path (/openai/...) must carry, as Azure's SIP guide says; a "
        "missing one answers 400 naming it and the call keeps ringing.")
    legacy_beta: bool = Field(False, description="Serve OpenAI-Beta: realtime=v1 sockets instead of closing them.")
    audio_library: list[str] = Field(default_factory=list, description="Directories of your own clips "
                                     "(<name>.wav + <name>.json with 'text'), recognised by fingerprint like "
                                     "audio_fixtures/ when no script turn says what the caller said.")
    recogniser_command: str | None = Field(None, description="A command that prints a turn's text: '{wav}' is "
                                           "replaced by a WAV path, else PCM16 comes on stdin at {rate} Hz.")
    recogniser_python: str | None = Field(None, description="'module:function' taking (pcm: bytes, rate: int) and "
                                          "returning the text (or None), tried after the fingerprint.")
    recogniser_timeout_s: float = Field(10.0, gt=0, description="How long a plugged-in recogniser may take a turn.")
    hangup_close: Literal["drop", "clean"] = Field(
        "drop", description="How a call's socket ends when the call does: drop (the connection goes away without a "
        "close frame, as the real service is reported to do) or clean (a 1000 close frame).")
    ring_timeout_s: float | None = Field(30.0, gt=0, description="Fail a call nobody accepts within this time.")
    no_answer_status: int = Field(408, ge=400, le=699, description="SIP status sent to the caller on no answer.")
    max_body_bytes: int = Field(1 << 20, gt=0, le=MAX_SIZE_SETTING)
    faults: CheckedFaults = Field(default_factory=list)
    script: CheckedScript = Field(None, description="Default behaviour script for new sessions.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    retain_ended_calls: int | None = Field(
        DEFAULT_RETAIN_ENDED, ge=1, description="Keep only this many ended calls and ended call-less sessions "
        "(?model= / ?intent= sockets) with their journals; older ones leave (to journal_file when set). None "
        "keeps everything, and memory then grows with every call.")
    ws_max_message_bytes: int = Field(
        WS_MAX_MESSAGE_BYTES, ge=1024, le=MAX_SIZE_SETTING, description="Largest WebSocket message a client may "
        "send; a bigger one closes the socket with 1009 (journaled ws.close).")
    ws_send_queue_bytes: int = Field(
        WS_SEND_QUEUE_BYTES, ge=1024, le=MAX_SIZE_SETTING, description="Server events that may wait for a client "
        "that does not read; past it the socket closes with 1008 'send queue full' (journaled ws.close).")
    record_audio: bool = Field(False, description="Keep audio bytes in the journal (rtsip mock --record); by "
                               "default audio is kept as its size and a checksum.")
    journal_file: str | None = Field(
        None, description="Append-only JSONL file that receives the timelines (and oldest entries) the journal lets "
        "go; rtsip mock sets <state_dir>/journal.jsonl.")
    journal_max_bytes: int | None = Field(
        JOURNAL_MAX_BYTES, ge=1 << 20, description="Whole journal's size (estimated JSON bytes); past it the oldest "
        "ended calls and sessions leave (to journal_file when set) before retain_ended_calls would let them go. "
        "None: no byte cap (each timeline is still capped).")
    journal_max_string_chars: int = Field(
        JOURNAL_MAX_STRING_CHARS, ge=1024, description="A longer string in a journaled event (a 1 MB prompt) is "
        "kept as its size, sha256 and first characters; the timeline counts them as truncated.")
    control_token: str | None = Field(
        None, min_length=1, description="When set, /_mock/* requires 'Authorization: Bearer <token>' or "
        "'X-Rtsip-Token: <token>' (rtsip mock --control-token).")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names, besides loopback ones and the address a request arrived "
        "on, that the mock answers (a refused Host gets 403: DNS rebinding).")



class ConfigPatch(BaseModel):
    """Body of PUT /_mock/config: only the fields present change."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_events: list[IncomingEventType] | None = None
    loser_status: Literal[404, 409] | None = None
    live: LiveSettings | None = None
    live_outbound: OutboundSettings | None = None
    live_rtp_status: int | None = Field(None, ge=300, le=699)
    retry: RetryPolicy | None = None
    api_keys: list[str] | None = None
    strict_accept: bool | None = None
    azure_api_versions: list[str] | None = None
    azure_accept_required: list[AzureAcceptField] | None = None
    legacy_beta: bool | None = None
    hangup_close: Literal["drop", "clean"] | None = None
    audio_library: list[str] | None = None
    recogniser_command: str | None = None
    recogniser_python: str | None = None
    recogniser_timeout_s: float | None = Field(None, gt=0)
    ring_timeout_s: float | None = Field(None, gt=0)
    no_answer_status: int | None = Field(None, ge=400, le=699)
    faults: CheckedFaults | None = None
    script: CheckedScript = None
    retain_ended_calls: int | None = Field(None, ge=1)
    ws_max_message_bytes: int | None = Field(None, ge=1024, le=MAX_SIZE_SETTING)
    ws_send_queue_bytes: int | None = Field(None, ge=1024, le=MAX_SIZE_SETTING)
    allowed_hosts: list[str] | None = None
    limits: LimitsConfig | None = Field(
        None, description="Merged into the current limits: only the caps present change (null turns one off); "
        "`\"limits\": null` turns them all off.")


    @field_validator("azure_api_versions", "azure_accept_required")
    @classmethod
    def _not_null(cls, value: list[Any] | None) -> list[Any]:
        """An explicit null would leave the Azure checks nothing to check against; [] says "none"."""
        if value is None:
            raise ValueError("must be a list ([] for none), not null")
        return value

    @model_validator(mode="after")
    def _null_only_where_allowed(self) -> ConfigPatch:
        """``null`` turns off what can be off (``webhook_url``, ``retain_ended_calls``...); a setting that always
        has a value (``faults``, ``audio_library``, the size limits...) refuses it here, not later in a socket."""
        for name in self.model_fields_set:
            if getattr(self, name) is None and name != "limits" and (name == "webhook_secret" or not _nullable(name)):
                raise FieldProblem(name, "must not be null")
        return self

    def apply(self, config: MockConfig) -> MockConfig:
        update = {k: getattr(self, k) for k in self.model_fields_set}
        for key, default in (("live", LiveSettings), ("live_outbound", OutboundSettings)):
            if key in update and update[key] is None:  # null: back to the defaults
                update[key] = default()
        if "limits" in self.model_fields_set:
            update["limits"] = LimitsConfig() if self.limits is None else config.limits.model_copy(
                update={k: getattr(self.limits, k) for k in self.limits.model_fields_set})
        return config.model_copy(update=update)


def _nullable(name: str) -> bool:
    """Whether MockConfig's field ``name`` may hold None."""
    return type(None) in get_args(MockConfig.model_fields[name].annotation) or \
        MockConfig.model_fields[name].annotation is None


# ---- readable errors ------------------------------------------------------------------------------------


def describe_validation_error(exc: ValidationError, model: type[BaseModel] = MockConfig) -> str:
    """A ValidationError as one line a person can act on: each bad field, what it expects, and for
    an unknown key the keys that exist (pydantic's own text is several lines with a help URL)."""
    return "; ".join(_describe(err, model) for err in exc.errors(include_url=False))


def _describe(err: Any, model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    where = _dotted(loc)
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        valid = ""
        if parent is not None:
            owner = f" of {_dotted(loc[:-1])}" if loc[:-1] else ""
            valid = f"; valid keys{owner}: {', '.join(parent.model_fields)}"
        return f"unknown key {where!r}{valid}"
    problem = err.get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):
        return f"{where}{problem.path}: {str(problem).split(': ', 1)[1]}"
    if err["type"] == "value_error" and problem is not None:
        msg = str(problem)
    else:
        msg = err["msg"][:1].lower() + err["msg"][1:]
        if err["type"] != "missing":
            got = repr(err.get("input"))
            msg += f" (got {got if len(got) <= 60 else got[:57] + '...'})"
    return f"{where}: {msg}" if where else msg


def _dotted(loc: tuple[str | int, ...]) -> str:
    """``("faults", 0, "name")`` as ``faults[0].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that the field at ``loc`` holds (list items included), if it is one."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list field: its model is the list's
        if current is None or part not in current.model_fields:
            return None
        current = _inner_model(current.model_fields[part].annotation)
    return current


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel in an annotation such as ``RetryPolicy | None`` or ``list[Fault]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
