"""Every kind of journal entry, typed: the contract between the mock's writers and every reader.

Each kind is a frozen slotted dataclass registered in :data:`KINDS` under its kind string; its fields
are exactly the keys of the ``data`` the journal stores and serves (``GET /_mock/calls/{id}``, the
spill file, reports), in the order writers wrote them before the journal was typed. A key that only
some writers give is a field defaulting to :data:`ABSENT`, left out of :meth:`EntryData.to_data`, so
the wire shape stays what it was (``"model": null`` and no ``model`` key are different answers).

Readers go through :func:`parse`, which is lenient where writers are not: a key missing from the data
(an entry written by hand in a test, or by an older version) reads as :data:`ABSENT`, and a kind this
module does not know, or a key its kind does not have, parses to :class:`Unknown` instead of failing.
A parsed entry's :meth:`EntryData.to_data` gives back exactly the data it came from.
Kinds under ``test.`` are free-form, for tests that fill a journal with filler; they parse to
:class:`Unknown` too and are never an error.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, TypeAlias, TypeVar, dataclass_transform

TEST_PREFIX: Final = "test."  # free-form kinds for tests (filler entries), never checked


class Absent(enum.Enum):
    """A key the writer did not give (unlike ``None``, which it gave as ``null``)."""

    ABSENT = "absent"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"

    def __str__(self) -> str:  # an absent key prints as nothing, as ``data.get(key, "")`` did
        return ""

    def __format__(self, spec: str) -> str:
        return format("", spec)


ABSENT: Final = Absent.ABSENT
_T = TypeVar("_T")
Opt: TypeAlias = _T | Absent  # a key some writers of the kind leave out
Json: TypeAlias = Any  # a JSON value as the journal keeps it (long strings and audio compacted)
JsonObject: TypeAlias = dict[str, Any]


class EntryError(ValueError):
    """A writer journaled a kind nobody registered, or keys its kind does not have."""


@dataclass(frozen=True, slots=True)
class EntryData:
    """What one journal entry says; ``KIND`` is its kind string, its fields the keys of its data."""

    KIND: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[str, ...]] = ()
    KEYS: ClassVar[frozenset[str]] = frozenset()  # FIELDS as a set, for parse
    REQUIRED: ClassVar[tuple[str, ...]] = ()  # the fields every writer gives

    @property
    def journal_kind(self) -> str:
        """The kind string this entry is journaled under."""
        return self.KIND

    def to_data(self) -> dict[str, Any]:
        """The JSON-able dict the journal stores: every field the writer gave, in field order."""
        return {name: value for name in self.FIELDS if (value := getattr(self, name)) is not ABSENT}


KINDS: dict[str, type[EntryData]] = {}
_E = TypeVar("_E", bound=EntryData)


@dataclass_transform(frozen_default=True)
def _kind(name: str) -> Callable[[type[_E]], type[_E]]:
    """Make a class a frozen slotted dataclass and register it as the entry of kind ``name``."""

    def register(plain: type[_E]) -> type[_E]:
        cls = dataclass(frozen=True, slots=True)(plain)
        if name in KINDS:
            raise EntryError(f"journal kind {name!r} registered twice")
        cls.KIND = name
        cls.FIELDS = tuple(f.name for f in fields(cls))
        cls.KEYS = frozenset(cls.FIELDS)
        cls.REQUIRED = tuple(f.name for f in fields(cls) if f.default is not ABSENT)
        KINDS[name] = cls
        return cls

    return register


@dataclass(frozen=True, slots=True)
class Unknown(EntryData):
    """An entry of a kind this version does not define (an old journal file, a ``test.`` filler), kept as is."""

    name: str
    data: JsonObject

    @property
    def journal_kind(self) -> str:
        return self.name

    def to_data(self) -> dict[str, Any]:
        return dict(self.data)


def parse(kind: str, data: Mapping[str, Any]) -> EntryData:
    """The typed entry of one journaled ``(kind, data)``: missing keys read as :data:`ABSENT`;
    :class:`Unknown` when the kind is not registered or a key is not one of its fields."""
    cls = KINDS.get(kind)
    if cls is None or not data.keys() <= cls.KEYS:  # keys of another version: kept, not lost
        return Unknown(kind, dict(data))
    if len(data) < len(cls.REQUIRED) or not all(name in data for name in cls.REQUIRED):
        return cls(**{**dict.fromkeys(cls.REQUIRED, ABSENT), **data})
    return cls(**data)


def missing(entry: EntryData) -> list[str]:
    """The fields every writer of the entry's kind gives that this one lacks (a hand-written or old entry)."""
    return [name for name in entry.REQUIRED if getattr(entry, name) is ABSENT]


