"""The webhook endpoint API (``/v1/webhook_endpoints``) against a real mock, with the official SDK as client.

Test deliveries go to a real local receiver and are verified with the SDK's ``unwrap``/``verify_signature``;
the 24 h overlap of a rotated secret is crossed by driving the store's clock, never by waiting.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from openai import AsyncOpenAI, BadRequestError, InvalidWebhookSignatureError, NotFoundError, OpenAI
from openai.types.webhooks import (
    DeletedWebhookEndpoint,
    LiveTransportIncomingWebhookEvent,
    RealtimeCallIncomingWebhookEvent,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

from mock_api.client import MockClient
from mock_api.running import RunningMock, free_port
from mock_api.webhook_endpoints import (
    DAY_S,
    EVENT_MODELS,
    Endpoint,
    Refused,
    Rules,
    WebhookEndpointStore,
    sample_event,
)
from mock_api.webhook_endpoints_rest import store_of
from tests.helpers import Delivery, WebhookReceiver

KEY = {"Authorization": "Bearer sk-test-key"}
SIP_TYPES = ("realtime.call.incoming", "live.transport.incoming", "live.call.incoming")


class Clock:
    """The store's wall clock, stepped by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(mock: RunningMock) -> Clock:
    c = Clock()
    store_of(mock.server).clock = c
    return c


@pytest.fixture
async def app() -> AsyncIterator[WebhookReceiver]:
    """An app's webhook endpoint on this machine; it learns its secret once the endpoint is created."""
    r = await WebhookReceiver(secret="unknown yet").start()
    yield r
    await r.stop()


@pytest.fixture
async def http(mock: RunningMock) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(mock.base_url + "/") as session:
        yield session


def verifies(d: Delivery, secret: str) -> bool:
    """What an app holding ``secret`` concludes about a delivery (the SDK's own verifier)."""
    try:
        OpenAI(api_key="sk-unused").webhooks.verify_signature(d.body, d.headers, secret=secret)
    except InvalidWebhookSignatureError:
        return False
    return True


async def sample_delivery(client: AsyncOpenAI, app: WebhookReceiver, endpoint_id: str) -> Delivery:
    """``/test`` once, and the delivery the app received for it."""
    before = len(app.deliveries)
    result = await client.webhooks.test(endpoint_id, event_type="realtime.call.incoming")
    assert result.success is True and result.webhook_endpoint_id == endpoint_id
    deliveries = await app.wait(before + 1)
    assert result.status_code == 200
    return deliveries[before]


async def test_create_test_rotate_with_overlap_then_delete(client: AsyncOpenAI, app: WebhookReceiver,
                                                           clock: Clock, control: MockClient) -> None:
    created = await client.webhooks.create(name="voice-dev", url=app.url, event_types=["realtime.call.incoming"])
    assert isinstance(created, WebhookEndpointWithSecret)
    assert created.signing_secret.startswith("whsec_") and created.url == app.url
    assert created.created_at == created.updated_at == int(clock.now)
    assert created.signing_secret_hint and created.signing_secret not in created.signing_secret_hint
    first = created.signing_secret
    app.secret = first

    d = await sample_delivery(client, app, created.id)
    assert d.error is None and isinstance(d.event, RealtimeCallIncomingWebhookEvent)
    assert d.event.data.call_id.startswith("rtc_")
    assert RealtimeCallIncomingWebhookEvent.model_validate_json(d.body).type == "realtime.call.incoming"
    assert verifies(d, first)

    clock.now += 60
    rotated = await client.webhooks.rotate_secret(created.id, keep_old_secret_active_for_24_hours=True)
    second = rotated.signing_secret
    assert second.startswith("whsec_") and second != first
    assert rotated.updated_at == int(clock.now)

    clock.now += DAY_S - 1  # the last second of the overlap: signed with both
    d = await sample_delivery(client, app, created.id)
    assert len(d.headers["webhook-signature"].split()) == 2
    assert verifies(d, first) and verifies(d, second)

    clock.now += 1  # 24 h after the rotation: the old secret has stopped
    d = await sample_delivery(client, app, created.id)
    assert len(d.headers["webhook-signature"].split()) == 1
    assert verifies(d, second) and not verifies(d, first)

    deleted = await client.webhooks.delete(created.id)
    assert isinstance(deleted, DeletedWebhookEndpoint)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "webhook_endpoint.deleted", True)
    with pytest.raises(NotFoundError):
        await client.webhooks.retrieve(created.id)

    kinds = [e["kind"] for e in await control.server_journal() if e["kind"].startswith("webhook_endpoint.")]
    assert kinds == ["webhook_endpoint.created", "webhook_endpoint.tested", "webhook_endpoint.secret_rotated",
                     "webhook_endpoint.tested", "webhook_endpoint.tested", "webhook_endpoint.deleted",
                     "webhook_endpoint.refused"]  # the retrieve after the delete
    journal = json.dumps(await control.server_journal())
    assert first not in journal and second not in journal  # secrets are never journaled


