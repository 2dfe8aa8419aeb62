"""Hypothesis strategies for the fuzz campaign (bench/bench_fuzz.py).

Payloads start from the official SDK's own request types (the ``*Param`` TypedDicts a client
sends) and the control API's pydantic models, so most cases reach deep into a handler instead
of bouncing off the first ``type`` check; then a mutation breaks them the ways real clients and
proxies do: fields dropped, duplicated or of the wrong type, huge strings, NaN/Infinity literals,
nesting past any parser's limit, cut-off text, invalid UTF-8, random bytes, binary frames.
The session-core fuzzers' strategies (tests/test_realtime_fuzz.py, tests/test_realtime_socket_fuzz.py)
are mixed in as they are.

Nothing here talks to a server: a case is plain data (:class:`WsCase`, :class:`HttpCase`) that the
campaign's executor sends and judges.
"""

from __future__ import annotations

import collections.abc as cabc
import copy
import json
import types
import typing
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

import typing_extensions
from hypothesis import strategies as st
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from openai.types.realtime import RealtimeClientEventParam
from openai.types.realtime.call_accept_params import CallAcceptParams
from openai.types.realtime.call_refer_params import CallReferParams
from openai.types.realtime.call_reject_params import CallRejectParams
from openai.types.realtime.client_secret_create_params import ClientSecretCreateParams
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from pydantic import BaseModel

from audio_fixtures import fixture_names
from mock_api.config import ConfigPatch
from mock_api.control_models import SayRequest, StartCallRequest, Stub
from mock_api.faults import FAULTS, Fault
from mock_api.realtime.script import Script
from tests.test_realtime_fuzz import _paths, client_events, json_values
from tests.test_realtime_socket_fuzz import frames as socket_frames

# ---- values from types ------------------------------------------------------------------------------------

MODELS = ["gpt-realtime", "gpt-realtime-mini", "gpt-4o-mini", "gpt-4.1", "whisper-1", "gpt-4o-transcribe"]
VOICES = ["alloy", "ash", "marin", "cedar", "verse"]
KEY_HINTS: dict[str, st.SearchStrategy[Any]] = {
    # a plain str field whose value the server looks up: known values make a case go further
    "model": st.sampled_from(MODELS),
    "voice": st.sampled_from(VOICES),
    "audio": st.sampled_from(["", "AAAAAAAA", "////", "not base64!", "AAAA" * 200]),
    "item_id": st.sampled_from(["item_x", "root", ""]),
    "previous_item_id": st.sampled_from(["root", "item_x"]),
    "response_id": st.sampled_from(["resp_x", ""]),
    "call_id": st.sampled_from(["call_1", ""]),
    "target_uri": st.sampled_from(["tel:+14155550123", "sip:agent@example.com", " ", ""]),
    "type": st.sampled_from(["realtime", "transcription", "message", "function_call_output"]),
}
FAULT_NAMES = sorted(FAULTS)
FAULTS_ST: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(FAULT_NAMES),
    st.sampled_from(FAULT_NAMES).flatmap(lambda name: st.fixed_dictionaries(
        {"name": st.just(name)}, optional={p: st.floats(0, 0.5) | json_values for p in FAULTS[name].params})),
)
SAFE_PATH = "/nonexistent/rtsip-fuzz/none.wav"
_MEMO: dict[Any, st.SearchStrategy[Any]] = {}
MAX_OPTIONAL = 3
_STR: st.SearchStrategy[str] = st.text(max_size=24) | st.sampled_from(["", "x", "auto", "none", "inf"])
_INT: st.SearchStrategy[int] = st.integers(-5, 5000) | st.integers(-(2**63), 2**64)
_FLOAT: st.SearchStrategy[float] = st.floats(-1e6, 1e6) | st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e308])


