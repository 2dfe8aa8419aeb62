"""aiohttp adapter: the REST call controls, the app and its middlewares, real-shaped errors.

Thin on purpose: it parses, asks ``MockServer``/``calls`` what to do, and journals. The ``/_mock/``
control API is :mod:`mock_api.control_api`, added to the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from openai.types.realtime.call_refer_params import CallReferParams
from openai.types.realtime.call_reject_params import CallRejectParams

from . import calls as c
from . import (
    control_api,
    errors,
    ids,
    live_create,
    live_rest,
    live_ws,
    models,
    realtime_rest,
    stubs,
    webhook_endpoints_rest,
    wire_json,
    ws,
)
from . import journal_entries as je
from .proxy import host_allowed as intercepted_host
from .realtime.validation import ParamError, validate_payload, validate_session_config
from .rest_io import (
    BadRequest,
    Op,
    bad_refer_target,
    outcome_response,
    param_error,
    read_json,
    refer_500,
    referable,
    refusal_response,
    too_large,
)
from .server import SERVER_KEY, MockServer, api_style

PREFIXES = ("/v1", "/openai/v1", "/openai")
"""OpenAI's paths, Azure's versionless v1 paths, and the ``AzureOpenAI`` client's ``?api-version=`` paths."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- middleware ------------------------------------------------------------------------------


@web.middleware
async def real_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown routes, wrong methods and crashes answer in the API's envelope, never aiohttp's HTML."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return exc.response
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        server = request.app[SERVER_KEY]
        server.journal.add(None, je.HttpUnknownRoute(method=request.method, path=request.path))
        return errors.rest_error(404, f"Invalid URL ({request.method} {request.path})")
    except web.HTTPRequestEntityTooLarge:  # aiohttp's own limit (multipart forms): the API's 413
        limit = request.app[SERVER_KEY].config.max_body_bytes
        return too_large(request.content_length or limit + 1, limit)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return errors.rest_error(exc.status, exc.reason)  # aiohttp's refusals, in the API's envelope
    except ConnectionError as exc:  # the client left mid-answer (a socket closed during its upgrade): not a bug
        server = request.app[SERVER_KEY]
        server.journal.add(None, je.HttpClientGone(method=request.method, path=request.path,
                                                    error=f"{type(exc).__name__}: {exc}"))
        return web.Response(status=499)  # never reaches anyone; aiohttp drops the dead connection quietly
    except Exception as exc:  # a bug of the mock: journaled apart from scripted errors, the real 500 answered
        server = request.app[SERVER_KEY]
        server.mock_bug(None, f"http {request.method} {request.path}", exc)
        return errors.rest_error(500, SERVER_ERROR_MESSAGE, type="server_error")


SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


# ---- REST call controls -----------------------------------------------------------------------------


def _journal_response(server: MockServer, call_id: str | None, resp: web.Response) -> web.Response:
    body: Any = resp.text or ""
    if body:
        with contextlib.suppress(ValueError):
            body = wire_json.loads(body)
    server.journal.add(call_id, je.RestResponse(status=resp.status, body=body))
    return resp


async def call_control(request: web.Request) -> web.Response:
    """``/v1/realtime/calls/{call_id}/{op}``: a call's controls on the Realtime surface."""
    return await _control(request, "realtime", request.match_info["call_id"], _OPS)


async def live_control(request: web.Request) -> web.Response:
    """``/v1/live/sessions/{session_id}/{op}``: the same call's controls on the GPT-Live surface."""
    return await _control(request, "live", request.match_info["session_id"], live_rest.OPS)