async def test_rotation_without_overlap_stops_the_old_secret_at_once(client: AsyncOpenAI, app: WebhookReceiver,
                                                                     clock: Clock) -> None:
    created = await client.webhooks.create(name="a", url=app.url, event_types=["realtime.call.incoming"])
    rotated = await client.webhooks.rotate_secret(created.id)  # the SDK sends {}: no overlap
    d = await sample_delivery(client, app, created.id)
    assert verifies(d, rotated.signing_secret) and not verifies(d, created.signing_secret)


async def test_the_secret_is_shown_only_by_create_and_rotate(client: AsyncOpenAI, app: WebhookReceiver,
                                                             clock: Clock) -> None:
    created = await client.webhooks.create(name="a", url=app.url, event_types=["realtime.call.incoming"])
    shown = [
        await client.get(f"/webhook_endpoints/{created.id}", cast_to=dict),
        await client.post(f"/webhook_endpoints/{created.id}", body={"name": "b"}, cast_to=dict),
        (await client.get("/webhook_endpoints", cast_to=dict))["data"][0],
    ]
    for body in shown:
        assert "signing_secret" not in body and body["signing_secret_hint"] == created.signing_secret_hint
        WebhookEndpoint.model_validate(body)
    rotated = await client.post(f"/webhook_endpoints/{created.id}/rotate_secret", body={}, cast_to=dict)
    assert WebhookEndpointWithSecret.model_validate(rotated).signing_secret != created.signing_secret


async def test_update_replaces_and_moves_updated_at_only_on_a_real_change(client: AsyncOpenAI, app: WebhookReceiver,
                                                                          clock: Clock, control: MockClient) -> None:
    created = await client.webhooks.create(name="a", url=app.url, event_types=["batch.completed", "batch.failed"])
    clock.now += 10
    same = await client.webhooks.update(created.id, name="a", event_types=["batch.failed", "batch.completed"])
    assert same.updated_at == created.updated_at
    assert (await client.webhooks.update(created.id)).updated_at == created.updated_at
    await client.webhooks.test(created.id, event_type="batch.completed")  # a test is no change either
    assert (await client.webhooks.retrieve(created.id)).updated_at == created.updated_at

    clock.now += 10
    changed = await client.webhooks.update(created.id, event_types=["realtime.call.incoming"])
    assert changed.event_types == ["realtime.call.incoming"]  # the complete new set, not an addition
    assert changed.updated_at == int(clock.now) and changed.name == "a"
    updates = [e["data"] for e in await control.server_journal() if e["kind"] == "webhook_endpoint.updated"]
    assert [u["changed"] for u in updates] == [[], [], ["event_types"]]


async def test_generic_post_and_raw_http_take_the_live_types(client: AsyncOpenAI, app: WebhookReceiver,
                                                             http: aiohttp.ClientSession, clock: Clock) -> None:
    """SDK 3.57 types no ``live.*`` event type; apps send them anyway (the generic post, raw HTTP)."""
    body = {"name": "live", "url": app.url, "event_types": ["live.transport.incoming", "live.transport.incoming"]}
    made = await client.post("/webhook_endpoints", body=body, cast_to=dict)
    assert made["event_types"] == ["live.transport.incoming"] and made["signing_secret"].startswith("whsec_")
    app.secret = made["signing_secret"]
    async with http.post(f"webhook_endpoints/{made['id']}/test", json={"event_type": "live.transport.incoming"},
                         headers=KEY) as resp:
        assert resp.status == 200
        result = await resp.json()
    assert result == {"object": "webhook_endpoint.test", "webhook_endpoint_id": made["id"],
                      "event_type": "live.transport.incoming", "status_code": 200, "success": True}
    [d] = await app.wait(1)
    assert d.error is None and isinstance(d.event, LiveTransportIncomingWebhookEvent)
    assert d.event.data.type == "sip" and d.event.data.session_id.startswith("live_")
    types = await client.webhooks.event_types.list()
    assert set(SIP_TYPES) <= set(types.data) and types.object == "list"