def given(value: _T | Absent) -> _T | None:
    """A field's value, None when its key was absent: what ``data.get(key)`` used to say."""
    return None if value is ABSENT else value


def check(kind: str, data: Mapping[str, Any]) -> None:
    """Raise :class:`EntryError` unless ``data`` is a whole entry of a registered ``kind`` (``test.`` kinds
    pass): what :func:`build` would refuse, without building it (the journal's hot path)."""
    cls = KINDS.get(kind)
    if cls is None:
        if not kind.startswith(TEST_PREFIX):
            raise EntryError(f"journal kind {kind!r} is not registered in mock_api.journal_entries")
        return
    if not data.keys() <= cls.KEYS or not all(name in data for name in cls.REQUIRED):
        build(kind, data)  # says which key is wrong


def build(kind: str, data: Mapping[str, Any]) -> EntryData:
    """The typed entry a writer means by ``record(call_id, kind, **data)``; :class:`EntryError` when the kind
    is not registered or the keys are not its fields (``test.`` kinds build :class:`Unknown`)."""
    cls = KINDS.get(kind)
    if cls is None:
        if kind.startswith(TEST_PREFIX):
            return Unknown(kind, dict(data))
        raise EntryError(f"journal kind {kind!r} is not registered in mock_api.journal_entries")
    try:
        return cls(**data)
    except TypeError as exc:
        raise EntryError(f"journal kind {kind!r} ({cls.__name__}): {exc}") from None


# ---- the call and its lifecycle ------------------------------------------------------------------------


@_kind("model.retiring")
class ModelRetiring(EntryData):
    """A session named a model on a shutdown list (:mod:`mock_api.models`), retiring or already retired."""

    model: str
    where: str  # "session" (the session's model) or "transcription" (its input transcription model)
    shutdown: str  # the announced shutdown date, ISO (YYYY-MM-DD)
    replacement: str | None  # the model to move to, None when no replacement is named
    days_left: int  # days from the day it was named to the shutdown: 0 on the day, negative once retired
    refused: bool  # the session was refused for it (past its date, or the model_retired fault)
    via: Opt[str] = ABSENT  # what named it: accept, session.update, ?model=, session.start


@_kind("call.created")
class CallCreated(EntryData):
    """A call came in (SIP INVITE or ``POST /_mock/calls``), before its webhook."""

    transport: str
    sip_headers: list[Any]  # [name, value] pairs, order kept
    media_security: str | None
    faults: list[JsonObject]


@_kind("state")
class State(EntryData):
    """The call lifecycle moved from ``before`` to ``after`` (the first entry has ``before`` null)."""

    before: str | None
    after: str
    event: str
    source: Opt[str] = ABSENT
    sip_final_status: Opt[int | None] = ABSENT
    refer_target: Opt[str | None] = ABSENT
    reason: Opt[str | None] = ABSENT
    refer_status: Opt[int | None] = ABSENT  # only after a REFER's final answer


@_kind("call.refused")
class CallRefused(EntryData):
    """The lifecycle refused an event in the call's state (a REST control too late, a second accept)."""

    event: str
    source: str
    state: str
    code: str | None


@_kind("call.refer_noop")
class CallReferNoop(EntryData):
    """A refer of a call with no SIP leg: nothing to transfer, the call goes on."""

    target_uri: str


@_kind("fault.fired")
class FaultFired(EntryData):
    """A named fault acted where nothing else in the journal would say why (refer_500, accept_slow_404)."""

    fault: str
    detail: str
    edge: Opt[str] = ABSENT  # "start" or "end" of a media fault's window (media_hold, media_silence, ...)


@_kind("fault.drawn")
class FaultDrawn(EntryData):
    """A fault with a ``probability`` was decided for this call: the draw, so a chaos run can be replayed
    (``key`` is the call's arrival number in the mock, ``n`` the fault's copy)."""

    fault: str
    probability: float
    seed: int
    key: str
    n: int
    draw: float
    fired: bool