def values_of(tp: Any) -> st.SearchStrategy[Any]:
    """JSON values of ``tp``: an SDK TypedDict, a pydantic model, or any annotation inside one."""
    if tp is Fault:
        return FAULTS_ST
    if typing_extensions.is_typeddict(tp) or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        if tp not in _MEMO:  # deferred: the SDK's types refer to themselves (items inside items)
            _MEMO[tp] = st.deferred(lambda: _record(tp))
        return _MEMO[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Annotated, typing_extensions.Required, typing_extensions.NotRequired):
        return values_of(args[0])
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([values_of(a) for a in args])
    if tp is type(None):
        return st.none()
    scalar = {bool: st.booleans(), int: _INT, float: _FLOAT | _INT, str: _STR}.get(tp)
    if scalar is not None:
        return scalar
    if origin in (list, tuple, set, cabc.Iterable, cabc.Sequence):
        return st.lists(values_of(args[0]) if args else json_values, max_size=2)
    if origin in (dict, cabc.Mapping):
        return st.dictionaries(st.text(max_size=12), values_of(args[1]) if len(args) == 2 else json_values,
                               max_size=3)
    return json_values  # object, Any, and whatever else: any JSON


def _record(tp: Any) -> st.SearchStrategy[dict[str, Any]]:
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for key, annotation, needed in _fields(tp):
        (required if needed else optional)[key] = _keyed(key, annotation)
    return _some_keys(required, optional)


@st.composite
def _some_keys(draw: st.DrawFn, required: dict[str, st.SearchStrategy[Any]],
               optional: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """Every required key and at most MAX_OPTIONAL optional ones: the SDK's request types have dozens,
    and drawing each one makes a case slow to generate and its failure hard to read."""
    out = {key: draw(strategy) for key, strategy in required.items()}
    if optional:
        for key in draw(st.lists(st.sampled_from(sorted(optional)), max_size=MAX_OPTIONAL, unique=True)):
            out[key] = draw(optional[key])
    return out


def _fields(tp: Any) -> list[tuple[str, Any, bool]]:
    """(wire key, annotation, required?) of a TypedDict or a pydantic model."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(f.alias or name, f.annotation, f.is_required()) for name, f in tp.model_fields.items()]
    hints = typing_extensions.get_type_hints(tp, include_extras=True)
    total = getattr(tp, "__total__", True)
    out = []
    for key, hint in hints.items():
        origin = typing.get_origin(hint)
        needed = origin is typing_extensions.Required or (total and origin is not typing_extensions.NotRequired)
        out.append((key, hint, needed))
    return out


def _keyed(key: str, annotation: Any) -> st.SearchStrategy[Any]:
    base = values_of(annotation)
    if key == "script":
        return st.one_of(values_of(Script), base)
    hint = KEY_HINTS.get(key)
    return base if hint is None or not _takes_str(annotation) else st.one_of(hint, base)


def _takes_str(annotation: Any) -> bool:
    return annotation is str or any(_takes_str(a) for a in typing.get_args(annotation) if not isinstance(a, str))


# ---- mutations --------------------------------------------------------------------------------------------

MUTATIONS = ["valid", "valid", "valid", "drop", "duplicate", "wrong_type", "wrong_type", "extra_key", "nan", "deep",
             "huge", "truncate", "invalid_utf8", "random_bytes", "not_object", "empty"]
_HOLE = "@@rtsip-fuzz-hole@@"


@dataclass(frozen=True)
class Wire:
    """A payload as it goes out (text, or bytes that are not UTF-8 text) and the mutation that made it."""

    data: str | bytes
    how: str


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """``value`` with the node at ``path`` replaced (the root when ``path`` is empty)."""
    if not path:
        return new
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return value


def _drop(value: Any, path: tuple[Any, ...]) -> Any:
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return value


def _hole(draw: st.DrawFn, value: Any, literal: str) -> str:
    """JSON text of ``value`` with one node replaced by ``literal``: what ``json.dumps`` won't write (NaN, nesting)."""
    path = draw(st.sampled_from(_paths(value)))
    text = json.dumps(_set(value, path, _HOLE))
    return text.replace(json.dumps(_HOLE), literal, 1)


@st.composite
def mutated(draw: st.DrawFn, value: Any, max_huge: int = 1_200_000) -> Wire:
    """``value`` (a valid payload) sent as is or broken by one mutation."""
    how = draw(st.sampled_from(MUTATIONS))
    value = copy.deepcopy(value)
    inner = [p for p in _paths(value) if p]
    if how == "drop" and inner:
        return Wire(json.dumps(_drop(value, draw(st.sampled_from(inner)))), how)
    if how == "duplicate" and isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        other = draw(json_values)  # the same key twice: the last one wins in most parsers, the first in some
        first, rest = json.dumps({key: other}), json.dumps(value)
        return Wire(first[:-1] + ", " + rest[1:], how)
    if how == "wrong_type":
        path = draw(st.sampled_from(inner or [()]))
        return Wire(json.dumps(_set(value, path, draw(json_values))), how)
    if how == "extra_key" and isinstance(value, dict):
        value[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        return Wire(json.dumps(value), how)
    if how == "nan":
        return Wire(_hole(draw, value, draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]))), how)
    if how == "deep":
        depth = draw(st.sampled_from([129, 500, 1000, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return Wire(_hole(draw, value, opener * depth + "1" + closer * depth), how)
    if how == "huge":
        size = draw(st.sampled_from([70_000, 300_000, max_huge]))
        path = draw(st.sampled_from(inner or [()]))
        return Wire(json.dumps(_set(value, path, "x" * size)), how)
    text = json.dumps(value)
    if how == "truncate" and text:
        return Wire(text[: draw(st.integers(0, len(text) - 1))], how)
    if how == "invalid_utf8":
        raw = text.encode()
        cut = draw(st.integers(0, len(raw)))
        return Wire(raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + raw[cut:],
                    how)
    if how == "random_bytes":
        return Wire(draw(st.binary(max_size=64)), how)
    if how == "not_object":
        return Wire(json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))), how)
    if how == "empty":
        return Wire(draw(st.sampled_from(["", " ", "\n", "{}", "null"])), how)
    return Wire(text, "valid")