async def _control(request: web.Request, surface: c.Surface, call_id: str, ops: dict[str, Op]) -> web.Response:
    server = request.app[SERVER_KEY]
    op = request.match_info["op"]
    call = server.call_on(surface, call_id)
    jid = call.call_id if call is not None else None
    azure = api_style(request.path) != "openai"
    seen: dict[str, Any] = {"query": dict(request.query)} if request.query else {}  # Azure's api-version
    if request.secure:
        seen["tls"] = True  # came in on the HTTPS/WSS listener
    try:
        body = await read_json(request, server)
    except BadRequest as exc:
        server.journal.add(jid, je.RestRequest(op=op, path=request.path, call_id=call_id, body=None,
                                               headers=_headers(request), **seen))
        return _journal_response(server, jid, exc.response)
    server.journal.add(jid, je.RestRequest(op=op, path=request.path, call_id=call_id, body=body,
                                           headers=_headers(request), **seen))
    denied = server.admit(request)
    if denied is not None:
        return _journal_response(server, jid, denied)
    limited = _over_rpm(server, jid, op, body)
    if limited is not None:
        return _journal_response(server, jid, limited)
    if call is None:
        return _journal_response(server, None, _with_rpm_headers(server, refusal_response(c.not_found(surface))))
    if call.state.terminal:
        return _journal_response(server, jid, refusal_response(c.not_found(surface)))
    if not isinstance(body, dict):
        return _journal_response(server, jid, errors.rest_error(
            400, f"Invalid type for body: expected an object, but got {type(body).__name__} instead.",
            code="invalid_type"))
    limited = _over_sessions(server, call, body) if op == "accept" else None
    if limited is not None:
        return _journal_response(server, jid, _with_rpm_headers(server, limited))
    slow_s = server.fault_script(call.call_id).accept_slow_404_s if op == "accept" else None
    if slow_s is not None and call.state is c.CallState.RINGING:
        return _journal_response(server, jid, await _slow_accept(server, call, surface, slow_s))
    return _journal_response(server, jid, _with_rpm_headers(server, ops[op](server, call, body, azure)))


# ---- OpenAI-side limits: 429s the SDK turns into openai.RateLimitError ----------------


