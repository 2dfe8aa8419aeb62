"""Fuzzing over a real socket: 2,000 random and mutated client frames on ONE SDK connection (issue 3, Bad input).

The session-core fuzz (tests/test_realtime_fuzz.py) feeds the core directly; this one goes through
everything an app touches: the official SDK's WebSocket, aiohttp, the adapter, the journal, the
timer pump. Hypothesis runs in a worker thread and each example is one exchange on the event loop
that owns the connection: the fuzzed frame, then a sync frame whose error reply (it names an unknown
event type and carries a fresh event_id) marks the end of everything the fuzzed frame caused.

Checked per frame: no `server_error`, every event parses as the SDK's `RealtimeServerEvent`, every
malformed frame (binary, not JSON, not an object, no/unknown `type`, or rejected by the SDK's own
`RealtimeClientEventParam` in strict mode) gets a real-shaped `error` echoing its `event_id`, and the
socket answers. Afterwards a normal turn still completes on the same connection.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeClientEventParam
from pydantic import TypeAdapter, ValidationError

from mock_api import wire_json
from mock_api.client import MockClient
from mock_api.realtime import events as rt_events
from tests.realtime_fixtures import assert_server_event
from tests.test_realtime_fuzz import VALID, client_events, json_values

EXAMPLES = 2000
CLIENT_EVENT = TypeAdapter(RealtimeClientEventParam)
SDK_TYPES = {"session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
             "output_audio_buffer.clear", "conversation.item.create", "conversation.item.retrieve",
             "conversation.item.delete", "conversation.item.truncate", "response.create", "response.cancel"}
SUPPORTED = set(rt_events.CLIENT_EVENT_TYPES) | set(rt_events.SIP_ONLY_CLIENT_EVENTS)
SCRIPT = {"response_latency_s": 0, "generation_speed": 50, "transcription_delay_s": 0.02}


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    """A WebSocket frame: a valid or mutated event as JSON, sometimes cut short, or junk text/bytes."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "event", "event", "event", "cut", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=48))
    if kind == "text":
        return draw(st.text(max_size=40))
    event = copy.deepcopy(draw(st.sampled_from(VALID))) if kind == "valid" else draw(client_events)
    if isinstance(event, dict) and draw(st.booleans()):
        event["event_id"] = draw(st.text(min_size=1, max_size=12) | st.text(max_size=12) | json_values)
    text = json.dumps(event)
    if kind == "cut":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text


def malformed(frame: str | bytes) -> tuple[bool, Any]:
    """(must the server answer with an error?, the event_id it must echo)."""
    if isinstance(frame, bytes):
        return True, None
    try:
        msg = wire_json.loads(frame)  # JSON as the wire defines it: NaN/Infinity and 129+ levels are not
    except ValueError:
        return True, None
    if not isinstance(msg, dict):
        return True, None
    event_id = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
    etype = msg.get("type")
    if not isinstance(etype, str) or etype not in SUPPORTED:
        return True, event_id
    if etype in SDK_TYPES:
        try:
            CLIENT_EVENT.validate_python(_without_nulls(msg), strict=True)
        except ValidationError:
            return True, event_id
    return False, event_id


def _without_nulls(value: Any) -> Any:
    """Optional fields sent as null count as absent: the session config is checked against the SDK's
    response models, which allow null where the request TypedDicts merely omit the key."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@dataclass
class Exchange:
    """One fuzzed frame on the live connection and everything that came back before the sync reply."""

    conn: Any
    seq: itertools.count[int] = field(default_factory=itertools.count)
    frames_sent: int = 0
    events_seen: int = 0

    async def send(self, frame: str | bytes, timeout: float = 10.0) -> list[dict[str, Any]]:
        marker = f"sync_{next(self.seq)}"
        await self.conn.send_raw(frame)
        await self.conn.send_raw(json.dumps({"type": "fuzz.sync", "event_id": marker}))
        self.frames_sent += 1
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.conn.recv_bytes())
                assert_server_event(event)
                self.events_seen += 1
                if event["type"] == "error" and event["error"]["event_id"] == marker:
                    assert event["error"]["code"] == "invalid_value" and event["error"]["param"] == "type"
                    return got
                got.append(event)


STATS: dict[str, int] = {"malformed": 0, "accepted": 0, "errors": 0}


def check(frame: str | bytes, got: list[dict[str, Any]]) -> None:
    crashes = [e for e in got if e["type"] == "error" and e["error"]["type"] == "server_error"]
    assert not crashes, (frame, crashes)
    errors = [e["error"] for e in got if e["type"] == "error"]
    for err in errors:  # real shape: an invalid_request_error with a message, echoing the frame's event_id
        assert err["type"] == "invalid_request_error" and err["message"], (frame, err)
    must_fail, event_id = malformed(frame)
    STATS["errors"] += bool(errors)
    STATS["malformed"] += must_fail
    STATS["accepted"] += not errors
    if must_fail:
        assert errors, f"no error for malformed frame {frame!r}: {got}"
    for err in errors:
        assert err["event_id"] == event_id, (frame, err)


async def test_fuzz_over_one_real_socket(client: AsyncOpenAI, control: MockClient) -> None:
    STATS.update(dict.fromkeys(STATS, 0))
    call_id = await control.start_call(script=SCRIPT)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    loop = asyncio.get_running_loop()
    async with client.realtime.connect(call_id=call_id) as conn:
        first = json.loads(await conn.recv_bytes())
        assert first["type"] == "session.created"
        ex = Exchange(conn)

        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        @given(frame=frames())
        def one_frame(frame: str | bytes) -> None:
            got = asyncio.run_coroutine_threadsafe(ex.send(frame), loop).result(timeout=15)
            check(frame, got)

        await asyncio.to_thread(one_frame)
        assert ex.frames_sent >= 1000, ex.frames_sent
        # the mix really exercised both sides: frames that must fail, and frames the server took
        assert STATS["malformed"] >= 500 and STATS["accepted"] >= 100, STATS

        # the same connection still serves a normal turn
        await conn.response.cancel()
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"], "instructions": "Be helpful.", "tools": [],
            "tool_choice": "auto", "max_output_tokens": "inf",
            "audio": {"input": {"turn_detection": None}}}, event_id="evt_reset")
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await conn.recv_bytes())
                assert_server_event(event)
                assert event["type"] != "error" or event["error"]["event_id"] != "evt_reset", event
                if event["type"] == "session.updated":
                    assert event["session"]["audio"]["input"]["turn_detection"] is None
                    break
        # an out-of-band response the fuzzer started may still be streaming: its events are told apart from
        # this turn's by conversation_id (None out of band), so no wait is needed for it to finish
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "still there?"}]})
        await conn.response.create()
        turn: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while True:
                event = json.loads(await conn.recv_bytes())
                assert_server_event(event)
                turn.append(event)
                if event["type"] == "response.done" and event["response"]["conversation_id"] is not None:
                    break
        types = [e["type"] for e in turn]
        assert "conversation.item.added" in types
        assert not [e for e in turn if e["type"] == "error"], [e for e in turn if e["type"] == "error"]
        created = next(e for e in turn if e["type"] == "response.created"
                       and e["response"]["conversation_id"] is not None)["response"]
        done = turn[-1]["response"]
        assert done["id"] == created["id"] and done["status"] == "completed"
        assert done["output"][0]["content"][0]["transcript"]
    view = await control.call(call_id)
    assert view.state == "active"  # nothing the fuzzer sent ended the call
    assert len(view.of_kind("ws.client")) >= 2 * ex.frames_sent
