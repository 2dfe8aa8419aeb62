"""The plugin as a team would use it: the how-to in docs/pytest.md is run as its own pytest session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from harness.pytest_plugin import OpenAIMock

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "pytest.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


async def test_openai_mock_fixture_serves_the_sdk(openai_mock: OpenAIMock) -> None:
    call_id = await openai_mock.control.start_call(headers={"X-Claim-Id": "7"})
    client = AsyncOpenAI(api_key="sk-plugin", base_url=openai_mock.base_url, max_retries=0)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    view = await openai_mock.control.call(call_id)
    assert view.state == "active"
    assert openai_mock.webhook_secret.startswith("whsec_")
    await client.close()


def test_howto_runs_as_written(pytester: pytest.Pytester) -> None:
    """The doc's complete test, and its SIP and scenario snippets, in a fresh pytest via the entry point."""
    first, faults, sip, scenario = _blocks()
    assert "openai_mock.configure(faults" in faults  # a fragment, shown for reading only
    code = first + "\n\n" + sip + "\n\n" + scenario
    pytester.makepyfile(test_howto=code)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    for name in ("examples", "audio_fixtures", "scenarios"):  # "a checkout of rtsip", as the doc says
        (pytester.path / name).symlink_to(ROOT / name)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=3)


def test_expectations_fail_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad="""
import pytest

@pytest.mark.asyncio
async def test_unmet(openai_mock):
    openai_mock.expect(call_state="ended")
    await openai_mock.control.start_call()
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*rtsip expectations not met*", "*call_state: expected 'ended', got 'ringing'*"])
