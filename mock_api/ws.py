"""The Realtime WebSocket endpoint: a thin aiohttp adapter over :mod:`mock_api.realtime`.

It decides nothing about the protocol. It routes an upgrade to a session host
(:mod:`mock_api.session_host`: one per ``call_id``, shared by every socket of that call, or one
per ``?model=`` / ``?intent=`` socket), applies the upgrade rules of :mod:`mock_api.realtime.upgrade`, reads each
socket's frames into its host and writes the host's events out, and closes the sockets when the
call ends.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from . import errors, fidelity, models, wire_json
from . import journal_entries as je
from .calls import Call, CallState
from .fault_script import FaultScript
from .realtime import events as rt_events
from .realtime import upgrade
from .realtime.session import (
    SERVER_ERROR_MESSAGE,
    RealtimeSession,
)
from .server import SERVER_KEY, MockServer, api_style, request_key
from .session_host import (
    SEND_QUEUE_FULL,
    Registry,
    SessionHost,
    _host_for_call,
    _registry,
)

PREFIXES = ("/v1", "/openai/v1", "/openai")  # /openai/realtime: the socket the AzureOpenAI client opens
PING_INTERVAL_S = 20.3  # the real server's keepalive
SESSION_LIMIT_CLOSE = 1013  # RFC 6455 "Try Again Later": a ?model= socket over max_concurrent_sessions
TOO_BIG_CLOSE = 1009  # RFC 6455 "Message Too Big"
BUG_CLOSE = 1011  # RFC 6455 "Internal Error": the mock's own bug after the upgrade
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # how a browser's WebSocket carries its (ephemeral) key
WS_KEY: web.AppKey[Registry] = web.AppKey("rtsip_ws")


CONNECTION_RESET = "connection reset"  # the reason journaled when the client's connection went while we read it


def _too_big(error: object) -> bool:
    """aiohttp refused a frame over ``max_msg_size`` (it has closed the socket with 1009)."""
    code = getattr(error, "code", None)
    return code == TOO_BIG_CLOSE or "too big" in str(error).lower()


# ---- the endpoint ---------------------------------------------------------------------


async def _refuse_after_upgrade(ws: web.WebSocketResponse, server: MockServer, call_id: str | None,
                                code: str | None, message: str, close_code: int,
                                type_: str = "invalid_request_error") -> web.WebSocketResponse:
    """Auth and shape failures still complete the 101, then send error + close (reason ``<type>.<code>``)."""
    event = rt_events.error(code, message, type_=type_)
    frame = wire_json.dumps(event)
    fidelity.audit(event)
    server.journal.add(call_id, je.WsServer(event))
    reason = f"{type_}.{code}" if code else type_
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(frame)
        await ws.close(code=close_code, message=reason.encode())
    server.journal.add(call_id, je.WsClose(code=close_code, reason=reason))
    return ws


def _socket_key(request: web.Request) -> str | None:
    """The Bearer key, else the one a browser's WebSocket sends as the ``openai-insecure-api-key.<key>``
    subprotocol (browsers cannot set headers on a WebSocket)."""
    key = request_key(request)
    if key is not None:
        return key
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(INSECURE_KEY_PROTOCOL):
            return proto[len(INSECURE_KEY_PROTOCOL):] or None
    return None


def _upgrade_request(request: web.Request, server: MockServer, call: Call | None, faults: FaultScript,
                     azure: bool, beta: bool) -> upgrade.UpgradeRequest:
    """What the upgrade rules read, gathered from the request and the mock's state (read again after the 101)."""
    key = _socket_key(request)
    return upgrade.UpgradeRequest(
        azure=azure, beta=beta, call_id=request.query.get("call_id"),
        call_live=call is not None and call.state in (CallState.ACTIVE, CallState.REFERRING)
        and call.surface != "live",
        call_ended=call is not None and call.state.terminal,
        beta_header_404=faults.beta_header_404,
        key_masked=None if key is None else errors.masked(key),
        key_ok=key is not None and server.api_key_ok(key, ephemeral=True),
        legacy_beta=server.config.legacy_beta, intent=request.query.get("intent"),
        model=request.query.get("model") or request.query.get("deployment"),
    )