async def test_the_endpoints_http_status_is_the_answer(client: AsyncOpenAI, app: WebhookReceiver,
                                                       clock: Clock) -> None:
    created = await client.webhooks.create(name="a", url=app.url, event_types=["realtime.call.incoming"])
    app.answers = [500]
    result = await client.webhooks.test(created.id, event_type="realtime.call.incoming")
    assert (result.status_code, result.success) == (500, True)
    assert len(await app.wait(1)) == 1  # one attempt: a test is not retried


async def test_an_unreachable_endpoint_is_refused(client: AsyncOpenAI, clock: Clock, control: MockClient) -> None:
    created = await client.webhooks.create(name="a", url=f"http://127.0.0.1:{free_port()}/hook",
                                           event_types=["realtime.call.incoming"])
    with pytest.raises(BadRequestError) as info:
        await client.webhooks.test(created.id, event_type="realtime.call.incoming")
    assert cast(dict[str, Any], info.value.body)["code"] == "webhook_endpoint_unreachable"
    [tested] = [e["data"] for e in await control.server_journal() if e["kind"] == "webhook_endpoint.tested"]
    assert tested["status"] is None and tested["error"].startswith("connection_error")


async def test_list_pages_newest_first(client: AsyncOpenAI, http: aiohttp.ClientSession, app: WebhookReceiver,
                                       clock: Clock) -> None:
    made = []
    for i in range(5):
        made.append((await client.webhooks.create(name=f"e{i}", url=app.url, event_types=["batch.completed"])).id)
    newest = made[::-1]
    page = await client.webhooks.list(limit=2)
    assert [e.id for e in page.data] == newest[:2] and page.has_more is True
    async with http.get("webhook_endpoints", params={"limit": "2", "after": newest[1]}, headers=KEY) as resp:
        raw = await resp.json()
    assert [e["id"] for e in raw["data"]] == newest[2:4]
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (newest[2], newest[3], True)
    assert [e.id async for e in client.webhooks.list(limit=2)] == newest  # the SDK's own paging, page by page
    everything = await client.get("/webhook_endpoints", cast_to=dict)
    assert [e["id"] for e in everything["data"]] == newest and everything["has_more"] is False

    await client.webhooks.delete(newest[1])  # a deleted endpoint still works as a cursor
    after_deleted = await client.webhooks.list(after=newest[1])
    assert [e.id for e in after_deleted.data] == newest[2:]
    empty = await client.get("/webhook_endpoints", cast_to=dict, options={"params": {"after": newest[-1]}})
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def _endpoint_body(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "n", "url": "https://example.com/hook", "event_types": ["realtime.call.incoming"]}
    return {k: v for k, v in {**body, **change}.items() if v is not ...}


CREATE_REFUSALS = [
    ({"name": ...}, "missing_required_parameter", "name"),
    ({"url": ...}, "missing_required_parameter", "url"),
    ({"event_types": ...}, "missing_required_parameter", "event_types"),
    ({"secret": "x"}, "unknown_parameter", "secret"),
    ({"name": 7}, "invalid_type", "name"),
    ({"event_types": "realtime.call.incoming"}, "invalid_type", "event_types"),
    ({"event_types": ["realtime.call.outgoing"]}, "invalid_value", "event_types[0]"),
    ({"event_types": []}, "empty_array", "event_types"),
    ({"event_types": ["realtime.call.incoming", "live.call.incoming"]}, "invalid_value", "event_types[1]"),
    ({"name": ""}, "string_below_min_length", "name"),
    ({"name": "x" * 257}, "string_above_max_length", "name"),
    ({"url": "http://example.com/hook"}, "invalid_url", "url"),
    ({"url": "http://10.0.0.1/hook"}, "invalid_url", "url"),
    ({"url": "ftp://127.0.0.1/hook"}, "invalid_url", "url"),
    ({"url": "/hook"}, "invalid_url", "url"),
    ({"url": "https://127.0.0.1:port/hook"}, "invalid_url", "url"),
    ({"url": "https://example.com/" + "x" * 2048}, "string_above_max_length", "url"),
]


