"""Shared fixtures: a real mock on 127.0.0.1, a real webhook receiver, the official SDK as client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from harness.softphone import Softphone
from mock_api import fidelity
from mock_api.client import MockClient
from mock_api.config import MockConfig, RetryPolicy
from mock_api.running import RunningMock, SipOptions, running_mock
from tests.helpers import WebhookReceiver
from tests.sip_helpers import SCRIPT, Receiver

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay_s=0.05, max_delay_s=0.2, timeout_s=1.0)


@pytest.fixture(autouse=True)
def sdk_parses_every_server_event(tmp_path_factory: pytest.TempPathFactory,
                                  monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fidelity guard for every test: each WebSocket event any mock sends must parse with the SDK.

    The mock (in-process or a child process) validates each event it sends and appends any
    mismatch to the audit file; a test whose run wrote there fails.
    """
    audit = tmp_path_factory.mktemp("audit") / "server-events.jsonl"
    monkeypatch.setenv(fidelity.AUDIT_ENV, str(audit))  # mock processes the test starts
    monkeypatch.setattr(fidelity, "audit_path", str(audit))  # mocks running in this process
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


@pytest.fixture
async def sip_stack(tmp_path: Path, request: pytest.FixtureRequest,
                    ) -> AsyncIterator[tuple[RunningMock, Receiver, MockClient]]:
    """The mock with its SIP ingress, a webhook receiver and the control client.  Native frame
    ports unless a test parametrizes ``sip_stack`` indirectly with "python"."""
    config = MockConfig(script=SCRIPT, ring_timeout_s=10)
    media = getattr(request, "param", "native")
    async with running_mock(config, sip=SipOptions(tmp_path / "mock", port=0, workers=2, media=media)) as mock:
        receiver = await Receiver(secret=mock.server.config.webhook_secret or "").start()
        mock.server.config = mock.server.config.model_copy(update={"webhook_url": receiver.url})
        async with MockClient(mock.url) as control:
            yield mock, receiver, control
        await receiver.stop()


@pytest.fixture
async def sip_phone(sip_stack: tuple[RunningMock, Receiver, MockClient], tmp_path: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[Softphone]:
    """A softphone trusting the stack's CA; a module sets PHONE_WORKERS for more than 4 calls at once."""
    mock = sip_stack[0]
    assert mock.sip is not None
    workers = getattr(request.module, "PHONE_WORKERS", 1)
    media = mock.sip.pool.configs[0].media  # the same kind of frame ports as the ingress
    async with Softphone(ca=mock.sip.certs.ca, state_dir=tmp_path / "phone", workers=workers, media=media) as p:
        yield p


from tests.realtime_fixtures import realtime_event_validator  # noqa: E402, F401  (fixture re-export)
