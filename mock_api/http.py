"""aiohttp adapter: the REST call controls, the ``/_mock/`` control API, real-shaped errors.

Thin on purpose: it parses, asks ``MockServer``/``calls`` what to do, and journals.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from openai.types.realtime.call_refer_params import CallReferParams
from openai.types.realtime.call_reject_params import CallRejectParams
from pydantic import BaseModel, ValidationError

from . import audio, errors, ids, realtime_rest, session_host, stubs, virtual, wire_json, ws
from . import calls as c
from . import faults as faultlib
from .config import ConfigPatch, FieldProblem
from .control_models import (
    CallView,
    SayRequest,
    SipHeader,
    StartCallRequest,
    StartCallResponse,
)
from .journal import SERVER as SERVER_JOURNAL_KEY
from .journal import Entry
from .proxy import host_allowed as intercepted_host
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
    except web.HTTPRequestEntityTooLarge:  # aiohttp's own limit (multipart forms): the API's 413
        limit = request.app[SERVER_KEY].config.max_body_bytes
        return _too_large(request.content_length or limit + 1, limit)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return errors.rest_error(exc.status, exc.reason)  # aiohttp's refusals, in the API's envelope
    except ConnectionError as exc:  # the client left mid-answer (a socket closed during its upgrade): not a bug
        server = request.app[SERVER_KEY]
        server.journal.record(None, "http.client_gone", method=request.method, path=request.path,
                              error=f"{type(exc).__name__}: {exc}")
        return web.Response(status=499)  # never reaches anyone; aiohttp drops the dead connection quietly
    except Exception as exc:  # a bug of the mock: journaled apart from scripted errors, the real 500 answered
        server = request.app[SERVER_KEY]
        server.mock_bug(None, f"http {request.method} {request.path}", exc)
        return errors.rest_error(500, SERVER_ERROR_MESSAGE, type="server_error")


SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


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
        return parse_json(raw)
    except wire_json.WireJSONError:
        raise BadRequest(errors.rest_error(400, JSON_PARSE_ERROR)) from None


def parse_json(raw: bytes) -> Any:
    """A request body as the real API takes it: no NaN/Infinity, no number too large for a float (``1e999``
    would go back out as invalid JSON), at most wire_json.MAX_DEPTH levels."""
    return wire_json.loads(raw)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body (``None`` past ``limit``): a body arrives in pieces, and the first piece is
    not the body (a 256 KB accept used to be parsed from its first 128 KB). Past the limit nothing
    more is read or kept, and the connection closes after the 413 (the rest is never buffered)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> web.Response:
    response = errors.rest_error(413, f"Request body too large: {size} bytes; the limit is {limit} bytes.",
                                 code="request_too_large")
    response.force_close()  # the unread rest of the body must not be parsed as the next request
    return response


# ---- REST call controls -----------------------------------------------------------------------------


def _journal_response(server: MockServer, call_id: str | None, resp: web.Response) -> web.Response:
    body: Any = resp.text or ""
    if body:
        with contextlib.suppress(ValueError):
            body = wire_json.loads(body)
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
    if not _referable(target):
        return errors.rest_error(400, "Invalid 'target_uri': expected a SIP or tel URI (sip:, sips: or tel:) "
                                 "without spaces or control characters.", code="invalid_value", param="target_uri")
    noop = faultlib.find(server.faults_for(call.call_id), "refer_noop") is not None
    return _answer(server.apply(call, c.Refer(target, noop=noop)))


_TARGET = re.compile(r"(?i)(sips?|tel):[^\x00-\x20\x7f]+")


def _referable(target: str) -> bool:
    """A REFER target goes into a SIP header: a CR/LF would inject headers, another scheme is no phone."""
    return _TARGET.fullmatch(target) is not None


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
    """Journal data is JSON already (anything else shows as text); never NaN or Infinity on the wire."""
    return json.dumps(data, default=str, allow_nan=False)


def _json(model: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=model.model_dump_json(by_alias=True), content_type="application/json")


def _json_data(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _invalid(exc: ValidationError) -> web.Response:
    """The first problem, naming the field (``faults[0].seconds``) and what it takes."""
    first = exc.errors(include_url=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(first["loc"]))
    problem = first.get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):
        loc += problem.path
        msg = str(problem).split(": ", 1)[1]
    else:
        msg = first["msg"].removeprefix("Value error, ")
    code = "unknown_parameter" if first["type"] == "extra_forbidden" else (
        "invalid_type" if first["type"].endswith(("_type", "_parsing")) else "invalid_value")
    return errors.rest_error(400, f"Invalid value for '{loc}': {msg}" if loc else f"Invalid body: {msg}",
                             code=code, param=loc or None)


# ---- big answers: paged, and written in slices so the loop keeps serving -----------------------------

PAGE_DEFAULT = 1000  # journal entries per page of GET /_mock/journal when no limit is given
PAGE_MAX = 20_000
CALLS_PAGE_DEFAULT = 100  # calls with their entries per page of GET /_mock/calls
SLICE = 200  # items serialized between two yields to the loop (about a millisecond)


class Page:
    """``?after=SEQ&limit=N`` of a control-API read; a bad value is a 400 naming the parameter."""

    def __init__(self, request: web.Request, default_limit: int | None) -> None:
        self.after = _int_param(request, "after", 0) or 0
        limit = _int_param(request, "limit", default_limit)
        self.limit = None if limit is None else max(1, min(limit, PAGE_MAX))
        self.given = "after" in request.query or "limit" in request.query

    def of(self, entries: Sequence[Entry]) -> tuple[list[Entry], int | None]:
        """The page's entries and the ``after`` of the next page (None: this was the last)."""
        entries = list(entries)  # a snapshot: the timeline may grow while a big answer is written
        start = _first_after(entries, self.after)
        stop = len(entries) if self.limit is None else min(len(entries), start + self.limit)
        page = entries[start:stop]
        return page, (page[-1].seq if stop < len(entries) and page else None)


