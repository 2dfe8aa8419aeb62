"""A fuzz campaign as a benchmark: N generated and mutated cases against a running ``rtsip mock``.

    python -m bench.bench_fuzz [--cases 100000] [--seed 1] [--json FILE]

The mock is a separate ``rtsip mock --no-sip`` process on OS-chosen ports. The cases (the corpus of
cases that found bugs first, then cases bench/fuzz_strategies.py builds from the SDK's own request
types and mutates) go in turn to four places: a ``?model=`` Realtime socket, a call's socket
(``?call_id=``), the REST API (call controls, client secrets, chat completions, responses) and the
``/_mock/`` control API. Every answer is judged:

- crash: the mock died, answered 5xx, sent a ``server_error`` event or closed a socket with 1011
  (client input must get a 4xx-shaped answer, whatever it is);
- hang: no answer within 5 s (on a socket: no reply to the sync frame sent after the case);
- unshaped: an HTTP error body that is not ``{"error": {message, type, param, code}}``, a success the
  SDK's model of that endpoint does not parse, a socket event that is not a ``RealtimeServerEvent``,
  or a connection closed with no answer at all;
- invalid JSON: anything the mock sent that the strict parser (no NaN/Infinity) refuses.

Meanwhile a probe in a process of its own GETs ``/_mock/health`` every 10 ms on its own connection
(its worst and p99 latency are the mock's event-loop stalls), and the mock's RSS is sampled.
Memory here stays bounded: counts, one example per kind of failure and the first 20 failing cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import tempfile
import time
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.realtime import RealtimeServerEvent
from openai.types.realtime.client_secret_create_response import ClientSecretCreateResponse
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from bench import fuzz_strategies as fs
from bench.stall_probe import Histogram, StallProbe
from harness.mock_process import MockProcess
from mock_api import wire_json
from mock_api.config import ConfigPatch
from mock_api.faults import FAULTS
from mock_api.stall_watch import STALL_LINE

try:
    import psutil
except ImportError:  # not a dependency: /proc says the same on Linux
    psutil = None

TIMEOUT_S = 5.0
PROBE_INTERVAL_S = 0.010
RSS_INTERVAL_S = 0.25
KEEP_REPROS = 20
KEEP_KINDS = 200
KEEP_SLOWEST = 10
BATCH = 100  # cases per hypothesis run (one surface each): its record of what it tried goes between runs
AUTH = {"Authorization": "Bearer sk-fuzz"}
SCRIPT = {"response_latency_s": 0, "generation_speed": 50, "transcription_delay_s": 0.02, "ms_per_char": 2}
ACCEPT = {"type": "realtime", "model": "gpt-realtime"}
ROTA = ("ws.model", "rest", "control", "ws.call", "rest", "control")
"""The surfaces batches of cases go to, in turn: a third each to the sockets, the REST API and the control API."""
RING_REFRESH_S = 10.0  # a call kept ringing for cases is replaced before the mock's ring timer (20 s) ends it
KEEP_BUGS = 5  # the mock's own tracebacks kept as crashes come
STALL_WATCH_MS = 40  # the mock reports each stall longer than this with its stack (rtsip mock --stall-watch)
KEEP_STALLS = 5
MOCK_ARGS = ["--port", "0", "--no-sip", "--ring-timeout", "20", "--stall-watch", str(STALL_WATCH_MS)]
ROOT = Path(__file__).resolve().parents[1]

Case = fs.WsCase | fs.HttpCase
Problem = tuple[str, str]  # (class, what came back)


# ---- judging what came back (pure) ---------------------------------------------------------------------


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


class EventModels:
    """A union of the SDK's event models keyed by ``type``: an event is checked against the model its
    type names, so a failure says what is wrong with it (a union's own error lists every member)."""

    def __init__(self, union: Any) -> None:
        members = typing.get_args(typing.get_args(union)[0] if typing.get_origin(union) is typing.Annotated
                                  else union)
        self.by_type: dict[str, list[type[BaseModel]]] = {}
        for model in members:
            for name in typing.get_args(model.model_fields["type"].annotation):
                self.by_type.setdefault(name, []).append(model)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not one of these events, or None."""
        kind = value.get("type") if isinstance(value, dict) else None
        models = self.by_type.get(kind) if isinstance(kind, str) else None
        if not models:
            return f"no SDK event has type {kind!r}"
        errors = []
        for model in models:
            try:
                model.model_validate(value)
                return None
            except ValidationError as exc:
                errors.append(_first_error(exc))
        return f"{kind!r}: {errors[0]}"


SERVER_EVENTS = EventModels(RealtimeServerEvent)
STREAM_EVENTS = EventModels(ResponseStreamEvent)
SUCCESS_MODELS: tuple[type[BaseModel], ...] = (ChatCompletion, ChatCompletionChunk, Response,
                                               ClientSecretCreateResponse)


def build_models() -> None:
    """Build every SDK model the judges use now: the SDK defers each build to its first validation
    (tens of milliseconds for the large ones), which would show up as a slow case."""
    for models in (*SERVER_EVENTS.by_type.values(), *STREAM_EVENTS.by_type.values(), SUCCESS_MODELS):
        for model in models:
            model.model_rebuild()


def judge_event(text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """One text frame from the mock: the event (when it is one) and what is wrong with it."""
    try:
        event = wire_json.loads(text)
    except wire_json.WireJSONError as exc:
        return None, [("invalid_json", f"frame is not strict JSON ({exc}): {_short(text, 120)}")]
    if not isinstance(event, dict):
        return None, [("unshaped", f"frame is not an object: {_short(text, 120)}")]
    problems: list[Problem] = []
    why = SERVER_EVENTS.problem(event)
    if why is not None:
        problems.append(("unshaped", f"not a RealtimeServerEvent: {why}"))
    err = event.get("error")
    if event.get("type") == "error" and isinstance(err, dict) and err.get("type") == "server_error":
        problems.append(("crash", f"server_error event: {err.get('message')!r}"))
    return event, problems


def envelope_problem(value: Any, azure: bool = False) -> str | None:
    """Why ``value`` is not the API's error envelope, or None when it is.

    On Azure's paths (``/openai/...``) Azure's front door refuses in its own envelope, ``{"error":
    {"code", "message"}}`` (no type, no param): that is the shape an Azure client gets there.
    """
    if not isinstance(value, dict) or "error" not in value:
        return "body is not {'error': {...}}"
    err = value["error"]
    if not isinstance(err, dict):
        return "'error' is not an object"
    if azure and set(err) == {"code", "message"} and all(isinstance(v, str) for v in err.values()):
        return None
    for key, ok in (("message", str), ("type", str), ("param", (str, type(None))), ("code", (str, type(None)))):
        if key not in err:
            return f"error.{key} missing"
        if not isinstance(err[key], ok):
            return f"error.{key} is {type(err[key]).__name__}"
    return None


def _success_problem(path: str, value: Any, streamed: bool) -> str | None:
    """Why a success of ``path`` (one stream event when ``streamed``) does not parse as the SDK's model for it."""
    if path.endswith("/responses") and streamed:
        return STREAM_EVENTS.problem(value)
    model: type[BaseModel] | None = None
    if path.endswith("/chat/completions"):
        model = ChatCompletionChunk if streamed else ChatCompletion
    elif path.endswith("/responses"):
        model = Response
    elif path.endswith("/realtime/client_secrets"):
        model = ClientSecretCreateResponse
    if model is None:
        return None
    try:
        model.model_validate(value)
    except ValidationError as exc:
        return f"{model.__name__}: {_first_error(exc)}"
    return None


def judge_http(path: str, status: int, content_type: str, body: bytes) -> list[Problem]:
    """One HTTP answer. ``path`` is the one requested (it says which SDK model a success must parse as)."""
    if status >= 500:
        return [("crash", f"HTTP {status}: {_short(body, 160)}")]
    streamed = content_type.startswith("text/event-stream")
    if status >= 400:
        try:
            value = wire_json.loads(body)
        except wire_json.WireJSONError as exc:
            looks_json = content_type.startswith("application/json")
            return [("invalid_json" if looks_json else "unshaped",
                     f"HTTP {status} body is not strict JSON ({exc}): {_short(body, 120)}")]
        why = envelope_problem(value, azure=path.startswith("/openai"))
        if why is None and not content_type.startswith("application/json"):
            why = f"error answered as {content_type or 'no content type'}"
        return [] if why is None else [("unshaped", f"HTTP {status}: {why}: {_short(body, 120)}")]
    if streamed:
        return _judge_stream(path, body)
    if not body.strip() or not content_type.startswith("application/json"):
        return []
    try:
        value = wire_json.loads(body)
    except wire_json.WireJSONError as exc:
        return [("invalid_json", f"HTTP {status} body is not strict JSON ({exc}): {_short(body, 120)}")]
    why = _success_problem(path, value, streamed=False)
    return [] if why is None else [("unshaped", f"HTTP {status} success does not parse with the SDK: {why}")]


def _judge_stream(path: str, body: bytes) -> list[Problem]:
    """Server-sent events: every ``data:`` line strict JSON and the SDK's stream event (``[DONE]`` aside)."""
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        try:
            value = wire_json.loads(line[5:].strip())
        except wire_json.WireJSONError as exc:
            return [("invalid_json", f"stream event is not strict JSON ({exc}): {_short(line, 120)}")]
        why = _success_problem(path, value, streamed=True)
        if why is not None:
            return [("unshaped", f"stream event does not parse with the SDK: {why}")]
    return []


def _short(data: str | bytes | None, limit: int = 300) -> str:
    """``data`` as one line of at most ``limit`` characters (bytes shown with escapes)."""
    if data is None:
        return ""
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    text = text.encode("utf-8", "backslashreplace").decode()  # lone surrogates, shown
    more = len(text) - limit
    text = text[:limit].replace("\n", "\\n").replace("\r", "\\r")
    return text + (f"…(+{more} chars)" if more > 0 else "")


# ---- what the campaign keeps (bounded) ------------------------------------------------------------------


@dataclass
class Findings:
    """Counts per class and per kind of failure (with its first case), and the first reproductions."""

    counts: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # kind -> its first reproduction
    repros: list[str] = field(default_factory=list)
    failing_cases: int = 0
    slowest: list[tuple[float, str]] = field(default_factory=list)  # a heap: (ms, case)

    def timed(self, case: Case, ms: float) -> None:
        """Keep the KEEP_SLOWEST slowest cases: a case that stalls the mock's loop is slow itself."""
        entry = (ms, _describe(case, "")[:200])
        if len(self.slowest) < KEEP_SLOWEST:
            heapq.heappush(self.slowest, entry)
        elif ms > self.slowest[0][0]:
            heapq.heapreplace(self.slowest, entry)

    def add(self, case: Case | None, problems: list[Problem], where: str = "") -> None:
        """Problems of one answer to ``case`` (``where``: a follow-up request the campaign made after it)."""
        if not problems:
            return
        self.failing_cases += 1
        repro = _describe(case, where) + " → " + _short("; ".join(f"{cls}: {w}" for cls, w in problems), 300)
        for cls, what in problems:
            self.counts[cls] += 1
            kind = f"{cls} | {_endpoint(case, where)} | {what[:100]}"
            if kind in self.kinds or len(self.kinds) < KEEP_KINDS:
                self.kinds[kind] += 1
                self.examples.setdefault(kind, repro)
        if len(self.repros) < KEEP_REPROS:
            self.repros.append(repro)


def _endpoint(case: Case | None, where: str) -> str:
    """Where a failure happened, without what varies from case to case (call ids)."""
    if isinstance(case, fs.WsCase):
        base = case.surface
    elif isinstance(case, fs.HttpCase):
        parts = case.path.split("?")[0].split("/")
        if case.target == "unknown":  # the segment after "calls" is a generated id
            parts[parts.index("calls") + 1] = "<junk>"
        base = f"{case.method} {'/'.join(parts)}"
    else:
        base = "campaign"
    return f"{base} {where}".strip()


def _describe(case: Case | None, where: str) -> str:
    """One line a person can replay: surface, request, mutation and the payload (cut at 300 characters)."""
    if isinstance(case, fs.WsCase):
        frame = "binary frame" if case.opcode == "binary" else "text frame"
        head = f"{case.surface} {frame} ({case.how})"
        payload: str | bytes | None = case.data
    elif isinstance(case, fs.HttpCase):
        ctype = case.content_type or "no content type"
        head = f"{case.surface} {case.method} {case.path} [{ctype}{'' if case.auth else ', no key'}] ({case.how})"
        payload = case.body
    else:
        head, payload = "campaign", None
    if where:
        head += f" then {where}"
    return f"{head} {_short(payload)!r}" if payload is not None else head


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (psutil when installed, else /proc); None once the process is gone."""
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Figures:
    """What the campaign measured; ``--json`` writes this."""

    cases: int
    seed: int
    by_surface: dict[str, int]
    crashes: int
    hangs: int
    unshaped: int
    invalid_json: int
    failing_cases: int
    mock_died: bool
    reconnects: int
    stall_worst_ms: float
    stall_p99_ms: float
    probes: int
    rss_warm_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    rss_growth_pct: float
    curve: list[tuple[int, float, float, int]]
    stalls: list[str]
    """The mock's own longest stalls over STALL_WATCH_MS: length and the innermost frames of its stack."""
    """(cases tried, mock RSS MB, journal MB as estimated JSON, ended timelines kept) at every tenth of the run."""
    duration_s: float
    kinds: dict[str, int]
    examples: dict[str, str]
    repros: list[str]
    slowest: list[str]
    bugs: list[str] = field(default_factory=list)
    """The last lines of the tracebacks of the mock's own bugs (``mock.bug`` on its server timeline)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- watching the mock -----------------------------------------------------------------------------------


class Watch:
    """The stall probe (a child process) and the RSS sampler (a task on this loop) while the campaign runs.

    The probe runs in a process of its own: in this one, generating and judging cases holds the GIL
    for tens of milliseconds at a time, which would be measured as the mock's stalls.
    """

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.stalls = Histogram()
        self.rss_peak = 0
        self._stop = asyncio.Event()
        self._probe: StallProbe | None = None
        self._rss_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._probe = await StallProbe(self.url, PROBE_INTERVAL_S).__aenter__()
        self._rss_task = asyncio.create_task(self._rss())

    async def stop(self) -> None:
        self._stop.set()
        if self._rss_task is not None:
            await self._rss_task
        if self._probe is not None:
            self.stalls = await self._probe.stop()

    async def _rss(self) -> None:
        while not self._stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RSS_INTERVAL_S)

    def sample(self) -> int:
        rss = rss_bytes(self.pid) or 0
        self.rss_peak = max(self.rss_peak, rss)
        return rss

    async def point(self, tried: int) -> tuple[int, float, float, int]:
        """One point of the RSS curve, with how full the mock's journal is then (``/_mock/health``)."""
        async with aiohttp.ClientSession() as session, session.get(self.url + "/_mock/health") as r:
            journal = (await r.json())["journal"]
        mb = 1 / (1024 * 1024)
        return tried, round(self.sample() * mb, 1), round(journal["bytes"] * mb, 1), journal["ended"]


# ---- the executor ----------------------------------------------------------------------------------------


class CampaignError(RuntimeError):
    """A request the campaign itself relies on (a new call, the baseline config) failed."""


class SocketGone(Exception):
    """The socket a case was meant for closed (not by itself a failure: a client event may close it)."""


@dataclass
class Live:
    """A connected socket and, for a call's socket, its call."""

    ws: aiohttp.ClientWebSocketResponse
    call_id: str | None = None


@dataclass
class Ringing:
    call_id: str
    since: float


class Campaign:
    """Runs cases against one mock and judges every answer; holds the sockets and calls cases need."""

    def __init__(self, mock: MockProcess, findings: Findings) -> None:
        self.mock = mock
        self.url = mock.url
        self.ws_url = "ws" + mock.url.removeprefix("http")
        self.findings = findings
        self.http: aiohttp.ClientSession | None = None
        self.sockets: dict[str, Live] = {}
        self.ringing: dict[str, Ringing] = {}  # "ringing" (REST cases) and "control_call" (caller cases)
        self.baseline: dict[str, Any] = {}
        self.reconnects = 0
        self.dead = False
        self.bugs: list[str] = []  # the mock's own tracebacks, read as each crash came (the journal moves on)
        self._markers = itertools.count()

    async def __aenter__(self) -> Campaign:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4))
        current = await self._json("GET", "/_mock/config")
        self.baseline = {k: current[k] for k in ConfigPatch.model_fields if k in current}
        self.baseline.update(script=SCRIPT, ring_timeout_s=20, retain_ended_calls=20, webhook_url=None)
        await self._json("PUT", "/_mock/config", self.baseline)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for live in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await live.ws.close()
        if self.http is not None:
            await self.http.close()

    # ---- plumbing the campaign itself relies on (a failure here is a bench bug, raised) ----

    async def _json(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)) -> Any:
        assert self.http is not None
        async with asyncio.timeout(TIMEOUT_S * 2), self.http.request(
                method, self.url + path, json=body, headers=AUTH) as r:
            data = await r.read()
            if r.status not in ok:
                raise CampaignError(f"campaign request {method} {path} answered {r.status}: {_short(data, 300)}")
            return wire_json.loads(data) if data.strip() else None

    async def _new_call(self, accept: bool) -> str:
        created = await self._json("POST", "/_mock/calls", {"script": SCRIPT})
        call_id: str = created["call_id"]
        if accept:
            await self._json("POST", f"/v1/realtime/calls/{call_id}/accept", ACCEPT)
        return call_id

    async def _end(self, call_id: str) -> None:
        """Hang up a call a case used (it may have ended already)."""
        await self._json("POST", f"/v1/realtime/calls/{call_id}/hangup", {}, ok=(200, 404))

    async def _ringing(self, role: str) -> str:
        held = self.ringing.get(role)
        if held is None or time.monotonic() - held.since > RING_REFRESH_S:
            if held is not None:
                await self._end(held.call_id)
            held = self.ringing[role] = Ringing(await self._new_call(accept=False), time.monotonic())
        return held.call_id

    # ---- cases ---------------------------------------------------------------------------------------

    async def run(self, case: Case) -> None:
        """One case and its follow-ups. A mock that died, or no longer serves what the campaign needs
        to go on (a new call, its config back), is a crash, and the campaign stops there."""
        if self.dead:
            return
        started = time.perf_counter()
        try:
            if isinstance(case, fs.WsCase):
                await self._ws_case(case)
            else:
                await self._http_case(case)
        except (CampaignError, aiohttp.ClientError, TimeoutError) as exc:
            if self.mock.returncode is None:
                self.dead = True
                self.findings.add(case, [("crash", f"the mock stopped serving the campaign: {exc}")])
        if self.mock.returncode is not None and not self.dead:
            self.dead = True
            self.findings.add(case, [("crash", f"the mock process exited with status {self.mock.returncode}")])
        self.findings.timed(case, (time.perf_counter() - started) * 1000)

    # sockets

    async def _socket(self, kind: str) -> Live:
        live = self.sockets.get(kind)
        if live is not None and not live.ws.closed:
            return live
        if live is not None:
            await self._drop(kind)
        call_id = await self._new_call(accept=True) if kind == "call" else None
        query = f"call_id={call_id}" if call_id else "model=gpt-realtime"
        live = Live(await self._connect(query), call_id)
        first = await asyncio.wait_for(live.ws.receive(), TIMEOUT_S)
        if first.type != aiohttp.WSMsgType.TEXT or json.loads(first.data).get("type") != "session.created":
            raise CampaignError(f"a new {kind} socket did not start with session.created: {first}")
        self.sockets[kind] = live
        return live

    async def _connect(self, query: str) -> aiohttp.ClientWebSocketResponse:
        assert self.http is not None
        return await self.http.ws_connect(f"{self.ws_url}/v1/realtime?{query}", headers=AUTH, compress=0,
                                          max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=1.0))

    async def _drop(self, kind: str) -> None:
        live = self.sockets.pop(kind, None)
        if live is None:
            return
        self.reconnects += 1
        with contextlib.suppress(Exception):
            await live.ws.close()
        if live.call_id is not None:
            await self._end(live.call_id)

    async def _ws_case(self, case: fs.WsCase) -> None:
        live = await self._socket(case.socket)
        try:
            await self._send(live.ws, case)
            await self._sync(live.ws, case)
        except SocketGone:
            await self._drop(case.socket)

    @staticmethod
    async def _send(ws: aiohttp.ClientWebSocketResponse, case: fs.WsCase) -> None:
        try:
            if case.opcode == "binary":
                await ws.send_bytes(case.data if isinstance(case.data, bytes) else case.data.encode())
            elif isinstance(case.data, bytes):
                await ws.send_frame(case.data, aiohttp.WSMsgType.TEXT)  # a text frame that is not UTF-8
            else:
                await ws.send_str(case.data)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise SocketGone(str(exc)) from None

    async def _sync(self, ws: aiohttp.ClientWebSocketResponse, case: Case, where: str = "") -> None:
        """Send a frame the mock must refuse with an error naming its event_id, and read up to that error.

        Everything the case caused arrives before it; later events (a streamed response) are judged on
        the next case's read. No reply in 5 s is a hang; a close is judged (1011 or a dead mock: crash).
        """
        marker = f"fuzz_sync_{next(self._markers)}"
        try:
            await ws.send_str(json.dumps({"type": "fuzz.sync", "event_id": marker}))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise SocketGone(str(exc)) from None
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self.findings.add(case, [("hang", f"no reply to the sync frame within {TIMEOUT_S:g} s")], where)
                raise SocketGone("hang") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                event, problems = judge_event(msg.data)
                self.findings.add(case, problems, where)
                err = event.get("error") if event else None
                if isinstance(err, dict) and err.get("event_id") == marker:
                    return
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.findings.add(case, [("unshaped", f"binary frame from the mock ({len(msg.data)} bytes)")], where)
            elif msg.type == aiohttp.WSMsgType.ERROR:  # what a handler that raised after the upgrade looks like
                self.findings.add(case, [("crash", f"the mock broke the WebSocket protocol: {msg.data}")], where)
                raise SocketGone("protocol error")
            else:
                code = ws.close_code
                if code == 1011 or self.mock.returncode is not None:
                    self.findings.add(case, [("crash", f"socket closed with {code} {msg.extra or ''}".strip())], where)
                raise SocketGone(f"closed {code}")

    # HTTP

    async def _http_case(self, case: fs.HttpCase) -> None:
        call_id = None
        if "{call}" in case.path:
            if case.target == "ws_call":
                call_id = (await self._socket("call")).call_id
            else:
                call_id = await self._ringing("control_call" if case.target == "control_call" else "ringing")
        path = case.path.replace("{call}", call_id or "")
        status, body = await self._request(case, case.method, path, case.body, case.content_type, auth=case.auth)
        if status is None or status >= 300:
            return
        if case.target == "ringing" and call_id is not None:  # accepted, rejected, referred or hung up: used
            self.ringing.pop("ringing", None)
            await self._end(call_id)
        elif case.target == "control_call" and case.method == "POST":
            self.ringing.pop("control_call", None)
        if case.follow == "config":
            await self._after_config(case)
        elif case.follow == "call":
            await self._after_call(case, body)
        elif case.follow == "stubs":
            await self._after_stubs(case)

    async def _request(self, case: fs.HttpCase, method: str, path: str, body: bytes | None,
                       content_type: str | None = "application/json", *, auth: bool = True,
                       where: str = "", held_s: float = 0.0) -> tuple[int | None, bytes]:
        """Send one request (``case``'s, or a follow-up named by ``where``) and judge its answer;
        (status, body), or (None, b"") when none came. ``held_s``: how long a fault holds this answer on purpose."""
        assert self.http is not None
        headers = dict(AUTH) if auth else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = yarl.URL(self.url + path, encoded=True)  # a junk call id goes out as generated
        try:
            async with asyncio.timeout(TIMEOUT_S + held_s), self.http.request(
                    method, url, data=body, headers=headers,
                    skip_auto_headers=() if content_type else ("Content-Type",)) as r:
                data = await r.read()
                status, ctype = r.status, r.headers.get("Content-Type", "")
        except TimeoutError:
            self.findings.add(case, [("hang", f"no answer within {TIMEOUT_S + held_s:g} s")], where)
            return None, b""
        except aiohttp.ClientError as exc:
            if self.mock.returncode is None:
                self.findings.add(case, [("unshaped", f"connection ended with no answer: {type(exc).__name__}: "
                                                      f"{exc}")], where)
            return None, b""
        judged = judge_http(path.split("?")[0], status, ctype, data)
        self.findings.add(case, judged, where)
        if any(cls == "crash" for cls, _ in judged) and len(self.bugs) < KEEP_BUGS:
            self.bugs.extend(b for b in await mock_bugs(self.url, keep=1) if b not in self.bugs)
        return status, data

    # follow-ups: what a case set up must work afterwards, then the baseline comes back

    async def _after_config(self, case: fs.HttpCase) -> None:
        """A config the mock took: a chat completion and a new session still work; then the baseline returns."""
        chat = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
        await self._request(case, "POST", "/v1/chat/completions", chat, where="chat completion")
        await self._session_works(case, "model=gpt-realtime", "new ?model= socket")
        await self._json("PUT", "/_mock/config", self.baseline)

    async def _after_call(self, case: fs.HttpCase, body: bytes) -> None:
        """A call the mock created: its accept, its socket and its hangup are judged like any answer."""
        try:
            call_id = wire_json.loads(body)["call_id"]
        except (wire_json.WireJSONError, KeyError, TypeError):
            self.findings.add(case, [("unshaped", f"201 without a call_id: {_short(body, 120)}")])
            return
        held = accept_held_s(body_of(case))
        status, _ = await self._request(case, "POST", f"/v1/realtime/calls/{call_id}/accept",
                                        json.dumps(ACCEPT).encode(), where="accept", held_s=held)
        if status == 200:
            await self._session_works(case, f"call_id={call_id}", "its call socket")
        await self._request(case, "POST", f"/v1/realtime/calls/{call_id}/hangup", b"{}", where="hangup")

    async def _after_stubs(self, case: fs.HttpCase) -> None:
        await self._request(case, "GET", "/_mock/stubs", None, None, where="GET /_mock/stubs")
        await self._json("DELETE", "/_mock/stubs")

    async def _session_works(self, case: fs.HttpCase, query: str, where: str) -> None:
        """A new socket answers: its events are judged up to the sync reply (a refused upgrade: by status)."""
        try:
            ws = await self._connect(query)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status >= 500:
                self.findings.add(case, [("crash", f"upgrade answered HTTP {exc.status}")], where)
            return
        try:
            await self._sync(ws, case, where)
        except SocketGone:
            pass
        finally:
            await ws.close()