@_kind("call.effect")
class CallEffect(EntryData):
    """The lifecycle asked an adapter for an effect (answer, final status, REFER, BYE, session start/end)."""

    effect: str  # the effect's class name
    status_code: Opt[int] = ABSENT  # SendSipFinal
    target_uri: Opt[str] = ABSENT  # SendRefer
    reason: Opt[str] = ABSENT  # EndSession


@_kind("config")
class Config(EntryData):
    """``PATCH /_mock/config`` changed these settings."""

    changed: list[str]


@_kind("limits.config")
class LimitsConfig(EntryData):
    """The OpenAI-side limits in effect after a config change that touched them."""

    max_concurrent_sessions: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    window_s: float


@_kind("limits.hit")
class LimitsHit(EntryData):
    """A limit refused something (a 429, a failed response, a 1013 close); ``limit`` says which cap."""

    limit: str
    where: str  # rest, accept, response, websocket
    value: int
    used: int
    requested: int
    retry_after_s: float | None
    op: Opt[str] = ABSENT  # rest
    response_id: Opt[str | None] = ABSENT  # response
    session: Opt[str] = ABSENT  # response of a call-less session
    model: Opt[str | None] = ABSENT  # websocket
    intent: Opt[str | None] = ABSENT  # websocket


@_kind("mock.bug")
class MockBug(EntryData):
    """An exception inside the mock itself (never the app's fault): runs and the pytest plugin fail on it."""

    where: str
    error: str
    traceback: str


@_kind("mock.stall")
class MockStall(EntryData):
    """The event loop answered nothing for ``ms`` (``rtsip mock --stall-watch``): where it was, as a stack."""

    ms: float
    stack: str


@_kind("audio_library.skipped")
class AudioLibrarySkipped(EntryData):
    """A file of the configured audio library could not be fingerprinted."""

    path: str
    reason: str


# ---- webhooks ---------------------------------------------------------------------------------------


@_kind("webhook.skipped")
class WebhookSkipped(EntryData):
    """No webhook URL is configured: the incoming call waits for a control call instead."""

    reason: str


@_kind("webhook.queued")
class WebhookQueued(EntryData):
    """A webhook event is about to be delivered."""

    webhook_id: str
    url: str
    event_type: str | None
    event: JsonObject


@_kind("webhook.dropped")
class WebhookDropped(EntryData):
    """A fault dropped the webhook: never sent."""

    webhook_id: str
    fault: str


@_kind("webhook.delayed")
class WebhookDelayed(EntryData):
    """A fault holds the webhook back this long before its first attempt."""

    webhook_id: str
    seconds: float


@_kind("webhook.attempt")
class WebhookAttempt(EntryData):
    """One POST of a webhook and its answer (``latency_ms`` after it was sent, so sent = t_ms - latency_ms)."""

    webhook_id: str
    attempt: int
    url: str
    timestamp: int
    signature: str
    status: int | None
    ok: bool
    error: str | None
    latency_ms: float
    response_body: str | None
    duplicate: bool


@_kind("webhook.delivered")
class WebhookDelivered(EntryData):
    """The app answered a webhook with a 2xx."""

    webhook_id: str
    attempts: int


@_kind("webhook.gave_up")
class WebhookGaveUp(EntryData):
    """Every attempt of a webhook failed."""

    webhook_id: str
    attempts: int
    last_status: int | None


# ---- REST -------------------------------------------------------------------------------------------


@_kind("rest.request")
class RestRequest(EntryData):
    """A call control arrived (accept, reject, refer, hangup); ``body`` null when it was not JSON."""

    op: str
    path: str
    call_id: str
    body: Json
    headers: JsonObject
    query: Opt[dict[str, str]] = ABSENT  # only when it had one (Azure's api-version)
    tls: Opt[bool] = ABSENT  # only when it came in on the HTTPS listener


@_kind("rest.response")
class RestResponse(EntryData):
    """What the mock answered a call control."""

    status: int
    body: Json


@_kind("rest.client_secret")
class RestClientSecret(EntryData):
    """An ephemeral key was minted (``POST /v1/realtime/client_secrets``); the key masked."""

    session_type: str
    expires_at: int
    key: str


@_kind("rest.transcription")
class RestTranscription(EntryData):
    """A file was transcribed (``POST /v1/audio/transcriptions``)."""

    model: str
    bytes: int
    response_format: str


@_kind("azure.refused")
class AzureRefused(EntryData):
    """Azure's front door refused a request (bad api-version, missing key)."""

    reason: str
    status: int
    method: str
    path: str
    api_version: str | None


