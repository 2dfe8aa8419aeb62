"""Stubs and built-ins for the rest of the OpenAI API (chat completions, responses, models, anything
stubbed), through the official SDK against a real mock on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import requests
from openai import AsyncOpenAI
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from harness.scenario import ScenarioError, load_scenario
from mock_api.client import MockClient
from mock_api.control_models import Stub
from mock_api.realtime.script import Script
from mock_api.running import RunningMock
from mock_api.stubs import MAX_STUBS, Entry, RequestFacts, decide, install, mismatches

DEFAULT_REPLY = Script().default_reply
AUTH = {"Authorization": "Bearer sk-test-key"}


async def _raw(mock: RunningMock, method: str, path: str, json: Any = None, data: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, Mapping[str, str]]:
    async with aiohttp.ClientSession() as http, http.request(method, mock.url + path, json=json, data=data,
                                                             headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers.copy()  # names in any case


async def _put(mock: RunningMock, stubs: Any) -> tuple[int, Any]:
    status, body, _ = await _raw(mock, "PUT", "/_mock/stubs", json=stubs)
    return status, body


async def _entries(control: MockClient, kind: str) -> list[dict[str, Any]]:
    return [e for e in await control.server_journal() if e["kind"] == kind]


def _chat_body(content: str) -> dict[str, Any]:
    return {"id": "chatcmpl-stub", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


# ---- built-ins ------------------------------------------------------------------------------------------


async def test_chat_completions_builtin_plain_and_streamed(client: AsyncOpenAI, control: MockClient) -> None:
    messages: Any = [{"role": "user", "content": "Summarise the call."}]
    plain = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    ChatCompletion.model_validate(plain.to_dict())  # the SDK builds without checking; check every field
    assert plain.choices[0].message.content == DEFAULT_REPLY
    assert plain.usage is not None and plain.usage.total_tokens > 0

    await control.configure(script={"default_reply": "The caller asked about policy 5665-2870."})
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    for c in chunks:
        ChatCompletionChunk.model_validate(c.to_dict())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "The caller asked about policy 5665-2870."
    assert chunks[-1].usage is not None and not chunks[-1].choices
    async with client.chat.completions.stream(model="gpt-4o-mini", messages=messages) as helper:
        final = await helper.get_final_completion()  # the SDK's accumulating helper
    assert final.choices[0].message.content == "The caller asked about policy 5665-2870."
    hits = await _entries(control, "builtin.hit")
    assert [h["data"]["stream"] for h in hits] == [False, True, True]
    assert hits[0]["data"]["body"]["messages"] == messages


async def test_responses_builtin_plain_and_streamed(client: AsyncOpenAI) -> None:
    plain = await client.responses.create(model="gpt-4o-mini", input="Summarise the call.")
    Response.model_validate(plain.to_dict())
    assert plain.output_text == DEFAULT_REPLY and plain.status == "completed"

    raw = await client.responses.create(model="gpt-4o-mini", input="Summarise the call.", stream=True)
    events = [e async for e in raw]
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.to_dict())
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == DEFAULT_REPLY

    async with client.responses.stream(model="gpt-4o-mini", input="Summarise the call.") as helper:
        final = await helper.get_final_response()  # the SDK's accumulating helper checks the event order
    assert final.output_text == DEFAULT_REPLY


async def test_models_list_and_retrieve(client: AsyncOpenAI, mock: RunningMock) -> None:
    ids = [m.id async for m in client.models.list()]
    assert {"gpt-realtime", "whisper-1", "gpt-4o-mini"} <= set(ids)
    assert (await client.models.retrieve("gpt-realtime")).id == "gpt-realtime"
    with pytest.raises(openai.NotFoundError) as exc:
        await client.models.retrieve("gpt-no-such-model")
    assert exc.value.code == "model_not_found"
    azure = AsyncOpenAI(api_key="sk-test-key", base_url=mock.url + "/openai/v1", max_retries=0)
    try:
        reply = await azure.chat.completions.create(model="my-deployment", messages=[{"role": "user", "content": "hi"}])
    finally:
        await azure.close()
    assert reply.choices[0].message.content == DEFAULT_REPLY


async def test_builtins_want_a_key_and_json(mock: RunningMock) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    status, answer, _ = await _raw(mock, "POST", "/v1/chat/completions", json=body)
    assert status == 401 and "You didn't provide an API key" in answer["error"]["message"]
    status, answer, _ = await _raw(mock, "POST", "/v1/chat/completions", data=b'{"model":',
                                   headers={**AUTH, "Content-Type": "application/json"})
    assert status == 400 and "could not parse the JSON body" in answer["error"]["message"]
    status, answer, _ = await _raw(mock, "POST", "/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers=AUTH)
    assert (status, answer["error"]["param"]) == (400, "messages")


async def test_plain_http_clients_read_json(mock: RunningMock) -> None:
    """Apps that skip the SDK: ``requests`` and its ``.json()``."""
    await _put(mock, [{"request": {"method": "POST", "path": "/v1/embeddings"},
                       "response": {"body": {"object": "list", "data": []}}}])
    chat = await asyncio.to_thread(requests.post, mock.base_url + "/chat/completions", headers=AUTH, timeout=10,
                                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.headers["Content-Type"].startswith("application/json")
    assert chat.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY
    stubbed = await asyncio.to_thread(requests.post, mock.base_url + "/embeddings", headers=AUTH, timeout=10,
                                      json={"model": "text-embedding-3-small", "input": "x"})
    assert stubbed.json() == {"object": "list", "data": []}


# ---- stubs ------------------------------------------------------------------------------------------------


async def test_oneshot_body_subset_stub_answers_once_then_falls_through(
        client: AsyncOpenAI, mock: RunningMock, control: MockClient) -> None:
    status, answer = await _put(mock, [{
        "name": "summary", "lifetime": "oneshot",
        "request": {"method": "post", "path": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "metadata": {"purpose": "summary"}}},
        "response": {"body": _chat_body("Stubbed summary.")}}])
    assert status == 200 and answer["stubs"][0]["id"] == "stub_1"
    messages: Any = [{"role": "user", "content": "Summarise."}]
    other = await client.chat.completions.create(model="gpt-4o", messages=messages, metadata={"purpose": "summary"})
    assert other.choices[0].message.content == DEFAULT_REPLY  # body.model differs: the built-in answers
    hit = await client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                               metadata={"purpose": "summary", "call": "rtc_1"})
    assert hit.choices[0].message.content == "Stubbed summary."
    again = await client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                 metadata={"purpose": "summary"})
    assert again.choices[0].message.content == DEFAULT_REPLY
    _, listed, _ = await _raw(mock, "GET", "/_mock/stubs")
    assert [(s["id"], s["hits"], s["active"]) for s in listed["stubs"]] == [("stub_1", 1, False)]
    [entry] = await _entries(control, "stub.hit")
    assert (entry["data"]["id"], entry["data"]["name"], entry["data"]["status"]) == ("stub_1", "summary", 200)
    assert entry["data"]["body"]["metadata"]["call"] == "rtc_1"


async def test_stub_for_an_endpoint_the_mock_lacks(client: AsyncOpenAI, mock: RunningMock) -> None:
    vector = {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}
    await _put(mock, [{"request": {"path": "/v1/embeddings"},
                       "response": {"body": {"object": "list", "data": [vector], "model": "text-embedding-3-small",
                                             "usage": {"prompt_tokens": 2, "total_tokens": 2}}}}])
    for _ in range(2):  # permanent: answers every time
        got = await client.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
        CreateEmbeddingResponse.model_validate(got.to_dict())
        assert got.data[0].embedding == [0.1, 0.2]
    status, answer, _ = await _raw(mock, "POST", "/v1/embeddings", json={"input": "x"})
    assert status == 401 and answer["error"]["message"].startswith("You didn't provide an API key")


async def test_streamed_stub_parses_with_the_sdk(client: AsyncOpenAI, mock: RunningMock) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"data": {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}}

    await _put(mock, [{"request": {"path": "/v1/chat/completions", "body": {"stream": True}},
                       "response": {"stream": [chunk({"role": "assistant", "content": "Hel"}),
                                               chunk({"content": "lo."}), chunk({}, "stop")]}}])
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                                  stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "Hello."


async def test_ordered_stubs_out_of_order(client: AsyncOpenAI, mock: RunningMock, control: MockClient) -> None:
    def moderation(flagged: bool) -> dict[str, Any]:
        return {"id": "modr-1", "model": "omni-moderation-latest",
                "results": [{"flagged": flagged, "categories": {}, "category_scores": {}}]}

    await _put(mock, [
        {"id": "first", "lifetime": "ordered", "request": {"path": "/v1/moderations", "body": {"input": "one"}},
         "response": {"body": moderation(False)}},
        {"id": "second", "lifetime": "ordered", "request": {"path": "/v1/moderations", "body": {"input": "two"}},
         "response": {"body": moderation(True)}},
    ])
    with pytest.raises(openai.BadRequestError) as exc:
        await client.moderations.create(input="two")
    assert exc.value.code == "stub_out_of_order"
    assert "'second' was requested out of order" in exc.value.message and "'first' is next" in exc.value.message
    [wrong] = await _entries(control, "stub.out_of_order")
    assert (wrong["data"]["id"], wrong["data"]["expected"]["id"]) == ("second", "first")
    assert not (await client.moderations.create(input="one")).results[0].flagged
    assert (await client.moderations.create(input="two")).results[0].flagged
    with pytest.raises(openai.NotFoundError):  # both used up
        await client.moderations.create(input="two")


async def test_headers_and_delay(mock: RunningMock) -> None:
    await _put(mock, [{"request": {"method": "GET", "path_regex": r"/v1/files/file-\w+", "query": {"limit": "2"},
                                   "headers": {"X-Tenant": "acme"}},
                       "response": {"status": 202, "body": {"ok": True}, "headers": {"X-Stub": "yes"},
                                    "delay_s": 0.3}}])
    started = time.monotonic()
    status, answer, headers = await _raw(mock, "GET", "/v1/files/file-abc?limit=2",
                                         headers={**AUTH, "x-tenant": "acme"})
    assert time.monotonic() - started >= 0.3  # a lower bound only
    assert (status, answer, headers["X-Stub"]) == (202, {"ok": True}, "yes")
    assert headers["Server"] == "cloudflare" and headers["x-request-id"].startswith("req_")
    status, _, _ = await _raw(mock, "GET", "/v1/files/file-abc?limit=2", headers={**AUTH, "x-tenant": "other"})
    assert status == 404


async def test_unmatched_answers_the_real_404_and_names_the_closest_stub(
        mock: RunningMock, control: MockClient) -> None:
    await _put(mock, [
        {"id": "speech", "request": {"method": "POST", "path": "/v1/audio/speech"}},
        {"id": "small", "request": {"method": "POST", "path": "/v1/embeddings",
                                    "body": {"model": "text-embedding-3-small"}}},
    ])
    status, answer, _ = await _raw(mock, "POST", "/v1/embeddings", json={"model": "text-embedding-3-large"},
                                   headers=AUTH)
    assert status == 404
    assert answer == {"error": {"message": "Invalid URL (POST /v1/embeddings)", "type": "invalid_request_error",
                                "param": None, "code": None}}
    last = (await control.server_journal())[-1]
    assert last["kind"] == "http.unknown_route"
    assert last["data"]["closest_stub"] == {"id": "small", "name": None, "failed": [
        {"field": "body.model", "expected": "text-embedding-3-small", "actual": "text-embedding-3-large"}]}
    # a known path with the wrong method stays a 404, not a 405
    status, answer, _ = await _raw(mock, "GET", "/v1/realtime/calls/rtc_x/accept", headers=AUTH)
    assert (status, answer["error"]["message"]) == (404, "Invalid URL (GET /v1/realtime/calls/rtc_x/accept)")


@pytest.mark.parametrize(("body", "param", "words"), [
    (b'[{"request": ', None, "could not parse the JSON body"),
    (b'[{"lifetime": "forever", "request": {}}]', "stubs[0].lifetime", "'permanent', 'oneshot' or 'ordered'"),
    (b'[{"request": {}}, {"request": {"pth": "/v1/x"}}]', "stubs[1].request.pth", "valid keys of"),
    (b'[{"request": {"path_regex": "("}}]', "stubs[0].request.path_regex", "not a valid regular expression"),
    (b'[{"request": {"path_regex": "' + b"a" * 2049 + b'"}}]', "stubs[0].request.path_regex", "at most 2048"),
    (b'[{"request": {"path": "v1/x"}}]', "stubs[0].request.path", "should match pattern"),
    (b'[{"request": {}, "response": {"status": 999}}]', "stubs[0].response.status", "less than or equal to 599"),
    (b'[{"id": "a", "request": {}}, {"id": "a", "request": {}}]', "stubs[1].id", "already used"),
    (b'[{"response": {}}]', "stubs[0].request", "field required"),
    (b'"stub"', None, "expected a list of stubs"),
])
async def test_bad_stub_bodies_name_the_field(mock: RunningMock, body: bytes, param: str | None, words: str) -> None:
    await _put(mock, [{"id": "kept", "request": {"path": "/v1/embeddings"}}])
    status, answer, _ = await _raw(mock, "PUT", "/_mock/stubs", data=body,
                                   headers={"Content-Type": "application/json"})
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert words in answer["error"]["message"]
    _, listed, _ = await _raw(mock, "GET", "/_mock/stubs")
    assert [s["id"] for s in listed["stubs"]] == ["kept"]  # nothing half-applied


async def test_add_delete_and_reset(mock: RunningMock, control: MockClient) -> None:
    await _put(mock, {"stubs": [{"id": "a", "request": {"path": "/v1/a"}}]})
    status, answer, _ = await _raw(mock, "POST", "/_mock/stubs", json=[{"request": {"path": "/v1/b"}}])
    assert status == 200 and [s["id"] for s in answer["stubs"]] == ["a", "stub_1"]
    status, answer, _ = await _raw(mock, "POST", "/_mock/stubs", json=[{"id": "a", "request": {}}])
    assert (status, answer["error"]["param"]) == (400, "stubs[0].id")
    status, answer, _ = await _raw(mock, "DELETE", "/_mock/stubs")
    assert (status, answer) == (200, {"stubs": []})
    await _put(mock, [{"id": "c", "request": {"path": "/v1/c"}}])
    await control.reset()
    _, listed, _ = await _raw(mock, "GET", "/_mock/stubs")
    assert listed == {"stubs": []}


async def test_the_stub_list_is_bounded_and_a_refused_load_changes_nothing(mock: RunningMock) -> None:
    status, _ = await _put(mock, [{"request": {"path": f"/v1/s{i}"}} for i in range(MAX_STUBS)])
    assert status == 200
    status, answer, _ = await _raw(mock, "POST", "/_mock/stubs", json=[{"request": {"path": "/v1/one-more"}}])
    assert (status, answer["error"]["param"], answer["error"]["code"]) == (400, "stubs", "invalid_value")
    assert f"at most {MAX_STUBS}" in answer["error"]["message"]
    _, listed, _ = await _raw(mock, "GET", "/_mock/stubs")
    assert len(listed["stubs"]) == MAX_STUBS
    status, _ = await _put(mock, [{"request": {}}] * (MAX_STUBS + 1))
    assert status == 400


# ---- matching without I/O ----------------------------------------------------------------------------


def test_matching_is_a_pure_function() -> None:
    stub = Stub.model_validate({"request": {"method": "POST", "path": "/v1/x", "body": {"n": 1, "tags": ["a"]}}})
    azure = RequestFacts("POST", "/openai/v1/x", body={"n": 1, "tags": ["a"], "more": 2}, json_ok=True)
    assert mismatches(stub, azure) == []
    wrong = RequestFacts("POST", "/v1/x", body={"n": True, "tags": ["a", "b"]}, json_ok=True)
    assert [m.field for m in mismatches(stub, wrong)] == ["body.n", "body.tags"]  # true is not 1
    entry = Entry(stub.model_copy(update={"id": "s"}))
    assert decide([entry], azure).entry is entry  # type: ignore[union-attr]
    assert decide([entry], wrong).closest is entry  # type: ignore[union-attr]


# ---- scenarios ----------------------------------------------------------------------------------------


SCENARIO = """\
name: summary stub
app: {command: [python3, app.py]}
calls: [{}]
mock:
  stubs:
    - name: summary
      lifetime: oneshot
      request: {method: POST, path: /v1/chat/completions}
      response:
        body: {id: chatcmpl-1, object: chat.completion, created: 1, model: gpt-4o-mini,
               choices: [{index: 0, finish_reason: stop, message: {role: assistant, content: From the scenario.}}]}
"""


async def test_scenario_stubs_load_and_apply(tmp_path: Path, client: AsyncOpenAI, mock: RunningMock) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(SCENARIO)
    scenario = load_scenario(file)
    assert [(s.name, s.lifetime) for s in scenario.mock.stubs] == [("summary", "oneshot")]
    install(mock.server, scenario.mock.stubs)  # what the runner does with them
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "From the scenario."

    file.write_text(SCENARIO.replace("lifetime: oneshot", "lifetime: forever"))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(file)
    assert exc.value.line == 7 and "mock.stubs[0].lifetime" in exc.value.detail
