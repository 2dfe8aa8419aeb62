"""pytest plugin (entry point ``rtsip`` via ``pytest11``): the fake OpenAI, a softphone and scenarios
as fixtures, with expectations checked at teardown the way pytest-httpserver checks its own.

    async def test_claims_app(openai_mock):
        openai_mock.expect(accept={"audio.input.transcription.model": "gpt-4o-transcribe"},
                           server_errors=[], call_state="ended")
        async with openai_mock.app(["python", "app.py", "--port", "{port}"]) as app:
            call_id = await openai_mock.control.start_call()
            await openai_mock.control.say(call_id, "caller_policy_number", speed=3, wait=True)
            await openai_mock.control.caller_hangup(call_id)
        # expectations are checked when the fixture tears down

A GPT-Live call is placed the same way, saying its surface: ``call = await openai_mock.place_call(surface="live")``
sends the app ``live.transport.incoming`` (``"both"`` sends it and ``realtime.call.incoming``), and
``call.live_id`` is the session id the app accepts and attaches to; ``expect()`` takes the Live checks
(``live_events``, ``closed_reason``, ``dtmf_sent``) and the ones both surfaces share.

One mock serves the whole session (``openai_mock_server``, in a thread of its own so tests on any
event loop reach it); ``openai_mock`` resets it before each test and checks it after. The SIP/TLS
ingress starts on that same mock the first time a test asks for ``openai_mock_sip``. Where it
listens and where it keeps its state come from the ``openai_mock_address``, ``openai_mock_sip_port``
and ``openai_mock_state_dir`` fixtures (override them), whose defaults read the ini options
``rtsip_host``, ``rtsip_port``, ``rtsip_sip_port``, ``rtsip_state_dir`` or, over those, the
environment variables ``RTSIP_PYTEST_HOST``, ``RTSIP_PYTEST_PORT``, ``RTSIP_PYTEST_SIP_PORT`` and
``RTSIP_PYTEST_STATE_DIR``. See docs/pytest.md for a complete walk-through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from mock_api import stubs
from mock_api.client import MockClient
from mock_api.config import ConfigPatch, MockConfig
from mock_api.control_models import Stub
from mock_api.running import RunningMock, free_port, running_mock
from sipworker import sip_available, sip_missing

from .app_process import AppProcess, app_argv, app_env, fill_placeholders, template_values
from .expect import Check, MockBug, evaluate, mock_bug_verdict
from .expectations import Lifetime, RequestExpectation, request_problems, stub_request
from .journal_view import JournalView
from .scenario import SURFACE_EVENTS, Expectations, Surface, expand, load_scenario

T = TypeVar("T")
START_TIMEOUT_S = 120.0  # the SIP workers start slowly on a loaded machine
SIP_WORKERS = 2
SETTINGS = {  # ini option (env: setting_env(name)): what it sets
    "rtsip_host": "the address the session's mock listens on (default 127.0.0.1)",
    "rtsip_port": "its HTTP port (default 0: the OS picks one)",
    "rtsip_sip_port": "its SIP/TLS port (default 0: the OS picks one)",
    "rtsip_state_dir": "where it keeps its CA, SIP logs and softphone state (default: a pytest temporary directory)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    for name, help_text in SETTINGS.items():
        parser.addini(name, help_text, default=None)


def setting_env(name: str) -> str:
    """``rtsip_port`` -> ``RTSIP_PYTEST_PORT``: apart from ``rtsip mock``'s own ``RTSIP_STATE_DIR``."""
    return "RTSIP_PYTEST_" + name.removeprefix("rtsip_").upper()


def _setting(config: pytest.Config, name: str) -> str | None:
    """The environment overrides the ini file: a run can move the mock without editing the project."""
    value = os.environ.get(setting_env(name)) or config.getini(name)
    return str(value) if value else None


# ---- the session's mock, on a loop of its own -------------------------------------------------------------