@_kind("builtin.hit")
class BuiltinHit(EntryData):
    """A built-in answer of the rest of the API (models, chat completions...) served a request."""

    method: str
    path: str
    body: Json
    stream: bool


@_kind("stub.config")
class StubConfig(EntryData):
    """Stubs were added, or all replaced (``ids`` empty and ``replace``: cleared)."""

    ids: list[str | None]
    replace: bool


@_kind("stub.hit")
class StubHit(EntryData):
    """A stub answered a request."""

    id: str | None
    name: str | None
    lifetime: str
    hits: int
    method: str
    path: str
    body: Json
    status: int


@_kind("stub.out_of_order")
class StubOutOfOrder(EntryData):
    """An ordered stub was requested before its turn (answered 400)."""

    id: str | None
    name: str | None
    expected: JsonObject  # the stub whose turn it was: id and name
    method: str
    path: str
    body: Json


# ---- HTTP front door, shards, the interception proxy ------------------------------------------------------


@_kind("http.unknown_route")
class HttpUnknownRoute(EntryData):
    """A request no route (and no stub) answers: a 404 in the API's envelope."""

    method: str
    path: str
    closest_stub: Opt[JsonObject | None] = ABSENT  # when stubs are set: the nearest and why it missed


@_kind("http.client_gone")
class HttpClientGone(EntryData):
    """The client left while its request was being answered (not a bug)."""

    method: str
    path: str
    error: str


@_kind("http.malformed")
class HttpMalformed(EntryData):
    """A request the HTTP parser refused (a 4xx before any route)."""

    status: int
    error: str
    peer: str | None


@_kind("http.refused")
class HttpRefused(EntryData):
    """A request from a host or origin the mock does not serve (DNS rebinding guard, control token)."""

    reason: str
    method: str
    path: str
    host: str | None
    origin: str | None


@_kind("proxy.refused")
class ProxyRefused(EntryData):
    """The interception proxy refused a CONNECT or request (a host it does not intercept)."""

    host: str
    port: int | None
    method: str
    reason: str


@_kind("proxy.connect")
class ProxyConnect(EntryData):
    """The proxy took a connection for an intercepted host (``plain``: an http:// request, no TLS)."""

    host: str
    port: int
    plain: Opt[bool] = ABSENT


@_kind("proxy.tls_failed")
class ProxyTlsFailed(EntryData):
    """The app's TLS handshake with the proxy failed (it does not trust the mock's CA)."""

    host: str
    error: str


@_kind("proxy.upstream_failed")
class ProxyUpstreamFailed(EntryData):
    """The proxy could not reach the mock's API port for an intercepted request."""

    host: str
    error: str


@_kind("proxy.control_refused")
class ProxyControlRefused(EntryData):
    """A ``/_mock/`` request on an API-only port (behind the proxy): answered 404."""

    method: str
    path: str
    host: str | None


# ---- the Realtime WebSocket ---------------------------------------------------------------------------


@_kind("ws.refused")
class WsRefused(EntryData):
    """A Realtime socket was refused before the upgrade, with an HTTP status."""

    status: int
    call_id: str | None
    path: Opt[str] = ABSENT  # Azure's front door


@_kind("ws.connect")
class WsConnect(EntryData):
    """A Realtime socket was upgraded (query, handshake headers with secrets masked)."""

    query: dict[str, str]
    beta: bool
    headers: list[list[str]]  # [name, value] pairs in the order sent
    path: str
    tls: bool


@_kind("ws.session")
class WsSession(EntryData):
    """A call-less socket (``?model=`` / ``?intent=``) got a session, journaled on its own timeline ``session``."""

    session: str
    intent: str | None
    model: str | None


@_kind("ws.client")
class WsClient(EntryData):
    """A client event the session received (audio compacted)."""

    event: JsonObject


@_kind("ws.server")
class WsServer(EntryData):
    """A server event sent to the client (audio compacted)."""

    event: JsonObject


@_kind("ws.close")
class WsClose(EntryData):
    """A Realtime socket closed; ``code`` null when the call ended under it (``dropped``)."""

    code: int | None
    reason: Opt[str | None] = ABSENT
    dropped: Opt[bool] = ABSENT
    queued_bytes: Opt[int] = ABSENT  # a client that did not read: what was waiting
    limit: Opt[int] = ABSENT


