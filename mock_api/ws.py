"""The Realtime WebSocket endpoint: a thin aiohttp adapter over :mod:`mock_api.realtime`.

It decides nothing about the protocol. It routes an upgrade to a session (one per
``call_id``, shared by every socket of that call, or one per ``?model=`` / ``?intent=``
socket), applies the real service's upgrade rules, pumps the session's timers,
fans server events out to the sockets, hands reply audio to the media path (and takes
speech boundaries and DTMF from it, telling it the effective config so its VAD follows
``turn_detection``), journals every event both ways, and closes the sockets when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import WSMsgType, web
from openai.types.realtime import RealtimeSessionCreateRequest

from . import errors, fidelity, wire_json
from . import faults as faultlib
from .calls import Call, CallState
from .journal import audio_summary
from .realtime import events as rt_events
from .realtime.session import (
    SERVER_ERROR_MESSAGE,
    AudioOut,
    ClearAudio,
    Close,
    Heard,
    LimitHit,
    MockBug,
    Output,
    RealtimeSession,
)
from .server import SERVER_KEY, MockServer, api_style, request_key

PREFIXES = ("/v1", "/openai/v1", "/openai")  # /openai/realtime: the socket the AzureOpenAI client opens
PING_INTERVAL_S = 20.3  # the real server's keepalive
SESSION_LIMIT_CLOSE = 1013  # RFC 6455 "Try Again Later": a ?model= socket over max_concurrent_sessions
POLICY_CLOSE = 1008  # RFC 6455 "Policy Violation": a client that does not read its events
TOO_BIG_CLOSE = 1009  # RFC 6455 "Message Too Big"
BUG_CLOSE = 1011  # RFC 6455 "Internal Error": the mock's own bug after the upgrade
SEND_QUEUE_FULL = "send queue full"
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # how a browser's WebSocket carries its (ephemeral) key
WS_KEY: web.AppKey[Registry] = web.AppKey("rtsip_ws")

MediaSink = Callable[[AudioOut | ClearAudio], None]
ConfigSink = Callable[[dict[str, Any]], object]


class SessionHost:
    """One session core plus its sockets, timer pump and media sink."""

    def __init__(self, server: MockServer, session: RealtimeSession, call_id: str | None,
                 key: str | None = None) -> None:
        self.server = server
        self.session = session
        self.call_id = call_id
        # the journal timeline: the call's, or for a call-less socket its own (the session id), so that
        # such sessions leave with retain_ended_calls like calls do instead of piling up on the server's
        self.key: str | None = call_id or key
        self.sockets: dict[web.WebSocketResponse, asyncio.Queue[tuple[str, Any] | None]] = {}
        self.transports: dict[web.WebSocketResponse, asyncio.BaseTransport] = {}
        self.writers: dict[web.WebSocketResponse, asyncio.Task[None]] = {}
        self.queued: dict[web.WebSocketResponse, int] = {}  # bytes of events waiting for each socket's client
        self.ending: dict[web.WebSocketResponse, str] = {}  # the reason each socket was closed or dropped
        self.media_sink: MediaSink | None = None
        self._on_config: ConfigSink | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None  # fires the session's next timer
        self._timer_due: float | None = None
        self.closed = False
        self.slot: str | None = None  # the concurrent-session slot a ?model= socket holds
        self._schedule()

    # ---- inputs (from sockets and the media path) -----------------------------------------

    def receive(self, text: str | bytes, origin: web.WebSocketResponse | None = None) -> None:
        try:
            event: Any = wire_json.loads(text) if isinstance(text, str) else {"binary_bytes": len(text)}
        except wire_json.WireJSONError:
            event = text if len(text) <= 4096 else f"<{len(text)} characters that are not JSON>"
        view = _journal_view(event, self.server.journal.record_audio) if isinstance(event, dict) else event
        self.server.journal.record(self.key, "ws.client", event=view)
        self.dispatch(self.session.receive(text, self.server.clock()), origin)

    def feed_audio(self, pcm: bytes, rate: int) -> None:
        """Caller audio from the SIP ingress (PCM16 at ``rate``)."""
        self.dispatch(self.session.feed_audio(pcm, rate, self.server.clock()))

    def media_audio(self, pcm: bytes, rate: int, start_ms: int) -> None:
        """A turn's caller audio from the media path (what the fake model hears when no script says it)."""
        self.dispatch(self.session.media_audio(pcm, rate, start_ms, self.server.clock()))

    def dtmf(self, digit: str) -> None:
        self.dispatch(self.session.dtmf(digit, self.server.clock()))

    def media_speech_started(self, audio_ms: int) -> None:
        """The SIP worker's VAD heard the caller start speaking at ``audio_ms`` (first voiced ms)."""
        self.dispatch(self.session.media_speech_started(audio_ms, self.server.clock()))

    def media_speech_stopped(self, audio_ms: int, detected_ms: int) -> None:
        """The SIP worker's VAD heard the caller stop (last voiced ms, and when the silence ran out)."""
        self.dispatch(self.session.media_speech_stopped(audio_ms, detected_ms, self.server.clock()))

    @property
    def on_session_config(self) -> ConfigSink | None:
        """Called with the full effective session config now and after every ``session.updated``
        (the SIP ingress keeps its worker's VAD in step with ``turn_detection``)."""
        return self._on_config

    @on_session_config.setter
    def on_session_config(self, sink: ConfigSink | None) -> None:
        self._on_config = sink
        if sink is not None:
            sink(copy.deepcopy(self.session.config))

    # ---- outputs ------------------------------------------------------------------------

    def dispatch(self, outputs: list[Output], origin: web.WebSocketResponse | None = None) -> None:
        for out in outputs:
            if isinstance(out, dict):
                self._send_event(out, origin)
            elif isinstance(out, (AudioOut, ClearAudio)):
                if isinstance(out, AudioOut):
                    self.server.journal.record(self.key, "audio.out", response_id=out.response_id,
                                               ms=round(len(out.pcm) / 2 * 1000 / out.rate, 1),
                                               corrupt=out.corrupt, voice=out.voice)
                if self.media_sink is not None:
                    self.media_sink(out)
            elif isinstance(out, LimitHit):
                # a call-less session's hits stay on the server timeline, where load tests count them
                extra = {} if self.call_id is not None else {"session": self.key}
                self.server.limit_hit(self.call_id, out.hit, "response", response_id=out.response_id, **extra)
            elif isinstance(out, Heard):
                self.server.journal.record(self.key, "audio.heard", **out.journal())
            elif isinstance(out, MockBug):  # the session's own bug: journaled, never sent (its server_error is)
                self.server.journal.record(self.key, "mock.bug", **out.journal())
            elif isinstance(out, Close):
                for q in self.sockets.values():
                    q.put_nowait(("close", (out.code, out.reason)))
        self._schedule()

    def _send_event(self, out: dict[str, Any], origin: web.WebSocketResponse | None) -> None:
        try:
            text = wire_json.dumps(out)
        except ValueError as exc:  # NaN/Infinity in an event is the mock's bug: the client gets server_error
            self.server.mock_bug(self.key, f"event {out.get('type')}", exc)
            out = rt_events.error(None, SERVER_ERROR_MESSAGE, type_="server_error")
            text = wire_json.dumps(out)
        fidelity.audit(out)
        self.server.journal.record(self.key, "ws.server", event=_journal_view(out, self.server.journal.record_audio))
        if out["type"] == "session.updated" and self._on_config is not None:
            self._on_config(copy.deepcopy(out["session"]))
        targets = [origin] if out["type"] == "error" and origin in self.sockets else list(self.sockets)
        for ws in targets:
            self.enqueue(ws, text)

    def enqueue(self, ws: web.WebSocketResponse, text: str) -> None:
        """Queue one event for a socket; past ``ws_send_queue_bytes`` of unsent events, the client is not
        reading: the socket closes with 1008 instead of the mock's memory growing with it."""
        q = self.sockets.get(ws)
        if q is None:
            return
        size = self.queued.get(ws, 0) + len(text)
        if size > self.server.config.ws_send_queue_bytes:
            self._overflow(ws)
            return
        self.queued[ws] = size
        q.put_nowait(("text", text))

    def _overflow(self, ws: web.WebSocketResponse) -> None:
        q = self.sockets.pop(ws, None)
        if q is None:
            return
        dropped = self.queued.pop(ws, 0)
        while not q.empty():
            q.get_nowait()
        self.ending[ws] = SEND_QUEUE_FULL
        self.server.journal.record(self.key, "ws.close", code=POLICY_CLOSE, reason=SEND_QUEUE_FULL,
                                   queued_bytes=dropped, limit=self.server.config.ws_send_queue_bytes)
        writer = self.writers.get(ws)
        if writer is not None:
            writer.cancel()  # it waits on a client that does not read
        self.server.spawn(_close_unread(ws, self.transports.get(ws)))

    def _schedule(self) -> None:
        """Keep one loop timer at the session's next deadline; re-armed only when it moves.

        Called after every input, so it must stay cheap: audio frames rarely move the deadline.
        """
        due = None if self.closed else self.session.next_deadline()
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            self._timer = self._loop.call_later(max(0.0, due - self.server.clock()), self._fire)

    def _fire(self) -> None:
        """Run the session's due timers on the real clock."""
        self._timer, self._timer_due = None, None
        if self.closed:
            return
        self.dispatch(self.session.advance(self.server.clock()))

    async def writer(self, ws: web.WebSocketResponse) -> None:
        q = self.sockets[ws]
        while True:
            item = await q.get()
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "text":
                    self.queued[ws] = max(0, self.queued.get(ws, 0) - len(payload))
                    await ws.send_str(payload)
                elif kind == "drop":
                    # the call ended: the connection goes away without a close frame (the client sees 1006)
                    self.ending[ws] = "dropped"
                    transport = payload
                    if transport is not None:
                        transport.close()
                    return
                else:
                    code, reason = payload
                    self.ending[ws] = reason
                    await ws.close(code=code, message=reason.encode())
                    return
            except (ConnectionError, RuntimeError):
                return

    def close(self) -> None:
        """The call ended: each socket is dropped or closed cleanly, as ``MockConfig.hangup_close`` says."""
        self.closed = True
        self._schedule()
        drop = self.call_id is not None and self.server.config.hangup_close == "drop"
        for ws, q in self.sockets.items():
            if drop:
                q.put_nowait(("drop", self.transports.get(ws)))
            else:
                q.put_nowait(("close", (1000, "call ended")))


