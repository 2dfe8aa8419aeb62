"""Built-in answers for the text endpoints apps call around their calls, with no stub defined.

A SIP app often writes a post-call summary with ``/v1/chat/completions`` or ``/v1/responses``;
these answer the smallest success the official SDK parses (plain, or streamed as the SDK's SSE
parser expects), saying the behaviour script's ``default_reply``. ``/v1/models`` lists the models
the mock knows. Payloads are pure functions of the request body; :func:`answer`, which
``mock_api.stubs`` calls when no stub matched, is the thin aiohttp part.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from aiohttp import web
from openai.types import AudioModel, ChatModel
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

from . import errors, rest_io, wire_json
from . import journal_entries as je
from .realtime.script import Script
from .server import MockServer

OWNED_BY = "system"
MODEL_CREATED = 1_700_000_000  # one fixed "created" for every listed model
_BASE62 = string.ascii_letters + string.digits


def _chat_id() -> str:
    """``chatcmpl-`` and 29 base62 characters, as the real ids look."""
    return "chatcmpl-" + "".join(secrets.choice(_BASE62) for _ in range(29))


def _hex_id(prefix: str) -> str:
    """``resp_``/``msg_`` and 48 hex digits, as the Responses API's ids look."""
    return prefix + secrets.token_hex(24)


def _literals(annotation: Any) -> list[str]:
    """Every string literal inside a type such as ``Union[str, Literal[...]]``."""
    args = get_args(annotation)
    if not args:
        return []
    if all(isinstance(a, str) for a in args):
        return list(args)
    return [v for a in args for v in _literals(a)]


def known_models() -> list[str]:
    """The models of the SDK's own types: realtime (what the WebSocket accepts), chat and audio."""
    realtime = _literals(RealtimeSessionCreateRequest.model_fields["model"].annotation)
    return list(dict.fromkeys([*realtime, *_literals(ChatModel), *_literals(AudioModel)]))


MODELS = known_models()


def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": OWNED_BY}


def model_list() -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in MODELS]}


@dataclass(frozen=True)
class Problem:
    """A request the real endpoint refuses: status and the error envelope's fields."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int = 400


def _tokens(text: str) -> int:
    """A rough token count (about four characters a token), never zero."""
    return max(1, len(text) // 4)


def _pieces(text: str) -> list[str]:
    """The reply split into word-sized deltas, spaces kept, so joined deltas are the text."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


# ---- chat completions --------------------------------------------------------------------------------


_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "a string"), "number": ((int, float), "a decimal"), "integer": ((int,), "an integer"),
    "boolean": ((bool,), "a boolean"), "object": ((dict,), "an object"),
}
_ECHOED: dict[str, dict[str, str]] = {  # the request fields an answer carries back, and their JSON types
    "chat": {"model": "string"},
    "responses": {"model": "string", "instructions": "string", "max_output_tokens": "integer",
                  "previous_response_id": "string", "store": "boolean", "temperature": "number",
                  "top_p": "number", "metadata": "object"},
}


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a decimal", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), "null")


def check_echoed(body: dict[str, Any], endpoint: str) -> Problem | None:
    """Fields the answer echoes must have their real types, or the answer itself would not parse."""
    for name, kind in _ECHOED[endpoint].items():
        value = body.get(name)
        if value is None:
            continue
        types, expected = _KINDS[kind]
        wrong = not isinstance(value, types) or (kind != "boolean" and isinstance(value, bool))
        if kind == "object" and not wrong:
            wrong = not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
            expected = "an object of strings"
        if wrong:
            return Problem(f"Invalid type for '{name}': expected {expected}, but got {_type_name(value)} instead.",
                           name, "invalid_type")
    return None


def check_chat(body: Any) -> Problem | None:
    if not isinstance(body, dict):
        return Problem("Invalid type for body: expected an object.", code="invalid_type")
    if not body.get("model"):
        return Problem("you must provide a model parameter")
    wrong = check_echoed(body, "chat")
    if wrong is not None:
        return wrong
    messages = body.get("messages")
    if messages is None:
        return Problem("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        return Problem("Invalid 'messages': expected a non-empty array of message objects.", "messages",
                       "invalid_value")
    return None


def _prompt_tokens(body: dict[str, Any]) -> int:
    return _tokens(str(body.get("messages") or body.get("input") or ""))


def chat_completion(body: dict[str, Any], text: str, now: int) -> dict[str, Any]:
    prompt, completion = _prompt_tokens(body), _tokens(text)
    return {
        "id": _chat_id(), "object": "chat.completion", "created": now, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "service_tier": "default", "system_fingerprint": None,
    }


def chat_chunks(body: dict[str, Any], text: str, now: int) -> list[dict[str, Any]]:
    """``chat.completion.chunk`` objects: the role, the text in pieces, the finish, then usage if asked."""
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    base = {"id": _chat_id(), "object": "chat.completion.chunk", "created": now,
            "model": body["model"], "service_tier": "default", "system_fingerprint": None}
    extra = {"usage": None} if with_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra}

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    out += [chunk({"content": piece}) for piece in _pieces(text)]
    out.append(chunk({}, "stop"))
    if with_usage:
        prompt, completion = _prompt_tokens(body), _tokens(text)
        out.append({**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                     "total_tokens": prompt + completion}})
    return out


# ---- responses ------------------------------------------------------------------------------------------


