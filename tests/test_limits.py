"""OpenAI-side limits (issue 6 part 3): RPM, concurrent sessions and TPM, answered the real way.

The official SDK is the client over real sockets: a 429 must become ``openai.RateLimitError``
with the ``x-ratelimit-*`` headers, the SDK's own retry must honour ``retry-after``, and every
WebSocket event must parse as ``RealtimeServerEvent`` (the autouse audit in conftest checks it).
The limits module itself is tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI, RateLimitError

from mock_api.client import MockClient, MockControlError
from mock_api.config import ConfigPatch, LimitsConfig, MockConfig
from mock_api.limits import Hit, Limiter, SessionTokens, TokenBucket, duration
from mock_api.running import RunningMock
from mock_api.ws import SESSION_LIMIT_CLOSE
from tests.helpers import until
from tests.realtime_fixtures import assert_server_event

SCRIPT = {"turns": [{"hears": "hello", "says": "Hi there, how can I help?"}],
          "greeting": "Hello, thanks for calling.", "response_latency_s": 0.01, "generation_speed": 50}
FROM = "sip:+15551230000@example.com"


def hits(mock: RunningMock, call_id: str | None = None) -> list[dict[str, Any]]:
    return [e.data for e in mock.server.journal.entries(call_id, "limits.hit")]


async def limits_view(mock: RunningMock) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(mock.url + "/_mock/limits") as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def ringing(control: MockClient) -> str:
    return await control.start_call(from_=FROM)


# ---- the limits module with a fake clock ------------------------------------------------------------


def test_token_bucket_refills_continuously_and_reports_waits() -> None:
    b = TokenBucket(60, window_s=60.0, now=0.0)  # 1 per second
    assert b.remaining(0.0) == 60 and b.reset_s(0.0) == 0.0
    assert all(b.try_take(1, 0.0) for _ in range(60))
    assert not b.try_take(1, 0.0)
    assert b.remaining(0.0) == 0 and b.used(0.0) == 60
    assert b.wait_s(1, 0.0) == pytest.approx(1.0)
    assert b.reset_s(0.0) == pytest.approx(60.0)
    assert b.remaining(0.5) == 0 and b.wait_s(1, 0.5) == pytest.approx(0.5)
    assert b.try_take(1, 1.0) and not b.try_take(1, 1.0)
    assert b.remaining(1000.0) == 60  # capped at the limit
    assert b.wait_s(61, 1000.0) == math.inf
    b.take(100, 1000.0)  # spending that already happened floors at zero
    assert b.remaining(1000.0) == 0
    b.give(500, 1000.0)
    assert b.remaining(1000.0) == 60


def test_durations_print_like_the_real_headers() -> None:
    assert duration(0.02) == "20ms"
    assert duration(0.0) == "0ms"
    assert duration(1.0) == "1s"
    assert duration(1.5) == "1.5s"
    assert duration(360.0) == "6m0s"
    assert duration(61.25) == "1m1.25s"


def test_limiter_requests_sessions_and_hits() -> None:
    lim = Limiter()
    assert not lim.enabled and lim.request(0.0) is None and lim.session("a") is None
    assert lim.request_headers(0.0) == {}
    lim.configure(max_concurrent_sessions=1, requests_per_minute=2, tokens_per_minute=None, window_s=60, now=0.0)
    assert lim.enabled
    assert lim.request(0.0) is None and lim.request(0.0) is None
    hit = lim.request(0.0)
    assert hit is not None and hit.limit == "requests" and hit.value == 2 and hit.used == 2
    assert hit.retry_after_s == pytest.approx(30.0)
    assert hit.message("gpt-realtime").startswith(
        "Rate limit reached for gpt-realtime in organization org-rtsipmock on requests per min (RPM): "
        "Limit 2, Used 2, Requested 1. Please try again in 30s.")
    assert lim.request_headers(0.0) == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0",
                                        "x-ratelimit-reset-requests": "1m0s"}
    assert lim.session("a") is None and lim.session("a") is None  # idempotent per holder
    refused = lim.session("b")
    assert refused is not None and refused.limit == "sessions" and refused.retry_after_s is None
    assert "on concurrent sessions: Limit 1, Used 1, Requested 1" in refused.message()
    lim.end_session("a")
    assert lim.session_full() is None and lim.session("b") is None
    assert lim.hits == {"requests": 1, "sessions": 1}
    # the same cap keeps the bucket's level; a new cap starts full
    lim.configure(max_concurrent_sessions=1, requests_per_minute=2, tokens_per_minute=None, window_s=60, now=1.0)
    assert lim.requests is not None and lim.requests.remaining(1.0) == 0
    lim.configure(max_concurrent_sessions=None, requests_per_minute=3, tokens_per_minute=None, window_s=60, now=1.0)
    assert lim.requests is not None and lim.requests.remaining(1.0) == 3
    lim.refill(1.0)
    assert lim.hits == {}


def test_session_tokens_reserve_settle_and_refuse() -> None:
    off = SessionTokens(None, now=0.0)
    held = off.reserve(10**9, 0.0)  # limits off: never refuses, reports a private 40 000 TPM bucket
    assert not isinstance(held, Hit)
    off.settle(held, 1000, 0.0)
    assert off.rate_limit(0.0) == {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5}

    lim = Limiter()
    lim.configure(max_concurrent_sessions=None, requests_per_minute=None, tokens_per_minute=600, window_s=60,
                  now=0.0)
    a, b = SessionTokens(lim, 0.0), SessionTokens(lim, 0.0)  # two sessions, one organization budget
    held = a.reserve(400, 0.0)
    assert not isinstance(held, Hit)
    assert b.rate_limit(0.0)["remaining"] == 200
    a.settle(held, 300, 0.0)  # the response cost less than reserved: the rest comes back
    assert b.rate_limit(0.0)["remaining"] == 300
    refused = b.reserve(350, 0.0)
    assert isinstance(refused, Hit) and refused.limit == "tokens" and refused.error_type == "tokens"
    assert refused.used == 300 and refused.requested == 350 and refused.retry_after_s == pytest.approx(5.0)
    assert "on tokens per min (TPM): Limit 600, Used 300, Requested 350. Please try again in 5s." in refused.message()
    too_big = b.reserve(601, 0.0)
    assert isinstance(too_big, Hit) and too_big.message().startswith("Request too large for gpt-realtime")
    assert not isinstance(b.reserve(350, 5.0), Hit)  # 5 s at 10/s brought the 50 missing
    assert isinstance(b.reserve(1, 5.0), Hit)


def test_config_patch_merges_limits_and_defaults_are_off() -> None:
    cfg = MockConfig()
    assert cfg.limits == LimitsConfig() and cfg.limits.model_dump() == {
        "max_concurrent_sessions": None, "requests_per_minute": None, "tokens_per_minute": None, "window_s": 60.0}
    cfg = ConfigPatch.model_validate({"limits": {"requests_per_minute": 5}}).apply(cfg)
    cfg = ConfigPatch.model_validate({"limits": {"tokens_per_minute": 100}}).apply(cfg)
    assert (cfg.limits.requests_per_minute, cfg.limits.tokens_per_minute) == (5, 100)
    cfg = ConfigPatch.model_validate({"limits": {"requests_per_minute": None}}).apply(cfg)
    assert (cfg.limits.requests_per_minute, cfg.limits.tokens_per_minute) == (None, 100)
    cfg = ConfigPatch.model_validate({"limits": None}).apply(cfg)
    assert cfg.limits == LimitsConfig()


# ---- requests per minute over REST ---------------------------------------------------------------------


async def test_rpm_cap_raises_rate_limit_error_with_headers(mock: RunningMock, control: MockClient,
                                                           client: AsyncOpenAI) -> None:
    await control.configure(limits={"requests_per_minute": 2})
    call_id = await ringing(control)
    raw = await client.realtime.calls.with_raw_response.accept(call_id, type="realtime")
    assert raw.status_code == 200
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    await client.realtime.calls.refer(call_id, target_uri="tel:+14155550123")
    with pytest.raises(RateLimitError) as info:
        await client.realtime.calls.hangup(call_id)
    err = info.value
    assert err.status_code == 429
    assert err.type == "requests" and err.code == "rate_limit_exceeded" and err.param is None
    assert isinstance(err.body, dict)
    assert err.message == "Error code: 429 - " + err.body["message"]
    assert err.body["message"].startswith("Rate limit reached for gpt-realtime-2.1 in organization org-rtsipmock on "
                                          "requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in ")
    assert err.body["message"].endswith("s. Visit https://platform.openai.com/account/rate-limits to learn more.")
    assert {k: v for k, v in err.body.items() if k != "message"} == {
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    h = err.response.headers
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    assert 1 <= int(h["retry-after"]) <= 30
    assert h["x-request-id"].startswith("req_")
    [hit] = hits(mock, call_id)
    assert hit["limit"] == "requests" and hit["where"] == "rest" and hit["op"] == "hangup"
    assert hit["value"] == 2 and hit["used"] == 2 and hit["requested"] == 1
    statuses = [e.data["status"] for e in mock.server.journal.entries(call_id, "rest.response")]
    assert statuses == [200, 200, 429]
    view = await limits_view(mock)
    assert view["requests"]["limit"] == 2 and view["hits"] == {"requests": 1}


async def test_sdk_retry_honours_retry_after(mock: RunningMock, control: MockClient) -> None:
    await control.configure(limits={"requests_per_minute": 1, "window_s": 1.0})  # one request a second
    call_id = await ringing(control)
    retrying = AsyncOpenAI(api_key="sk-test-key", base_url=mock.base_url, max_retries=2)
    try:
        await retrying.realtime.calls.accept(call_id, type="realtime")
        t0 = time.monotonic()
        await retrying.realtime.calls.hangup(call_id)  # 429 retry-after: 1, then the SDK's retry succeeds
        waited = time.monotonic() - t0
    finally:
        await retrying.close()
    assert 0.9 <= waited < 5.0
    responses = [e.data for e in mock.server.journal.entries(call_id, "rest.response")]
    assert [r["status"] for r in responses] == [200, 429, 200]
    [hit] = hits(mock, call_id)
    assert hit["limit"] == "requests" and hit["retry_after_s"] <= 1.0
    assert (await control.call(call_id)).state == "ended"


# ---- concurrent sessions ------------------------------------------------------------------------------------


async def test_session_cap_answers_accept_429_and_recovers(mock: RunningMock, control: MockClient,
                                                          client: AsyncOpenAI) -> None:
    await control.configure(limits={"max_concurrent_sessions": 1})
    first, second = await ringing(control), await ringing(control)
    await client.realtime.calls.accept(first, type="realtime")
    with pytest.raises(RateLimitError) as info:
        await client.realtime.calls.accept(second, type="realtime", model="gpt-realtime")
    err = info.value
    assert err.status_code == 429 and err.type == "requests" and err.code == "rate_limit_exceeded"
    assert "on concurrent sessions: Limit 1, Used 1, Requested 1" in err.message
    assert "retry-after" not in err.response.headers
    assert (await control.call(second)).state == "ringing"  # nothing happened to the call: accept again later
    [hit] = hits(mock, second)
    assert hit["limit"] == "sessions" and hit["where"] == "accept" and hit["retry_after_s"] is None
    await client.realtime.calls.hangup(first)
    await client.realtime.calls.accept(second, type="realtime")
    assert (await control.call(second)).state == "active"
    assert (await limits_view(mock))["sessions"] == {"limit": 1, "active": 1}


async def test_model_socket_over_session_cap_gets_error_then_1013(mock: RunningMock, control: MockClient,
                                                                 client: AsyncOpenAI) -> None:
    await control.configure(limits={"max_concurrent_sessions": 1})
    call_id = await ringing(control)
    await client.realtime.calls.accept(call_id, type="realtime")
    auth = {"Authorization": "Bearer sk-test-key"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(mock.url + "/v1/realtime?model=gpt-realtime", headers=auth) as sock:
            msg = await sock.receive_json()
            assert_server_event(msg)
            assert msg["type"] == "error"
            assert msg["error"]["type"] == "requests" and msg["error"]["code"] == "rate_limit_exceeded"
            assert "on concurrent sessions: Limit 1, Used 1" in msg["error"]["message"]
            closing = await sock.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert sock.close_code == SESSION_LIMIT_CLOSE == 1013
        server_hits = hits(mock)
        assert [(h["limit"], h["where"]) for h in server_hits] == [("sessions", "websocket")]
        # the server journals its close once the closing handshake is over
        close = await until(lambda: [e.data for e in mock.server.journal.entries(None, "ws.close")],
                            what="the journaled close")
        assert close == [{"code": 1013, "reason": "requests.rate_limit_exceeded"}]
        # the call ends; a ?model= socket now holds the only slot, and an accept is refused meanwhile
        await client.realtime.calls.hangup(call_id)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            other = await ringing(control)
            with pytest.raises(RateLimitError):
                await client.realtime.calls.accept(other, type="realtime")
        async def slot_free() -> bool:  # the slot frees when the socket closes
            return bool((await limits_view(mock))["sessions"]["active"] == 0)

        await until(slot_free, what="the session slot to free")
        await client.realtime.calls.accept(other, type="realtime")


# ---- tokens per minute -----------------------------------------------------------------------------------------


async def _respond(conn: Any) -> list[dict[str, Any]]:
    await conn.response.create(response={"output_modalities": ["text"]})
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            event = json.loads(await conn.recv_bytes())
            got.append(event)
            if event["type"] == "rate_limits.updated":
                return got


async def test_token_budget_reported_and_response_over_it_fails(mock: RunningMock, control: MockClient,
                                                               client: AsyncOpenAI) -> None:
    mock.server.configure(ConfigPatch(script=SCRIPT, limits=LimitsConfig(tokens_per_minute=4000, window_s=3600)))
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        first = await _respond(conn)
        done = next(e for e in first if e["type"] == "response.done")
        assert done["response"]["status"] == "completed"
        spent = done["response"]["usage"]["total_tokens"]
        [rl] = first[-1]["rate_limits"]
        assert rl["name"] == "tokens" and rl["limit"] == 4000
        assert 4000 - spent <= rl["remaining"] <= 4000 - spent + 5  # 4000/h refills ~1 token a second
        assert rl["reset_seconds"] == pytest.approx((4000 - rl["remaining"]) * 0.9, abs=5)
        remaining = rl["remaining"]

        # a user message nearly as large as the budget left: with the context it no longer fits
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "x" * 4 * (remaining - 50)}]})
        refused = await _respond(conn)
        kinds = [e["type"] for e in refused if not e["type"].startswith("conversation.item")]
        assert kinds == ["response.created", "response.done", "rate_limits.updated"]
        failed = next(e for e in refused if e["type"] == "response.done")["response"]
        assert failed["status"] == "failed" and failed["output"] == []
        assert failed["status_details"]["type"] == "failed"
        error = failed["status_details"]["error"]
        assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
        assert error["message"].startswith(
            f"Rate limit reached for gpt-realtime in organization org-rtsipmock on tokens per min (TPM): "
            f"Limit 4000, Used {4000 - remaining}")
        assert failed["usage"]["total_tokens"] == 0
        [after] = refused[-1]["rate_limits"]
        assert after["remaining"] >= remaining  # nothing was spent
        for e in first + refused:
            assert_server_event(e)
    [hit] = await until(lambda: hits(mock), what="the journaled limit hit")
    assert hit["limit"] == "tokens" and hit["where"] == "response" and hit["value"] == 4000
    assert hit["requested"] > hit["value"] - hit["used"]
    assert hit["response_id"] == failed["id"]


async def test_token_budget_is_shared_by_sessions(mock: RunningMock, client: AsyncOpenAI) -> None:
    mock.server.configure(ConfigPatch(script=SCRIPT, limits=LimitsConfig(tokens_per_minute=100000, window_s=3600)))
    async with client.realtime.connect(model="gpt-realtime") as a, client.realtime.connect(model="gpt-realtime") as b:
        assert (await a.recv()).type == "session.created" and (await b.recv()).type == "session.created"
        first = await _respond(a)
        spent = next(e for e in first if e["type"] == "response.done")["response"]["usage"]["total_tokens"]
        second = await _respond(b)
        spent += next(e for e in second if e["type"] == "response.done")["response"]["usage"]["total_tokens"]
        [rl] = second[-1]["rate_limits"]
        assert 100000 - spent <= rl["remaining"] <= 100000 - spent + 5


# ---- off by default -------------------------------------------------------------------------------------------------


async def test_limits_off_by_default_change_nothing(mock: RunningMock, control: MockClient,
                                                   client: AsyncOpenAI) -> None:
    assert (await control.config())["limits"] == {"max_concurrent_sessions": None, "requests_per_minute": None,
                                                  "tokens_per_minute": None, "window_s": 60.0}
    mock.server.configure(ConfigPatch(script=SCRIPT))
    ids = [await ringing(control) for _ in range(5)]
    for call_id in ids:
        raw = await client.realtime.calls.with_raw_response.accept(call_id, type="realtime")
        assert raw.status_code == 200 and not any(k.lower().startswith("x-ratelimit") for k in raw.headers)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        events = await _respond(conn)
        [rl] = events[-1]["rate_limits"]
        assert rl["limit"] == 40000  # the reported, never enforced, default budget
        assert next(e for e in events if e["type"] == "response.done")["response"]["status"] == "completed"
    for call_id in ids:
        await client.realtime.calls.hangup(call_id)
    assert not hits(mock) and all(not hits(mock, c) for c in ids)
    view = await limits_view(mock)
    assert view["requests"] is None and view["tokens"] is None and view["hits"] == {}
    assert view["sessions"]["limit"] is None


async def test_bad_limits_config_is_a_400(control: MockClient) -> None:
    with pytest.raises(MockControlError) as info:
        await control.configure(limits={"requests_per_minute": 0})
    assert info.value.status == 400
    with pytest.raises(MockControlError):
        await control.configure(limits={"bogus": 1})
