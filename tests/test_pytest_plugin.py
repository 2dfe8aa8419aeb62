"""The plugin as a team would use it: the how-to in docs/pytest.md is run as its own pytest session, and
a session of tests shows one mock reset per test, request lifetimes and the teardown errors."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from harness.expectations import request_problems
from harness.pytest_plugin import OpenAIMock, setting_env
from mock_api.running import free_port
from sipworker import sip_missing

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "pytest.md"


def _split_blocks() -> tuple[list[str], list[str]]:
    """The doc's tests (blocks that define one) and its fragments (shown for reading only)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return [b for b in blocks if "async def test_" in b], [b for b in blocks if "async def test_" not in b]


async def test_openai_mock_fixture_serves_the_sdk(openai_mock: OpenAIMock) -> None:
    call_id = await openai_mock.control.start_call(headers={"X-Claim-Id": "7"})
    client = AsyncOpenAI(api_key="sk-plugin", base_url=openai_mock.base_url, max_retries=0)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    view = await openai_mock.control.call(call_id)
    assert view.state == "active"
    assert openai_mock.webhook_secret.startswith("whsec_")
    await client.close()


def test_howto_runs_as_written(pytester: pytest.Pytester) -> None:
    """The doc's tests, in a fresh pytest via the entry point; its fragments at least parse."""
    tests, fragments = _split_blocks()
    assert len(tests) == 4 and any("openai_mock.configure(faults" in f for f in fragments)
    for fragment in fragments:  # the faults one awaits at top level, as a fragment of a test body
        compile(fragment, "docs/pytest.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    pytester.makepyfile(test_howto="\n\n".join(tests))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    for name in ("examples", "audio_fixtures", "scenarios"):  # "a checkout of rtsip", as the doc says
        (pytester.path / name).symlink_to(ROOT / name)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=len(tests))


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


# ---- one mock per session, reset per test; request expectations with lifetimes -----------------------

LIFETIMES = '''
import aiohttp
import pytest

SEEN = {}


async def post(mock, path, body=None, key="sk-team"):
    async with aiohttp.ClientSession() as http:
        async with http.post(mock.base_url + path, json=body or {},
                             headers={"Authorization": f"Bearer {key}"}) as resp:
            return resp.status, await resp.json()


async def test_a_dirties_the_mock(openai_mock):
    SEEN["url"] = openai_mock.base_url
    openai_mock.configure(api_keys=["sk-other"], faults=["transcription_403"])
    await openai_mock.control.start_call()
    openai_mock.expect_request("/v1/embeddings").respond_with_json({"data": []})


async def test_b_starts_clean_on_the_same_mock(openai_mock, openai_mock_state_dir):
    assert openai_mock.base_url == SEEN["url"]
    assert int(openai_mock.base_url.split(":")[2].split("/")[0]) == PORT
    assert openai_mock.state_dir == openai_mock_state_dir == STATE
    assert await openai_mock.control.calls() == []
    config = await openai_mock.control.config()
    assert config["api_keys"] == ["sk-team"] and config["faults"] == []
    assert (await post(openai_mock, "/embeddings"))[0] == 404


async def test_permanent_and_oneshot_used(openai_mock):
    openai_mock.expect_request("/v1/embeddings", method="POST").respond_with_json({"data": [1]})
    openai_mock.expect_oneshot_request("/v1/moderations", json={"input": "hi"}).respond_with_json({"id": "m1"})
    assert await post(openai_mock, "/embeddings") == (200, {"data": [1]})
    assert await post(openai_mock, "/embeddings") == (200, {"data": [1]})
    assert await post(openai_mock, "/moderations", {"input": "hi", "model": "x"}) == (200, {"id": "m1"})


async def test_oneshot_never_requested(openai_mock):
    openai_mock.expect_oneshot_request("/v1/moderations", method="POST", name="summary").respond_with_json({})


async def test_ordered_in_order(openai_mock):
    for n in (1, 2):
        openai_mock.expect_ordered_request("/v1/responses", json={"n": n}).respond_with_json({"n": n})
    assert [await post(openai_mock, "/responses", {"n": n}) for n in (1, 2)] == [(200, {"n": 1}), (200, {"n": 2})]


async def test_ordered_out_of_order(openai_mock):
    first = openai_mock.expect_ordered_request("/v1/responses", json={"n": 1})
    first.respond_with_json({"n": 1})
    openai_mock.expect_ordered_request("/v1/responses", json={"n": 2}).respond_with_json({"n": 2})
    status, body = await post(openai_mock, "/responses", {"n": 2})
    assert status == 400 and body["error"]["code"] == "stub_out_of_order"
    await post(openai_mock, "/responses", {"n": 1})
    await post(openai_mock, "/responses", {"n": 2})


async def test_unanswered_request_and_missing_response(openai_mock):
    openai_mock.expect_request("/v1/embeddings", json={"model": "small"}).respond_with_json({})
    openai_mock.expect_request("/v1/files")
    assert (await post(openai_mock, "/embeddings", {"model": "large"}))[0] == 404


async def test_mock_bug(openai_mock):
    openai_mock.configure(faults=[{"name": "mock_bug", "event": "response.create"}])
    url = openai_mock.base_url.replace("http", "ws", 1) + "/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http, \\
            http.ws_connect(url, headers={"Authorization": "Bearer sk-team"}) as ws:
        assert (await ws.receive_json())["type"] == "session.created"
        await ws.send_json({"type": "response.create"})
        assert (await ws.receive_json())["error"]["type"] == "server_error"


async def test_z_after_a_bug_the_next_test_is_clean(openai_mock):
    assert await openai_mock.mock_bugs() == []


async def test_z_sip_without_pjsua2(openai_mock_sip):
    raise AssertionError("skipped before it runs")
'''

