"""Fuzzing the session core: random and mutated client events never crash or wedge it (issue 3, Bad input)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.realtime_fixtures import Driver

VALID: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "x",
                                           "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                                  "threshold": 0.4}},
                                                     "output": {"voice": "ash"}}}},
    {"type": "input_audio_buffer.append", "audio": "AAAAAAAA"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "previous_item_id": "root",
     "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}},
    {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1",
                                                  "output": "{}"}},
    {"type": "conversation.item.retrieve", "item_id": "item_x"},
    {"type": "conversation.item.delete", "item_id": "item_x"},
    {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 10},
    {"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"],
                                             "metadata": {"k": "v"}, "input": [{"type": "item_reference",
                                                                                "id": "item_x"}]}},
    {"type": "response.create"},
    {"type": "response.cancel", "response_id": "resp_x"},
    {"type": "output_audio_buffer.clear"},
]

json_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(
    max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12), inner, max_size=4), max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any] | Any:
    event = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(event) if p]
        if not paths or not isinstance(event, dict):
            break
        path = draw(st.sampled_from(paths))
        parent: Any = event
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
    return event


client_events = mutated() | json_values | st.fixed_dictionaries({"type": st.text(max_size=30)}, optional={
    "event_id": json_values, "session": json_values, "item": json_values, "response": json_values})

SHARED = Driver(transport="sip", config={"type": "realtime"}, script={"response_latency_s": 0})


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(event=client_events, raw=st.booleans(), dt=st.floats(0, 0.5))
def test_random_events_never_crash(event: Any, raw: bool, dt: float) -> None:
    d = SHARED
    text = json.dumps(event) if not raw else json.dumps(event)[: max(1, len(json.dumps(event)) // 2)]
    got = d.send(text) + d.advance(dt)  # every event is validated against the SDK as it is produced
    assert not [e for e in got if e["type"] == "error" and e["error"]["type"] == "server_error"], got
    if not isinstance(event, dict) or (raw and not _is_json(text)):
        assert got and got[0]["type"] == "error"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_normal_turn_after_fuzzing() -> None:
    d = SHARED
    d.advance(10)
    if d.session.active_response_id:
        d.send({"type": "response.cancel"})
    got = d.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"],
                                                        "audio": {"input": {"turn_detection": None}}}})
    assert got[0]["type"] in ("session.updated", "error")
    got = d.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "still there?"}]}})
    assert [e["type"] for e in got] == ["conversation.item.added", "conversation.item.done"]
    got = d.send({"type": "response.create", "response": {"output_modalities": ["text"]}}) + d.advance(5)
    assert got[0]["type"] == "response.created"
    assert next(e for e in got if e["type"] == "response.done")["response"]["status"] == "completed"
