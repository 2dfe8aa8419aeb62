"""The ``/_mock/`` control API: start and drive virtual calls, read the journal, configure the mock.

Routes added by :func:`setup` into the app :func:`mock_api.http.create_app` builds, behind its
middlewares (loopback host and origin, the control token, never on an API-only port). Big answers
are paged and written in slices, so live sessions keep running while a long timeline goes out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from . import audio, errors, live_host, rest_io, session_host, stubs, virtual
from . import calls as c
from . import journal_entries as je
from .config import ConfigPatch, FieldProblem
from .control_models import (
    CallView,
    SayRequest,
    SipHeader,
    StartCallRequest,
    StartCallResponse,
)
from .faults import FAULTS
from .journal import SERVER as SERVER_JOURNAL_KEY
from .journal import EntriesView, Entry
from .server import SERVER_KEY, MockServer

M = TypeVar("M", bound=BaseModel)


def call_view(server: MockServer, call: c.Call) -> CallView:
    """A call without its timeline (see :func:`call_view_json` for the whole view)."""
    line = server.journal.timeline(call.call_id)
    return CallView(
        call_id=call.call_id, live_id=call.live_id, surface=call.surface, state=call.state.value,
        terminal=call.state.terminal, transport=call.transport,
        created_at=call.created_at, sip_headers=[SipHeader(**h) for h in call.sip_headers],
        sip_final_status=call.sip_final_status, refer_target=call.refer_target, accept_body=server.accept_body(call),
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
        raise rest_io.BadRequest(errors.rest_error(
            400, f"Invalid '{name}': expected a non-negative integer, got {raw!r}.", code="invalid_value", param=name))
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


async def _decoded(entries: Sequence[Entry]) -> Sequence[Entry]:
    """A timeline's entries for an answer, its packed part decoded off the loop (:meth:`EntriesView.decoded`)."""
    return await entries.decoded() if isinstance(entries, EntriesView) else entries


def _entry_json(entry: Entry) -> dict[str, Any]:
    return entry.to_json()


async def read_model(request: web.Request, model: type[M]) -> M:
    """A control-API body as ``model``; a bad one raises BadRequest with a real-shaped 400."""
    body = await rest_io.read_json(request, request.app[SERVER_KEY])  # a lone surrogate is refused there
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise rest_io.BadRequest(_invalid(exc)) from None


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
        entries = list(await _decoded(line.entries)) if line else []
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
        return rest_io.refusal_response(c.not_found())
    page = Page(request, None)
    line = server.journal.timeline(call.call_id)
    entries, next_after = page.of(await _decoded(line.entries) if line else [])
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
        return rest_io.refusal_response(c.not_found())
    outcome = server.apply(call, c.CallerBye(), source="caller")
    if not outcome.ok:
        return rest_io.refusal_response(outcome.refusal)  # type: ignore[arg-type]
    return _json(call_view(server, call))


def _live_host(server: MockServer, call_id: str) -> session_host.SessionHost | live_host.LiveHost | web.Response:
    """The runtime the call's caller speaks into: its Realtime session host, or its GPT-Live host."""
    call = server.calls.get(call_id)
    if call is None or call.state.terminal:
        return rest_io.refusal_response(c.not_found())
    host: session_host.SessionHost | live_host.LiveHost | None = (
        live_host.get_host(server, call_id) if call.surface == "live" else session_host.get_session(server, call_id))
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
        return rest_io.refusal_response(c.not_found())
    task = server.spawn(virtual.speak(host, server.journal, call_id, pcm, label=req.fixture or req.path or "",
                                      speed=req.speed, trailing_silence_ms=req.trailing_silence_ms))
    if req.wait:
        await task
    return _json_data({"ms": round(audio.duration_ms(pcm, virtual.RATE), 1)}, status=200 if req.wait else 202)


async def caller_dtmf(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    call_id = request.match_info["call_id"]
    body = await rest_io.read_json(request, server)
    digits = body.get("digits") if isinstance(body, dict) else None
    if not isinstance(digits, str) or not digits or any(d not in "0123456789*#ABCD" for d in digits):
        return errors.rest_error(400, "Expected 'digits' made of 0-9, *, #, A-D.", code="invalid_value", param="digits")
    host = _live_host(server, call_id)
    if isinstance(host, web.Response):
        return host
    for d in digits:
        server.journal.add(call_id, je.CallerDtmf(digit=d))
        host.dtmf(d)
    return _json_data({"sent": digits})


async def server_journal(request: web.Request) -> web.StreamResponse:
    """The server timeline, ``?after=SEQ&limit=N`` (at most 1000 entries unless ``limit`` says more);
    ``next_after`` is the next page's ``after`` (null: no more)."""
    server = request.app[SERVER_KEY]
    page = Page(request, PAGE_DEFAULT)
    line = server.journal.timeline(SERVER_JOURNAL_KEY)
    entries, next_after = page.of(await _decoded(line.entries) if line else [])
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
    entries, next_after = page.of(await _decoded(line.entries))
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
    return _json_data({"ok": True, "calls": len(server.calls), "pending_tasks": server.pending_tasks,
                       "journal": server.journal.stats()})


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
        for f in FAULTS.values()
    ]})

def setup(app: web.Application) -> None:
    """Add the ``/_mock/`` routes (the middlewares of :mod:`mock_api.http` guard them)."""
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