class MockThread:
    """One mock served by its own event loop in a daemon thread, for the whole session.

    pytest-asyncio gives each test its own loop by default; a mock living on one test's loop would stop
    serving when that test ends. In a thread it serves every test, on any loop, over real sockets."""

    def __init__(self, config: MockConfig, host: str, port: int, state_dir: Path) -> None:
        self.config, self.host, self.port, self.state_dir = config, host, port, state_dir
        self.running: RunningMock | None = None
        self.baseline: MockConfig = config  # what each test starts from (with the mock's webhook secret)
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rtsip-openai-mock", daemon=True)

    def start(self) -> RunningMock:
        self._thread.start()
        self._ready.wait(START_TIMEOUT_S)
        if self.error is not None:
            raise self.error
        if self.running is None:
            raise RuntimeError(f"the rtsip mock did not start within {START_TIMEOUT_S:.0f} s")
        return self.running

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the thread that waits in start()
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with running_mock(self.config, self.host, self.port) as running:
            self.running, self.baseline = running, running.server.config
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            try:
                await self._stopping.wait()
            finally:
                if running.sip is not None:  # started here, so stopped here: sockets first, then the calls
                    await running.stop_serving()
                    await running.sip.stop()

    def submit(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the mock's loop (the only loop that may touch its state)."""
        if self._loop is None:
            raise RuntimeError("the rtsip mock is not running")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a quick function on the mock's loop and wait for its result."""

        async def run() -> T:
            return fn()

        return self.submit(run).result(START_TIMEOUT_S)

    async def start_sip(self, port: int) -> None:
        """Start the SIP/TLS ingress on this mock once (on the mock's loop)."""
        from mock_api.sip import SipIngress

        assert self.running is not None
        if self.running.sip is None:
            ingress = SipIngress(self.running.server, self.state_dir / "sip", host=self.host, port=port,
                                 workers=SIP_WORKERS)
            await ingress.start()
            self.running.sip = ingress

    async def reset(self) -> None:
        """Back to how the session started: no calls, journal, stubs or settings from an earlier test."""
        assert self.running is not None
        server = self.running.server
        server.config = self.baseline
        server.configure(ConfigPatch.model_validate({"limits": self.baseline.limits.model_dump()}))
        await server.reset()  # also empties the journal, the entry configure just made included
        stubs.reset(server)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(START_TIMEOUT_S)


# ---- what a test holds ----------------------------------------------------------------------------------


@dataclass
class RunningApp:
    process: AppProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.process.output


@dataclass(frozen=True)
class PlacedCall:
    """A call placed by :meth:`OpenAIMock.place_call`: its Realtime id, the same call's GPT-Live session id."""

    call_id: str
    live_id: str
    surface: Surface


@dataclass
class OpenAIMock:
    """A running fake OpenAI: where it is, its control client, and the expectations to check."""

    running: RunningMock
    control: MockClient
    state_dir: Path
    expectations: list[tuple[Expectations, int | None]] = field(default_factory=list)
    apps: list[RunningApp] = field(default_factory=list)
    # A bug inside the mock (journal ``mock.bug``) fails the test at teardown, as pytest-httpserver fails on a
    # handler error; True lets a test that is about the mock's own failures pass.
    allow_mock_bugs: bool = False
    server: MockThread | None = None  # the session's mock thread; None: the mock runs on this test's loop
    sip: bool = False  # handed out as openai_mock_sip
    requests: list[RequestExpectation] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """Give this to the app as ``OPENAI_BASE_URL``."""
        return self.running.base_url

    @property
    def webhook_secret(self) -> str:
        return self.running.server.config.webhook_secret or ""

    @property
    def sip_uri(self) -> str:
        if not self.sip or self.running.sip is None:
            raise RuntimeError("this mock has no SIP ingress: use the openai_mock_sip fixture")
        return self.running.sip.uri()

    def _on_mock(self, fn: Callable[[], T]) -> T:
        """Touch the mock's state on the loop that owns it."""
        return self.server.call(fn) if self.server is not None else fn()

    def env(self, port: int | None = None) -> dict[str, str]:
        """What an app needs to reach this mock instead of OpenAI."""
        return app_env(self.base_url, self.webhook_secret, port)

    def configure(self, **settings: Any) -> None:
        """Faults, script, retry policy, strict_accept...: same fields as PUT /_mock/config (until the test ends)."""
        patch = ConfigPatch.model_validate(settings)
        self._on_mock(lambda: self.running.server.configure(patch))

    def expect(self, call: int | None = 0, **checks: Any) -> None:
        """Expect something of call number ``call`` (None: every call), checked at teardown.

        Takes the keys of a scenario's ``expect:`` block, e.g. ``call_state="ended"``,
        ``accept={"audio.input.transcription.model": "whisper-1"}``, ``server_errors=[]``,
        ``client_events={"sent": ["session.update"]}``, ``transcription_events="completed"``.
        """
        self.expectations.append((Expectations.model_validate(checks), call))

    def expect_request(self, path: str | None = None, *, method: str | None = None, json: Any = None,
                       headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None,
                       path_regex: str | None = None, name: str | None = None,
                       lifetime: Lifetime = "permanent") -> RequestExpectation:
        """A stub for the rest of the OpenAI API (chat completions, responses, embeddings...): every
        matching request gets the answer given to ``.respond_with_json(...)`` on what this returns.
        ``json`` matches a request body that contains it; method, headers and query match exactly."""
        request = stub_request(path, method=method, json=json, headers=headers, query=query, path_regex=path_regex)
        expectation = RequestExpectation(request, lifetime, name, self._install)
        self.requests.append(expectation)
        return expectation

    def expect_oneshot_request(self, path: str | None = None, **match: Any) -> RequestExpectation:
        """Answered once; the test fails at teardown if the request never came."""
        return self.expect_request(path, lifetime="oneshot", **match)

    def expect_ordered_request(self, path: str | None = None, **match: Any) -> RequestExpectation:
        """Answered once, in the order set up; one asked for before its turn gets a 400 and fails the test."""
        return self.expect_request(path, lifetime="ordered", **match)

    def _install(self, stub: Stub) -> str:
        def load() -> str:  # no id given, so the book picks a free one
            stubs.install(self.running.server, [stub], replace=False)
            return str(stubs.book(self.running.server).entries[-1].stub.id)

        return self._on_mock(load)

    @asynccontextmanager
    async def app(self, command: list[str], *, webhook_path: str = "/webhook", ready_http: str | None = "/healthz",
                  ready_log: str | None = None, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                  timeout: float = 20.0) -> AsyncIterator[RunningApp]:
        """Start the app under test on a free port, pointed at this mock, and stop it afterwards.

        ``command``, ``env`` values and ``cwd`` may name ``{port}``, ``{python}``, ``{base_url}``, ``{ws_base}``,
        ``{mock_origin}`` and ``{webhook_url}``, as a scenario's ``app`` block does.
        """
        port = free_port()
        webhook_url = f"http://127.0.0.1:{port}{webhook_path}"
        values = template_values(port, self.base_url, webhook_url)
        filled_env = {k: fill_placeholders(v, values) for k, v in (env or {}).items()}
        proc = AppProcess(app_argv(command, port, values),
                          app_env(self.base_url, self.webhook_secret, port, filled_env),
                          Path(fill_placeholders(str(cwd), values)) if cwd else None)
        self.configure(webhook_url=webhook_url)
        await proc.start()
        running = RunningApp(proc, port)
        self.apps.append(running)
        try:
            await proc.wait_ready(port=port, http_path=None if ready_log else ready_http, log_regex=ready_log,
                                  timeout=timeout)
            yield running
        finally:
            await proc.stop()

    async def place_call(self, *, surface: Surface = "realtime", **call: Any) -> PlacedCall:
        """Place a virtual call offered on ``surface``: realtime (``realtime.call.incoming``), live
        (``live.transport.incoming``) or both; ``call`` takes :meth:`MockClient.start_call`'s keywords."""
        self.configure(webhook_events=SURFACE_EVENTS[surface])
        call_id = await self.control.start_call(**call)
        return PlacedCall(call_id, (await self.control.call(call_id)).live_id, surface)

    async def wait_event(self, call_id: str, kind: str, count: int = 1, timeout: float = 20.0) -> None:
        """Until the call's journal holds ``count`` entries of ``kind``: a journal kind (``live.connect``) or an
        event type of either surface (``response.done``, ``session.output_transcript.delta``). TimeoutError
        otherwise, also when the call ended first."""
        view = await self.control.wait_for(
            call_id, lambda v: v.terminal or JournalView.of_call(v).count(kind) >= count, timeout=timeout)
        if JournalView.of_call(view).count(kind) < count:
            raise TimeoutError(f"call {call_id} ended ({view.state}) before {count} × {kind}")

    async def check(self) -> list[Check]:
        """Evaluate every expectation against the journal; returns the failed checks."""
        views = await self.control.calls()
        output = "\n".join(a.output for a in self.apps)
        failed: list[Check] = []
        for exp, index in self.expectations:
            if index is None:
                targets: list[Any] = list(views) or [None]  # "every call" with no call at all fails
            else:
                targets = [views[index]] if index < len(views) else [None]
            for view in targets:
                failed += [c for c in evaluate(exp, view, output, []) if not c.ok]
        return failed

    async def check_requests(self) -> list[str]:
        """What the request expectations (stubs) say went wrong: unused oneshot/ordered stubs, out-of-order
        requests, requests no stub answered."""
        views = self._on_mock(lambda: [e.view() for e in stubs.book(self.running.server).entries])
        return request_problems(views, await self.control.server_journal(), self.requests)

    async def mock_bugs(self) -> list[MockBug]:
        """Every exception inside the mock so far (journal ``mock.bug``: calls, sessions, the server timeline)."""
        from .runner import journaled_bugs

        return await journaled_bugs(self.control, await self.control.calls())

    async def teardown_failure(self) -> str | None:
        """Everything this test's mock has to say against it, or None."""
        bugs = [] if self.allow_mock_bugs else await self.mock_bugs()
        return _teardown_failure(bugs, await self.check_requests(), await self.check())


def _teardown_failure(bugs: list[MockBug], requests: list[str], failed: list[Check]) -> str | None:
    """What the test fails with at teardown: the mock's bugs first (they may explain the rest), then
    the request expectations, then the call expectations; None when there is none of them."""
    parts: list[str] = []
    if bugs:
        parts.append(f"rtsip {mock_bug_verdict(bugs)}; set openai_mock.allow_mock_bugs = True if this "
                     "test provokes it on purpose\n" + "\n".join(bug.describe() for bug in bugs))
    if requests:
        parts.append("rtsip request expectations not met:\n  " + "\n  ".join(requests))
    if failed:
        parts.append("rtsip expectations not met:\n  " + "\n  ".join(c.describe() for c in failed))
    return "\n\n".join(parts) or None


@asynccontextmanager
async def _checked(thread: MockThread, *, sip: bool) -> AsyncIterator[OpenAIMock]:
    """The session's mock, reset for this test and checked after it."""
    await asyncio.wrap_future(thread.submit(thread.reset))
    assert thread.running is not None
    async with MockClient(thread.running.url) as control:
        mock = OpenAIMock(thread.running, control, thread.state_dir, server=thread, sip=sip)
        yield mock
        failure = await mock.teardown_failure()
    if failure is not None:
        pytest.fail(failure, pytrace=False)


# ---- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openai_mock_address(pytestconfig: pytest.Config) -> tuple[str, int]:
    """``(host, port)`` of the session's mock; override this fixture (or set rtsip_host/rtsip_port) to pin it."""
    return _setting(pytestconfig, "rtsip_host") or "127.0.0.1", int(_setting(pytestconfig, "rtsip_port") or 0)


@pytest.fixture(scope="session")
def openai_mock_sip_port(pytestconfig: pytest.Config) -> int:
    """The SIP/TLS port of the session's mock (0: the OS picks one)."""
    return int(_setting(pytestconfig, "rtsip_sip_port") or 0)


@pytest.fixture(scope="session")
def openai_mock_state_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's mock keeps its local CA, SIP worker logs and the softphones' state."""
    given = _setting(pytestconfig, "rtsip_state_dir")
    if given is None:
        return tmp_path_factory.mktemp("rtsip")
    Path(given).mkdir(parents=True, exist_ok=True)
    return Path(given)


@pytest.fixture(scope="session")
def openai_mock_config() -> MockConfig:
    """The settings every test starts from; override it for, say, ``MockConfig(api_keys=["sk-mine"])``."""
    return MockConfig()


@pytest.fixture(scope="session")
def openai_mock_server(openai_mock_config: MockConfig, openai_mock_address: tuple[str, int],
                       openai_mock_state_dir: Path) -> Iterator[MockThread]:
    """The one mock of the session (in its own thread); tests take ``openai_mock``, which resets it."""
    thread = MockThread(openai_mock_config, *openai_mock_address, openai_mock_state_dir)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="session")
def openai_mock_sip_server(openai_mock_server: MockThread, openai_mock_sip_port: int) -> MockThread:
    """The session's mock with its SIP/TLS ingress (started the first time a test needs it)."""
    if not sip_available():
        pytest.skip(sip_missing())
    openai_mock_server.submit(lambda: openai_mock_server.start_sip(openai_mock_sip_port)).result(START_TIMEOUT_S)
    return openai_mock_server


@pytest_asyncio.fixture
async def openai_mock(openai_mock_server: MockThread) -> AsyncIterator[OpenAIMock]:
    """A fake OpenAI (REST, WebSocket, webhooks, control API) on 127.0.0.1, reset before the test and
    checked at teardown."""
    async with _checked(openai_mock_server, sip=False) as mock:
        yield mock


@pytest_asyncio.fixture
async def openai_mock_sip(openai_mock_sip_server: MockThread) -> AsyncIterator[OpenAIMock]:
    """The same with the SIP/TLS ingress (``openai_mock_sip.sip_uri``) for real calls."""
    async with _checked(openai_mock_sip_server, sip=True) as mock:
        yield mock


@pytest_asyncio.fixture
async def softphone(openai_mock_sip: OpenAIMock) -> AsyncIterator[Any]:
    """A softphone that trusts the SIP mock's CA: ``call = await softphone.call(openai_mock_sip.sip_uri)``."""
    from .softphone import Softphone

    assert openai_mock_sip.running.sip is not None
    state = Path(tempfile.mkdtemp(prefix="phone-", dir=openai_mock_sip.state_dir))
    with await asyncio.to_thread(open, state / "softphone.log", "a") as log:
        async with Softphone(ca=openai_mock_sip.running.sip.certs.ca, state_dir=state, stderr=log) as phone:
            yield phone


@pytest.fixture
def run_scenario() -> Callable[..., Awaitable[list[Any]]]:
    """``results = await run_scenario("scenarios/forum/03_missing_session_type.yaml")``: one result per variant."""
    from .runner import run_scenario as run_one

    async def run(path: str | Path, **kw: Any) -> list[Any]:
        return [await run_one(s, **kw) for s in expand(load_scenario(path))]

    return run
