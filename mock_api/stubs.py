"""Stubs, WireMock style: canned answers for the parts of the OpenAI API the mock does not model.

Apps call chat completions, responses, embeddings or moderations around their calls; without an
answer there, a post-call summary silently never gets written. ``PUT /_mock/stubs`` (or a
scenario's ``mock.stubs``) sets request matchers and their answers (models in
:mod:`mock_api.control_models`); with no stub, ``/v1/chat/completions``, ``/v1/responses`` and
``/v1/models`` answer built-in successes (:mod:`mock_api.stubs_builtin`). Everything else still
answers the real ``404 Invalid URL``, and the journal names the stub that came closest.

Matching is sans-I/O: :func:`decide` maps a :class:`RequestFacts` and the stubs' state to a
decision; :class:`StubBook` applies it; the aiohttp handlers below only read, journal and write.
The handlers sit behind every route of the app (a catch-all registered last), so they never shadow
one; aiohttp sends a known path with the wrong method here too, which answers 404 as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from . import errors, rest_io, wire_json
from . import journal_entries as je
from . import stubs_builtin as builtin
from .config import describe_validation_error
from .control_models import Stub, StubResponse, duplicate_stub_id
from .server import SERVER_KEY, MockServer

AZURE_PREFIX = "/openai"
MAX_STUBS = 1000  # set at once; a test that needs more is better served by one stub with a path_regex


# ---- the request, as matching sees it ------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What a stub may match on; ``json_ok`` is False when the body is empty or not JSON."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None
    json_ok: bool = False

    @property
    def api_path(self) -> str:
        """``/openai/v1/x`` (Azure style) as ``/v1/x``; any other path as it is."""
        if self.path.startswith(AZURE_PREFIX + "/v1/"):
            return self.path[len(AZURE_PREFIX):]
        return self.path


@dataclass(frozen=True)
class Mismatch:
    """One field of a matcher that a request failed: where, what the stub wants, what came."""

    field: str
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "expected": self.expected, "actual": self.actual}


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    return (a is b) if isinstance(a, bool) or isinstance(b, bool) else bool(a == b)


def body_mismatches(want: Any, got: Any, where: str = "body") -> list[Mismatch]:
    """Objects match as subsets (recursively), arrays item by item with the same length, the rest by equality."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [Mismatch(where, want, got)]
        out: list[Mismatch] = []
        for key, value in want.items():
            if key not in got:
                out.append(Mismatch(f"{where}.{key}", value, None))
            else:
                out += body_mismatches(value, got[key], f"{where}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [Mismatch(where, want, got)]
        return [m for i, (w, g) in enumerate(zip(want, got, strict=True))
                for m in body_mismatches(w, g, f"{where}[{i}]")]
    return [] if _same(want, got) else [Mismatch(where, want, got)]


def mismatches(stub: Stub, req: RequestFacts) -> list[Mismatch]:
    """Every field of ``stub.request`` that ``req`` fails; empty when the stub answers it."""
    m = stub.request
    out: list[Mismatch] = []
    if m.method is not None and m.method != req.method:
        out.append(Mismatch("method", m.method, req.method))
    if m.path is not None and m.path not in (req.path, req.api_path):
        out.append(Mismatch("path", m.path, req.path))
    if m.path_regex is not None and not any(re.fullmatch(m.path_regex, p) for p in (req.path, req.api_path)):
        out.append(Mismatch("path_regex", m.path_regex, req.path))
    for key, value in m.query.items():
        got = list(req.query.get(key, ()))
        if value not in got:
            out.append(Mismatch(f"query.{key}", value, got[0] if len(got) == 1 else got or None))
    for name, value in m.headers.items():
        if req.headers.get(name.lower()) != value:
            out.append(Mismatch(f"headers.{name.lower()}", value, req.headers.get(name.lower())))
    if m.body is not None:
        out += body_mismatches(m.body, req.body) if req.json_ok else [Mismatch("body", m.body, None)]
    return out


# ---- decisions ------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """A stub and what has happened to it."""

    stub: Stub
    hits: int = 0
    used: bool = False  # a oneshot or ordered stub that has answered

    def label(self) -> dict[str, Any]:
        return {"id": self.stub.id, "name": self.stub.name}

    def view(self) -> dict[str, Any]:
        return {**self.stub.model_dump(mode="json"), "hits": self.hits, "active": not self.used}


@dataclass(frozen=True)
class Answer:
    entry: Entry


@dataclass(frozen=True)
class OutOfOrder:
    """The request matches an ordered stub whose turn has not come: ``expected`` is next."""

    entry: Entry
    expected: Entry


@dataclass(frozen=True)
class NoMatch:
    """No stub answers; ``closest`` failed on the fewest fields (``failed``)."""

    closest: Entry | None = None
    failed: tuple[Mismatch, ...] = ()


Decision = Answer | OutOfOrder | NoMatch


def decide(entries: Sequence[Entry], req: RequestFacts) -> Decision:
    """Ordered stubs first (only the next one may answer), then oneshot, then permanent; in each, the first given."""
    pending = [e for e in entries if e.stub.lifetime == "ordered" and not e.used]
    if pending:
        if not mismatches(pending[0].stub, req):
            return Answer(pending[0])
        late = next((e for e in pending[1:] if not mismatches(e.stub, req)), None)
        if late is not None:
            return OutOfOrder(late, pending[0])
    for lifetime in ("oneshot", "permanent"):
        for e in entries:
            if e.stub.lifetime == lifetime and not e.used and not mismatches(e.stub, req):
                return Answer(e)
    return closest(entries, req)


def closest(entries: Sequence[Entry], req: RequestFacts) -> NoMatch:
    """The stub that failed on the fewest fields, a failed method or path outweighing any number of
    others (a stub for the same endpoint is the one meant); a used-up stub fails on its lifetime too."""
    best: NoMatch = NoMatch()
    best_rank = (0, 0)
    for e in entries:
        failed = mismatches(e.stub, req)
        if e.used:
            failed.append(Mismatch("lifetime", f"{e.stub.lifetime} stub not yet used", "already answered"))
        route = sum(m.field in ("method", "path", "path_regex") for m in failed)
        rank = (route, len(failed) - route)
        if best.closest is None or rank < best_rank:
            best, best_rank = NoMatch(e, tuple(failed)), rank
    return best


class StubError(ValueError):
    """A stub list refused as a whole: ``param`` names the field, the message says what is expected."""

    def __init__(self, param: str | None, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.code = param, code


class StubList(BaseModel):
    """The body of PUT/POST /_mock/stubs: a list of stubs, or ``{"stubs": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    stubs: list[Stub]


def parse_stubs(data: Any, taken: set[str] | frozenset[str] = frozenset()) -> list[Stub]:
    """Validate a whole list before anything is applied; ids must not repeat each other or ``taken``."""
    if not isinstance(data, list | dict):
        raise StubError(None, 'Invalid stubs: expected a list of stubs, or {"stubs": [...]}, but got '
                        f"{type(data).__name__} instead.", "invalid_type")
    try:
        stubs = StubList.model_validate({"stubs": data} if isinstance(data, list) else data).stubs
    except ValidationError as exc:
        first = exc.errors()[0]
        code = "unknown_parameter" if first["type"] == "extra_forbidden" else "invalid_value"
        raise StubError(_dotted(first["loc"]) or None, f"Invalid stubs: {describe_validation_error(exc, StubList)}",
                        code) from None
    dup = duplicate_stub_id(stubs, taken)
    if dup is not None:
        raise StubError(f"stubs[{dup}].id", f"Invalid stubs: stubs[{dup}].id: the id {stubs[dup].id!r} is "
                        "already used; stub ids must be unique.")
    return stubs


def _dotted(loc: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))


class StubBook:
    """One server's stubs in the order given (``MockServer.part(StubBook)``)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._next_id = 1

    def load(self, stubs: Sequence[Stub], *, replace: bool) -> list[Entry]:
        if replace:
            self.entries = []
        added = []
        taken = self.ids() | {s.id for s in stubs if s.id is not None}
        for stub in stubs:
            if stub.id is None:  # the next free stub_N
                while f"stub_{self._next_id}" in taken:
                    self._next_id += 1
                stub = stub.model_copy(update={"id": f"stub_{self._next_id}"})
                taken.add(f"stub_{self._next_id}")
            added.append(Entry(stub))
        self.entries += added
        return added

    def ids(self) -> set[str]:
        return {e.stub.id for e in self.entries if e.stub.id is not None}

    def decide(self, req: RequestFacts) -> Decision:
        return decide(self.entries, req)

    @staticmethod
    def commit(entry: Entry) -> None:
        entry.hits += 1
        entry.used = entry.stub.lifetime != "permanent"

    def clear(self) -> None:
        """No stubs, and ids from ``stub_1`` again: a reset mock names the next test's stubs as a fresh one would."""
        self.entries = []
        self._next_id = 1

    def unused(self) -> list[Entry]:
        """Oneshot and ordered stubs that never answered: each stands for a request the test expected, so a
        test that ends with one left over failed (what the pytest plugin reports at teardown)."""
        return [e for e in self.entries if e.stub.lifetime != "permanent" and not e.used]


def book(server: MockServer) -> StubBook:
    return server.part(StubBook)


def install(server: MockServer, stubs: Sequence[Stub], *, replace: bool = True) -> None:
    """What the scenario runner calls with ``scenario.mock.stubs`` (already validated by the scenario model)."""
    added = book(server).load(stubs, replace=replace)
    if added:
        server.journal.add(None, je.StubConfig(ids=[e.stub.id for e in added], replace=replace))


def reset(server: MockServer) -> None:
    """``POST /_mock/reset`` forgets the stubs too."""
    book(server).clear()


# ---- aiohttp: the control API ------------------------------------------------------------------------


def _views(entries: Sequence[Entry]) -> web.Response:
    return web.json_response({"stubs": [e.view() for e in entries]})


async def list_stubs(request: web.Request) -> web.Response:
    return _views(book(request.app[SERVER_KEY]).entries)


async def _load(request: web.Request, *, replace: bool) -> web.Response:
    server = request.app[SERVER_KEY]
    data = await rest_io.read_json(request, server, allow_empty=False)  # refuses a lone surrogate (served back: no)
    try:
        stubs = parse_stubs(data, frozenset() if replace else book(server).ids())
    except StubError as exc:
        return errors.rest_error(400, str(exc), code=exc.code, param=exc.param)
    total = len(stubs) + (0 if replace else len(book(server).entries))
    if total > MAX_STUBS:  # every request is matched against each stub in turn: the list must stay short
        return errors.rest_error(400, f"Invalid stubs: at most {MAX_STUBS} stubs can be set; this request would "
                                 f"make {total}. Replace them (PUT) or clear them (DELETE) first.",
                                 code="invalid_value", param="stubs")
    install(server, stubs, replace=replace)
    return _views(book(server).entries)


async def put_stubs(request: web.Request) -> web.Response:
    """Replace every stub with the list given (all or nothing)."""
    return await _load(request, replace=True)


async def add_stubs(request: web.Request) -> web.Response:
    """Append the list given after the stubs already set (all or nothing)."""
    return await _load(request, replace=False)


async def delete_stubs(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    book(server).clear()
    server.journal.add(None, je.StubConfig(ids=[], replace=True))
    return _views([])


# ---- aiohttp: answering requests -----------------------------------------------------------------------


def facts(request: web.Request, raw: bytes) -> RequestFacts:
    body: Any = None
    json_ok = False
    if raw.strip():
        with contextlib.suppress(wire_json.WireJSONError):
            body, json_ok = rest_io.parse_json(raw), True  # strict: NaN, Infinity and deep nesting are not JSON
    return RequestFacts(method=request.method, path=request.path,
                        query={k: request.query.getall(k) for k in request.query},
                        headers={k.lower(): v for k, v in request.headers.items()}, body=body, json_ok=json_ok)


def _is_api(path: str) -> bool:
    return path.startswith(("/v1/", AZURE_PREFIX + "/"))


async def _stubbed(request: web.Request, server: MockServer, req: RequestFacts, entry: Entry) -> web.StreamResponse:
    StubBook.commit(entry)
    r: StubResponse = entry.stub.response
    server.journal.add(None, je.StubHit(id=entry.stub.id, name=entry.stub.name, lifetime=entry.stub.lifetime,
                                         hits=entry.hits, method=req.method, path=req.path, body=req.body,
                                         status=r.status))
    if r.delay_s:
        await asyncio.sleep(r.delay_s)
    if r.stream is not None:
        events = [(e.event, e.data) for e in r.stream]
        return await builtin.write_sse(request, r.status, r.headers, events, r.stream_done)
    return web.json_response(r.body, status=r.status, headers=r.headers, dumps=wire_json.dumps)


def _out_of_order(server: MockServer, req: RequestFacts, wrong: OutOfOrder) -> web.Response:
    def named(e: Entry) -> str:
        return repr(e.stub.id) + (f" ({e.stub.name})" if e.stub.name else "")

    server.journal.add(None, je.StubOutOfOrder(id=wrong.entry.stub.id, name=wrong.entry.stub.name,
                                                expected=wrong.expected.label(), method=req.method, path=req.path,
                                                body=req.body))
    return errors.rest_error(400, f"Ordered stub {named(wrong.entry)} was requested out of order: stub "
                             f"{named(wrong.expected)} is next.", code="stub_out_of_order")


def _unmatched(server: MockServer, req: RequestFacts, miss: NoMatch) -> web.Response:
    """The real 404; the journal says which stub came closest and on which fields it failed."""
    near = None if miss.closest is None else {**miss.closest.label(), "failed": [m.to_json() for m in miss.failed]}
    server.journal.add(None, je.HttpUnknownRoute(method=req.method, path=req.path, closest_stub=near))
    return errors.rest_error(404, f"Invalid URL ({req.method} {req.path})")


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Every request no route of the app took: a stub, else a built-in, else the real 404."""
    server = request.app[SERVER_KEY]
    limit = server.config.max_body_bytes
    raw = await rest_io.read_body(request, limit)
    if raw is None:
        return rest_io.too_large(request.content_length or limit + 1, limit)
    req = facts(request, raw)
    decision = book(server).decide(req)
    if isinstance(decision, Answer | OutOfOrder) and _is_api(req.path):
        denied = server.authenticate(request)
        if denied is not None:
            return denied
    if isinstance(decision, Answer):
        return await _stubbed(request, server, req, decision.entry)
    if isinstance(decision, OutOfOrder):
        return _out_of_order(server, req, decision)
    answered = await builtin.answer(request, server, req.api_path, req.body, req.json_ok)
    return answered if answered is not None else _unmatched(server, req, decision)


def setup(app: web.Application, server: MockServer) -> None:
    """The control routes, then the catch-all: call it after every other route is added."""
    app.router.add_get("/_mock/stubs", list_stubs)
    app.router.add_put("/_mock/stubs", put_stubs)
    app.router.add_post("/_mock/stubs", add_stubs)
    app.router.add_delete("/_mock/stubs", delete_stubs)
    app.router.add_route("*", "/{tail:.*}", dispatch)
