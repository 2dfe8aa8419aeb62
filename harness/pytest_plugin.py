"""pytest plugin (entry point ``rtsip`` via ``pytest11``): a running fake OpenAI per test.

    async def test_my_app(openai_mock):
        call_id = await openai_mock.control.start_call(headers={"X-Claim-Id": "7"})
        ...
        view = await openai_mock.control.call(call_id)
        assert view.state == "active"

More fixtures (softphone, run_scenario, expectations) join as those parts land.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio

from mock_api.client import MockClient
from mock_api.config import MockConfig
from mock_api.running import RunningMock, running_mock


@dataclass
class OpenAIMock:
    """What a test needs: where the mock is, its secret, and the control client."""

    running: RunningMock
    control: MockClient

    @property
    def base_url(self) -> str:
        """Give this to the app as ``OPENAI_BASE_URL``."""
        return self.running.base_url

    @property
    def webhook_secret(self) -> str:
        return self.running.server.config.webhook_secret or ""

    @property
    def journal(self) -> object:
        return self.running.server.journal


@pytest_asyncio.fixture
async def openai_mock() -> AsyncIterator[OpenAIMock]:
    """A fake OpenAI server on 127.0.0.1 (a free port), reset for every test."""
    async with running_mock(MockConfig()) as running, MockClient(running.url) as control:
        yield OpenAIMock(running, control)
