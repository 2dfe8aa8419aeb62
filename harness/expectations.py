"""Request expectations for the pytest plugin: stubs with a lifetime, set up the pytest-httpserver way.

    openai_mock.expect_oneshot_request("/v1/chat/completions", method="POST",
                                       json={"model": "gpt-4o-mini"}).respond_with_json(COMPLETION)

Each is a stub of :mod:`mock_api.stubs` (``permanent`` answers every matching request, ``oneshot``
one, ``ordered`` one each in the order they were set up). What a test expected but did not get is
only known when it ends, so :func:`request_problems` turns the stubs' state and the mock's journal
into teardown failures: a oneshot or ordered stub never used, an ordered one asked for out of turn,
a request no stub answered while stubs were set, an expectation never given a response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mock_api import journal_entries as je
from mock_api.control_models import SseEvent, Stub, StubRequest, StubResponse

from .journal_view import JournalView

Lifetime = Literal["permanent", "oneshot", "ordered"]


@dataclass
class RequestExpectation:
    """What ``expect_request`` returns: nothing answers until a ``respond_with_*`` installs the stub."""

    request: StubRequest
    lifetime: Lifetime
    name: str | None
    install: Callable[[Stub], str]  # puts the stub into the mock; returns its id
    stub_id: str | None = None

    def respond_with(self, response: StubResponse) -> str:
        """Install the stub with this answer (once); returns the stub's id."""
        if self.stub_id is not None:
            raise RuntimeError(f"{self.describe()} already has its response (stub {self.stub_id!r})")
        self.stub_id = self.install(Stub(name=self.name, lifetime=self.lifetime, request=self.request,
                                         response=response))
        return self.stub_id

    def respond_with_json(self, body: Any, status: int = 200, headers: Mapping[str, str] | None = None,
                          delay_s: float = 0.0) -> str:
        return self.respond_with(StubResponse(status=status, body=body, headers=dict(headers or {}),
                                              delay_s=delay_s))

    def respond_with_error(self, status: int, message: str, *, type: str = "invalid_request_error",
                           code: str | None = None, param: str | None = None) -> str:
        """OpenAI's error envelope, as the SDK parses it into ``APIStatusError``."""
        error = {"message": message, "type": type, "param": param, "code": code}
        return self.respond_with_json({"error": error}, status=status)

    def respond_with_stream(self, events: Sequence[Any], *, status: int = 200, done: bool = True) -> str:
        """Server-sent events: each item is the data (JSON or text) or a ``(event_name, data)`` pair."""
        sse = [SseEvent(event=e[0], data=e[1]) if isinstance(e, tuple) else SseEvent(data=e) for e in events]
        return self.respond_with(StubResponse(status=status, stream=sse, stream_done=done))

    def describe(self) -> str:
        r = self.request
        where = r.path or (f"~{r.path_regex}" if r.path_regex else "any path")
        label = f" ({self.name})" if self.name else ""
        return f"{self.lifetime} request {r.method or 'ANY'} {where}{label}"


def stub_request(path: str | None, *, method: str | None, json: Any, headers: Mapping[str, str] | None,
                 query: Mapping[str, str] | None, path_regex: str | None) -> StubRequest:
    """The matcher of ``expect_request``'s arguments (validated as ``PUT /_mock/stubs`` validates it)."""
    return StubRequest(method=method, path=path, path_regex=path_regex, query=dict(query or {}),
                       headers=dict(headers or {}), body=json)


def _named(stub: Mapping[str, Any]) -> str:
    name = stub.get("name")
    return repr(stub.get("id")) + (f" ({name})" if name else "")


def _unused(views: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for v in views:
        if v.get("lifetime") != "permanent" and v.get("active"):
            req = v.get("request") or {}
            where = req.get("path") or req.get("path_regex") or "any path"
            out.append(f"{v.get('lifetime')} stub {_named(v)} for {req.get('method') or 'ANY'} {where} "
                       "was never requested")
    return out


def _out_of_order(entry: je.StubOutOfOrder) -> str:
    stub = {"id": entry.id, "name": entry.name}
    return (f"ordered stub {_named(stub)} was requested ({entry.method} {entry.path}) "
            f"out of order: {_named(entry.expected or {})} was next")


def _unknown_route(entry: je.HttpUnknownRoute) -> str:
    """The 404 and, when a stub came close, the fields it missed on (what the test most likely got wrong)."""
    near = je.given(entry.closest_stub)
    why = ""
    if near:
        fields = ", ".join(f"{m.get('field')} wanted {m.get('expected')!r}, got {m.get('actual')!r}"
                           for m in near.get("failed") or [])
        why = f"; closest stub {_named(near)}: {fields}"
    return f"no stub answered {entry.method} {entry.path} (404){why}"


def _from_journal(server_entries: Sequence[Mapping[str, Any]], have_stubs: bool) -> list[str]:
    out = []
    for logged in JournalView(server_entries):
        if isinstance(logged.entry, je.StubOutOfOrder):
            out.append(_out_of_order(logged.entry))
        elif isinstance(logged.entry, je.HttpUnknownRoute) and have_stubs:
            out.append(_unknown_route(logged.entry))
    return out


def request_problems(views: Sequence[Mapping[str, Any]], server_entries: Sequence[Mapping[str, Any]],
                     expectations: Sequence[RequestExpectation]) -> list[str]:
    """Everything about the test's request expectations that failed, in the words of the teardown error.

    ``views``: the stubs as ``GET /_mock/stubs`` shows them; ``server_entries``: the server timeline.
    A request nobody answered counts only when the test set stubs (it then expected to answer it)."""
    unanswered = [f"{e.describe()} was never given a response (call .respond_with_json(...))"
                  for e in expectations if e.stub_id is None]
    return unanswered + _unused(views) + _from_journal(server_entries, bool(views) or bool(expectations))