@pytest.mark.parametrize(("change", "code", "param"), CREATE_REFUSALS)
async def test_create_refusals(http: aiohttp.ClientSession, change: dict[str, Any], code: str, param: str) -> None:
    async with http.post("webhook_endpoints", json=_endpoint_body(**change), headers=KEY) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert error["message"]


async def test_refusals_of_an_existing_endpoint(http: aiohttp.ClientSession, client: AsyncOpenAI,
                                                control: MockClient) -> None:
    made = await client.webhooks.create(name="a", url="https://example.com/hook", event_types=["batch.completed"])
    base = f"webhook_endpoints/{made.id}"
    cases: list[tuple[str, str, Any, int, str | None, str | None]] = [
        ("POST", base, {"colour": "red"}, 400, "unknown_parameter", "colour"),
        ("POST", base, {"url": "http://example.com/x"}, 400, "invalid_url", "url"),
        ("POST", base, {"event_types": []}, 400, "empty_array", "event_types"),
        ("POST", base, {"event_types": ["live.call.incoming"]}, 400, "invalid_value", "event_types[0]"),
        ("POST", base, ["name"], 400, "invalid_type", None),
        ("POST", base + "/rotate_secret", {"keep_old_secret_active_for_24_hours": "yes"}, 400, "invalid_type",
         "keep_old_secret_active_for_24_hours"),
        ("POST", base + "/test", {}, 400, "missing_required_parameter", "event_type"),
        ("POST", base + "/test", {"event_type": "call.incoming"}, 400, "invalid_value", "event_type"),
        ("GET", "webhook_endpoints?limit=0", None, 400, "integer_below_min_value", "limit"),
        ("GET", "webhook_endpoints?limit=101", None, 400, "integer_above_max_value", "limit"),
        ("GET", "webhook_endpoints?limit=ten", None, 400, "invalid_type", "limit"),
        ("GET", "webhook_endpoints?after=we_nobody", None, 400, "invalid_value", "after"),
    ]
    for op in ("", "/rotate_secret", "/test"):
        cases.append(("POST", f"webhook_endpoints/we_nobody{op}", {"event_type": "batch.completed"}, 404,
                      "not_found", "webhook_endpoint_id"))
    cases += [(m, "webhook_endpoints/we_nobody", None, 404, "not_found", "webhook_endpoint_id")
              for m in ("GET", "DELETE")]
    for method, path, body, status, code, param in cases:
        async with http.request(method, path, json=body, headers=KEY) as resp:
            error = (await resp.json())["error"]
            assert (resp.status, error["code"], error["param"]) == (status, code, param), (method, path, body)
    refused = [e["data"] for e in await control.server_journal() if e["kind"] == "webhook_endpoint.refused"]
    assert len(refused) == len(cases)
    assert (await client.webhooks.retrieve(made.id)).updated_at == made.updated_at  # nothing refused changed it


async def test_no_key_no_json_no_object(http: aiohttp.ClientSession) -> None:
    async with http.get("webhook_endpoints") as resp:
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "invalid_request_error"
    async with http.post("webhook_endpoints", data=b"{name", headers={**KEY, "Content-Type": "application/json"}) as r:
        assert r.status == 400 and "parse the JSON body" in (await r.json())["error"]["message"]
    async with http.post("webhook_endpoints", json=[1], headers=KEY) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_type"
    async with http.get("webhook_endpoints", headers={**KEY, "Host": "rebound.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "host_not_allowed"  # the app's guards


async def test_the_sdk_maps_refusals_to_its_exceptions(client: AsyncOpenAI) -> None:
    with pytest.raises(BadRequestError) as info:
        await client.webhooks.create(name="a", url="http://example.com/hook", event_types=["batch.completed"])
    assert cast(dict[str, Any], info.value.body)["param"] == "url"
    with pytest.raises(NotFoundError):
        await client.webhooks.rotate_secret("we_nobody")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://127.8.0.1/hook", "http://localhost:9/hook",
                                 "http://[::1]:9/hook", "https://example.com/hook"])
