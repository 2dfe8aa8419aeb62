"""Shared fixtures: a real mock on 127.0.0.1, a real webhook receiver, the official SDK as client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from openai import AsyncOpenAI

from mock_api import fidelity
from mock_api.client import MockClient
from mock_api.config import MockConfig, RetryPolicy
from mock_api.running import RunningMock, running_mock
from tests.helpers import WebhookReceiver

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay_s=0.05, max_delay_s=0.2, timeout_s=1.0)


@pytest.fixture(autouse=True)
def sdk_parses_every_server_event(tmp_path_factory: pytest.TempPathFactory,
                                  monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fidelity guard for every test: each WebSocket event any mock sends must parse with the SDK.

    The mock (in-process or a child process) validates each event it sends and appends any
    mismatch to the audit file; a test whose run wrote there fails.
    """
    audit = tmp_path_factory.mktemp("audit") / "server-events.jsonl"
    monkeypatch.setenv(fidelity.AUDIT_ENV, str(audit))
    yield
    if audit.exists() and audit.read_text().strip():
        lines = audit.read_text().strip().splitlines()
        pytest.fail(f"{len(lines)} server event(s) the SDK cannot parse; first: {lines[0][:500]}")


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    async with running_mock(MockConfig(retry=FAST_RETRY)) as m:
        yield m


@pytest.fixture
async def control(mock: RunningMock) -> AsyncIterator[MockClient]:
    async with MockClient(mock.url) as client:
        yield client


@pytest.fixture
async def receiver(mock: RunningMock) -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(secret=mock.server.config.webhook_secret or "").start()
    mock.server.config = mock.server.config.model_copy(update={"webhook_url": r.url})
    yield r
    await r.stop()


@pytest.fixture
async def client(mock: RunningMock) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(api_key="sk-test-key", base_url=mock.base_url, max_retries=0)
    yield c
    await c.close()


from tests.realtime_fixtures import realtime_event_validator  # noqa: E402, F401  (fixture re-export)