def check_responses(body: Any) -> Problem | None:
    if not isinstance(body, dict):
        return Problem("Invalid type for body: expected an object.", code="invalid_type")
    if not body.get("model"):
        return Problem("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    return check_echoed(body, "responses")


def _message(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def response_object(body: dict[str, Any], text: str, now: float, *, resp_id: str | None = None,
                    item_id: str | None = None, done: bool = True) -> dict[str, Any]:
    """A Response: ``completed`` with one output message, or ``in_progress`` and empty (``done=False``)."""
    prompt, completion = _prompt_tokens(body), _tokens(text)
    message = _message(item_id or _hex_id("msg_"), text, "completed")
    return {
        "id": resp_id or _hex_id("resp_"), "object": "response", "created_at": now,
        "status": "completed" if done else "in_progress", "completed_at": now if done else None,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"], "output": [message] if done else [], "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [],
        "top_p": body.get("top_p", 1.0), "truncation": "disabled", "metadata": body.get("metadata") or {},
        "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": prompt + completion} if done else None,
        "user": None,
    }


def response_events(body: dict[str, Any], text: str, now: float) -> list[dict[str, Any]]:
    """The Responses API's typed stream for one text message, each event with its ``sequence_number``."""
    resp_id, item_id = _hex_id("resp_"), _hex_id("msg_")
    started = response_object(body, text, now, resp_id=resp_id, item_id=item_id, done=False)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": _message(item_id, None, "in_progress")},
        {"type": "response.content_part.added", **at, "part": part},
        *({"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []} for piece in _pieces(text)),
        {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **at, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": _message(item_id, text, "completed")},
        {"type": "response.completed",
         "response": response_object(body, text, now, resp_id=resp_id, item_id=item_id)},
    ]
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


# ---- aiohttp ------------------------------------------------------------------------------------------


async def write_sse(request: web.Request, status: int, headers: Mapping[str, str],
                    events: Sequence[tuple[str | None, Any]], done: bool) -> web.StreamResponse:
    """``event:``/``data:`` blocks as the SDK's SSE decoder reads them, then ``data: [DONE]`` if ``done``."""
    resp = web.StreamResponse(status=status, headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                      "Cache-Control": "no-cache", **headers})
    await resp.prepare(request)
    for name, data in events:
        text = data if isinstance(data, str) else wire_json.dumps(data)
        await resp.write(((f"event: {name}\n" if name else "") + f"data: {text}\n\n").encode())
    if done:
        await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


Handler = Callable[[web.Request, MockServer, Any, dict[str, str]], Awaitable[web.StreamResponse]]


def _reply_text(server: MockServer) -> str:
    return Script.load(server.script_for(None)).default_reply


def _problem(p: Problem) -> web.Response:
    return errors.rest_error(p.status, p.message, code=p.code, param=p.param)


async def _chat(request: web.Request, server: MockServer, body: Any, _: dict[str, str]) -> web.StreamResponse:
    problem = check_chat(body)
    if problem is not None:
        return _problem(problem)
    text, now = _reply_text(server), int(time.time())
    if body.get("stream") is True:
        return await write_sse(request, 200, {}, [(None, c) for c in chat_chunks(body, text, now)], True)
    return web.json_response(chat_completion(body, text, now), dumps=wire_json.dumps)


async def _responses(request: web.Request, server: MockServer, body: Any, _: dict[str, str]) -> web.StreamResponse:
    problem = check_responses(body)
    if problem is not None:
        return _problem(problem)
    text, now = _reply_text(server), time.time()
    if body.get("stream") is True:  # typed events, no [DONE]
        return await write_sse(request, 200, {}, [(e["type"], e) for e in response_events(body, text, now)], False)
    return web.json_response(response_object(body, text, now), dumps=wire_json.dumps)


async def _models(request: web.Request, server: MockServer, body: Any, _: dict[str, str]) -> web.StreamResponse:
    return web.json_response(model_list(), dumps=wire_json.dumps)


async def _model(request: web.Request, server: MockServer, body: Any, match: dict[str, str]) -> web.StreamResponse:
    model_id = match["model"]
    if model_id not in MODELS:
        return errors.rest_error(404, f"The model '{model_id}' does not exist or you do not have access to it.",
                                 code="model_not_found")
    return web.json_response(model_object(model_id), dumps=wire_json.dumps)


ROUTES: list[tuple[str, re.Pattern[str], Handler, bool]] = [  # method, /v1 path, handler, wants a JSON body
    ("POST", re.compile(r"/v1/chat/completions"), _chat, True),
    ("POST", re.compile(r"/v1/responses"), _responses, True),
    ("GET", re.compile(r"/v1/models"), _models, False),
    ("GET", re.compile(r"/v1/models/(?P<model>[^/]+)"), _model, False),
]


async def answer(request: web.Request, server: MockServer, api_path: str, body: Any,
                 json_ok: bool) -> web.StreamResponse | None:
    """The built-in answer to ``request`` (``api_path``: its path without the Azure prefix), or None."""
    for method, pattern, handler, wants_json in ROUTES:
        found = pattern.fullmatch(api_path)
        if found is None or method != request.method:
            continue
        denied = server.authenticate(request)
        if denied is not None:
            return denied
        if wants_json and not json_ok:
            return errors.rest_error(400, rest_io.JSON_PARSE_ERROR)
        server.journal.add(None, je.BuiltinHit(method=request.method, path=request.path, body=body,
                                                stream=isinstance(body, dict) and body.get("stream") is True))
        return await handler(request, server, body, found.groupdict())
    return None