# ---- driving hypothesis ----------------------------------------------------------------------------------

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "ws.model": fs.ws_cases("model"), "ws.call": fs.ws_cases("call"),
    "rest": fs.rest_cases(), "control": fs.control_cases(),
}


def _batch(strategy: st.SearchStrategy[Any], size: int, seed: int, run_one: Callable[[Case], bool]) -> tuple[int, bool]:
    """One hypothesis run of ``size`` cases: (how many ran, whether ``run_one`` asked to stop)."""
    ran = 0
    stop = False

    @settings(max_examples=size, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hypothesis_seed(seed)
    @given(case=strategy)
    def one(case: Case) -> None:
        nonlocal ran, stop
        if ran >= size or stop:
            return
        ran += 1
        stop = not run_one(case)

    one()
    return ran, stop


def drive(cases: int, seed: int, run_one: Callable[[Case], bool]) -> Counter[str]:
    """The corpus, then generated cases (hypothesis, seeded) up to ``cases``, each handed to ``run_one``;
    stop early when it says so.

    Runs in a worker thread: hypothesis is synchronous. It runs in batches of one surface each, taken
    in ``ROTA`` order, each batch with its own seed derived from ``seed``: hypothesis needs a batch's
    draws to depend on its choices alone, and its memory of what it tried stays small however many run.
    """
    surfaces: Counter[str] = Counter()
    done = 0
    for case in fs.CORPUS[:cases]:
        done += 1
        surfaces[case.surface] += 1
        if not run_one(case):
            return surfaces
    size = max(10, min(BATCH, cases // (5 * len(ROTA))))  # a small campaign still visits every surface
    for batch in itertools.count():
        if done >= cases:
            break
        surface = ROTA[batch % len(ROTA)]
        ran, stop = _batch(STRATEGIES[surface], min(size, cases - done), seed * 1_000_003 + batch, run_one)
        done += ran
        surfaces[surface] += ran
        if stop or ran == 0:
            break
    return surfaces


async def run_campaign(cases: int, seed: int = 1, progress: Callable[[int, Findings], None] | None = None,
                       ) -> Figures:
    """The whole campaign against a fresh ``rtsip mock`` process; what the table and ``--json`` show."""
    findings = Findings()
    build_models()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rtsip-fuzz-") as state:
        async with MockProcess([*MOCK_ARGS, "--state-dir", state]) as mock, Campaign(mock, findings) as campaign:
            watch = Watch(mock.url, mock.pid)
            await watch.start()
            loop = asyncio.get_running_loop()
            warm_at = max(1, cases // 10)
            tried = 0
            rss_warm = 0
            curve: list[tuple[int, float, float, int]] = []

            def run_one(case: Case) -> bool:
                nonlocal tried, rss_warm
                asyncio.run_coroutine_threadsafe(campaign.run(case), loop).result()
                tried += 1
                if tried == warm_at:
                    rss_warm = watch.sample()
                if tried % warm_at == 0:
                    curve.append(asyncio.run_coroutine_threadsafe(watch.point(tried), loop).result())
                if progress is not None:
                    progress(tried, findings)
                return not campaign.dead

            try:
                surfaces = await asyncio.to_thread(drive, cases, seed, run_one)
            finally:
                await watch.stop()
            rss_end = watch.sample()
            bugs = campaign.bugs + ([] if campaign.dead else [b for b in await mock_bugs(mock.url)
                                                              if b not in campaign.bugs])
            reconnects, died = campaign.reconnects, campaign.dead
            stalls = reported_stalls(mock.output)
    mb = 1 / (1024 * 1024)
    return Figures(
        cases=tried, seed=seed, by_surface=dict(surfaces), crashes=findings.counts["crash"],
        hangs=findings.counts["hang"], unshaped=findings.counts["unshaped"],
        invalid_json=findings.counts["invalid_json"], failing_cases=findings.failing_cases, mock_died=died,
        reconnects=reconnects, stall_worst_ms=round(watch.stalls.worst, 2),
        stall_p99_ms=round(watch.stalls.percentile(99), 2), probes=watch.stalls.n,
        rss_warm_mb=round(rss_warm * mb, 1), rss_end_mb=round(rss_end * mb, 1),
        rss_peak_mb=round(watch.rss_peak * mb, 1),
        rss_growth_pct=round((rss_end - rss_warm) / rss_warm * 100, 1) if rss_warm else float("nan"),
        curve=curve, stalls=stalls, bugs=bugs,
        duration_s=round(time.monotonic() - started, 1), kinds=dict(findings.kinds.most_common()),
        examples=dict(findings.examples), repros=list(findings.repros),
        slowest=[f"{ms:.0f} ms: {what}" for ms, what in sorted(findings.slowest, reverse=True)],
    )


async def mock_bugs(url: str, keep: int = 3) -> list[str]:
    """Where the mock's own bugs were (a crash's cause): the last lines of the newest ``keep`` tracebacks on its
    server timeline, read page by page to its end."""
    found: list[dict[str, Any]] = []
    after: int | None = 0
    async with aiohttp.ClientSession() as session:
        while after is not None:
            async with session.get(f"{url}/_mock/journal?after={after}&limit=5000") as r:
                page = await r.json() if r.status == 200 else {}
            found += [e["data"] for e in page.get("entries", []) if e.get("kind") == "mock.bug"]
            after = page.get("next_after")
    return [f"{d.get('where')}: " + " | ".join(str(d.get("traceback", "")).strip().splitlines()[-4:])
            for d in found[-keep:]]


def body_of(case: fs.HttpCase) -> Any:
    try:
        return wire_json.loads(case.body or b"")
    except wire_json.WireJSONError:
        return None


def accept_held_s(call: Any) -> float:
    """How long ``accept_slow_404`` in a ``POST /_mock/calls`` body holds the accept's answer on purpose (its
    ``delay_s``): an answer that comes then is the fault working, not a hang."""
    faults = call.get("faults") if isinstance(call, dict) else None
    held = 0.0
    for fault in faults if isinstance(faults, list) else []:
        name = fault if isinstance(fault, str) else fault.get("name") if isinstance(fault, dict) else None
        if name == "accept_slow_404":
            given = fault.get("delay_s") if isinstance(fault, dict) else None
            default = float(FAULTS["accept_slow_404"].params["delay_s"])
            held = max(held, float(given) if isinstance(given, int | float) and given >= 0 else default)
    return held


def reported_stalls(output: list[str]) -> list[str]:
    """The mock's stall reports (``--stall-watch``), longest first: the length and the last frames."""
    found: list[tuple[float, str]] = []
    for i, line in enumerate(output):
        if line.startswith(STALL_LINE):
            ms = float(line[len(STALL_LINE):].split()[0])
            frames = list(itertools.takewhile(lambda t: t.startswith(" "), output[i + 1:]))
            where = [f.strip() for f in frames if f.lstrip().startswith("File ")][-4:]
            found.append((ms, f"{ms:.0f} ms: " + " <- ".join(reversed(where))))
    return [text for _, text in heapq.nlargest(KEEP_STALLS, found)]


# ---- the script ------------------------------------------------------------------------------------------


def table(f: Figures) -> Table:
    t = Table(title=f"rtsip fuzz campaign (seed {f.seed}; mock in its own process, 127.0.0.1)")
    for col in ("measure", "value", "target"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    surfaces = ", ".join(f"{k} {v}" for k, v in sorted(f.by_surface.items()))
    t.add_row("cases tried", f"{f.cases} ({surfaces})", "100000")
    t.add_row("crashes (5xx, server_error, 1011, died)", str(f.crashes) + (" (mock died)" if f.mock_died else ""), "0")
    t.add_row("hangs (no answer in 5 s)", str(f.hangs), "0")
    t.add_row("answers not in the API's shape", str(f.unshaped), "0")
    t.add_row("invalid JSON emitted", str(f.invalid_json), "0")
    t.add_row("worst loop stall (probe every 10 ms)", f"{f.stall_worst_ms:.1f} ms", "< 50 ms")
    t.add_row("p99 probe latency", f"{f.stall_p99_ms:.2f} ms ({f.probes} probes)", "")
    t.add_row("mock RSS after warm-up / end / peak", f"{f.rss_warm_mb} / {f.rss_end_mb} / {f.rss_peak_mb} MB", "")
    t.add_row("RSS growth after warm-up", f"{f.rss_growth_pct:+.1f} %", "flat")
    t.add_row("RSS / journal (ended kept) by tenth", "  ".join(
        f"{n}: {rss:.0f}/{jmb:.0f} MB ({ended})" for n, rss, jmb, ended in f.curve), "")
    t.add_row("socket reconnects (a case closed it)", str(f.reconnects), "")
    t.add_row("duration", f"{f.duration_s:.0f} s ({f.cases / max(f.duration_s, 1e-9):.0f} cases/s)", "")
    return t


def kinds_table(f: Figures) -> Table:
    t = Table(title="failures by kind (class | where | what came back)")
    t.add_column("count", justify="right")
    t.add_column("kind")
    for kind, n in f.kinds.items():
        t.add_row(str(n), kind)
    return t


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000, help="cases to run (default 100000; CI runs 2000)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated cases (default 1)")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args()
    console = Console(stderr=True)
    step = max(1, args.cases // 20)

    def progress(tried: int, findings: Findings) -> None:
        if tried % step == 0:
            console.print(f"  {tried}/{args.cases} cases, {findings.failing_cases} failing", highlight=False)

    figures = await run_campaign(args.cases, args.seed, progress)
    out = Console()
    out.print(table(figures))
    if figures.kinds:
        out.print(kinds_table(figures))
    if figures.stalls:
        out.print(f"the mock's longest stalls over {STALL_WATCH_MS} ms (innermost frame first):")
        for line in figures.stalls:
            out.print("  " + line, markup=False, highlight=False, soft_wrap=True)
    out.print("slowest cases (with their follow-ups):")
    for line in figures.slowest:
        out.print("  " + line, markup=False, highlight=False, soft_wrap=True)
    if figures.bugs:
        out.print("the mock's own bugs (mock.bug, newest last):")
        for line in figures.bugs:
            out.print("  " + line, markup=False, highlight=False, soft_wrap=True)
    if figures.repros:
        out.print(f"first {len(figures.repros)} failing cases:")
        for line in figures.repros:
            out.print("  " + line, markup=False, highlight=False, soft_wrap=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures.to_json(), indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
