"""``POST /v1/live/sessions``: create a GPT-Live session, here an outbound SIP call; a thin adapter over
:mod:`mock_api.live.outbound` (the rules) and the SIP ingress (the dial).

Rules:

1. Bearer auth as every REST route (``server.authenticate``); the body is read strictly (``rest_io``);
   :func:`~mock_api.live.outbound.check_create` decides, and a refusal is answered in the API's envelope.
   Every answer is journaled (``live.create``) without the trunk's password.
2. A valid SIP create answers 201 ``{"session": {"id": "live_…"}, "transport": {"type": "sip"}}`` at once,
   before anything is dialed, with no idempotency (two creates dial twice). The call exists from then on
   (``transport`` ``sip``, surface ``live``, no webhook), ringing, with its Live host so a sideband can attach.
3. This module decides nothing about the leg: :class:`~mock_api.live.outbound.Leg` does (when to dial, the
   ring cap, what a worker call state means, what a failure closes). :class:`OutboundCall` feeds it, one at
   a time with their arrival times, the create, each sideband's attach, the dialed leg's worker events, the
   call table ending the call (its effect and session-end hooks) and its one timer (armed at the leg's
   ``next_deadline()``), and carries out the actions it returns.
4. Carrying them out: ``Dial`` places the INVITE through the SIP ingress (journaled ``live.dial`` with
   ``waited_for``; without an ingress or when the worker refuses, the leg hears ``dial_refused``); each
   ``transport.*`` is journaled (``live.transport``) and goes to the session (``leg_progress``); ``FailCall``
   fails the call (``session.closed`` came from the session, the CANCEL comes from the call table);
   ``AcceptCall`` accepts it on the Live surface with the create's session, so the call's session starts as
   an inbound Live call's does (transcripts, DTMF, fixtures, the media path of :mod:`mock_api.sip`);
   ``HangUp`` BYEs a leg answered after its call ended.
5. An answered call lasts at most ``max_call_s`` (the session's ``expires_after_s``: it closes ``expired``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiohttp import web

from sipworker.ipc import Ev, Event

from . import calls as c
from . import errors, live_host, rest_io
from . import journal_entries as je
from .live.outbound import (
    AcceptCall,
    Action,
    Dial,
    FailCall,
    Leg,
    Outbound,
    OutboundSettings,
    Refused,
    TransportEvent,
    WaitedFor,
    check_create,
)
from .live.session import LiveSession
from .server import SERVER_KEY, MockServer

PREFIXES = ("/v1", "/openai/v1")


class Dialer(Protocol):
    """What places an outbound leg (the SIP ingress): ``on_event`` gets the leg's worker events."""

    async def dial(self, call_id: str, uri: str, *, from_uri: str | None, auth: dict[str, str] | None,
                   srtp: str, on_event: Callable[[Event], None]) -> None: ...

    def hang_up(self, call_id: str) -> Awaitable[None]: ...


@dataclass
class OutboundRegistry:
    """A server's dialer and its outbound calls."""

    dialer: Dialer | None = None
    calls: dict[str, OutboundCall] = field(default_factory=dict)
    hooked: bool = False  # the call table's hooks are registered (setup)


def registry(server: MockServer) -> OutboundRegistry:
    return server.part(OutboundRegistry)


def settings_of(server: MockServer) -> OutboundSettings:
    """The outbound choices new calls are made with: the mock config's ``live_outbound``."""
    return server.config.live_outbound


