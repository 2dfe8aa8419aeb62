"""GPT-Live's WebSockets (also under ``/openai/v1``): the sideband, ``GET /v1/live/sessions/{session_id}/attach``,
the primary WebSocket, ``GET /v1/live/sessions``, and a stored session's fork,
``GET /v1/live/sessions/{session_id}/fork``; thin aiohttp adapters over a :class:`~mock_api.live_host.LiveHost`.

Sideband rules (checked in this order; the first that applies decides):

1. On an Azure path, Azure's front door first (``MockServer.admit``: api-version, then the key),
   refused with its HTTP status before the upgrade.
2. A ``session_id`` naming no running session (no call, a call still ringing, one the Realtime
   surface won, one that ended; a primary WebSocket's session before its ``session.started`` or
   after its end): HTTP 404 ``session_not_found`` before the upgrade, in the API's envelope.
3. ``graceful_close`` other than ``true`` / ``false`` (what the SDK writes; case ignored): HTTP 400
   ``invalid_value`` naming it, before the upgrade.
4. Everything else completes the 101. Then, off Azure, no key or a key the mock does not accept
   (``server.api_key_ok``; a sideband is the app's server, so no client secret) is an ``error``
   event followed by close 3000 ``invalid_request_error.invalid_api_key``, as a Realtime socket's.
5. What is left attaches to the session as one more sideband (any number per call): the replay,
   then the session's events; frames go to the host in order, the next read only once a heavy one
   is done. The host closes it when the session ends (:mod:`mock_api.live_host`, rule 6).

Primary rules:

6. Azure's front door as rule 1; then the 101, and the key as rule 4 (no ``ek_`` client secrets:
   the SDK's ``live.connect`` sends the project key). Query parameters are journaled and ignored
   (the SDK sends none; the model goes in ``session.start``).
7. Over ``max_concurrent_sessions``: an ``error`` (``rate_limit_exceeded``) and close 1013, as a
   Realtime ``?model=`` socket is told.
8. Else a new session with no call (:func:`mock_api.live_host.open_primary`): commands before
   ``session.start``'s ``session.started`` are refused by the core; the session's end closes the
   socket with a handshake (code 1000); the client leaving first ends it ``connection_lost``.

Fork rules (``client.live.forks.connect(session_id=…)``):

9. Azure's front door as rule 1; then, before the upgrade and journaled (``live.refused``) on the forked
   session's timeline: an id that never started or is no longer kept is HTTP 404 ``session_not_found``
   (as rule 2); one started without ``store: true`` is the recording download's answer
   (``RecordingSettings.unstored_status`` / ``unstored_code``: 400 ``session_not_stored``).
10. Then as a primary (rules 6-8), the session being a fork of the stored one
    (:func:`mock_api.live_host.open_fork`, :mod:`mock_api.live.forks`): the SDK's fork unions, the stored
    session's model and conversation as of the connect.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from . import calls as c
from . import errors, live_host, live_rest, rest_io, wire_json
from . import journal_entries as je
from .live import events as live_events
from .live.forks import ForkSource
from .live.validation import Wire
from .realtime.upgrade import AUTH_CLOSE, MISSING_KEY_MESSAGE
from .server import SERVER_KEY, MockServer, api_style, request_key
from .session_host import SEND_QUEUE_FULL
from .ws import BUG_CLOSE, CONNECTION_RESET, PING_INTERVAL_S, SESSION_LIMIT_CLOSE, _too_big, handshake_headers

PREFIXES = ("/v1", "/openai/v1")  # GPT-Live has no AzureOpenAI api-version paths


def graceful_close(raw: str | None) -> bool | str | None:
    """The ``graceful_close`` query as a bool (None: not given), or the raw value when it is neither."""
    if raw is None:
        return None
    low = raw.strip().lower()
    return True if low == "true" else False if low == "false" else raw


async def attach(request: web.Request) -> web.StreamResponse:
    server: MockServer = request.app[SERVER_KEY]
    session_id = request.match_info["session_id"]
    azure = api_style(request.path) != "openai"
    call = server.call_on("live", session_id)
    host = live_host.find_session(server, session_id)
    jid = call.call_id if call is not None else host.key if host is not None else None
    if azure:
        denied = server.admit(request)  # rule 1
        if denied is not None:
            server.journal.add(jid, je.LiveRefused(status=denied.status, session_id=session_id, path=request.path))
            return denied
    if host is None or host.closed or not host.started:  # rule 2
        refusal = c.not_found("live")
        server.journal.add(jid, je.LiveRefused(status=refusal.http_status, session_id=session_id, path=request.path,
                                               code=refusal.code))
        return rest_io.refusal_response(refusal)
    graceful = graceful_close(request.query.get("graceful_close"))
    if isinstance(graceful, str):  # rule 3
        server.journal.add(jid, je.LiveRefused(status=400, session_id=session_id, path=request.path,
                                               code="invalid_value"))
        return errors.rest_error(400, f"Invalid 'graceful_close': {graceful!r}. Expected true or false.",
                                 code="invalid_value", param="graceful_close")
    ws = web.WebSocketResponse(heartbeat=PING_INTERVAL_S, max_msg_size=server.config.ws_max_message_bytes,
                               autoping=True)
    await ws.prepare(request)
    try:
        return await _serve(request, ws, server, host, graceful, azure)
    except Exception as exc:  # the mock's own bug after the 101: server_error and a close
        server.mock_bug(host.key, "live sideband", exc)
        if not ws.closed:
            await _refuse(ws, server, host.key, live_events.server_error(), BUG_CLOSE)
        return ws


async def _refuse(ws: web.WebSocketResponse, server: MockServer, call_id: str | None, event: dict[str, Any],
                  close_code: int, *, wire: Wire = "sideband") -> None:
    """An ``error`` event, then a close whose reason is ``<type>.<code>`` (as a Realtime socket is told)."""
    live_host.audit(event, wire)
    server.journal.add(call_id, je.LiveServer(event=event, to=[]))
    err = event["error"]
    reason = f"{err['type']}.{err['code']}" if err.get("code") else err["type"]
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(wire_json.dumps(event))
        await ws.close(code=close_code, message=reason.encode())
    server.journal.add(call_id, je.LiveClose(conn="", code=close_code, reason=reason))


def _key_error(key: str | None) -> dict[str, Any]:
    message = MISSING_KEY_MESSAGE if key is None else (
        f"Incorrect API key provided: {errors.masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.")
    return live_events.error("invalid_api_key", message)


async def _serve(request: web.Request, ws: web.WebSocketResponse, server: MockServer, host: live_host.LiveHost,
                 graceful: bool | None, azure: bool) -> web.WebSocketResponse:
    call_id = host.key
    key = request_key(request)
    if not azure and not server.api_key_ok(key):  # rule 4
        server.journal.add(call_id, je.LiveConnect(conn="", graceful_close=graceful, query=dict(request.query),
                                                   headers=handshake_headers(request), path=request.path,
                                                   tls=request.secure))
        await _refuse(ws, server, call_id, _key_error(key), AUTH_CLOSE)
        return ws
    if host.closed:  # the session ended while the upgrade was in flight
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=1000, message=b"session closed")
        server.journal.add(call_id, je.LiveClose(conn="", code=1000, reason="session closed during upgrade"))
        return ws
    await host.settled()  # a heavy frame of another sideband: the replay comes after its outputs
    sb = host.sideband(ws, request.transport)
    server.journal.add(call_id, je.LiveConnect(conn=sb.conn, graceful_close=graceful, query=dict(request.query),
                                               headers=handshake_headers(request), path=request.path,
                                               tls=request.secure))
    host.attach(sb, graceful)
    return await _pump(ws, server, host, sb)


async def _pump(ws: web.WebSocketResponse, server: MockServer, host: live_host.LiveHost,
                sb: live_host.Socket) -> web.WebSocketResponse:
    """The socket's life once attached: frames in order to the host, until the client or the session ends it."""
    key = host.key
    too_big = False
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                host.receive(sb, msg.data)
                await asyncio.sleep(0)  # a burst of frames: let the loop serve others between two
                await host.settled()
            elif msg.type == WSMsgType.ERROR and _too_big(msg.data):
                too_big = True
                break
            else:
                break
    except ConnectionResetError:  # aiohttp answered a ping on a transport already closing: the client is gone
        sb.ending = sb.ending or CONNECTION_RESET
    finally:
        host.detach(sb)
        # journaled before any await: aiohttp cancels this handler once the connection is gone
        if too_big:
            server.journal.add(key, je.LiveClose(conn=sb.conn, code=1009, reason="message too big",
                                                 limit=server.config.ws_max_message_bytes))
        elif sb.ending == "dropped":
            server.journal.add(key, je.LiveClose(conn=sb.conn, code=None, reason="session closed", dropped=True))
        elif sb.ending == SEND_QUEUE_FULL:
            pass  # journaled when it happened
        else:
            code = ws.close_code if ws.close_code is not None else sb.close_code
            server.journal.add(key, je.LiveClose(conn=sb.conn, code=code,
                                                 reason=sb.ending if sb.ending is not None else je.ABSENT))
        if sb.writer is not None:
            await asyncio.wait({sb.writer}, timeout=1.0)
    return ws