async def realtime_socket(request: web.Request) -> web.StreamResponse:
    server = _server_of(request)
    q = request.query
    call_id = q.get("call_id")
    azure = api_style(request.path) != "openai"
    if azure:
        # Azure's front door (api-version, key) refuses before the upgrade, with an HTTP status
        denied = server.admit(request)
        if denied is not None:
            server.journal.add(call_id if call_id in server.calls else None,
                               je.WsRefused(status=denied.status, call_id=call_id, path=request.path))
            return denied
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    faults = server.fault_script(call_id)
    call = server.calls.get(call_id) if call_id else None
    refused = upgrade.before_upgrade(_upgrade_request(request, server, call, faults, azure, beta))
    if refused is not None:
        server.journal.add(call_id if call is not None else None, je.WsRefused(status=refused.status, call_id=call_id))
        return errors.rest_error(refused.status, refused.message, code=refused.code)
    ws = web.WebSocketResponse(heartbeat=PING_INTERVAL_S, max_msg_size=server.config.ws_max_message_bytes,
                               autoping=True, protocols=("realtime",))
    await ws.prepare(request)
    try:
        return await _serve_socket(request, ws, server, call, faults, azure, beta)
    except Exception as exc:  # the mock's own bug after the 101: the client gets server_error and a close
        server.mock_bug(call_id if call is not None else None, "websocket", exc)
        if not ws.closed:
            await _refuse_after_upgrade(ws, server, call_id if call is not None else None, None,
                                        SERVER_ERROR_MESSAGE, BUG_CLOSE, type_="server_error")
        return ws


async def _serve_socket(request: web.Request, ws: web.WebSocketResponse, server: MockServer, call: Call | None,
                        faults: FaultScript, azure: bool, beta: bool) -> web.WebSocketResponse:
    q = request.query
    call_id = q.get("call_id")
    connect = je.WsConnect(query=dict(q), beta=beta, headers=handshake_headers(request), path=request.path,
                           tls=request.secure)
    decision = upgrade.after_upgrade(_upgrade_request(request, server, call, faults, azure, beta))
    if call_id is not None or isinstance(decision, upgrade.RefuseSocket):
        server.journal.add(call_id, connect)
    # else: a served call-less socket's connect goes on its session's own timeline, which leaves with it
    if isinstance(decision, upgrade.RefuseSocket):
        if decision.message is None:  # the call ended while the upgrade was in flight
            await ws.close(code=decision.close_code, message=(decision.reason or "").encode())
            reason = f"{decision.reason} during upgrade"
            server.journal.add(call_id, je.WsClose(code=decision.close_code, reason=reason))
            return ws
        return await _refuse_after_upgrade(ws, server, call_id if call is not None else None, decision.code,
                                           decision.message, decision.close_code)
    owned: SessionHost | None = None
    if call is not None:
        host = _host_for_call(server, call)
    else:
        intent, model = decision.intent, decision.model
        named = models.check_session({"model": model} if model else {}, models.today_utc(),
                                     models.RetiredModelPolicy.of(faults.faults), via="?model=")
        for found in named:
            if found.entry is not None:
                server.journal.add(None, found.entry)
        refused = models.first_refusal(named)
        if refused is not None and refused.refusal is not None:
            server.journal.add(None, connect)
            return await _refuse_after_upgrade(ws, server, None, refused.refusal.code,
                                               refused.refusal.message_for(refused.status.model),
                                               upgrade.SHAPE_CLOSE, type_=refused.refusal.type)
        slot = f"ws:{id(ws):x}"
        hit = server.limits.session(slot)
        if hit is not None:
            # Over max_concurrent_sessions: the 101 completes, then the same error a REST 429 carries
            # (type "requests", code "rate_limit_exceeded") and a 1013 "Try Again Later" close.
            server.journal.add(None, connect)
            server.limit_hit(None, hit, "websocket", model=model, intent=intent)
            return await _refuse_after_upgrade(ws, server, None, "rate_limit_exceeded",
                                               hit.message(model or models.DEFAULT_REALTIME), SESSION_LIMIT_CLOSE,
                                               type_=hit.error_type)
        try:
            session = RealtimeSession(kind=intent, transport="websocket", model=model,
                                      script=server.script_for(None), faults=server.faults_for(None),
                                      now=server.clock(), limiter=server.limits,
                                      recogniser=server.recogniser().offloading())
        except BaseException:
            server.limits.end_session(slot)
            raise
        key = str(session.config.get("id") or slot)
        server.journal.add(None, je.WsSession(session=key, intent=intent, model=model))  # where it is journaled
        server.journal.add(key, connect)
        host = owned = SessionHost(server, session, None, key)
        host.slot = slot
    try:
        return await _pump(request, ws, server, host, faults)
    finally:
        if owned is not None:
            owned.close()
            server.limits.end_session(owned.slot or "")
            if owned.key is not None:
                server.session_ended(owned.key)