class OutboundHost(live_host.LiveHost):
    """A Live host a sideband may attach to from the create on (the sideband endpoint takes only started
    sessions: an outbound one counts as started for that, as its ``transport.*`` events come first), and that
    tells its call (``on_attach``) when a sideband attached: the dial may wait for one (rule 3)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._began = False
        self.on_attach: Callable[[], None] | None = None
        super().__init__(*args, **kwargs)

    @property
    def started(self) -> bool:
        return True

    @started.setter
    def started(self, value: bool) -> None:
        self._began = value

    def attach(self, sb: Any, graceful_close: bool | None = None) -> None:
        super().attach(sb, graceful_close)
        if self.on_attach is not None:
            self.on_attach()


LegInput = Callable[[float], list[Action]]  # one input to the leg core, given the clock's now


class OutboundCall:
    """One outbound call's adapter: feeds the :class:`~mock_api.live.outbound.Leg` core what happens (sidebands,
    worker events, the call table, its own timer) one input at a time with its arrival time, and carries out
    the actions it returns (the dial, ``transport.*`` to the session, the call table, a BYE)."""

    def __init__(self, server: MockServer, call: c.Call, plan: Outbound, settings: OutboundSettings,
                 host: OutboundHost) -> None:
        self.server, self.call, self.plan, self.settings, self.host = server, call, plan, settings, host
        self.leg = Leg(settings)
        self._inputs: asyncio.Queue[tuple[LegInput, float]] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        host.on_attach = lambda: self._put(self.leg.sideband_attached)
        self._put(self.leg.created)  # first in line: whatever happens to the call next comes after

    # ---- inputs -------------------------------------------------------------------------------------------

    def _put(self, step: LegInput) -> None:
        self._inputs.put_nowait((step, self.server.clock()))

    def worker_event(self, ev: Event) -> None:
        """The dialed leg's worker events, as the SIP ingress hands them over."""
        d = ev.data
        if ev.kind == Ev.CALL_STATE:
            self._put(partial(self.leg.sip_state, state=str(d.get("state")), status=_status(d.get("code")),
                              reason=d.get("reason")))
        elif ev.kind in (Ev.CALL_ENDED, Ev.CALL_FAILED):
            self._put(partial(self.leg.sip_ended, status=_status(d.get("code")) or 0,
                              reason=str(d.get("reason") or d.get("end_reason") or "")))

    def call_over(self) -> None:
        """The call reached a terminal state on the call table (``hangup``: the app's REST hangup)."""
        by_app = self.call.state is c.CallState.ENDED and self.call.end_reason == "hangup"
        self._put(partial(self.leg.call_ended, by_app=by_app))

    async def run(self) -> None:
        try:
            while not self.leg.over:
                self._arm()
                step, now = await self._inputs.get()
                await self._do(step(now))
        finally:
            self._disarm()

    def _arm(self) -> None:
        """One loop timer follows the leg's next deadline; it feeds ``tick`` when it fires."""
        due = self.leg.next_deadline()
        if due == self._timer_due:
            return
        self._disarm()
        if due is not None:
            self._timer_due = due
            self._timer = asyncio.get_running_loop().call_later(max(0.0, due - self.server.clock()), self._fired)

    def _fired(self) -> None:
        self._timer, self._timer_due = None, None
        self._put(self.leg.tick)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, None

    # ---- actions ------------------------------------------------------------------------------------------

    async def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Dial):
                await self._dial(action.waited_for)
            elif isinstance(action, TransportEvent):
                await self._transport(action)
            elif isinstance(action, FailCall):
                self.server.apply(self.call, c.Fail(action.reason), source="sip")
            elif isinstance(action, AcceptCall):
                body = {"session": {"type": "live", **self.plan.session}}
                self.server.apply(self.call, c.Accept(body, surface="live", by_callee=True,
                                                      loser_status=self.server.config.loser_status), source="sip")
                self.host.start()
            else:
                dialer = registry(self.server).dialer
                if dialer is not None:
                    self.server.spawn(dialer.hang_up(self.call.call_id))

    async def _dial(self, waited: WaitedFor) -> None:
        p = self.plan
        uri = p.trunk.request_uri(p.destination)
        from_uri = f"sip:{p.caller_number}@{p.trunk.host}" if p.caller_number else None
        auth = {"username": p.username, "password": p.password or ""} if p.username is not None else None
        dialer = registry(self.server).dialer
        error: str | je.Absent = je.ABSENT
        if dialer is None:
            error = "no SIP ingress is running"
            why = "no SIP ingress to dial from"
        else:
            try:
                await dialer.dial(self.call.call_id, uri, from_uri=from_uri, auth=auth, srtp=self.settings.srtp,
                                  on_event=self.worker_event)
            except Exception as exc:  # the worker refused the INVITE (a bad URI, no free slot)
                error = why = str(exc)
        self.server.journal.add(self.call.call_id, je.LiveDial(uri=uri, from_uri=from_uri, auth_username=p.username,
                                                               waited_for=waited, error=error))
        if not isinstance(error, je.Absent):
            await self._do(self.leg.dial_refused(self.server.clock(), why))

    async def _transport(self, te: TransportEvent) -> None:
        code = te.error["code"] if te.error else je.ABSENT
        self.server.journal.add(self.call.call_id, je.LiveTransport(state=te.state, sip_status=te.sip_status,
                                                                    sip_reason=te.sip_reason, code=code))
        await self.host.settled()  # never beside a heavy input running on a thread
        if te.to_session and not self.host.finished:
            self.host.dispatch(self.host.session.leg_progress(te.state, self.server.clock(), te.error,
                                                              te.close_reason or self.settings.failed_close_reason))