def _resource(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else models.DEFAULT_REALTIME


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
    if call.state is not c.CallState.RINGING or call.surface is not None:
        return None
    hit = server.limits.session_full()
    if hit is None:
        return None
    server.limit_hit(call.call_id, hit, "accept")
    return errors.rest_error(429, hit.message(_resource(body)), type=hit.error_type, code="rate_limit_exceeded")


def _accept(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    if azure:
        missing = _azure_missing(body, server.config.azure_accept_required)
        if missing is not None:  # refused outright: the call keeps ringing, so the app can accept again
            return param_error(missing)
    refused = _retired_model(server, call.call_id, body)
    if refused is not None:  # refused outright: the call keeps ringing, as after any refused accept
        return refused
    problem = validate_session_config(body, prefix="", kind="realtime")
    # strict 400 or the real service's 200-then-fail (failure mode 5): the call table decides
    return outcome_response(server.apply(call, c.Accept(
        body, None if problem is None else c.BodyProblem(problem.code, problem.message, problem.param),
        strict=server.config.strict_accept, faults=server.fault_script(call.call_id),
        loser_status=server.config.loser_status)))


async def _slow_accept(server: MockServer, call: c.Call, surface: c.Surface, delay_s: float) -> web.Response:
    """accept_slow_404 (failure mode 22): the answer comes ``delay_s`` late, and by then the call has failed."""
    server.journal.add(call.call_id, je.FaultFired(fault="accept_slow_404", detail=f"answer held {delay_s:g} s"))
    await asyncio.sleep(delay_s)
    if not call.state.terminal:  # the caller may have hung up, or the ring timer fired, meanwhile
        server.apply(call, c.Fail("accept_slow_404", sip_status=server.fault_script(call.call_id).accept_slow_404_sip))
    return refusal_response(c.not_found(surface))


def _retired_model(server: MockServer, call_id: str, body: dict[str, Any]) -> web.Response | None:
    """Journal each retiring model the accept names; answer the policy's error for a refused one."""
    checks = models.check_session(body, models.today_utc(), models.RetiredModelPolicy.of(server.faults_for(call_id)),
                                  via="accept")
    for found in checks:
        if found.entry is not None:
            server.journal.add(call_id, found.entry)
    refused = models.first_refusal(checks)
    if refused is None or refused.refusal is None:
        return None
    err = refused.refusal
    return errors.rest_error(err.status, err.message_for(refused.status.model), type=err.type, code=err.code)


def _azure_missing(body: dict[str, Any], required: Sequence[str]) -> ParamError | None:
    """Azure's SIP guide: an accept carries ``type``, ``model`` (the deployment name) and ``instructions``.

    Its answer to a missing one is undocumented; the mock answers OpenAI's 400 ``missing_required_parameter``
    (the body is checked behind Azure's front door, by the same service). Absent, null and "" count as missing.
    """
    for name in required:
        if body.get(name) in (None, ""):
            return ParamError("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
    return None


def _reject(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = validate_payload(CallRejectParams, body, "")  # unknown keys and types, from the SDK's own type
    if problem is not None:
        return param_error(problem)
    code = body.get("status_code", 603)
    if isinstance(code, bool) or not 400 <= code <= 699:  # a value range the type cannot say
        return errors.rest_error(400, f"Invalid 'status_code': {code}. Expected a SIP final status between 400 "
                                 "and 699.", code="invalid_value", param="status_code")
    return outcome_response(server.apply(call, c.Reject(code, loser_status=server.config.loser_status)))


def _refer(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    problem = validate_payload(CallReferParams, body, "")
    if problem is not None:
        return param_error(problem)
    target = body["target_uri"]
    if not referable(target):
        return bad_refer_target()
    body_kind = server.fault_script(call.call_id).refer_500
    if body_kind is not None and call.state is c.CallState.ACTIVE:  # failure mode 24: no REFER, the call goes on
        server.journal.add(call.call_id, je.FaultFired(fault="refer_500", detail=f"refer to {target} answered 500"))
        return refer_500(body_kind, azure)
    return outcome_response(server.apply(call, c.Refer(target, faults=server.fault_script(call.call_id),
                                                       loser_status=server.config.loser_status)))


def _hangup(server: MockServer, call: c.Call, body: dict[str, Any], azure: bool) -> web.Response:
    return outcome_response(server.apply(call, c.Hangup(loser_status=server.config.loser_status)))


_OPS: dict[str, Op] = {
    "accept": _accept, "reject": _reject, "refer": _refer, "hangup": _hangup,
}


def _headers(request: web.Request) -> dict[str, str]:
    keep = ("content-type", "user-agent", "openai-beta", "openai-project", "openai-organization")
    out = {k: v for k, v in request.headers.items() if k.lower() in keep}
    key = request.headers.get("Authorization") or request.headers.get("api-key")
    if key:
        out["authorization"] = errors.masked(key.removeprefix("Bearer ").strip())
    return out


# ---- app ---------------------------------------------------------------------------------------------


@web.middleware
async def api_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a port that serves only the OpenAI API (the interception proxy's upstream), ``/_mock/`` does
    not exist: an app talking to ``https://api.openai.com`` cannot read the webhook secret or reset the mock."""
    server = request.app[SERVER_KEY]
    if server.api_only_ports and request.path.startswith("/_mock") and request.transport is not None:
        local = request.transport.get_extra_info("sockname")
        if local is not None and local[1] in server.api_only_ports:
            server.journal.add(None, je.ProxyControlRefused(method=request.method, path=request.path,
                                                            host=request.headers.get("Host")))
            return errors.rest_error(404, f"Invalid URL ({request.method} {request.path})")
    return await handler(request)


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _host_name(value: str) -> str:
    """The name of a ``Host`` header or URL netloc, without port, brackets or trailing dot, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _local_address(request: web.Request) -> tuple[str, int] | None:
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return (str(sock[0]).lower(), int(sock[1])) if sock else None


def host_ok(server: MockServer, request: web.Request, name: str) -> bool:
    """A name this mock answers to: loopback names and addresses, the address the request arrived on (what
    ``--host`` bound), ``allowed_hosts``, and on the interception proxy's port the API hosts it intercepts."""
    if _is_loopback(name) or name in (h.lower() for h in server.config.allowed_hosts):
        return True
    local = _local_address(request)
    if local is None:
        return False
    if name == local[0].removeprefix("::ffff:"):
        return True
    return local[1] in server.api_only_ports and intercepted_host(name)


def origin_ok(server: MockServer, request: web.Request, origin: str) -> bool:
    """A browser page may drive the mock only when it is served from this machine's loopback (a local
    dev front end); ``null`` (sandboxed frames, file: pages, cross-site redirects) is a foreign page."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    name = _host_name(parts.netloc)
    return _is_loopback(name) or name in (h.lower() for h in server.config.allowed_hosts)


def _refused(server: MockServer, request: web.Request, status: int, reason: str, message: str,
             code: str) -> web.Response:
    server.journal.add(None, je.HttpRefused(reason=reason, method=request.method, path=request.path,
                                            host=request.headers.get("Host"), origin=request.headers.get("Origin")))
    response = errors.rest_error(status, message, code=code)
    response.force_close()
    return response


@web.middleware
async def local_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A local tool a web page cannot drive: the mock answers only a loopback ``Host`` (DNS rebinding) and
    no foreign ``Origin`` (cross-site requests from a browser on this machine); ``/_mock/`` also wants the
    control token when one is set."""
    server = request.app[SERVER_KEY]
    host = _host_name(request.headers.get("Host", "")) if "Host" in request.headers else None
    if host is not None and not host_ok(server, request, host):
        return _refused(server, request, 403, "host", f"Host '{request.headers['Host']}' is not served by this "
                        "local mock: use 127.0.0.1 or localhost (or add it to allowed_hosts).", "host_not_allowed")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_ok(server, request, origin):
        return _refused(server, request, 403, "origin", f"Requests from the web page '{origin}' are refused: "
                        "this local mock answers pages served from localhost only.", "origin_not_allowed")
    token = server.config.control_token
    if token and request.path.startswith("/_mock") and not _token_ok(request, token):
        return _refused(server, request, 401, "control_token", "The control API needs the control token: "
                        "'Authorization: Bearer <token>' or 'X-Rtsip-Token: <token>'.", "invalid_control_token")
    return await handler(request)


def _token_ok(request: web.Request, token: str) -> bool:
    given = request.headers.get("X-Rtsip-Token")
    if given is None:
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return hmac.compare_digest(given.encode(), token.encode())


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
    app = web.Application(middlewares=[timed, real_errors, local_only, api_only],
                          client_max_size=server.config.max_body_bytes + 1024)
    app[SERVER_KEY] = server
    app.on_response_prepare.append(api_headers)
    for prefix in PREFIXES:
        app.router.add_post(prefix + "/realtime/calls/{call_id}/{op:accept|reject|refer|hangup}", call_control)
        if prefix != "/openai":  # GPT-Live has no api-version paths (AzureOpenAI's dated ones)
            app.router.add_post(prefix + "/live/sessions/{session_id}/{op:accept|reject|refer|hangup}", live_control)
            app.router.add_get(prefix + "/live/sessions/{session_id}/content", live_rest.content)
    control_api.setup(app)
    ws.setup(app, server)
    live_ws.setup(app, server)
    live_create.setup(app, server)
    realtime_rest.setup(app, server)
    webhook_endpoints_rest.setup(app)
    stubs.setup(app, server)  # last: its catch-all answers what no route above takes

    async def _close(_: web.Application) -> None:
        await server.close()

    app.on_cleanup.append(_close)
    return app