async def primary(request: web.Request) -> web.StreamResponse:
    """``GET /v1/live/sessions``: a primary WebSocket with a session of its own (rules 6-8)."""
    server: MockServer = request.app[SERVER_KEY]
    azure = api_style(request.path) != "openai"
    if azure:
        denied = server.admit(request)
        if denied is not None:
            server.journal.add(None, je.LiveRefused(status=denied.status, session_id="", path=request.path))
            return denied
    return await _own_session(request, server, azure, None)


async def fork(request: web.Request) -> web.StreamResponse:
    """``GET /v1/live/sessions/{session_id}/fork``: a new session continuing a stored one (rules 9-10)."""
    server: MockServer = request.app[SERVER_KEY]
    session_id = request.match_info["session_id"]
    jid = live_rest.timeline_of(server, session_id)
    if api_style(request.path) != "openai":
        denied = server.admit(request)
        if denied is not None:
            server.journal.add(jid, je.LiveRefused(status=denied.status, session_id=session_id, path=request.path))
            return denied
    source = await live_host.fork_source(server, session_id)
    if isinstance(source, str):
        resp, code = live_rest.fork_refusal(server, session_id, source)
        server.journal.add(jid, je.LiveRefused(status=resp.status, session_id=session_id, path=request.path,
                                               code=code))
        return resp
    return await _own_session(request, server, api_style(request.path) != "openai", source)