@_kind("ws.too_big")
class WsTooBig(EntryData):
    """A client frame over the socket's size limit."""

    limit: int


@_kind("ws.drop")
class WsDrop(EntryData):
    """A fault dropped the socket (no close frame)."""


@_kind("audio.out")
class AudioOut(EntryData):
    """A chunk of reply audio went to the caller (``ms`` long)."""

    response_id: str | None
    ms: float
    corrupt: bool
    voice: str | None


@_kind("audio.heard")
class AudioHeard(EntryData):
    """A committed user turn: what was heard, who recognised it, and the script turn that answers it."""

    item_id: str
    text: str
    recognised: bool
    source: str
    reason: str
    audio_ms: float
    language: Opt[str] = ABSENT
    clip: Opt[str] = ABSENT
    score: Opt[float] = ABSENT
    span_ms: Opt[list[float]] = ABSENT
    ends_utterance: Opt[bool] = ABSENT
    segments: Opt[list[int]] = ABSENT
    script: Opt[JsonObject] = ABSENT  # turn, how, partial

    @property
    def script_turn(self) -> int | None:
        """The script turn that answered this whole turn (None: none, or only the start of an utterance)."""
        s = self.script
        if not isinstance(s, dict) or s.get("turn") is None or s.get("partial"):
            return None
        return int(s["turn"])


# ---- the virtual caller -------------------------------------------------------------------------------


@_kind("caller.say")
class CallerSay(EntryData):
    """The virtual caller starts speaking ``label`` (``ms`` of audio, fed ``speed`` times real time)."""

    label: str
    ms: float
    speed: float


@_kind("caller.said")
class CallerSaid(EntryData):
    """The virtual caller finished speaking."""

    label: str
    ms: float


@_kind("caller.say_cut")
class CallerSayCut(EntryData):
    """The virtual caller stopped early (the call ended, or a new say replaced it)."""

    label: str
    sent_ms: float


@_kind("caller.dtmf")
class CallerDtmf(EntryData):
    """The virtual caller pressed a key."""

    digit: str


# ---- the SIP ingress ----------------------------------------------------------------------------------


@_kind("sip.listening")
class SipListening(EntryData):
    """The SIP ingress is up."""

    uri: str
    ca: str
    workers: int


@_kind("sip.invite")
class SipInvite(EntryData):
    """An INVITE for the project arrived (the call was created just before)."""

    request_uri: str | None
    src: str | None
    transport: str | None
    worker: int | None
    ref: str


@_kind("sip.sent")
class SipSent(EntryData):
    """The mock sent a response (``status``) or a request (``request``: REFER, BYE) on the SIP leg."""

    status: Opt[int] = ABSENT
    vad: Opt[JsonObject | None] = ABSENT  # the 200's turn detection settings
    request: Opt[str] = ABSENT
    refer_to: Opt[str] = ABSENT


@_kind("sip.state")
class SipState(EntryData):
    """pjsua's call state changed."""

    state: str | None
    code: int | None
    reason: str | None


@_kind("sip.media")
class SipMedia(EntryData):
    """The SIP leg's media is up."""

    codec: str | None
    srtp: Json
    clock_rate: int | None


@_kind("sip.speech_started")
class SipSpeechStarted(EntryData):
    """The SIP leg's VAD heard the caller start (``audio_ms`` into the call's audio)."""

    audio_ms: int


@_kind("sip.speech_stopped")
class SipSpeechStopped(EntryData):
    """The SIP leg's VAD decided the caller's turn ended at ``audio_ms`` (at ``detected_ms``)."""

    audio_ms: int
    detected_ms: int
    turn_audio_ms: Opt[list[int]] = ABSENT  # where the handed-over audio lies


@_kind("sip.dtmf")
class SipDtmf(EntryData):
    """A DTMF digit came in on the SIP leg."""

    digit: str
    method: str | None


@_kind("sip.refer_status")
class SipReferStatus(EntryData):
    """A NOTIFY about the REFER the mock sent."""

    code: int | None
    final: bool | None


@_kind("sip.ended")
class SipEnded(EntryData):
    """The SIP leg ended (``kind`` call_failed: its worker died); ``rtp`` the worker's stream counters."""

    kind: str
    code: int | None
    reason: str | None
    by: str | None
    cause: str | None
    recording: Json
    rtp: JsonObject | None


