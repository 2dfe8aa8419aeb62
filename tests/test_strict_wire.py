"""Only valid JSON in and out, limits the real API has, and our own bugs told apart (issue 15)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from mock_api import wire_json
from mock_api.limits import Hit, Limiter, TokenBucket
from mock_api.realtime.session import SERVER_ERROR_MESSAGE, MockBug, RealtimeSession
from mock_api.running import RunningMock
from tests.realtime_fixtures import Driver, assert_server_event, utterance

AUTH = {"Authorization": "Bearer sk-test"}


async def events_until(sock: aiohttp.ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    got = []
    while True:
        msg = await sock.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = wire_json.loads(msg.data)  # strict: a NaN in anything the mock sends fails here
        assert_server_event(event)
        got.append(event)
        if event["type"] == kind:
            return got


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-2.5E400"])
async def test_nan_and_infinity_are_refused_on_the_socket_and_never_echoed(mock: RunningMock, literal: str) -> None:
    """Written as a constant or as a number that overflows a double: Python would read both as a float."""
    async with aiohttp.ClientSession() as http, http.ws_connect(
            mock.base_url + "/realtime?model=gpt-realtime", headers=AUTH) as sock:
        await events_until(sock, "session.created")
        update = '{"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"speed": X}}}}'
        await sock.send_str(update.replace("X", literal))
        [err] = await events_until(sock, "error")
        assert err["error"]["code"] == "invalid_json" and literal.lstrip("-") in err["error"]["message"]
        # nothing was applied, and the socket still works
        await sock.send_str(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
            "output": {"speed": 1.25}}}}))
        [updated] = await events_until(sock, "session.updated")
        assert updated["session"]["audio"]["output"]["speed"] == 1.25


async def test_deep_nesting_is_a_parse_error_not_a_server_error(mock: RunningMock) -> None:
    deep = '{"a":' * 700 + "1" + "}" * 700  # parses in Python, but no recursive step downstream could take it
    tool = '{"type":"function","name":"deep","parameters":' + deep + "}"
    async with aiohttp.ClientSession() as http, http.ws_connect(
            mock.base_url + "/realtime?model=gpt-realtime", headers=AUTH) as sock:
        await events_until(sock, "session.created")
        for frame in ("[" * 900 + "]" * 900, '{"type":"session.update","session":{"type":"realtime","tools":['
                      + tool + "]}}"):
            await sock.send_str(frame)
            [err] = await events_until(sock, "error")
            assert err["error"]["type"] == "invalid_request_error" and err["error"]["code"] == "invalid_json"
            assert "nested deeper than 128 levels" in err["error"]["message"]


async def test_max_output_tokens_ends_the_response_incomplete(mock: RunningMock) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(
            mock.base_url + "/realtime?model=gpt-realtime", headers=AUTH) as sock:
        await events_until(sock, "session.created")
        await sock.send_str(json.dumps({"type": "response.create", "response": {"max_output_tokens": 1}}))
        got = await events_until(sock, "response.done")
        done = got[-1]["response"]
        assert done["status"] == "incomplete"
        assert done["status_details"]["type"] == "incomplete"
        assert done["status_details"]["reason"] == "max_output_tokens"
        assert done["usage"]["output_tokens"] <= 1
        [item] = done["output"]
        assert item["status"] == "incomplete"
        # a whole reply is far longer than what one token allows
        await sock.send_str(json.dumps({"type": "response.create"}))
        full = (await events_until(sock, "response.done"))[-1]["response"]
        assert full["status"] == "completed" and full["usage"]["output_tokens"] > 10


def test_idle_timeout_without_audio_commits_no_empty_item() -> None:
    d = Driver()
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}}})
    d.send({"type": "response.create"})
    d.advance(30.0)  # the reply ends; no audio ever comes
    assert not d.of("input_audio_buffer.timeout_triggered") and not d.of("input_audio_buffer.committed")
    # once silent audio flows, the timer commits it as the real server does
    d.append_pcm(utterance(0, lead_ms=0, tail_ms=6000), 24000)
    fired = d.of("input_audio_buffer.timeout_triggered")[0]
    assert fired["audio_end_ms"] - fired["audio_start_ms"] >= 100


class ExplodingLimiter(Limiter):
    """A broken collaborator, to make the session's own code raise (a stand-in for any bug of ours)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = TokenBucket(1000)

    def reserve_tokens(self, n: int, now: float) -> Hit | None:
        raise RuntimeError("bug in the mock")


def test_a_bug_inside_the_session_is_a_mock_bug_and_the_real_server_error() -> None:
    s = RealtimeSession(now=0.0, limiter=ExplodingLimiter())
    s.start(0.0)
    out = s.receive(json.dumps({"type": "response.create"}), 0.0)
    bugs = [o for o in out if isinstance(o, MockBug)]
    errors = [o for o in out if isinstance(o, dict)]
    assert len(bugs) == 1 and "bug in the mock" in bugs[0].traceback and bugs[0].where == "receive"
    assert errors[-1]["error"] == {"type": "server_error", "code": None, "message": SERVER_ERROR_MESSAGE,
                                   "param": None, "event_id": None}
    assert "RuntimeError" not in json.dumps(errors)  # internals stay in the journal, not on the wire