def _status(code: Any) -> int | None:
    """A worker's SIP status as a number (None when it gave none)."""
    return int(code) if isinstance(code, int | str) and str(code).isdigit() else None


def _call_moved(server: MockServer, call: c.Call, *_: Any) -> None:
    """The call table moved an outbound call: its adapter hears when the call is over (rule 3)."""
    runner = registry(server).calls.get(call.call_id)
    if runner is not None and call.state.terminal:
        runner.call_over()


# ---- the route ------------------------------------------------------------------------------------------------


def _journal_body(body: Any) -> Any:
    """The create body as journaled: the trunk password replaced by ``<redacted>``."""
    if not isinstance(body, dict):
        return body
    transport = body.get("transport")
    trunk = transport.get("trunk") if isinstance(transport, dict) else None
    auth = trunk.get("auth") if isinstance(trunk, dict) else None
    if not (isinstance(transport, dict) and isinstance(trunk, dict) and isinstance(auth, dict)) \
            or "password" not in auth:
        return body
    hidden = {**trunk, "auth": {**auth, "password": "<redacted>"}}
    return {**body, "transport": {**transport, "trunk": hidden}}


def start_call(server: MockServer, plan: Outbound, settings: OutboundSettings) -> OutboundCall:
    """Rule 2: the ringing call, its Live host and the task that dials."""
    headers = [{"name": "To", "value": f"<tel:{plan.destination}>"}]
    if plan.caller_number:
        headers.insert(0, {"name": "From", "value": f"<tel:{plan.caller_number}>"})
    call = c.Call.incoming(headers, transport="sip", media_security="srtp", surface="live", direction="outbound",
                           created_at=time.time(),
                           call_id=server.shard.call_id() if server.shard is not None else None)
    server.calls[call.call_id] = call
    server.live_ids[call.live_id] = call.call_id
    server.journal.add(call.call_id, je.CallCreated(transport="sip", sip_headers=call.sip_headers,
                                                    media_security="srtp", faults=[]))
    server.journal.add(call.call_id, je.State(before=None, after=call.state.value, event="incoming"))
    server.apply(call, c.Incoming(None), "incoming")  # the ring cap is the leg's (settings.ring_timeout_s)
    reg = live_host.registry(server)
    live_settings = live_host.live_settings(server).model_copy(update={"expires_after_s": settings.max_call_s})
    body = {"type": "live", **plan.session}
    session = LiveSession.sip(body, session_id=call.live_id, settings=live_settings,
                              script=server.script_for(call.call_id), now=server.clock(),
                              reflect_chunk_ms=live_settings.reflect_chunk_ms, media_rate=live_host.media_rate(body))
    host = OutboundHost(server, session, call_id=call.call_id, turn_settings=reg.turns)
    reg.hosts[call.call_id] = host
    server.journal.add(call.call_id, je.LiveSettingsChosen(session_id=session.id,
                                                           settings=live_settings.journal()))
    runner = OutboundCall(server, call, plan, settings, host)
    registry(server).calls[call.call_id] = runner
    task = server.spawn(runner.run())
    task.add_done_callback(lambda _: registry(server).calls.pop(call.call_id, None))
    return runner


async def create(request: web.Request) -> web.Response:
    server: MockServer = request.app[SERVER_KEY]
    denied = server.authenticate(request)
    if denied is not None:
        return denied
    try:
        body = await rest_io.read_json(request, server, allow_empty=False)
    except rest_io.BadRequest as exc:
        return exc.response
    settings = settings_of(server)
    result = check_create(body, settings)
    if isinstance(result, Refused):
        server.journal.add(None, je.LiveCreate(status=result.status, code=result.code, param=result.param,
                                               body=_journal_body(body)))
        return errors.rest_error(result.status, result.message, code=result.code, param=result.param)
    runner = start_call(server, result, settings)
    server.journal.add(runner.call.call_id, je.LiveCreate(status=201, session_id=runner.call.live_id,
                                                          body=_journal_body(body), settings=settings.journal()))
    return web.json_response({"session": {"id": runner.call.live_id}, "transport": {"type": "sip"}}, status=201)


def setup(app: web.Application, server: MockServer) -> None:
    """Register the create route (under ``/v1`` and ``/openai/v1``) and, once per server, the hooks by which
    outbound calls hear that the call table ended them."""
    reg = registry(server)
    if not reg.hooked:
        reg.hooked = True
        server.on_effect(partial(_call_moved, server))
        server.on_call_ended(partial(_call_moved, server))
    for prefix in PREFIXES:
        app.router.add_post(prefix + "/live/sessions", create)