@_kind("sip.rejected")
class SipRejected(EntryData):
    """An INVITE was refused (an unknown user, or pjsua refused it)."""

    reason: str | None
    status: int | None
    request_uri: str | None
    user: Opt[str] = ABSENT
    src: Opt[str | None] = ABSENT


@_kind("sip.redirected")
class SipRedirected(EntryData):
    """The front door sent an INVITE to another worker (302)."""

    sip_call_id: str | None
    to_worker: int | None
    contact: str | None


@_kind("sip.command_failed")
class SipCommandFailed(EntryData):
    """A command to the SIP worker failed (the leg may be gone)."""

    op: str
    error: str


@_kind("sip.clear_playback")
class SipClearPlayback(EntryData):
    """The reply being played to the SIP caller was cut (barge-in, truncate)."""

    response_id: str | None


@_kind("sip.media_delay")
class SipMediaDelay(EntryData):
    """The call's audio is late by these ms each way (media_delay, media_jitter's buffer), from its answer on:
    the timing figures place what the caller hears and says by them."""

    to_caller_ms: float
    to_model_ms: float


@_kind("sip.ssrc")
class SipSsrc(EntryData):
    """The SSRC the caller's RTP is heard under: once learnt (``old`` null), then at each change mid-call (a
    carrier's failover, failure mode 28), after which the audio goes on unless caller_ssrc_reaction says not."""

    ssrc: int
    old: int | None


@_kind("sip.worker_started")
class SipWorkerStarted(EntryData):
    """A SIP worker process is ready (again, after ``restarts``), on these ports."""

    worker: int
    pid: int | None
    restarts: int
    tls_port: Opt[int] = ABSENT
    tcp_port: Opt[int] = ABSENT
    udp_port: Opt[int] = ABSENT


@_kind("sip.worker_exited")
class SipWorkerExited(EntryData):
    """A SIP worker process exited (``restarting``: the supervisor starts it again)."""

    worker: int
    pid: int | None
    returncode: int | None
    restarting: bool


# ---- webhook endpoints (/v1/webhook_endpoints), on the server timeline ---------------------------------


@_kind("webhook_endpoint.created")
class WebhookEndpointCreated(EntryData):
    """An endpoint was created; its secret is never journaled, only its hint."""

    endpoint_id: str
    name: str
    url: str
    event_types: list[str]
    signing_secret_hint: str


@_kind("webhook_endpoint.updated")
class WebhookEndpointUpdated(EntryData):
    """An update was taken: ``changed`` names the fields whose value changed (empty: a no-op, ``updated_at``
    kept); the rest is the endpoint after it."""

    endpoint_id: str
    changed: list[str]
    name: str
    url: str
    event_types: list[str]


@_kind("webhook_endpoint.deleted")
class WebhookEndpointDeleted(EntryData):
    """An endpoint was deleted: nothing is delivered to it any more."""

    endpoint_id: str


@_kind("webhook_endpoint.secret_rotated")
class WebhookEndpointSecretRotated(EntryData):
    """A new signing secret; the replaced one signs too until ``old_secret_until`` (unix seconds on the store's
    clock), or stopped at once (null)."""

    endpoint_id: str
    signing_secret_hint: str
    old_secret_until: float | None


@_kind("webhook_endpoint.tested")
class WebhookEndpointTested(EntryData):
    """A test delivery went out (its attempt is the ``webhook.attempt`` of ``webhook_id``): the endpoint's HTTP
    status, or why there was none."""

    endpoint_id: str
    event_type: str
    webhook_id: str
    url: str
    status: int | None
    error: str | None


@_kind("webhook_endpoint.refused")
class WebhookEndpointRefused(EntryData):
    """A webhook endpoint request was refused (400 naming ``param``, 404 unknown id)."""

    op: str
    status: int
    code: str | None
    param: str | None
    endpoint_id: Opt[str] = ABSENT


# ---- GPT-Live: a call's Live session and its sidebands (mock_api.live_host, mock_api.live_ws) --------------


@_kind("live.settings")
class LiveSettingsChosen(EntryData):
    """A Live session started: the choices it makes where the real service's behaviour is undocumented."""

    session_id: str
    settings: JsonObject


@_kind("live.refused")
class LiveRefused(EntryData):
    """A sideband (``/live/sessions/{id}/attach``) was refused before the upgrade, with an HTTP status."""

    status: int
    session_id: str
    path: str
    code: Opt[str | None] = ABSENT


