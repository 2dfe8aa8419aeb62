"""The GPT-Live sideband endpoint, ``GET /v1/live/sessions/{session_id}/attach`` (also under ``/openai/v1``):
a thin aiohttp adapter over the call's :class:`~mock_api.live_host.LiveHost`.

Rules (checked in this order; the first that applies decides):

1. On an Azure path, Azure's front door first (``MockServer.admit``: api-version, then the key),
   refused with its HTTP status before the upgrade.
2. A ``session_id`` naming no call, a call still ringing, one the Realtime surface won, or one that
   ended: HTTP 404 ``session_not_found`` before the upgrade, in the API's envelope.
3. ``graceful_close`` other than ``true`` / ``false`` (what the SDK writes; case ignored): HTTP 400
   ``invalid_value`` naming it, before the upgrade.
4. Everything else completes the 101. Then, off Azure, no key or a key the mock does not accept
   (``server.api_key_ok``; a sideband is the app's server, so no client secret) is an ``error``
   event followed by close 3000 ``invalid_request_error.invalid_api_key``, as a Realtime socket's.
5. What is left attaches to the session as one more sideband (any number per call): the replay,
   then the session's events; frames go to the host in order, the next read only once a heavy one
   is done. The host closes it when the session ends (:mod:`mock_api.live_host`, rule 6).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from . import calls as c
from . import errors, live_host, rest_io, wire_json
from . import journal_entries as je
from .live import events as live_events
from .realtime.upgrade import AUTH_CLOSE, MISSING_KEY_MESSAGE
from .server import SERVER_KEY, MockServer, api_style, request_key
from .session_host import SEND_QUEUE_FULL
from .ws import BUG_CLOSE, PING_INTERVAL_S, _too_big, handshake_headers

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
    jid = call.call_id if call is not None else None
    if azure:
        denied = server.admit(request)  # rule 1
        if denied is not None:
            server.journal.add(jid, je.LiveRefused(status=denied.status, session_id=session_id, path=request.path))
            return denied
    host = live_host.get_host(server, call.call_id) if call is not None and not call.state.terminal else None
    if host is None or host.closed:  # rule 2
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
        server.mock_bug(host.call_id, "live sideband", exc)
        if not ws.closed:
            await _refuse(ws, server, host.call_id, live_events.server_error(), BUG_CLOSE)
        return ws


async def _refuse(ws: web.WebSocketResponse, server: MockServer, call_id: str, event: dict[str, Any],
                  close_code: int) -> None:
    """An ``error`` event, then a close whose reason is ``<type>.<code>`` (as a Realtime socket is told)."""
    live_host.audit(event)
    server.journal.add(call_id, je.LiveServer(event=event, to=[]))
    err = event["error"]
    reason = f"{err['type']}.{err['code']}" if err.get("code") else err["type"]
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(wire_json.dumps(event))
        await ws.close(code=close_code, message=reason.encode())
    server.journal.add(call_id, je.LiveClose(conn="", code=close_code, reason=reason))


async def _serve(request: web.Request, ws: web.WebSocketResponse, server: MockServer, host: live_host.LiveHost,
                 graceful: bool | None, azure: bool) -> web.WebSocketResponse:
    call_id = host.call_id
    key = request_key(request)
    if not azure and not server.api_key_ok(key):  # rule 4
        server.journal.add(call_id, je.LiveConnect(conn="", graceful_close=graceful, query=dict(request.query),
                                                   headers=handshake_headers(request), path=request.path,
                                                   tls=request.secure))
        message = MISSING_KEY_MESSAGE if key is None else (
            f"Incorrect API key provided: {errors.masked(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.")
        await _refuse(ws, server, call_id, live_events.error("invalid_api_key", message), AUTH_CLOSE)
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
    finally:
        host.detach(sb)
        # journaled before any await: aiohttp cancels this handler once the connection is gone
        if too_big:
            server.journal.add(call_id, je.LiveClose(conn=sb.conn, code=1009, reason="message too big",
                                                     limit=server.config.ws_max_message_bytes))
        elif sb.ending == "dropped":
            server.journal.add(call_id, je.LiveClose(conn=sb.conn, code=None, reason="session closed", dropped=True))
        elif sb.ending == SEND_QUEUE_FULL:
            pass  # journaled when it happened
        else:
            server.journal.add(call_id, je.LiveClose(conn=sb.conn, code=ws.close_code,
                                                     reason=sb.ending if sb.ending is not None else je.ABSENT))
        if sb.writer is not None:
            await asyncio.wait({sb.writer}, timeout=1.0)
    return ws


def setup(app: web.Application, server: MockServer) -> None:
    """Add the sideband route and run a Live session for every call accepted through GPT-Live."""
    for prefix in PREFIXES:
        app.router.add_get(prefix + "/live/sessions/{session_id}/attach", attach)
    live_host.install(server)