CONFTEST = '''
import sys

import pytest
from mock_api.config import MockConfig

sys.modules["pjsua2"] = None  # as if the sip extra were not installed: find_spec says None


@pytest.fixture(scope="session")
def openai_mock_config():
    return MockConfig(api_keys=["sk-team"])
'''


def test_one_mock_per_session_with_request_lifetimes_checked_at_teardown(pytester: pytest.Pytester,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets the session's mock reset (to the overridden config, on the port from the environment,
    which wins over the ini file, and the ini's state directory); each broken request expectation or mock bug
    fails its own test at teardown, with a message that says what went wrong."""
    port, ini_port, state = free_port(), free_port(), pytester.path / "mock-state"
    monkeypatch.setenv(setting_env("rtsip_port"), str(port))
    pytester.makepyfile(test_lifetimes=f"PORT = {port}\nimport pathlib\nSTATE = pathlib.Path({str(state)!r})\n"
                        + LIFETIMES)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(f"[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
                     f"rtsip_port = {ini_port}\nrtsip_state_dir = {state}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-rs")
    result.assert_outcomes(passed=9, errors=4, skipped=1)
    assert any(line.startswith("SKIPPED") and line.endswith(sip_missing()) for line in result.outlines)
    errors = {name: _teardown_error(result.outlines, name) for name in (
        "test_oneshot_never_requested", "test_ordered_out_of_order", "test_unanswered_request_and_missing_response",
        "test_mock_bug")}
    assert "oneshot stub 'stub_1' (summary) for POST /v1/moderations was never requested" in errors[
        "test_oneshot_never_requested"]
    assert ("ordered stub 'stub_2' was requested (POST /v1/responses) out of order: 'stub_1' was next"
            in errors["test_ordered_out_of_order"])
    assert "was never requested" not in errors["test_ordered_out_of_order"]  # both were used in the end
    unanswered = errors["test_unanswered_request_and_missing_response"]
    assert "permanent request ANY /v1/files was never given a response" in unanswered
    assert ("no stub answered POST /v1/embeddings (404); closest stub 'stub_1': body.model wanted 'small', "
            "got 'large'") in unanswered
    assert "rtsip mock bug (not your app): RuntimeError(" in errors["test_mock_bug"]
    assert not (state / "sip").exists()  # the one SIP test skipped, so no ingress started


def _teardown_error(lines: list[str], test: str) -> str:
    """The text of the ``ERROR at teardown of <test>`` section of a pytest run's output."""
    start = next(i for i, line in enumerate(lines) if f"ERROR at teardown of {test}" in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("_____")), len(lines))
    return "\n".join(lines[start:end])


async def test_stub_lifetimes_in_process(openai_mock: OpenAIMock) -> None:
    """The fixture in this suite's own loop: a oneshot answers once, then the request is the real 404."""
    openai_mock.expect_oneshot_request("/v1/chat/completions", method="POST").respond_with_json(
        {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "stubbed"}}]})
    client = AsyncOpenAI(api_key="sk-plugin", base_url=openai_mock.base_url, max_retries=0)
    completion = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "stubbed"
    assert await openai_mock.check_requests() == []
    await client.close()


def test_request_problems_names_each_failure() -> None:
    views: list[dict[str, Any]] = [{"id": "s1", "name": None, "lifetime": "oneshot", "active": True,
              "request": {"method": "POST", "path": "/v1/responses"}},
             {"id": "s2", "name": "p", "lifetime": "permanent", "active": True, "request": {}}]
    journal = [{"kind": "http.unknown_route", "data": {"method": "GET", "path": "/v1/x", "closest_stub": None}}]
    assert request_problems(views, journal, []) == [
        "oneshot stub 's1' for POST /v1/responses was never requested",
        "no stub answered GET /v1/x (404)",
    ]
    assert request_problems([], journal, []) == []  # with no stub set, a 404 is the app's business