# ---- cases ------------------------------------------------------------------------------------------------

Socket = Literal["model", "call"]
Target = Literal["ringing", "unknown", "ws_call", "control_call", "none"]
Follow = Literal["config", "call", "stubs", "none"]


@dataclass(frozen=True)
class WsCase:
    """One frame on a live socket (``opcode`` text with bytes data: a text frame that is not UTF-8)."""

    socket: Socket
    data: str | bytes
    opcode: Literal["text", "binary"]
    how: str

    @property
    def surface(self) -> str:
        return f"ws.{self.socket}"


@dataclass(frozen=True)
class HttpCase:
    """One request. ``path`` may hold ``{call}``: the executor puts a call of kind ``target`` there.

    ``follow`` names the follow-up that checks what the request set up: a config, a call or stubs
    the mock took must work afterwards too.
    """

    surface: Literal["rest", "control"]
    method: str
    path: str
    body: bytes | None
    content_type: str | None
    how: str
    target: Target = "none"
    follow: Follow = "none"
    auth: bool = True


SDK_EVENT = values_of(RealtimeClientEventParam)
CONTENT_TYPES = ["application/json"] * 6 + [None, "application/json; charset=utf-8", "text/plain",
                                            "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                            "application/JSON", "text/html; charset=latin-1"]


@st.composite
def ws_cases(draw: st.DrawFn, socket: Socket) -> WsCase:
    """Mostly an SDK-typed client event, mutated; else the session fuzzers' events and frames as they are."""
    source = draw(st.integers(0, 9))
    if source < 6:
        wire = draw(mutated(draw(SDK_EVENT)))
    elif source < 8:
        wire = Wire(json.dumps(draw(client_events)), "session-fuzz event")
    else:
        frame = draw(socket_frames())
        wire = Wire(frame, "socket-fuzz frame")
    if isinstance(wire.data, bytes):  # raw bytes: a binary frame, or a text frame that is not UTF-8
        return WsCase(socket, wire.data, draw(st.sampled_from(["binary", "text"])), wire.how)
    if draw(st.integers(0, 19)) == 7:  # hypothesis favours 0: a rare branch gets another number
        return WsCase(socket, wire.data.encode(), "binary", wire.how + " as binary")
    return WsCase(socket, wire.data, "text", wire.how)


def _body(wire: Wire) -> bytes:
    return wire.data if isinstance(wire.data, bytes) else wire.data.encode("utf-8", "surrogatepass")


@st.composite
def _call_id_path(draw: st.DrawFn) -> tuple[str, Literal["ringing", "unknown"]]:
    if draw(st.integers(0, 4)) == 3:
        junk = draw(st.text(min_size=1, max_size=40))
        return urllib.parse.quote(junk, safe=""), "unknown"
    return "{call}", "ringing"


REST_BODIES: dict[str, Any] = {
    "accept": values_of(CallAcceptParams),
    "reject": values_of(CallRejectParams),
    "refer": values_of(CallReferParams),
    "hangup": st.just({}) | json_values,
}


@st.composite
def rest_cases(draw: st.DrawFn) -> HttpCase:
    """The REST API: call controls, client secrets, chat completions, responses; SDK-typed bodies, mutated."""
    kind = draw(st.sampled_from(["accept", "accept", "reject", "refer", "hangup", "client_secrets", "chat", "chat",
                                 "responses", "responses"]))
    prefix = draw(st.sampled_from(["/v1"] * 9 + ["/openai/v1"]))
    target: Target = "none"
    typed: Any
    if kind in REST_BODIES:
        call, target = draw(_call_id_path())
        path, value = f"{prefix}/realtime/calls/{call}/{kind}", draw(REST_BODIES[kind])
    elif kind == "client_secrets":
        path, value = f"{prefix}/realtime/client_secrets", draw(values_of(ClientSecretCreateParams))
    elif kind == "chat":
        typed = CompletionCreateParamsStreaming if draw(st.integers(0, 4)) == 2 else CompletionCreateParamsNonStreaming
        path, value = f"{prefix}/chat/completions", draw(values_of(typed))
    else:
        typed = ResponseCreateParamsStreaming if draw(st.integers(0, 4)) == 2 else ResponseCreateParamsNonStreaming
        path, value = f"{prefix}/responses", draw(values_of(typed))
    wire = draw(mutated(value))
    return HttpCase("rest", "POST", path, _body(wire), draw(st.sampled_from(CONTENT_TYPES)), wire.how, target,
                    auth=draw(st.integers(0, 29)) != 13)


def _say_body() -> st.SearchStrategy[Any]:
    fixture = st.sampled_from(fixture_names()) | st.text(max_size=12)
    return st.one_of(values_of(SayRequest), st.fixed_dictionaries(
        {"fixture": fixture}, optional={"speed": st.floats(0.01, 100) | _INT, "trailing_silence_ms": _INT}))


def _stub_lists() -> st.SearchStrategy[Any]:
    stubs = st.lists(values_of(Stub), max_size=3)
    return stubs | stubs.map(lambda items: {"stubs": items})


CONTROL: dict[str, tuple[str, str, Target, Follow, st.SearchStrategy[Any]]] = {
    # kind: (method, path, the call in {call}, the follow-up, the body)
    "config": ("PUT", "/_mock/config", "none", "config", values_of(ConfigPatch)),
    "calls": ("POST", "/_mock/calls", "none", "call", values_of(StartCallRequest)),
    "stubs_put": ("PUT", "/_mock/stubs", "none", "stubs", _stub_lists()),
    "stubs_post": ("POST", "/_mock/stubs", "none", "stubs", _stub_lists()),
    "say": ("POST", "/_mock/calls/{call}/say", "ws_call", "none", _say_body()),
    "dtmf": ("POST", "/_mock/calls/{call}/dtmf", "ws_call", "none",
             st.fixed_dictionaries({"digits": st.text("0123456789*#ABCDx", max_size=8)})),
    "caller_hangup": ("POST", "/_mock/calls/{call}/caller_hangup", "control_call", "none", st.just({}) | json_values),
}
READS = ["/_mock/faults", "/_mock/config", "/_mock/calls/{call}", "/_mock/stubs", "/_mock/limits",
         "/_mock/calls?entries=0", "/_mock/health"]


@st.composite
def control_cases(draw: st.DrawFn) -> HttpCase:
    """The ``/_mock/`` control API: config, calls (with faults and scripts), stubs, the virtual caller, reads."""
    kind = draw(st.sampled_from(["config", "config", "calls", "calls", "stubs_put", "stubs_post", "say", "dtmf",
                                 "caller_hangup", "read"]))
    if kind == "read":
        path = draw(st.sampled_from(READS))
        return HttpCase("control", "GET", path, None, None, "read", "control_call" if "{call}" in path else "none")
    method, path, target, follow, bodies = CONTROL[kind]
    wire = harmless(draw(mutated(sanitised(draw(bodies)))))
    return HttpCase("control", method, path, _body(wire), draw(st.sampled_from(CONTENT_TYPES)), wire.how,
                    target, follow)


# ---- the corpus: cases that found bugs, replayed first in every campaign ----------------------------------------

_DEEP = "[" * 5000 + "]" * 5000
_JSON = "application/json"


def _post(path: str, body: str, target: Target = "none", follow: Follow = "none",
          surface: Literal["rest", "control"] = "rest", method: str = "POST") -> HttpCase:
    return HttpCase(surface, method, path, body.encode(), _JSON, "corpus", target, follow)


CORPUS: list[WsCase | HttpCase] = [
    # nesting past Python's recursion limit, and past the journal's (about 500 levels)
    _post("/v1/realtime/calls/{call}/accept", '{"type": "realtime", "tracing": ' + _DEEP + "}", "ringing"),
    _post("/v1/chat/completions", '{"model": "gpt-4o-mini", "messages": ' + _DEEP + "}"),
    WsCase("model", '{"type": "output_audio_buffer.clear", "event_id": ' + "[" * 600 + "]" * 600 + "}", "text",
           "corpus"),
    # NaN and Infinity taken in, and echoed
    _post("/v1/responses", '{"model": "gpt-4o-mini", "input": "hi", "temperature": NaN}'),
    _post("/v1/chat/completions", '{"model": -Infinity, "messages": [{"role": "user", "content": "hi"}]}'),
    _post("/v1/realtime/client_secrets", '{"session": {"type": "realtime", "audio": {"output": {"speed": NaN}}}}'),
    # wrong types echoed into answers the SDK cannot parse; the size limit answered by aiohttp
    _post("/v1/responses", '{"model": "gpt-4o-mini", "input": "hi", "metadata": [1], "stream": true}'),
    _post("/v1/realtime/client_secrets", json.dumps({"session": {"type": "realtime", "instructions": "x" * 1_100_000}},
                                                    separators=(",", ":"))),
    # config, calls and faults the control API takes without checking, that crash later
    _post("/_mock/config", '{"audio_library": null}', follow="config", surface="control", method="PUT"),
    _post("/_mock/config", '{"faults": null}', follow="config", surface="control", method="PUT"),
    _post("/_mock/calls", '{"script": {"ms_per_char": 0}}', follow="call", surface="control"),
    _post("/_mock/calls", '{"faults": [{"name": "ws_drop", "after_s": [null]}]}', follow="call", surface="control"),
    # a call whose caller holds a lone surrogate: kept, then every GET /_mock/calls answered 500
    _post("/_mock/calls", '{"from": "sip:\\ud800@127.0.0.1"}', surface="control"),
    # a stub's path regex of 200 KB, compiled on the loop (a 625 ms stall)
    _post("/_mock/stubs", json.dumps({"stubs": [{"request": {"path_regex": "(a|b)*c" * 30_000},
                                                 "response": {"body": {}}}]}), surface="control"),
]
"""Found by earlier campaigns; they keep each bug in every run (a generated case may not come back
after a change to the strategies), and keep checking once it is fixed."""


# ---- keeping the campaign harmless --------------------------------------------------------------------------

SANITISE: dict[str, Any] = {
    # a fuzzed string here would make the mock run a command, import a module, read a file or post a webhook
    "recogniser_command": None, "recogniser_python": None, "audio_library": [], "webhook_url": None,
    "path": SAFE_PATH, "audio": SAFE_PATH, "wait": False,
}


def sanitised(value: Any) -> Any:
    """``value`` with every key that reaches outside the mock set to a harmless value, at any depth.

    ``wait`` is forced off so a ``say`` answers at once (waiting for real-time audio is not a hang).
    """
    if isinstance(value, dict):
        return {k: (SANITISE[k] if k in SANITISE and value[k] is not None else sanitised(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitised(v) for v in value]
    return value


def _unsafe(value: Any) -> bool:
    """Whether a sanitised key holds anything but its harmless value, at any depth (iterative: payloads nest deep)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(k in SANITISE and v is not None and v != SANITISE[k] for k, v in node.items()):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def harmless(wire: Wire) -> Wire:
    """A mutation may put a fuzzed string back under a sanitised key: such a payload is sent sanitised."""
    try:
        value = json.loads(wire.data)  # as permissive as the mock's own reader
    except (ValueError, RecursionError):
        return wire
    return Wire(json.dumps(sanitised(value)), wire.how + ", sanitised") if _unsafe(value) else wire