async def _pump(request: web.Request, ws: web.WebSocketResponse, server: MockServer, host: SessionHost,
                faults: FaultScript) -> web.WebSocketResponse:
    """The socket's life: session.created, then client messages in and the session's events out."""
    key = host.key
    await host.settled()  # a call's session busy with another socket's frame: session.created comes first
    host.sockets[ws] = asyncio.Queue()
    if request.transport is not None:
        host.transports[ws] = request.transport
    writer = host.writers[ws] = asyncio.get_running_loop().create_task(host.writer(ws))
    created = host.session.session_created()
    host._send_event(created, ws)
    drop_handle = None
    if faults.ws_drop_after_s is not None:
        drop_handle = asyncio.get_running_loop().call_later(faults.ws_drop_after_s, _drop, request, server, key)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                host.receive(msg.data, ws)
                # a burst of buffered frames would otherwise run back to back without a pause: let the
                # loop serve other sessions, timers and control requests between two messages; a heavy
                # frame's core call runs on a thread, and the next frame is read once it is done
                await asyncio.sleep(0)
                await host.settled()
            elif msg.type == WSMsgType.ERROR and _too_big(msg.data):
                host.ending[ws] = "message too big"
                server.journal.add(key, je.WsTooBig(limit=server.config.ws_max_message_bytes))
                break
            else:
                break
    except ConnectionResetError:  # aiohttp answered a ping on a transport already closing: the client is gone
        host.ending.setdefault(ws, CONNECTION_RESET)
    finally:
        if drop_handle is not None:
            drop_handle.cancel()
        queue = host.sockets.pop(ws, None)
        host.transports.pop(ws, None)
        host.queued.pop(ws, None)
        host.writers.pop(ws, None)
        if queue is not None:
            queue.put_nowait(None)  # the writer ends after what is queued
        # journaled before any await: aiohttp cancels this handler once the connection is gone
        ending = host.ending.pop(ws, None)
        if ending == "dropped":  # the call ended (hangup_close: drop)
            server.journal.add(key, je.WsClose(code=None, reason="call ended", dropped=True))
        elif ending == SEND_QUEUE_FULL:
            pass  # journaled when it happened
        elif ending is not None:  # closed by the server: the call ended (clean) or the session closed it
            server.journal.add(key, je.WsClose(code=ws.close_code, reason=ending))
        else:
            server.journal.add(key, je.WsClose(code=ws.close_code))
        await asyncio.wait({writer}, timeout=1.0)
    return ws


SECRET_HEADERS = frozenset({"authorization", "api-key", "cookie", "openai-organization", "openai-project"})


def handshake_headers(request: web.Request) -> list[list[str]]:
    """The upgrade request's headers in order, as sent, with credentials masked (auth, the beta
    header and the SDK's ``X-Stainless-*`` are what a socket bug report needs)."""
    out: list[list[str]] = []
    for name, value in request.headers.items():
        if name.lower() in SECRET_HEADERS:
            scheme, _, secret = value.partition(" ") if name.lower() == "authorization" else ("", "", value)
            value = f"{scheme} {errors.masked(secret)}".strip() if secret else errors.masked(value)
        out.append([name, value])
    return out


def _drop(request: web.Request, server: MockServer, call_id: str | None) -> None:
    """ws_drop: the socket dies without a close frame, as when the caller hangs up."""
    server.journal.add(call_id, je.WsDrop())
    if request.transport is not None:
        request.transport.close()


def _server_of(request: web.Request) -> MockServer:
    server: MockServer = request.app[SERVER_KEY]
    return server


def setup(app: web.Application, server: MockServer) -> None:
    """Add ``GET /v1/realtime`` (and Azure's ``/openai/v1/realtime`` and ``/openai/realtime``) and wire the
    call lifecycle."""
    if WS_KEY in app:
        return
    app[WS_KEY] = _registry(server)
    for prefix in PREFIXES:
        app.router.add_get(prefix + "/realtime", realtime_socket)

    def ended(call: Call) -> None:
        host = _registry(server).calls.pop(call.call_id, None)
        if host is not None:
            host.close()

    def active(call: Call) -> None:
        if call.surface == "live":  # a GPT-Live runtime, not a Realtime session
            return
        with contextlib.suppress(RuntimeError):  # no running loop: sessions start lazily on connect
            _host_for_call(server, call)

    server.on_call_active(active)
    server.on_call_ended(ended)
