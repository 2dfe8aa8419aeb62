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

Fixtures: ``openai_mock`` (HTTP/WebSocket only), ``openai_mock_sip`` (with the SIP/TLS
ingress), ``softphone`` (trusts that mock's CA), ``run_scenario`` (runs scenario files).
See docs/pytest.md for a complete walk-through.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mock_api.client import MockClient
from mock_api.config import ConfigPatch, MockConfig
from mock_api.running import RunningMock, SipOptions, free_port, running_mock

from .app_process import AppProcess, app_argv, app_env, fill_placeholders, template_values
from .expect import Check, MockBug, evaluate, mock_bug_verdict
from .scenario import Expectations, expand, load_scenario


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

    @property
    def base_url(self) -> str:
        """Give this to the app as ``OPENAI_BASE_URL``."""
        return self.running.base_url

    @property
    def webhook_secret(self) -> str:
        return self.running.server.config.webhook_secret or ""

    @property
    def sip_uri(self) -> str:
        if self.running.sip is None:
            raise RuntimeError("this mock has no SIP ingress: use the openai_mock_sip fixture")
        return self.running.sip.uri()

    def env(self, port: int | None = None) -> dict[str, str]:
        """What an app needs to reach this mock instead of OpenAI."""
        return app_env(self.base_url, self.webhook_secret, port)

    def configure(self, **settings: Any) -> None:
        """Faults, script, retry policy, strict_accept...: same fields as PUT /_mock/config."""
        self.running.server.configure(ConfigPatch.model_validate(settings))

    def expect(self, call: int | None = 0, **checks: Any) -> None:
        """Expect something of call number ``call`` (None: every call), checked at teardown.

        Takes the keys of a scenario's ``expect:`` block, e.g. ``call_state="ended"``,
        ``accept={"audio.input.transcription.model": "whisper-1"}``, ``server_errors=[]``,
        ``client_events={"sent": ["session.update"]}``, ``transcription_events="completed"``.
        """
        self.expectations.append((Expectations.model_validate(checks), call))

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

    async def mock_bugs(self) -> list[MockBug]:
        """Every exception inside the mock so far (journal ``mock.bug``: calls, sessions, the server timeline)."""
        from .runner import journaled_bugs

        return await journaled_bugs(self.control, await self.control.calls())


def _teardown_failure(bugs: list[MockBug], failed: list[Check]) -> str | None:
    """What the test fails with at teardown: the mock's bugs first (they may explain the rest), then
    the unmet expectations; None when there is neither."""
    parts: list[str] = []
    if bugs:
        parts.append(f"rtsip {mock_bug_verdict(bugs)}; set openai_mock.allow_mock_bugs = True if this "
                     "test provokes it on purpose\n" + "\n".join(bug.describe() for bug in bugs))
    if failed:
        parts.append("rtsip expectations not met:\n  " + "\n  ".join(c.describe() for c in failed))
    return "\n\n".join(parts) or None


@asynccontextmanager
async def _mock(sip: bool) -> AsyncIterator[OpenAIMock]:
    state = Path(tempfile.mkdtemp(prefix="rtsip-pytest-"))
    options = SipOptions(state, port=0, workers=2) if sip else None
    async with running_mock(MockConfig(), sip=options) as running, MockClient(running.url) as control:
        mock = OpenAIMock(running, control, state)
        yield mock
        bugs = [] if mock.allow_mock_bugs else await mock.mock_bugs()
        failure = _teardown_failure(bugs, await mock.check())
        if failure is not None:
            pytest.fail(failure, pytrace=False)


@pytest_asyncio.fixture
async def openai_mock() -> AsyncIterator[OpenAIMock]:
    """A fake OpenAI (REST, WebSocket, webhooks, control API) on 127.0.0.1, checked at teardown."""
    async with _mock(sip=False) as mock:
        yield mock


@pytest_asyncio.fixture
async def openai_mock_sip() -> AsyncIterator[OpenAIMock]:
    """The same with the SIP/TLS ingress (``openai_mock_sip.sip_uri``) for real calls."""
    async with _mock(sip=True) as mock:
        yield mock


@pytest_asyncio.fixture
async def softphone(openai_mock_sip: OpenAIMock) -> AsyncIterator[Any]:
    """A softphone that trusts the SIP mock's CA: ``call = await softphone.call(openai_mock_sip.sip_uri)``."""
    from .softphone import Softphone

    assert openai_mock_sip.running.sip is not None
    log = open(openai_mock_sip.state_dir / "softphone.log", "a")  # noqa: SIM115
    try:
        async with Softphone(ca=openai_mock_sip.running.sip.certs.ca, state_dir=openai_mock_sip.state_dir / "phone",
                             stderr=log) as phone:
            yield phone
    finally:
        log.close()


@pytest.fixture
def run_scenario() -> Callable[..., Awaitable[list[Any]]]:
    """``results = await run_scenario("scenarios/forum/03_missing_session_type.yaml")``: one result per variant."""
    from .runner import run_scenario as run_one

    async def run(path: str | Path, **kw: Any) -> list[Any]:
        return [await run_one(s, **kw) for s in expand(load_scenario(path))]

    return run
