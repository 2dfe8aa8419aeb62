"""The mock's control-plane state and the glue that carries out call effects.

``calls.Call`` decides, timers included; ``MockServer`` schedules the timers the table asks for and
feeds them back as events, runs webhook tasks, journals every step and tells the other adapters
(WebSocket, SIP ingress) what happened through callbacks. Each call's faults are read once into a
:class:`~mock_api.fault_script.FaultScript` (:meth:`MockServer.fault_script`), which the table and the
adapters ask instead of looking fault names up.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web

from . import calls as c
from . import errors
from . import journal_entries as je
from .config import ConfigPatch, MockConfig
from .fault_script import FaultScript
from .faults import Fault
from .journal import Journal
from .limits import Hit, Limiter
from .recognisers import Chain, build_recogniser, default_recogniser
from .shards import Shard
from .webhook_endpoints import Target, WebhookEndpointStore
from .webhooks import WebhookSender, incoming_event, new_secret

PACK_BODY_CHARS = 64 * 1024  # an ended call's accept body this long is kept compressed
INCOMING_EVENTS = ("realtime.call.incoming", "live.transport.incoming", "live.call.incoming")
"""What one incoming call may fire, to whichever receivers subscribe (webhook_events, webhook endpoints)."""

CallCallback = Callable[[c.Call], None]
EffectCallback = Callable[[c.Call, c.Effect], None]

SERVER_KEY: web.AppKey[MockServer] = web.AppKey("rtsip_server")

ApiStyle = Literal["openai", "azure_v1", "azure_dated"]
AZURE_PREFIX = "/openai/"
AZURE_V1_PREFIX = "/openai/v1/"
AZURE_V1_API_VERSIONS = frozenset({"preview", "latest"})
"""What Azure's versionless v1 API takes as ``api-version``; a dated version there is refused."""

# Azure's front door answers in its own envelope, {"error": {"code", "message"}}, not OpenAI's.
AZURE_NO_VERSION = (404, "404", "Resource not found")
AZURE_BAD_VERSION = (400, "BadRequest", "API version not supported")
AZURE_NO_KEY = (401, "401", "Access denied due to missing subscription key. Make sure to include subscription key "
                "when making requests to an API.")
AZURE_BAD_KEY = (401, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                 "provide a valid key for an active subscription and use a correct regional API endpoint for your "
                 "resource.")


def api_style(path: str) -> ApiStyle:
    """Which client's URLs a path belongs to: OpenAI's ``/v1``, Azure's versionless ``/openai/v1`` (the
    plain ``OpenAI`` client pointed at Azure) or Azure's dated ``/openai/...?api-version=`` (``AzureOpenAI``)."""
    if path.startswith(AZURE_V1_PREFIX):
        return "azure_v1"
    if path.startswith(AZURE_PREFIX):
        return "azure_dated"
    return "openai"


def azure_error(refusal: tuple[int, str, str]) -> web.Response:
    """One of Azure's front-door refusals (``AZURE_*``) in Azure's envelope: no ``type``, no ``param``."""
    status, code, message = refusal
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers={"x-request-id": str(uuid.uuid4()), "apim-request-id": str(uuid.uuid4())})


def sip_headers(from_uri: str, to_uri: str, sip_call_id: str | None,
                extra: Iterable[tuple[str, str]] | dict[str, str] | None) -> list[dict[str, str]]:
    """INVITE headers as the webhook carries them: order and duplicates kept, auth headers dropped."""
    pairs = list(extra.items()) if isinstance(extra, dict) else list(extra or [])
    names = {n.lower() for n, _ in pairs}
    base: list[tuple[str, str]] = []
    if "from" not in names:
        base.append(("From", from_uri))
    if "to" not in names:
        base.append(("To", to_uri))
    if "call-id" not in names:
        base.append(("Call-ID", sip_call_id or str(uuid.uuid4())))
    drop = {"authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate"}
    return [{"name": n, "value": v} for n, v in base + pairs if n.lower() not in drop]


