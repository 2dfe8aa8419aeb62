"""aiohttp adapter: the REST call controls, the ``/_mock/`` control API, real-shaped errors.

Thin on purpose: it parses, asks ``MockServer``/``calls`` what to do, and journals.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from openai.types.realtime.call_refer_params import CallReferParams
from openai.types.realtime.call_reject_params import CallRejectParams
from pydantic import BaseModel, ValidationError

from . import audio, errors, ids, realtime_rest, stubs, virtual, ws
from . import calls as c
from . import faults as faultlib
from .config import ConfigPatch
from .control_models import (
    CallView,
    SayRequest,
    SipHeader,
    StartCallRequest,
    StartCallResponse,
)
from .realtime.validation import ParamError, validate_payload, validate_session_config
from .server import SERVER_KEY, MockServer, api_style

PREFIXES = ("/v1", "/openai/v1", "/openai")
"""OpenAI's paths, Azure's versionless v1 paths, and the ``AzureOpenAI`` client's ``?api-version=`` paths."""
JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have "
    "trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """Raised while reading a request; carries the real-shaped response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


# ---- middleware ------------------------------------------------------------------------------


@web.middleware
async def shard_forward(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a connection the shard router handed over, a kept-alive client's later request may name
    another shard's call: pass it on (mock_api.shards).  A no-op for a mock that is not a shard."""
    server = request.app[SERVER_KEY]
    if server.shard is None or server.forwarder is None or request.transport is None:
        return await handler(request)
    local = request.transport.get_extra_info("sockname")
    if local is None or local[1] == server.shard_port or server.shard.owns(request.path_qs):
        return await handler(request)
    if request.headers.get("Upgrade") is not None:
        # a socket cannot be passed on: the client opens a new connection, which the router routes
        response = errors.rest_error(421, "This connection belongs to another part of the mock; reconnect.")
        response.force_close()
        return response
    limit = server.config.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        return _too_large(request.content_length or limit + 1, limit)
    try:
        return await server.forwarder.forward(request, body, (local[0], local[1]))
    except (aiohttp.ClientError, TimeoutError) as exc:
        server.journal.record(None, "shard.forward_failed", method=request.method, path=request.path,
                              error=f"{type(exc).__name__}: {exc}")
        return errors.rest_error(502, "The server had an error while processing your request.",
                                 type="server_error")


@web.middleware
async def real_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown routes, wrong methods and crashes answer in the API's envelope, never aiohttp's HTML."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return exc.response
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        server = request.app[SERVER_KEY]
        server.journal.record(None, "http.unknown_route", method=request.method, path=request.path)
        return errors.rest_error(404, f"Invalid URL ({request.method} {request.path})")
    except web.HTTPException:
        raise
    except Exception as exc:  # the server keeps serving whatever a handler does
        server = request.app[SERVER_KEY]
        server.journal.record(None, "http.crash", method=request.method, path=request.path,
                              error=f"{type(exc).__name__}: {exc}")
        return errors.rest_error(500, "The server had an error while processing your request. Sorry about that!",
                                 type="server_error")


async def read_json(request: web.Request, server: MockServer, *, allow_empty: bool = True) -> Any:
    limit = server.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(_too_large(request.content_length, limit))
    raw = await read_body(request, limit)
    if raw is None:
        raise BadRequest(_too_large(request.content_length or limit + 1, limit))
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest(errors.rest_error(400, JSON_PARSE_ERROR))
    ctype = request.headers.get("Content-Type", "")
    if ctype and ctype.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(errors.rest_error(
            400,
            f"Unsupported content type: '{ctype}'. This API method only accepts 'application/json' requests, "
            f"but you specified the header 'Content-Type: {ctype}'. Please try again with a supported content type.",
            code="unsupported_content_type",
        ))
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(errors.rest_error(400, JSON_PARSE_ERROR)) from None


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body (``None`` past ``limit``): a body arrives in pieces, and the first piece is
    not the body (a 256 KB accept used to be parsed from its first 128 KB)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> web.Response:
    return errors.rest_error(413, f"Request body too large: {size} bytes; the limit is {limit} bytes.",
                             code="request_too_large")


# ---- REST call controls -----------------------------------------------------------------------------


def _journal_response(server: MockServer, call_id: str | None, resp: web.Response) -> web.Response:
    body: Any = resp.text or ""
    if body:
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    server.journal.record(call_id, "rest.response", status=resp.status, body=body)
    return resp


def _ok() -> web.Response:
    """200, ``content-length: 0`` and no ``Content-Type``, as the real call controls answer.

    A JSON content type on an empty body breaks every client that parses by content type: the SDK's
    generic ``client.post(..., cast_to=dict)`` (openai-agents' SIP example) and ``fetch(...).json()``
    raise on it, while the SDK's typed ``calls.*`` methods never read the body.
    """
    return web.Response(status=200)


def _refusal(r: c.Refusal) -> web.Response:
    return errors.rest_error(r.http_status, r.message, code=r.code, param=r.param)


async def call_control(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    call_id = request.match_info["call_id"]
    op = request.match_info["op"]
    call = server.calls.get(call_id)
    jid = call_id if call is not None else None
    azure = api_style(request.path) != "openai"
    seen: dict[str, Any] = {"query": dict(request.query)} if request.query else {}  # Azure's api-version
    if request.secure:
        seen["tls"] = True  # came in on the HTTPS/WSS listener
    try:
        body = await read_json(request, server)
    except BadRequest as exc:
        server.journal.record(jid, "rest.request", op=op, path=request.path, call_id=call_id, body=None,
                              headers=_headers(request), **seen)
        return _journal_response(server, jid, exc.response)
    server.journal.record(jid, "rest.request", op=op, path=request.path, call_id=call_id, body=body,
                          headers=_headers(request), **seen)
    denied = server.admit(request)
    if denied is not None:
        return _journal_response(server, jid, denied)
    limited = _over_rpm(server, jid, op, body)
    if limited is not None:
        return _journal_response(server, jid, limited)
    if call is None:
        return _journal_response(server, None, _with_rpm_headers(server, _refusal(c.not_found())))
    if call.state.terminal:
        return _journal_response(server, jid, _refusal(c.not_found()))
    if not isinstance(body, dict):
        return _journal_response(server, jid, errors.rest_error(
            400, f"Invalid type for body: expected an object, but got {type(body).__name__} instead.",
            code="invalid_type"))
    handler = _OPS[op]
    return _journal_response(server, jid, _with_rpm_headers(server, handler(server, call, body, azure)))


# ---- OpenAI-side limits: 429s the SDK turns into openai.RateLimitError ----------------


def _resource(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else "gpt-realtime"


def _over_rpm(server: MockServer, call_id: str | None, op: str, body: Any) -> web.Response | None:
    """``requests_per_minute``: HTTP 429, the real envelope (type ``requests``, code ``rate_limit_exceeded``),
    ``x-ratelimit-*-requests`` and ``retry-after`` (whole seconds, which the SDK's retry loop honours)."""
    now = server.clock()
    hit = server.limits.request(now)
    if hit is None:
        return None
    server.limit_hit(call_id, hit, "rest", op=op)
    retry_s = hit.retry_after_s or 0.0  # finite: one request never exceeds a limit of at least one
    headers = server.limits.request_headers(now) | {"retry-after": str(max(1, math.ceil(retry_s - 1e-6)))}
    return errors.rest_error(429, hit.message(_resource(body)), type=hit.error_type, code="rate_limit_exceeded",
                             headers=headers)


def _with_rpm_headers(server: MockServer, resp: web.Response) -> web.Response:
    """With an RPM limit set, every call-control answer reports the budget, as the real API's answers do."""
    resp.headers.update(server.limits.request_headers(server.clock()))
    return resp


def _over_sessions(server: MockServer, call: c.Call, body: dict[str, Any]) -> web.Response | None:
    """``max_concurrent_sessions``: an accept that would start one session too many answers HTTP 429.

    Same envelope as the RPM 429 (type ``requests``, code ``rate_limit_exceeded``; the message names
    "concurrent sessions"), so the SDK raises ``openai.RateLimitError``. No ``retry-after``: nobody knows
    when a session will end, so the SDK falls back to its own short backoff. The call stays ringing,
    so the app may retry the accept (or reject) until the ring timer runs out.
    """
    if call.state is not c.CallState.RINGING:
        return None
    hit = server.limits.session_full()
    if hit is None:
        return None
    server.limit_hit(call.call_id, hit, "accept")
    return errors.rest_error(429, hit.message(_resource(body)), type=hit.error_type, code="rate_limit_exceeded")


def _accept(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    limited = _over_sessions(server, call, body)
    if limited is not None:
        return limited
    if azure:
        missing = _azure_missing(body, server.config.azure_accept_required)
        if missing is not None:  # refused outright: the call keeps ringing, so the app can accept again
            return _param_error(missing)
    problem = validate_session_config(body, prefix="", kind="realtime")
    forced = faultlib.find(server.faults_for(call.call_id), "accept_invalid_hangup") is not None
    if problem is not None and server.config.strict_accept and not forced:
        return _param_error(problem)
    # The real service answers 200 even to a beta-shaped body, then the call fails (failure mode 5,
    # docs/failure-modes.md).
    return _answer(server.apply(call, c.Accept(body, valid=problem is None,
                                               error=problem.message if problem else None)))


def _azure_missing(body: dict[str, Any], required: Sequence[str]) -> ParamError | None:
    """Azure's SIP guide: an accept carries ``type``, ``model`` (the deployment name) and ``instructions``.

    Its answer to a missing one is undocumented; the mock answers OpenAI's 400 ``missing_required_parameter``
    (the body is checked behind Azure's front door, by the same service). Absent, null and "" count as missing.
    """
    for name in required:
        if body.get(name) in (None, ""):
            return ParamError("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
    return None


def _answer(outcome: c.Outcome) -> web.Response:
    return _ok() if outcome.refusal is None else _refusal(outcome.refusal)


def _param_error(problem: ParamError) -> web.Response:
    return errors.rest_error(400, problem.message, code=problem.code, param=problem.param)


def _reject(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = validate_payload(CallRejectParams, body, "")  # unknown keys and types, from the SDK's own type
    if problem is not None:
        return _param_error(problem)
    code = body.get("status_code", 603)
    if isinstance(code, bool) or not 400 <= code <= 699:  # a value range the type cannot say
        return errors.rest_error(400, f"Invalid 'status_code': {code}. Expected a SIP final status between 400 "
                                 "and 699.", code="invalid_value", param="status_code")
    return _answer(server.apply(call, c.Reject(code)))


def _refer(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = validate_payload(CallReferParams, body, "")
    if problem is not None:
        return _param_error(problem)
    target = body["target_uri"]
    if not target.strip():
        return errors.rest_error(400, "Invalid 'target_uri': expected a non-empty SIP or tel URI.",
                                 code="invalid_value", param="target_uri")
    noop = faultlib.find(server.faults_for(call.call_id), "refer_noop") is not None
    return _answer(server.apply(call, c.Refer(target, noop=noop)))


def _hangup(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    return _answer(server.apply(call, c.Hangup()))


_OPS: dict[str, Callable[[MockServer, c.Call, dict[str, Any], bool], web.Response]] = {
    "accept": _accept, "reject": _reject, "refer": _refer, "hangup": _hangup,
}


def _headers(request: web.Request) -> dict[str, str]:
    keep = ("content-type", "user-agent", "openai-beta", "openai-project", "openai-organization")
    out = {k: v for k, v in request.headers.items() if k.lower() in keep}
    key = request.headers.get("Authorization") or request.headers.get("api-key")
    if key:
        out["authorization"] = errors.masked(key.removeprefix("Bearer ").strip())
    return out


# ---- /_mock/ control API ------------------------------------------------------------------------------


def call_view(server: MockServer, call: c.Call) -> CallView:
    """A call without its timeline (see :func:`call_view_json` for the whole view)."""
    line = server.journal.timeline(call.call_id)
    return CallView(
        call_id=call.call_id, state=call.state.value, terminal=call.state.terminal, transport=call.transport,
        created_at=call.created_at, sip_headers=[SipHeader(**h) for h in call.sip_headers],
        sip_final_status=call.sip_final_status, refer_target=call.refer_target, accept_body=call.accept_body,
        end_reason=call.end_reason, started_at=line.started_wall if line else None,
    )


def call_view_json(server: MockServer, call: c.Call, with_entries: bool = True) -> dict[str, Any]:
    """:func:`call_view` as JSON data, without a pydantic model per journal entry.

    Load drivers read every call's whole timeline when it ends; building thousands of entry
    models per call was a large share of the mock's CPU under load. Same shape as ``CallView``.
    """
    data = call_view(server, call).model_dump(mode="json", by_alias=True)
    line = server.journal.timeline(call.call_id)
    if line and with_entries:
        data["entries"] = [e.to_json() for e in line.entries]
    return data


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)  # journal data is JSON already; anything else shows as text


def _json(model: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=model.model_dump_json(by_alias=True), content_type="application/json")


def _invalid(exc: ValidationError) -> web.Response:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return errors.rest_error(400, f"Invalid value for '{loc}': {first['msg']}", code="invalid_value", param=loc or None)


async def read_model(request: web.Request, model: type[M]) -> M:
    """A control-API body as ``model``; a bad one raises BadRequest with a real-shaped 400."""
    body = await read_json(request, request.app[SERVER_KEY])
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(_invalid(exc)) from None


async def start_call(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    req = await read_model(request, StartCallRequest)
    call = server.start_call(from_uri=req.from_, to_uri=req.to, headers=[(h.name, h.value) for h in req.headers],
                             media_security=req.media_security, faults=req.faults, script=req.script)
    return _json(StartCallResponse(call_id=call.call_id, state=call.state.value), 201)


async def list_calls(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    full = request.query.get("entries", "1") != "0"
    return web.json_response({"calls": [call_view_json(server, call, full) for call in server.calls.values()]},
                             dumps=_dumps)


async def get_call(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    call = server.calls.get(request.match_info["call_id"])
    if call is None:
        return _refusal(c.not_found())
    return web.json_response(call_view_json(server, call), dumps=_dumps)


async def caller_hangup(request: web.Request) -> web.Response:
    """The caller hangs up (BYE, or CANCEL while ringing): what a virtual caller uses."""
    server = request.app[SERVER_KEY]
    call = server.calls.get(request.match_info["call_id"])
    if call is None:
        return _refusal(c.not_found())
    outcome = server.apply(call, c.CallerBye(), source="caller")
    if not outcome.ok:
        return _refusal(outcome.refusal)  # type: ignore[arg-type]
    return _json(call_view(server, call))


def _live_host(server: MockServer, call_id: str) -> ws.SessionHost | web.Response:
    call = server.calls.get(call_id)
    if call is None or call.state.terminal:
        return _refusal(c.not_found())
    host = ws.get_session(server, call_id)
    if host is None:
        return errors.rest_error(400, f"Call is {call.state.value}; the caller can speak once it is accepted.",
                                 code="call_not_active")
    return host


async def caller_say(request: web.Request) -> web.Response:
    """The virtual caller speaks a fixture or audio file, paced like RTP."""
    server = request.app[SERVER_KEY]
    call_id = request.match_info["call_id"]
    req = await read_model(request, SayRequest)
    host = _live_host(server, call_id)
    if isinstance(host, web.Response):
        return host
    try:
        pcm = req.pcm()
    except (FileNotFoundError, KeyError, OSError) as exc:
        return errors.rest_error(400, f"Cannot load audio: {exc}", code="invalid_value",
                                 param="fixture" if req.fixture else "path")
    task = server.spawn(virtual.speak(host, server.journal, call_id, pcm, label=req.fixture or req.path or "",
                                      speed=req.speed, trailing_silence_ms=req.trailing_silence_ms))
    if req.wait:
        await task
    return web.json_response({"ms": round(audio.duration_ms(pcm, virtual.RATE), 1)}, status=200 if req.wait else 202)


async def caller_dtmf(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    call_id = request.match_info["call_id"]
    body = await read_json(request, server)
    digits = body.get("digits") if isinstance(body, dict) else None
    if not isinstance(digits, str) or not digits or any(d not in "0123456789*#ABCD" for d in digits):
        return errors.rest_error(400, "Expected 'digits' made of 0-9, *, #, A-D.", code="invalid_value", param="digits")
    host = _live_host(server, call_id)
    if isinstance(host, web.Response):
        return host
    for d in digits:
        server.journal.record(call_id, "caller.dtmf", digit=d)
        host.dtmf(d)
    return web.json_response({"sent": digits})


async def server_journal(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return web.json_response({"entries": [e.to_json() for e in server.journal.entries(None)]})


async def reset(request: web.Request) -> web.Response:
    await request.app[SERVER_KEY].reset()
    stubs.reset(request.app[SERVER_KEY])
    return web.json_response({"ok": True})


async def get_config(request: web.Request) -> web.Response:
    return _json(request.app[SERVER_KEY].config)


async def put_config(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return _json(server.configure(await read_model(request, ConfigPatch)))


async def health(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return web.json_response({"ok": True, "calls": len(server.calls), "pending_tasks": server.pending_tasks})


async def sip_view(request: web.Request) -> web.Response:
    """The SIP ingress and its workers (pids, ports, contacts, live calls)."""
    server = request.app[SERVER_KEY]
    if server.sip_status is None:
        return errors.rest_error(404, "This mock runs without a SIP ingress (start it with `rtsip mock`, which "
                                 "starts one unless --no-sip is given).", code="sip_not_running")
    return web.json_response(server.sip_status())


async def limits_view(request: web.Request) -> web.Response:
    """The limits as configured and as they stand: what a load test reads besides ``limits.hit`` entries."""
    server = request.app[SERVER_KEY]
    lim, now = server.limits, server.clock()

    def bucket(b: Any) -> dict[str, Any] | None:
        return None if b is None else {"limit": b.limit, "remaining": b.remaining(now),
                                       "reset_seconds": round(b.reset_s(now), 3)}

    return web.json_response({
        "config": server.config.limits.model_dump(),
        "sessions": {"limit": lim.max_sessions, "active": lim.sessions.active},
        "requests": bucket(lim.requests), "tokens": bucket(lim.tokens), "hits": dict(lim.hits),
    })


async def faults_list(request: web.Request) -> web.Response:
    return web.json_response({"faults": [
        {"name": f.name, "layer": f.layer, "section": f.section, "summary": f.summary, "params": f.params}
        for f in faultlib.FAULTS.values()
    ]})


# ---- app ---------------------------------------------------------------------------------------------


@web.middleware
async def api_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a port that serves only the OpenAI API (the interception proxy's upstream), ``/_mock/`` does
    not exist: an app talking to ``https://api.openai.com`` cannot read the webhook secret or reset the mock."""
    server = request.app[SERVER_KEY]
    if server.api_only_ports and request.path.startswith("/_mock") and request.transport is not None:
        local = request.transport.get_extra_info("sockname")
        if local is not None and local[1] in server.api_only_ports:
            server.journal.record(None, "proxy.control_refused", method=request.method, path=request.path,
                                  host=request.headers.get("Host"))
            return errors.rest_error(404, f"Invalid URL ({request.method} {request.path})")
    return await handler(request)


_STARTED_KEY = web.RequestKey("rtsip_started", float)
SERVER_HEADER = "cloudflare"  # what api.openai.com answers with; never a framework banner


@web.middleware
async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[_STARTED_KEY] = time.monotonic()
    return await handler(request)


async def api_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer of the real API carries (also errors, upgrades and control answers)."""
    response.headers["Server"] = SERVER_HEADER
    response.headers.setdefault("x-request-id", ids.request_id())
    started = request.get(_STARTED_KEY)
    if started is not None:
        response.headers.setdefault("openai-processing-ms", str(round((time.monotonic() - started) * 1000)))


def create_app(server: MockServer) -> web.Application:
    app = web.Application(middlewares=[timed, real_errors, api_only, shard_forward],
                          client_max_size=server.config.max_body_bytes + 1024)
    app[SERVER_KEY] = server
    app.on_response_prepare.append(api_headers)
    for prefix in PREFIXES:
        app.router.add_post(prefix + "/realtime/calls/{call_id}/{op:accept|reject|refer|hangup}", call_control)
    app.router.add_post("/_mock/calls", start_call)
    app.router.add_get("/_mock/calls", list_calls)
    app.router.add_get("/_mock/calls/{call_id}", get_call)
    app.router.add_post("/_mock/calls/{call_id}/caller_hangup", caller_hangup)
    app.router.add_post("/_mock/calls/{call_id}/say", caller_say)
    app.router.add_post("/_mock/calls/{call_id}/dtmf", caller_dtmf)
    app.router.add_get("/_mock/journal", server_journal)
    app.router.add_post("/_mock/reset", reset)
    app.router.add_get("/_mock/config", get_config)
    app.router.add_put("/_mock/config", put_config)
    app.router.add_get("/_mock/faults", faults_list)
    app.router.add_get("/_mock/limits", limits_view)
    app.router.add_get("/_mock/health", health)
    app.router.add_get("/_mock/sip", sip_view)
    ws.setup(app, server)
    realtime_rest.setup(app, server)
    stubs.setup(app, server)  # last: its catch-all answers what no route above takes

    async def _close(_: web.Application) -> None:
        await server.close()

    app.on_cleanup.append(_close)
    return app