async def _own_session(request: web.Request, server: MockServer, azure: bool,
                       source: ForkSource | None) -> web.StreamResponse:
    """A primary or fork WebSocket: the 101, the key, the session limit, then a session of its own."""
    wire: Wire = "primary" if source is None else "fork"
    ws = web.WebSocketResponse(heartbeat=PING_INTERVAL_S, max_msg_size=server.config.ws_max_message_bytes,
                               autoping=True)
    await ws.prepare(request)
    host: live_host.LiveHost | None = None
    try:
        connect = je.LiveConnect(conn=live_host.PRIMARY_CONN, graceful_close=None, query=dict(request.query),
                                 headers=handshake_headers(request), path=request.path, tls=request.secure)
        key = request_key(request)
        if not azure and not server.api_key_ok(key):
            server.journal.add(None, connect)
            await _refuse(ws, server, None, _key_error(key), AUTH_CLOSE, wire=wire)
            return ws
        slot = f"live:{id(ws):x}"
        hit = server.limits.session(slot)
        if hit is not None:  # rule 7
            server.journal.add(None, connect)
            server.limit_hit(None, hit, "websocket")
            await _refuse(ws, server, None, live_events.error("rate_limit_exceeded", hit.message("gpt-live"),
                                                             type_=hit.error_type),
                          SESSION_LIMIT_CLOSE, wire=wire)
            return ws
        try:
            host = live_host.open_primary(server) if source is None else live_host.open_fork(server, source)
        except BaseException:
            server.limits.end_session(slot)
            raise
        host.slot = slot
        server.journal.add(host.key, connect)
        sock = host.primary(ws, request.transport)
        host.attach(sock)
        return await _pump(ws, server, host, sock)
    except Exception as exc:  # the mock's own bug after the 101: server_error and a close
        server.mock_bug(host.key if host is not None else None, f"live {wire}", exc)
        if not ws.closed:
            await _refuse(ws, server, host.key if host is not None else None, live_events.server_error(),
                          BUG_CLOSE, wire=wire)
        if host is not None:
            host.end("connection_lost")
        return ws


def setup(app: web.Application, server: MockServer) -> None:
    """Add the sideband, primary and fork routes (the fork's REST twin too: it shares the path) and run a Live
    session for every call accepted through GPT-Live."""
    for prefix in PREFIXES:
        app.router.add_get(prefix + "/live/sessions/{session_id}/attach", attach)
        app.router.add_get(prefix + "/live/sessions", primary)
        app.router.add_get(prefix + "/live/sessions/{session_id}/fork", fork)
        app.router.add_post(prefix + "/live/sessions/{session_id}/fork", live_rest.fork)
    live_host.install(server)