def effect_entry(effect: c.WireEffect) -> je.CallEffect:
    """The ``call.effect`` entry of an effect: its name and what the SIP leg acts on (a session's
    config and a BYE's delay stay out: the accept and the state entries say them)."""
    name = type(effect).__name__
    if isinstance(effect, c.SendSipFinal):
        return je.CallEffect(effect=name, status_code=effect.status_code)
    if isinstance(effect, c.SendRefer):
        return je.CallEffect(effect=name, target_uri=effect.target_uri)
    if isinstance(effect, c.EndSession):
        return je.CallEffect(effect=name, reason=effect.reason)
    return je.CallEffect(effect=name)


P = TypeVar("P")


class MockServer:
    def __init__(self, config: MockConfig | None = None, journal: Journal | None = None,
                 clock: Callable[[], float] = time.monotonic, shard: Shard | None = None) -> None:
        self.config = config or MockConfig()
        self.shard = shard  # one of several mock processes (mock_api.shards): its call ids route back here
        if not self.config.webhook_secret:
            self.config = self.config.model_copy(update={"webhook_secret": new_secret()})
        self.clock = clock
        self.journal = journal or Journal(clock=clock, record_audio=self.config.record_audio,
                                          spill=Path(self.config.journal_file) if self.config.journal_file else None,
                                          max_bytes=self.config.journal_max_bytes,
                                          max_string_chars=self.config.journal_max_string_chars)
        # the journal decides which ended timelines leave (by count and by bytes); the call goes with it
        self.journal.retain_ended = self.config.retain_ended_calls
        self.journal.on_forget.append(self._forgotten)
        self.calls: dict[str, c.Call] = {}
        self.live_ids: dict[str, str] = {}  # a call's GPT-Live session id -> its Realtime call id
        self._packed_bodies: dict[str, bytes] = {}  # ended calls' large accept bodies, compressed JSON
        self.webhooks = WebhookSender(self.journal, clock)
        self._call_faults: dict[str, list[Fault]] = {}
        self._call_scripts: dict[str, dict[str, Any]] = {}
        self._fault_scripts: dict[str, FaultScript] = {}  # by call id ("": call-less), until faults change
        self._arrived = 0  # calls started so far: a call's number keys its draws of chance (a replay has the same)
        self._arrivals: dict[str, int] = {}
        self._drawn: dict[str, set[tuple[str, int]]] = {}  # by call id: (fault, copy) draws journaled already
        self._scripts_from: list[Fault] = self.config.faults  # the mock's faults the scripts were read with
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, dict[c.TimerKind, asyncio.TimerHandle]] = {}
        self._active_cbs: list[CallCallback] = []
        self._ended_cbs: list[CallCallback] = []
        self._effect_cbs: list[EffectCallback] = []
        self.ended_keys: set[str] = set()  # ended calls and call-less sessions the journal still keeps
        self._ephemeral: dict[str, float] = {}  # minted ek_ keys and when they expire (wall-clock seconds)
        self.limits = Limiter()
        self._configure_limits()
        self.sip_status: Callable[[], dict[str, Any]] | None = None  # set while a SIP ingress runs
        # local ports that serve only the OpenAI API (what the interception proxy relays to): the control
        # API, which holds the webhook secret, is never reachable through an intercepted host
        self.api_only_ports: set[int] = set()
        self._parts: dict[type, Any] = {}
        self._recogniser: tuple[tuple[Any, ...], Chain] | None = None

    def recogniser(self) -> Chain:
        """What hears unscripted caller audio: fingerprints of audio_fixtures/ and ``audio_library``, then
        the plugged-in recognisers; rebuilt when those settings change (a bad ``recogniser_python`` raises)."""
        c = self.config
        key = (tuple(c.audio_library), c.recogniser_command, c.recogniser_python, c.recogniser_timeout_s)
        if self._recogniser is None or self._recogniser[0] != key:
            if key == ((), None, None, 10.0):
                built = default_recogniser()
            else:
                built = build_recogniser(c.audio_library, c.recogniser_command, c.recogniser_python,
                                         c.recogniser_timeout_s)
                for path, why in built.skipped:
                    self.journal.add(None, je.AudioLibrarySkipped(path=str(path), reason=why))
            self._recogniser = (key, built)
        return self._recogniser[1]

    def part(self, kind: type[P]) -> P:
        """This server's one instance of an adapter's per-server state (created on first use), so
        adapters such as the WebSocket registry and the virtual media clock need no side tables."""
        found = self._parts.get(kind)
        if found is None:
            found = self._parts[kind] = kind()
        return found

    # ---- configuration ------------------------------------------------------------------

    def configure(self, patch: ConfigPatch) -> MockConfig:
        self.config = patch.apply(self.config)
        self.journal.retain_ended = self.config.retain_ended_calls
        self.journal.add(None, je.Config(changed=sorted(patch.model_fields_set)))
        if "limits" in patch.model_fields_set:
            self._configure_limits()
            lim = self.config.limits
            self.journal.add(None, je.LimitsConfig(max_concurrent_sessions=lim.max_concurrent_sessions,
                                                   requests_per_minute=lim.requests_per_minute,
                                                   tokens_per_minute=lim.tokens_per_minute, window_s=lim.window_s))
        return self.config

    def _configure_limits(self) -> None:
        lim = self.config.limits
        self.limits.configure(max_concurrent_sessions=lim.max_concurrent_sessions,
                              requests_per_minute=lim.requests_per_minute,
                              tokens_per_minute=lim.tokens_per_minute, window_s=lim.window_s, now=self.clock())

    def limit_hit(self, call_id: str | None, hit: Hit, where: str, *, op: je.Opt[str] = je.ABSENT,
                  response_id: je.Opt[str | None] = je.ABSENT, session: je.Opt[str] = je.ABSENT,
                  model: je.Opt[str | None] = je.ABSENT, intent: je.Opt[str | None] = je.ABSENT) -> None:
        """Journal one refusal so a load test can count them: ``limits.hit`` with ``limit`` = which cap;
        the keyword fields say where it happened (left out of the entry unless given)."""
        retry = None if hit.retry_after_s is None else round(hit.retry_after_s, 3)
        self.journal.add(call_id, je.LimitsHit(limit=hit.limit, where=where, value=hit.value, used=hit.used,
                                               requested=hit.requested, retry_after_s=retry, op=op,
                                               response_id=response_id, session=session, model=model,
                                               intent=intent))

    def faults_for(self, call_id: str | None) -> list[Fault]:
        return [*self.config.faults, *self._call_faults.get(call_id or "", [])]

    def fault_script(self, call_id: str | None) -> FaultScript:
        """What the active faults ask of this call (or of call-less sessions), read once until they change."""
        if self.config.faults is not self._scripts_from:  # the mock's faults changed: read every script again
            self._fault_scripts.clear()
            self._scripts_from = self.config.faults
        key = call_id or ""
        script = self._fault_scripts.get(key)
        if script is None:
            arrival = self._arrivals.get(key)
            script = FaultScript.of(self.faults_for(call_id), key="" if arrival is None else str(arrival))
            if not key or key in self.calls:  # an unknown id (a socket's typo) is not kept
                self._fault_scripts[key] = script
                drawn = self._drawn.setdefault(key, set())
                for made in script.draws:
                    if (made.fault, made.n) not in drawn:  # journaled once, though the faults may change
                        drawn.add((made.fault, made.n))
                        self.journal.add(call_id, je.FaultDrawn(**made.to_json()))
        return script

    def script_for(self, call_id: str | None) -> dict[str, Any] | None:
        return self._call_scripts.get(call_id or "") or self.config.script

    def set_call_options(self, call_id: str, faults: list[Fault] | None = None,
                         script: dict[str, Any] | None = None) -> None:
        if faults is not None:
            self._call_faults[call_id] = list(faults)
            self._fault_scripts.pop(call_id, None)
        if script is not None:
            self._call_scripts[call_id] = script

    # ---- auth ---------------------------------------------------------------------------

    def api_key_ok(self, key: str | None, *, ephemeral: bool = False) -> bool:
        """A standard key (any ``sk-`` one unless ``api_keys`` is set); with ``ephemeral``, also an ``ek_`` key
        this mock minted (``POST /v1/realtime/client_secrets``) that has not expired."""
        if not key:
            return False
        if ephemeral and key.startswith("ek_"):
            return self.ephemeral_ok(key)
        if self.config.api_keys is not None:
            return key in self.config.api_keys
        return key.startswith("sk-")

    MAX_EPHEMERAL = 10_000

    def mint_ephemeral(self, key: str, expires_at: float) -> None:
        """Remember a minted client secret until it expires (expired ones go first; at most MAX_EPHEMERAL)."""
        now = time.time()
        if len(self._ephemeral) >= self.MAX_EPHEMERAL:
            self._ephemeral = {k: t for k, t in self._ephemeral.items() if t > now}
            while len(self._ephemeral) >= self.MAX_EPHEMERAL:
                self._ephemeral.pop(next(iter(self._ephemeral)))
        self._ephemeral[key] = expires_at

    def ephemeral_ok(self, key: str) -> bool:
        expires = self._ephemeral.get(key)
        return expires is not None and time.time() < expires

    def azure_key_ok(self, key: str) -> bool:
        """Azure keys and Entra tokens look nothing like ``sk-``: any key passes unless ``api_keys`` is set."""
        return key in self.config.api_keys if self.config.api_keys is not None else bool(key)

    def authenticate(self, request: web.Request) -> web.Response | None:
        """None when the request carries a key we accept; else the real 401 response (Azure's on Azure paths)."""
        key = request_key(request)
        if api_style(request.path) != "openai":
            if key is None:
                return self._azure_refused(request, "key_missing", AZURE_NO_KEY)
            return None if self.azure_key_ok(key) else self._azure_refused(request, "key_invalid", AZURE_BAD_KEY)
        if key is None:
            return errors.missing_key()
        return None if self.api_key_ok(key) else errors.invalid_key(key)

    def admit(self, request: web.Request) -> web.Response | None:
        """The Realtime routes' front door: on Azure paths the ``api-version`` first, then the key."""
        style = api_style(request.path)
        version = request.query.get("api-version")
        if style == "azure_dated" and not version:
            return self._azure_refused(request, "api_version_missing", AZURE_NO_VERSION)
        if style == "azure_dated" and version not in self.config.azure_api_versions:
            return self._azure_refused(request, "api_version_unsupported", AZURE_BAD_VERSION)
        if style == "azure_v1" and version is not None and version not in AZURE_V1_API_VERSIONS:
            return self._azure_refused(request, "api_version_unsupported", AZURE_BAD_VERSION)
        return self.authenticate(request)

    def _azure_refused(self, request: web.Request, reason: str, refusal: tuple[int, str, str]) -> web.Response:
        """Journal why Azure's front door refused (its answer is chosen, not documented) and answer so."""
        self.journal.add(None, je.AzureRefused(reason=reason, status=refusal[0], method=request.method,
                                               path=request.path, api_version=request.query.get("api-version")))
        return azure_error(refusal)

    # ---- hooks for the other adapters ------------------------------------------------------

    def on_call_active(self, cb: CallCallback) -> None:
        self._active_cbs.append(cb)

    def on_call_ended(self, cb: CallCallback) -> None:
        self._ended_cbs.append(cb)

    def on_effect(self, cb: EffectCallback) -> None:
        """SIP-facing effects (answer, final status, REFER, BYE) for the SIP ingress."""
        self._effect_cbs.append(cb)

    # ---- the call lifecycle ----------------------------------------------------------------

    def start_call(self, *, from_uri: str, to_uri: str,
                   headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
                   transport: str = "virtual", media_security: str | None = None,
                   faults: list[Fault] | None = None, script: dict[str, Any] | None = None,
                   sip_call_id: str | None = None) -> c.Call:
        call = c.Call.incoming(
            sip_headers(from_uri, to_uri, sip_call_id, headers), transport=transport,
            media_security=media_security, created_at=time.time(),
            call_id=self.shard.call_id() if self.shard is not None else None,
        )
        self.calls[call.call_id] = call
        self.live_ids[call.live_id] = call.call_id
        self._arrivals[call.call_id] = self._arrived = self._arrived + 1  # the key of its draws of chance
        self.set_call_options(call.call_id, faults, script)
        self.journal.add(call.call_id, je.CallCreated(transport=transport, sip_headers=call.sip_headers,
                                                      media_security=media_security,
                                                      faults=[f.model_dump() for f in faults or []]))
        self.journal.add(call.call_id, je.State(before=None, after=call.state.value, event="incoming"))
        self.apply(call, c.Incoming(self.config.ring_timeout_s, self.config.no_answer_status,
                                    self.fault_script(call.call_id)), "incoming")
        endpoints = self.part(WebhookEndpointStore)
        sent = False
        for event_type in INCOMING_EVENTS:
            targets = [Target("webhook_url", self.config.webhook_url, (self.config.webhook_secret or "",))] if (
                self.config.webhook_url and event_type in self.config.webhook_events) else []
            targets += endpoints.targets(event_type, endpoints.clock())
            if targets:  # one event (one id) for every receiver subscribed to it, each delivery signed its own way
                event = incoming_event(call, event_type)
                for target in targets:
                    self.spawn(self.webhooks.deliver(call.call_id, target.url, target.secrets, event,
                                                     self.config.retry, self.fault_script(call.call_id).delivery))
                sent = True
        if not sent:
            self.journal.add(call.call_id, je.WebhookSkipped(reason="no webhook_url configured"))
        return call

    def apply(self, call: c.Call, event: c.Event, source: str = "rest") -> c.Outcome:
        outcome = call.handle(event)
        name = type(event).__name__.lower()
        if not outcome.ok:
            assert outcome.refusal is not None
            self.journal.add(call.call_id, je.CallRefused(event=name, source=source, state=call.state.value,
                                                          code=outcome.refusal.code))
            return outcome
        if outcome.before is not outcome.after:
            refer_status = call.refer_status if isinstance(event, c.ReferDone) else je.ABSENT
            self.journal.add(call.call_id, je.State(before=outcome.before.value, after=outcome.after.value,
                                                    event=name, source=source,
                                                    sip_final_status=call.sip_final_status,
                                                    refer_target=call.refer_target, reason=call.end_reason,
                                                    refer_status=refer_status))
        elif isinstance(event, c.Refer):
            self.journal.add(call.call_id, je.CallReferNoop(target_uri=event.target_uri))
        for effect in outcome.effects:
            self._run(call, effect)
        if outcome.after.terminal:
            self._retire(call.call_id)
        return outcome

    def _retire(self, call_id: str) -> None:
        """An ended call or session: the journal lets the oldest ended go beyond ``retain_ended_calls``
        (None: no count) or its byte cap, and :meth:`_forgotten` then drops the call too."""
        if call_id in self.ended_keys:
            return
        self.ended_keys.add(call_id)
        self.journal.end(call_id)
        call = self.calls.get(call_id)
        if call is not None and call.accept_body is not None:
            self._pack_body(call)

    def _pack_body(self, call: c.Call) -> None:
        """A large accept body (a big tool schema) costs several times its JSON as objects; an ended
        call keeps it compressed until someone reads it (:meth:`accept_body`)."""
        text = json.dumps(call.accept_body, separators=(",", ":"), default=str)
        if len(text) >= PACK_BODY_CHARS:
            self._packed_bodies[call.call_id] = zlib.compress(text.encode(), 1)
            call.accept_body = None

    def accept_body(self, call: c.Call) -> dict[str, Any] | None:
        """The body that accepted ``call``, decoded again if it was packed when the call ended."""
        packed = self._packed_bodies.get(call.call_id)
        if packed is None:
            return call.accept_body
        body: dict[str, Any] = json.loads(zlib.decompress(packed))
        return body

    def _forgotten(self, key: str) -> None:
        """The journal let an ended timeline go: what the server kept of that call goes with it."""
        self.ended_keys.discard(key)
        gone = self.calls.pop(key, None)
        self._packed_bodies.pop(key, None)
        if gone is not None:
            self.live_ids.pop(gone.live_id, None)
        self._call_faults.pop(key, None)
        self._call_scripts.pop(key, None)
        self._fault_scripts.pop(key, None)
        self._arrivals.pop(key, None)
        self._drawn.pop(key, None)

    def session_ended(self, key: str) -> None:
        """A call-less session (``?model=`` / ``?intent=`` socket) ended: its timeline counts against
        ``retain_ended_calls`` like an ended call's."""
        self._retire(key)

    def mock_bug(self, call_id: str | None, where: str, exc: BaseException) -> None:
        """An exception inside the mock's own code: journaled as ``mock.bug`` with its traceback, apart from
        anything a script or fault asked for, so runs can fail on it."""
        tb = "".join(traceback.format_exception(exc))[-8000:]
        self.journal.add(call_id, je.MockBug(where=where, error=repr(exc)[:500], traceback=tb))

    def _run(self, call: c.Call, effect: c.Effect) -> None:
        if isinstance(effect, c.StartTimer | c.CancelTimer | c.CancelTimers):
            self._run_timer(call, effect)  # the mock's own bookkeeping: not a step of the call's journal
            return
        if isinstance(effect, c.FaultActed):  # the table's word for a fault that left no other trace
            self.journal.add(call.call_id, je.FaultFired(fault=effect.fault, detail=effect.detail))
            return
        self.journal.add(call.call_id, effect_entry(effect))
        if isinstance(effect, c.StartSession):
            self.limits.sessions.acquire(call.call_id)
            for cb in self._active_cbs:
                cb(call)
        elif isinstance(effect, c.EndSession):
            self.limits.end_session(call.call_id)
            for cb in self._ended_cbs:
                cb(call)
        else:
            for ecb in self._effect_cbs:
                ecb(call, effect)
            if isinstance(effect, c.SendRefer) and call.transport == "virtual":
                # No SIP provider to complete the transfer: it completes at once.
                asyncio.get_running_loop().call_soon(lambda: self.apply(call, c.ReferDone(), "virtual"))

    def _run_timer(self, call: c.Call, effect: c.TimerEffect) -> None:
        """Schedule or cancel what the table asked; a timer that fires feeds its event back to the table."""
        if isinstance(effect, c.CancelTimers):
            self._cancel_timers(call.call_id)
        elif isinstance(effect, c.CancelTimer):
            handle = self._timers.get(call.call_id, {}).pop(effect.kind, None)
            if handle is not None:
                handle.cancel()
        else:
            start = effect
            self._later(call, start, lambda cl: self._fired(cl, start))

    def _fired(self, call: c.Call, timer: c.StartTimer) -> None:
        self._timers.get(call.call_id, {}).pop(timer.kind, None)
        self.apply(call, timer.event, timer.source)

    # ---- tasks and timers ----------------------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _later(self, call: c.Call, timer: c.StartTimer, fn: Callable[[c.Call], Any]) -> None:
        handle = asyncio.get_running_loop().call_later(timer.after_s, fn, call)
        old = self._timers.setdefault(call.call_id, {}).pop(timer.kind, None)
        if old is not None:
            old.cancel()
        self._timers[call.call_id][timer.kind] = handle

    def _cancel_timers(self, call_id: str) -> None:
        for h in self._timers.pop(call_id, {}).values():
            h.cancel()

    def call_on(self, surface: c.Surface, some_id: str) -> c.Call | None:
        """The call a Realtime id (``rtc_…``) or a GPT-Live session id (``live_…``) names on that surface."""
        if surface == "live":
            call_id = self.live_ids.get(some_id)
            return None if call_id is None else self.calls.get(call_id)
        return self.calls.get(some_id)

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for in-flight webhook deliveries (tests use this to assert nothing leaks)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def reset(self) -> None:
        await self._cancel_all()
        for call in list(self.calls.values()):
            if not call.state.terminal:
                self.apply(call, c.Fail("reset"), "reset")
        self.calls.clear()
        self._packed_bodies.clear()
        self.live_ids.clear()
        self.ended_keys.clear()
        self._call_faults.clear()
        self._call_scripts.clear()
        self._fault_scripts.clear()
        self._arrived = 0  # after a reset, calls draw as in a fresh mock
        self._arrivals.clear()
        self._drawn.clear()
        self.limits.refill(self.clock())
        self.journal.clear()

    async def _cancel_all(self) -> None:
        for call_id in list(self._timers):
            self._cancel_timers(call_id)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self._cancel_all()
        await self.webhooks.close()


def request_key(request: web.Request) -> str | None:
    """The Bearer token, or on Azure paths also the ``api-key`` header (Azure takes either)."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    if api_style(request.path) != "openai":
        return request.headers.get("api-key", "").strip() or None
    return None
