"""Reading a REST request as the real API does, and answering refusals in its envelope: one place for every
route module (call controls, the control API, stubs, the other REST endpoints) to share, so that none of
them imports the module that assembles the app.

Bodies are read whole and parsed strictly (:mod:`mock_api.wire_json`); a big one is parsed on a worker
thread so the event loop keeps serving every other socket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import calls as c
from . import errors, wire_json
from .realtime.validation import ParamError

if TYPE_CHECKING:
    from .server import MockServer

Op = Callable[["MockServer", c.Call, dict[str, Any], bool], web.Response]
"""A call control (accept, reject, refer, hangup): the server, the call, the JSON body, whether on Azure's paths."""

HEAVY_BODY_BYTES = 64 * 1024  # a body past this is parsed off the event loop (a megabyte takes tens of ms)

JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have "
    "trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)

class BadRequest(Exception):
    """Raised while reading a request; carries the real-shaped response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response

async def read_json(request: web.Request, server: MockServer, *, allow_empty: bool = True) -> Any:
    limit = server.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(too_large(request.content_length, limit))
    raw = await read_body(request, limit)
    if raw is None:
        raise BadRequest(too_large(request.content_length or limit + 1, limit))
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
        if len(raw) > HEAVY_BODY_BYTES:  # parsed on a worker thread: the loop serves every other socket meanwhile
            body, bad = await asyncio.to_thread(_parse_checked, raw)
        else:
            body, bad = _parse_checked(raw)
    except wire_json.WireJSONError:
        raise BadRequest(errors.rest_error(400, JSON_PARSE_ERROR)) from None
    if bad is not None:  # kept, it would break every answer that shows it (a call's view, the journal, stubs)
        raise BadRequest(errors.rest_error(400, wire_json.lone_surrogate_message(bad), code="invalid_value",
                                           param=bad or None))
    return body


def _parse_checked(raw: bytes) -> tuple[Any, str | None]:
    """The body, and where it holds a lone surrogate (None: nowhere)."""
    body = parse_json(raw)
    return body, wire_json.lone_surrogate_in(raw, body)


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


def too_large(size: int, limit: int) -> web.Response:
    response = errors.rest_error(413, f"Request body too large: {size} bytes; the limit is {limit} bytes.",
                                 code="request_too_large")
    response.force_close()  # the unread rest of the body must not be parsed as the next request
    return response

def refusal_response(r: c.Refusal) -> web.Response:
    """A refusal of the call table, in the API's error envelope."""
    return errors.rest_error(r.http_status, r.message, code=r.code, param=r.param)


def empty_ok() -> web.Response:
    """200, ``content-length: 0`` and no ``Content-Type``, as the real call controls answer.

    A JSON content type on an empty body breaks every client that parses by content type: the SDK's
    generic ``client.post(..., cast_to=dict)`` (openai-agents' SIP example) and ``fetch(...).json()``
    raise on it, while the SDK's typed ``calls.*`` methods never read the body.
    """
    return web.Response(status=200)


def outcome_response(outcome: c.Outcome) -> web.Response:
    """The call table's answer to an operation: the empty 200, or its refusal."""
    return empty_ok() if outcome.refusal is None else refusal_response(outcome.refusal)


SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def refer_500(body: str, azure: bool) -> web.Response:
    """The refer_500 fault's answer (failure mode 24): OpenAI's JSON ``server_error`` envelope, or the plain
    ``Internal Server Error`` an Azure deployment answered (``body`` auto: by the path the refer came on)."""
    if body == "text" or (body == "auto" and azure):
        return web.Response(status=500, text="Internal Server Error", content_type="text/plain")
    return errors.rest_error(500, SERVER_ERROR_MESSAGE, type="server_error")


def param_error(problem: ParamError) -> web.Response:
    return errors.rest_error(400, problem.message, code=problem.code, param=problem.param)


_TARGET = re.compile(r"(?i)(sips?|tel):[^\x00-\x20\x7f]+")


def referable(target: str) -> bool:
    """A REFER target goes into a SIP header: a CR/LF would inject headers, another scheme is no phone."""
    return _TARGET.fullmatch(target) is not None


def bad_refer_target() -> web.Response:
    return errors.rest_error(400, "Invalid 'target_uri': expected a SIP or tel URI (sip:, sips: or tel:) without "
                             "spaces or control characters.", code="invalid_value", param="target_uri")