def _first_after(entries: Sequence[Entry], seq: int) -> int:
    """Index of the first entry whose seq is above ``seq`` (entries are in seq order)."""
    lo, hi = 0, len(entries)
    while lo < hi:
        mid = (lo + hi) // 2
        if entries[mid].seq <= seq:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(errors.rest_error(400, f"Invalid '{name}': expected a non-negative integer, got {raw!r}.",
                                           code="invalid_value", param=name))
    return int(raw)


async def stream_json(request: web.Request, fields: dict[str, Any], key: str, items: Sequence[Any],
                      render: Callable[[Any], Any]) -> web.StreamResponse:
    """``{**fields, key: [render(item)...]}``, written a slice at a time with the loop free in between (a
    journal of 20,000 entries used to hold every session for seconds while one string was built)."""
    if len(items) <= SLICE:
        return _json_data({**fields, key: [render(i) for i in items]})
    resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await resp.prepare(request)
    head = _dumps(fields)[:-1]
    await resp.write(f'{head}{", " if fields else ""}"{key}": ['.encode())
    for start in range(0, len(items), SLICE):
        part = ", ".join(_dumps(render(i)) for i in items[start:start + SLICE])
        await resp.write(((", " if start else "") + part).encode())
        await asyncio.sleep(0)  # let live sessions run between slices
    await resp.write(b"]}")
    await resp.write_eof()
    return resp


def _entry_json(entry: Entry) -> dict[str, Any]:
    return entry.to_json()


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


