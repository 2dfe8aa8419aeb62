"""The plugin's fixture, used the way a team would use it in its own suite."""

from __future__ import annotations

from openai import AsyncOpenAI

from harness.pytest_plugin import OpenAIMock


async def test_openai_mock_fixture_serves_the_sdk(openai_mock: OpenAIMock) -> None:
    call_id = await openai_mock.control.start_call(headers={"X-Claim-Id": "7"})
    client = AsyncOpenAI(api_key="sk-plugin", base_url=openai_mock.base_url, max_retries=0)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    view = await openai_mock.control.call(call_id)
    assert view.state == "active"
    assert openai_mock.webhook_secret.startswith("whsec_")
    await client.close()