async def _close_unread(ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
    """Close a socket whose client stopped reading: the close frame goes after what is already buffered (the
    client sees it once it reads again) and the connection goes away rather than wait on the client."""
    with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
        await asyncio.wait_for(ws.close(code=POLICY_CLOSE, message=SEND_QUEUE_FULL.encode(), drain=False), 2.0)
    if transport is not None and not transport.is_closing():
        transport.close()  # flushes what is buffered first, then closes


def _too_big(error: object) -> bool:
    """aiohttp refused a frame over ``max_msg_size`` (it has closed the socket with 1009)."""
    code = getattr(error, "code", None)
    return code == TOO_BIG_CLOSE or "too big" in str(error).lower()


class Registry:
    def __init__(self) -> None:
        self.calls: dict[str, SessionHost] = {}


def _registry(server: MockServer) -> Registry:
    return server.part(Registry)


def get_session(server: MockServer, call_id: str) -> SessionHost | None:
    """The session host of an active call, for the SIP ingress (feed_audio, dtmf, media_sink)."""
    return _registry(server).calls.get(call_id)


def _host_for_call(server: MockServer, call: Call) -> SessionHost:
    reg = _registry(server)
    host = reg.calls.get(call.call_id)
    if host is None:
        session = RealtimeSession(
            kind="realtime", transport="sip", config=call.accept_body or {"type": "realtime"},
            model=(call.accept_body or {}).get("model"), script=server.script_for(call.call_id),
            faults=server.faults_for(call.call_id), now=server.clock(), limiter=server.limits,
            recogniser=server.recogniser(),
        )
        host = reg.calls[call.call_id] = SessionHost(server, session, call.call_id)
    return host


# ---- the endpoint ---------------------------------------------------------------------


async def _refuse_after_upgrade(ws: web.WebSocketResponse, server: MockServer, call_id: str | None,
                                code: str | None, message: str, close_code: int,
                                type_: str = "invalid_request_error") -> web.WebSocketResponse:
    """Auth and shape failures still complete the 101, then send error + close (reason ``<type>.<code>``)."""
    event = rt_events.error(code, message, type_=type_)
    frame = wire_json.dumps(event)
    fidelity.audit(event)
    server.journal.record(call_id, "ws.server", event=event)
    reason = f"{type_}.{code}" if code else type_
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(frame)
        await ws.close(code=close_code, message=reason.encode())
    server.journal.record(call_id, "ws.close", code=close_code, reason=reason)
    return ws


def _auth_refusal(key: str | None, server: MockServer) -> tuple[str | None, str] | None:
    """OpenAI refuses a socket's missing or wrong key after the 101: the error's code and message. A client
    secret minted by this mock (``ek_``) passes until it expires, then is refused like any wrong key."""
    if key is None:
        return None, "Missing bearer or basic authentication in header"
    if not server.api_key_ok(key, ephemeral=True):
        return "invalid_api_key", (f"Incorrect API key provided: {errors.masked(key)}. You can find your API key "
                                   "at https://platform.openai.com/account/api-keys.")
    return None


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


_KNOWN_MODELS = set(RealtimeSessionCreateRequest.model_fields["model"].annotation.__args__[1].__args__)  # type: ignore[union-attr]


def _model_ok(model: str) -> bool:
    return model in _KNOWN_MODELS or "realtime" in model or model.startswith("gpt-audio")


async def realtime_socket(request: web.Request) -> web.StreamResponse:
    server = _server_of(request)
    q = request.query
    call_id = q.get("call_id")
    azure = api_style(request.path) != "openai"
    if azure:
        # Azure's front door (api-version, key) refuses before the upgrade, with an HTTP status
        denied = server.admit(request)
        if denied is not None:
            server.journal.record(call_id if call_id in server.calls else None, "ws.refused", status=denied.status,
                                  call_id=call_id, path=request.path)
            return denied
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    faults = server.faults_for(call_id)
    call = server.calls.get(call_id) if call_id else None
    if call_id is not None:
        live = call is not None and call.state in (CallState.ACTIVE, CallState.REFERRING)
        if not live or (beta and faultlib.find(faults, "beta_header_404")):
            server.journal.record(call_id if call is not None else None, "ws.refused", status=404, call_id=call_id)
            return errors.rest_error(404, "No session found for the provided call_id", code="call_id_not_found")
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
                        faults: list[faultlib.Fault], azure: bool, beta: bool) -> web.WebSocketResponse:
    q = request.query
    call_id = q.get("call_id")
    server.journal.record(call_id, "ws.connect", query=dict(q), beta=beta, headers=handshake_headers(request),
                          path=request.path, tls=request.secure)
    refusal = None if azure else _auth_refusal(_socket_key(request), server)  # Azure's was checked above
    if refusal is not None:
        code, message = refusal
        return await _refuse_after_upgrade(ws, server, call_id, code, message, 3000)
    if beta and not server.config.legacy_beta:
        return await _refuse_after_upgrade(
            ws, server, call_id, "beta_api_shape_disabled",
            "The Realtime API beta shape is no longer supported. Remove the 'OpenAI-Beta: realtime=v1' header "
            "and use the GA interface.", 4000)
    owned: SessionHost | None = None
    if call is not None and call.state.terminal:  # it ended while the upgrade was in flight
        await ws.close(code=1000, message=b"call ended")
        server.journal.record(call_id, "ws.close", code=1000, reason="call ended during upgrade")
        return ws
    if call is not None:
        host = _host_for_call(server, call)
    else:
        intent: Literal["realtime", "transcription"] = (
            "transcription" if q.get("intent") == "transcription" else "realtime")
        model = q.get("model") or q.get("deployment")
        if intent == "realtime" and not model:
            return await _refuse_after_upgrade(
                ws, server, None, "missing_model",
                "You must provide a model parameter, for example wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5",
                4000)
        if model and intent == "realtime" and not azure and not _model_ok(model):  # Azure: any deployment name
            return await _refuse_after_upgrade(ws, server, None, "invalid_model",
                                               f'Model "{model}" is not supported in realtime mode.', 4000)
        slot = f"ws:{id(ws):x}"
        hit = server.limits.session(slot)
        if hit is not None:
            # Over max_concurrent_sessions: the 101 completes, then the same error a REST 429 carries
            # (type "requests", code "rate_limit_exceeded") and a 1013 "Try Again Later" close.
            server.limit_hit(None, hit, "websocket", model=model, intent=intent)
            return await _refuse_after_upgrade(ws, server, None, "rate_limit_exceeded",
                                               hit.message(model or "gpt-realtime"), SESSION_LIMIT_CLOSE,
                                               type_=hit.error_type)
        try:
            session = RealtimeSession(kind=intent, transport="websocket", model=model,
                                      script=server.script_for(None), faults=server.faults_for(None),
                                      now=server.clock(), limiter=server.limits, recogniser=server.recogniser())
        except BaseException:
            server.limits.end_session(slot)
            raise
        key = str(session.config.get("id") or slot)
        server.journal.record(None, "ws.session", session=key, intent=intent, model=model)  # where it is journaled
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
                faults: list[faultlib.Fault]) -> web.WebSocketResponse:
    """The socket's life: session.created, then client messages in and the session's events out."""
    key = host.key
    host.sockets[ws] = asyncio.Queue()
    if request.transport is not None:
        host.transports[ws] = request.transport
    writer = host.writers[ws] = asyncio.get_running_loop().create_task(host.writer(ws))
    created = host.session.session_created()
    host._send_event(created, ws)
    drop = faultlib.find(faults, "ws_drop")
    drop_handle = None
    if drop is not None:
        drop_handle = asyncio.get_running_loop().call_later(float(drop.param("after_s")), _drop, request, server,
                                                            key)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                host.receive(msg.data, ws)
                # a burst of buffered frames would otherwise run back to back without a pause: let the
                # loop serve other sessions, timers and control requests between two messages
                await asyncio.sleep(0)
            elif msg.type == WSMsgType.ERROR and _too_big(msg.data):
                host.ending[ws] = "message too big"
                server.journal.record(key, "ws.too_big", limit=server.config.ws_max_message_bytes)
                break
            else:
                break
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
            server.journal.record(key, "ws.close", code=None, reason="call ended", dropped=True)
        elif ending == SEND_QUEUE_FULL:
            pass  # journaled when it happened
        elif ending is not None:  # closed by the server: the call ended (clean) or the session closed it
            server.journal.record(key, "ws.close", code=ws.close_code, reason=ending)
        else:
            server.journal.record(key, "ws.close", code=ws.close_code)
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
    server.journal.record(call_id, "ws.drop")
    if request.transport is not None:
        request.transport.close()


def _server_of(request: web.Request) -> MockServer:
    server: MockServer = request.app[SERVER_KEY]
    return server


def _journal_view(event: dict[str, Any], record_audio: bool = False) -> dict[str, Any]:
    """Reply audio is journaled as its size and checksum unless the journal records audio (the journal
    itself does the same for every ``audio`` string, appends included)."""
    if not record_audio and event.get("type") == "response.output_audio.delta" and isinstance(event.get("delta"), str):
        return {**event, "delta": audio_summary(event["delta"])}
    return event


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
        with contextlib.suppress(RuntimeError):  # no running loop: sessions start lazily on connect
            _host_for_call(server, call)

    server.on_call_active(active)
    server.on_call_ended(ended)