async def test_urls_taken(client: AsyncOpenAI, url: str) -> None:
    """https anywhere; plain http only to this machine (the mock must reach local apps)."""
    made = await client.webhooks.create(name="a", url=url, event_types=["batch.completed"])
    assert made.url == url


# ---- the store itself (sans-I/O): what the server asks per outgoing event ------------------------------------


def _made(store: WebhookEndpointStore, now: float, types: list[str], url: str = "https://example.com/a") -> Endpoint:
    made = store.create({"name": "n", "url": url, "event_types": types}, now)
    assert isinstance(made, Endpoint)
    return made


def test_targets_follow_subscriptions_and_the_overlap() -> None:
    store = WebhookEndpointStore()
    t0 = 1_780_000_000.0
    realtime = _made(store, t0, ["realtime.call.incoming"], "https://example.com/rt")
    live = _made(store, t0, ["live.transport.incoming", "realtime.call.incoming"], "https://example.com/live")
    assert [t.url for t in store.targets("realtime.call.incoming", t0)] == [realtime.url, live.url]
    assert [t.endpoint_id for t in store.targets("live.transport.incoming", t0)] == [live.id]
    assert store.targets("live.call.incoming", t0) == []

    old = live.secret
    store.rotate(live.id, {"keep_old_secret_active_for_24_hours": True}, t0 + 5)
    [during] = store.targets("live.transport.incoming", t0 + 5 + DAY_S - 0.001)
    assert during.secrets == (live.secret, old)  # the newest first
    [after] = store.targets("live.transport.incoming", t0 + 5 + DAY_S)
    assert after.secrets == (live.secret,)

    store.delete(live.id)
    assert store.targets("live.transport.incoming", t0) == []


def test_a_second_overlapping_rotation_keeps_each_old_secret_to_its_own_end() -> None:
    store = WebhookEndpointStore()
    e = _made(store, 0.0, ["batch.completed"])
    first = e.secret
    store.rotate(e.id, {"keep_old_secret_active_for_24_hours": True}, 100.0)
    second = e.secret
    store.rotate(e.id, {"keep_old_secret_active_for_24_hours": True}, 200.0)
    assert e.secrets(150.0 + DAY_S) == (e.secret, second)  # the first's overlap ended at 100 + 24 h
    assert e.secrets(199.0 + DAY_S) == (e.secret, second)
    assert first not in e.secrets(101.0 + DAY_S)
    store.rotate(e.id, {}, 300.0)  # no overlap: every old secret stops
    assert e.secrets(301.0) == (e.secret,)


def test_a_legacy_subscription_survives_updates_but_takes_no_new_subscriber() -> None:
    store = WebhookEndpointStore(rules=Rules(closed_to_new=frozenset()))  # as made before the deprecation
    legacy = _made(store, 0.0, ["live.call.incoming"])
    store.rules = Rules()
    kept = store.update(legacy.id, {"event_types": ["live.call.incoming", "live.transport.incoming"]}, 1.0)
    assert not isinstance(kept, Refused) and kept.changed == ("event_types",)
    assert [t.endpoint_id for t in store.targets("live.call.incoming", 1.0)] == [legacy.id]
    refused = store.create({"name": "n", "url": "https://example.com/b", "event_types": ["live.call.incoming"]}, 2.0)
    assert isinstance(refused, Refused) and refused.param == "event_types[0]"


def test_http_to_loopback_can_be_refused_like_the_real_api() -> None:
    store = WebhookEndpointStore(rules=Rules(http_loopback=False))
    refused = store.create({"name": "n", "url": "http://127.0.0.1:8000/hook", "event_types": ["batch.completed"]}, 0)
    assert isinstance(refused, Refused) and (refused.status, refused.param) == (400, "url")


@pytest.mark.parametrize("event_type", sorted(set(WebhookEndpointStore().event_types()) & set(EVENT_MODELS)))
def test_every_sample_event_validates_as_the_sdks_model(event_type: str) -> None:
    event = sample_event(event_type, 1_780_000_000.0)
    parsed = EVENT_MODELS[event_type].model_validate(event)  # strict validation, not the loose unwrap
    assert parsed.model_dump(exclude_none=True)["type"] == event_type


def test_every_advertised_type_has_a_test_event() -> None:
    for event_type in WebhookEndpointStore().event_types():
        event = sample_event(event_type, 0.0)
        assert event["type"] == event_type and event["data"] and event["id"].startswith("evt_")