async def list_calls(request: web.Request) -> web.StreamResponse:
    """Calls in creation order; with their entries (the default) at most ``limit`` calls a page (100), the
    next page from ``after=<last call_id>``; ``next_after`` names it (null: no more)."""
    server = request.app[SERVER_KEY]
    full = request.query.get("entries", "1") != "0"
    limit = _int_param(request, "limit", CALLS_PAGE_DEFAULT if full else None)
    ids = list(server.calls)
    start = 0
    after = request.query.get("after")
    if after:
        start = ids.index(after) + 1 if after in ids else len(ids)
    stop = len(ids) if limit is None else min(len(ids), start + max(1, limit))
    page = [server.calls[i] for i in ids[start:stop]]
    more = {"next_after": page[-1].call_id if stop < len(ids) and page else None}
    if not full:
        return await stream_json(request, more, "calls", page, lambda call: call_view_json(server, call, False))
    resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await resp.prepare(request)
    await resp.write(b'{"calls": [')
    for n, call in enumerate(page):
        view = call_view_json(server, call, False)
        line = server.journal.timeline(call.call_id)
        entries = list(line.entries) if line else []
        head = _dumps(view)[:-1]
        await resp.write(f'{", " if n else ""}{head}, "entries": ['.encode())
        for s0 in range(0, len(entries), SLICE):
            part = ", ".join(_dumps(e.to_json()) for e in entries[s0:s0 + SLICE])
            await resp.write(((", " if s0 else "") + part).encode())
            await asyncio.sleep(0)
        await resp.write(b"]}")
    await resp.write(f'], "next_after": {_dumps(more["next_after"])}}}'.encode())
    await resp.write_eof()
    return resp


async def get_call(request: web.Request) -> web.StreamResponse:
    """A call with its timeline; ``?after=SEQ&limit=N`` pages it (``next_after``: the next page's ``after``)."""
    server = request.app[SERVER_KEY]
    call = server.calls.get(request.match_info["call_id"])
    if call is None:
        return _refusal(c.not_found())
    page = Page(request, None)
    line = server.journal.timeline(call.call_id)
    entries, next_after = page.of(line.entries if line else [])
    fields = call_view_json(server, call, False)
    fields.pop("entries", None)
    if page.given:
        fields["next_after"] = next_after
    if line is not None and line.dropped:
        fields["dropped"] = line.dropped
    return await stream_json(request, fields, "entries", entries, _entry_json)


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


def _live_host(server: MockServer, call_id: str) -> session_host.SessionHost | web.Response:
    call = server.calls.get(call_id)
    if call is None or call.state.terminal:
        return _refusal(c.not_found())
    host = session_host.get_session(server, call_id)
    if host is None:
        return errors.rest_error(400, f"Call is {call.state.value}; the caller can speak once it is accepted.",
                                 code="call_not_active")
    return host


async def caller_say(request: web.Request) -> web.Response:
    """The virtual caller speaks a fixture or audio file, paced like RTP. The file is read and decoded
    off the loop (ffmpeg on a large or odd file takes a while); a file that is not audio is a 400."""
    server = request.app[SERVER_KEY]
    call_id = request.match_info["call_id"]
    req = await read_model(request, SayRequest)
    host = _live_host(server, call_id)
    if isinstance(host, web.Response):
        return host
    param = "fixture" if req.fixture else "path"
    try:
        pcm = await asyncio.to_thread(req.pcm)
    except (FileNotFoundError, KeyError, IsADirectoryError, PermissionError) as exc:
        return errors.rest_error(400, f"Cannot load audio: {exc}", code="invalid_value", param=param)
    except Exception as exc:  # the decoder refused it: whatever the file is, it is not audio
        return errors.rest_error(400, f"Cannot load audio: {getattr(req, param)!r} is not audio "
                                 f"({type(exc).__name__}).", code="invalid_value", param=param)
    if not pcm:
        return errors.rest_error(400, f"Cannot load audio: {getattr(req, param)!r} is not audio (no samples).",
                                 code="invalid_value", param=param)
    if _live_host(server, call_id) is not host:  # the call ended while the file was read
        return _refusal(c.not_found())
    task = server.spawn(virtual.speak(host, server.journal, call_id, pcm, label=req.fixture or req.path or "",
                                      speed=req.speed, trailing_silence_ms=req.trailing_silence_ms))
    if req.wait:
        await task
    return _json_data({"ms": round(audio.duration_ms(pcm, virtual.RATE), 1)}, status=200 if req.wait else 202)


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
    return _json_data({"sent": digits})