@_kind("live.connect")
class LiveConnect(EntryData):
    """A sideband was upgraded (``conn`` names it in the other live.* entries; secrets masked in headers)."""

    conn: str
    graceful_close: bool | None  # the query's, None when it did not say
    query: dict[str, str]
    headers: list[list[str]]
    path: str
    tls: bool


@_kind("live.client")
class LiveClient(EntryData):
    """A client frame from sideband ``conn`` (audio compacted)."""

    conn: str
    event: Json


@_kind("live.server")
class LiveServer(EntryData):
    """A server event of the Live session and the connections it went to (empty: nobody attached)."""

    event: JsonObject
    to: list[str]


@_kind("live.close")
class LiveClose(EntryData):
    """A sideband closed: ``code`` null when it was dropped without a closing handshake."""

    conn: str
    code: int | None
    reason: Opt[str | None] = ABSENT
    dropped: Opt[bool] = ABSENT
    queued_bytes: Opt[int] = ABSENT  # a client that did not read: what was waiting
    limit: Opt[int] = ABSENT


@_kind("live.heard")
class LiveHeard(EntryData):
    """A caller turn of a Live call was recognised: what was heard, who decided, its span on the session timeline."""

    text: str
    recognised: bool
    source: str
    reason: str
    audio_ms: float
    start_ms: int
    end_ms: int
    clip: Opt[str] = ABSENT


@_kind("live.media_cleared")
class LiveMediaCleared(EntryData):
    """Model audio still queued for the caller was dropped (barge-in, a fixture starting, the end)."""

    reason: str


@_kind("live.dtmf_out")
class LiveDtmfOut(EntryData):
    """A DTMF key went to the caller (a sideband's ``transport.dtmf.send``)."""

    digit: str


@_kind("live.session")
class LiveSessionOpened(EntryData):
    """A primary WebSocket (``/live/sessions``) or a fork (``…/fork``) got a Live session, journaled on its own
    timeline ``session``; a fork names the session it continues."""

    session: str
    forked_from: Opt[str] = ABSENT


@_kind("live.recording_capped")
class LiveRecordingCapped(EntryData):
    """A stored Live session's recording reached its cap: later audio is not kept, the WAV ends there."""

    session_id: str
    max_seconds: int
    at_ms: int


@_kind("live.content")
class LiveContent(EntryData):
    """A ``GET /live/sessions/{id}/content`` answer: the WAV served, or why not (``code``)."""

    session_id: str
    status: int
    code: Opt[str] = ABSENT  # a refusal's error code
    bytes: Opt[int] = ABSENT  # the WAV's size
    audio_ms: Opt[float] = ABSENT


@_kind("live.create")
class LiveCreate(EntryData):
    """``POST /v1/live/sessions`` was answered: ``status`` 201 with the new session, or the refusal's code
    and param; the trunk's password never appears (the body keeps ``auth.username`` only)."""

    status: int
    session_id: Opt[str] = ABSENT
    code: Opt[str | None] = ABSENT
    param: Opt[str | None] = ABSENT
    body: Opt[Any] = ABSENT
    settings: Opt[JsonObject] = ABSENT  # the outbound choices this call was made with


@_kind("live.dial")
class LiveDial(EntryData):
    """The outbound leg's INVITE went to the trunk (``uri``), or could not be sent (``error``)."""

    uri: str
    from_uri: str | None
    auth_username: str | None
    waited_for: str  # "sideband" (one attached) or "timeout" (sideband_wait_s passed)
    error: Opt[str] = ABSENT


@_kind("live.transport")
class LiveTransport(EntryData):
    """The outbound leg moved: ``ringing``, ``answered`` or ``failed`` (with the SIP status and the code sent)."""

    state: str
    sip_status: Opt[int | None] = ABSENT
    sip_reason: Opt[str | None] = ABSENT
    code: Opt[str] = ABSENT


@_kind("live.srtp_required")
class LiveSrtpRequired(EntryData):
    """A call accepted on GPT-Live had offered plain RTP: its SIP leg was refused with ``status`` (SRTP required)."""

    status: int
    media_security: str


@_kind("sip.opus_unavailable")
class SipOpusUnavailable(EntryData):
    """An outbound leg offered G.711 without Opus (``reason``: why the worker has no Opus); GPT-Live's real
    outbound trunks must support Opus, so a trunk tested this way is not tested as the service will call it."""

    reason: str
    offered: list[str]