async def server_journal(request: web.Request) -> web.StreamResponse:
    """The server timeline, ``?after=SEQ&limit=N`` (at most 1000 entries unless ``limit`` says more);
    ``next_after`` is the next page's ``after`` (null: no more)."""
    server = request.app[SERVER_KEY]
    page = Page(request, PAGE_DEFAULT)
    line = server.journal.timeline(SERVER_JOURNAL_KEY)
    entries, next_after = page.of(line.entries if line else [])
    fields: dict[str, Any] = {"next_after": next_after}
    if line is not None and line.dropped:
        fields["dropped"] = line.dropped
    return await stream_json(request, fields, "entries", entries, _entry_json)


async def sessions_list(request: web.Request) -> web.Response:
    """Call-less sessions (``?model=`` / ``?intent=`` sockets) whose timelines the journal keeps."""
    server = request.app[SERVER_KEY]
    out = []
    for key in server.journal.call_ids():
        line = server.journal.timeline(key)
        if line is None or key in server.calls:
            continue
        out.append({"id": key, "started_at": line.started_wall, "entries": len(line.entries),
                    "dropped": line.dropped, "ended": key in server.ended_keys})
    return _json_data({"sessions": out})


async def session_journal(request: web.Request) -> web.StreamResponse:
    """One call-less session's timeline, paged like a call's."""
    server = request.app[SERVER_KEY]
    key = request.match_info["session_id"]
    line = server.journal.timeline(key)
    if line is None or key in server.calls or key == SERVER_JOURNAL_KEY:
        return errors.rest_error(404, f"No session '{key}' in the journal.", code="session_not_found")
    page = Page(request, None)
    entries, next_after = page.of(line.entries)
    fields: dict[str, Any] = {"id": key, "started_at": line.started_wall, "ended": key in server.ended_keys}
    if page.given:
        fields["next_after"] = next_after
    if line.dropped:
        fields["dropped"] = line.dropped
    return await stream_json(request, fields, "entries", entries, _entry_json)


async def reset(request: web.Request) -> web.Response:
    await request.app[SERVER_KEY].reset()
    stubs.reset(request.app[SERVER_KEY])
    return _json_data({"ok": True})


async def get_config(request: web.Request) -> web.Response:
    config = request.app[SERVER_KEY].config
    if config.control_token:  # the token guards this very API: never echo it
        config = config.model_copy(update={"control_token": "<set>"})
    return _json(config)


async def put_config(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return _json(server.configure(await read_model(request, ConfigPatch)))


async def health(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return _json_data({"ok": True, "calls": len(server.calls), "pending_tasks": server.pending_tasks})


async def sip_view(request: web.Request) -> web.Response:
    """The SIP ingress and its workers (pids, ports, contacts, live calls)."""
    server = request.app[SERVER_KEY]
    if server.sip_status is None:
        return errors.rest_error(404, "This mock runs without a SIP ingress (start it with `rtsip mock`, which "
                                 "starts one unless --no-sip is given).", code="sip_not_running")
    return _json_data(server.sip_status())


async def limits_view(request: web.Request) -> web.Response:
    """The limits as configured and as they stand: what a load test reads besides ``limits.hit`` entries."""
    server = request.app[SERVER_KEY]
    lim, now = server.limits, server.clock()

    def bucket(b: Any) -> dict[str, Any] | None:
        return None if b is None else {"limit": b.limit, "remaining": b.remaining(now),
                                       "reset_seconds": round(b.reset_s(now), 3)}

    return _json_data({
        "config": server.config.limits.model_dump(),
        "sessions": {"limit": lim.max_sessions, "active": lim.sessions.active},
        "requests": bucket(lim.requests), "tokens": bucket(lim.tokens), "hits": dict(lim.hits),
    })


async def faults_list(request: web.Request) -> web.Response:
    return _json_data({"faults": [
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
    server.journal.record(None, "http.refused", reason=reason, method=request.method, path=request.path,
                          host=request.headers.get("Host"), origin=request.headers.get("Origin"))
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
    app = web.Application(middlewares=[timed, real_errors, local_only, api_only, shard_forward],
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
    app.router.add_get("/_mock/sessions", sessions_list)
    app.router.add_get("/_mock/sessions/{session_id}", session_journal)
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
