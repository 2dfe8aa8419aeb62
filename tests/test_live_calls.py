"""One call, two surfaces: dual emission of the incoming-call webhooks and GPT-Live's call controls
(``/v1/live/sessions/{live_…}/accept|reject|refer|hangup``), against a real mock over real HTTP, with the SDK's
typed methods, its generic ``client.post(..., cast_to=dict)`` and raw aiohttp."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from mock_api.client import MockClient
from mock_api.running import RunningMock
from tests.helpers import WebhookReceiver

LIVE_SESSION: dict[str, Any] = {"type": "live", "model": "gpt-live-1.1", "instructions": "You are Alex."}
ALL_EVENTS = ["realtime.call.incoming", "live.transport.incoming", "live.call.incoming"]


async def _call(control: MockClient) -> tuple[str, str]:
    call_id = await control.start_call()
    return call_id, (await control.call(call_id)).live_id


async def test_one_call_fires_every_subscribed_event(mock: RunningMock, control: MockClient,
                                                     receiver: WebhookReceiver) -> None:
    await control.configure(webhook_events=ALL_EVENTS)
    call_id, live_id = await _call(control)
    deliveries = await receiver.wait(3)
    assert all(d.error is None for d in deliveries)  # each one signed, verified by the SDK's unwrap
    by_type = {d.event.type: d.event for d in deliveries}
    assert sorted(by_type) == sorted(ALL_EVENTS)
    assert by_type["realtime.call.incoming"].data.call_id == call_id
    transport = by_type["live.transport.incoming"].data
    assert transport.session_id == live_id and transport.type == "sip" and live_id.startswith("live_")
    assert [h.name for h in transport.sip_headers][:2] == ["From", "To"]
    legacy = by_type["live.call.incoming"]
    assert legacy.data.session_id == live_id and "type" not in legacy.data.model_dump(exclude_unset=True)
    assert len({d.event.id for d in deliveries}) == 3  # its own event id each
    assert len({d.headers["webhook-id"] for d in deliveries}) == 3


async def test_the_default_subscription_is_realtime_only(control: MockClient, receiver: WebhookReceiver) -> None:
    await _call(control)
    [only] = await receiver.wait(1)
    assert only.event.type == "realtime.call.incoming"
    await control.start_call()
    assert [d.event.type for d in await receiver.wait(2)] == ["realtime.call.incoming"] * 2


async def test_a_live_accept_wins_and_realtime_loses(mock: RunningMock, client: AsyncOpenAI,
                                                     control: MockClient) -> None:
    call_id, live_id = await _call(control)
    assert await client.live.sessions.accept(live_id, session=LIVE_SESSION) is None  # type: ignore[arg-type,func-returns-value]
    view = await control.call(call_id)
    assert (view.state, view.surface, view.accept_body) == ("active", "live", {"session": LIVE_SESSION})
    with pytest.raises(openai.NotFoundError) as exc:
        await client.realtime.calls.accept(call_id, type="realtime")
    assert exc.value.code == "call_id_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(call_id)
    async with aiohttp.ClientSession() as http, http.get(
            f"{mock.base_url}/realtime?call_id={call_id}", headers={"Authorization": "Bearer sk-x"}) as resp:
        assert resp.status == 404  # the Realtime socket of a call Live won is refused before the upgrade
        assert (await resp.json())["error"]["code"] == "call_id_not_found"
    await client.live.sessions.hangup(live_id)
    view = await control.call(call_id)
    assert (view.state, view.end_reason) == ("ended", "hangup")
    with pytest.raises(openai.NotFoundError) as exc:
        await client.live.sessions.hangup(live_id)
    assert exc.value.code == "session_not_found"


@pytest.mark.parametrize("loser_status", [404, 409])
async def test_a_realtime_accept_wins_and_live_loses(client: AsyncOpenAI, control: MockClient,
                                                     loser_status: int) -> None:
    await control.configure(loser_status=loser_status)
    call_id, live_id = await _call(control)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    with pytest.raises(openai.APIStatusError) as exc:
        await client.live.sessions.accept(live_id, session=LIVE_SESSION)  # type: ignore[arg-type]
    assert (exc.value.status_code, exc.value.code) == (loser_status, "session_not_found")
    with pytest.raises(openai.APIStatusError) as exc:
        await client.live.sessions.reject(live_id, status_code=486)
    assert exc.value.status_code == loser_status
    view = await control.call(call_id)
    assert (view.state, view.surface) == ("active", "realtime")
    refused = [e.data for e in view.of_kind("call.refused")]
    assert [r["event"] for r in refused] == ["accept", "reject"]


async def test_live_controls_answer_empty_bodies_to_any_client(mock: RunningMock, client: AsyncOpenAI,
                                                               control: MockClient) -> None:
    _, live_id = await _call(control)
    answer = await client.post(f"/live/sessions/{live_id}/accept", body={"session": LIVE_SESSION},
                               cast_to=dict)  # the generic call that an empty JSON content type breaks
    assert answer in ({}, None, "")
    async with aiohttp.ClientSession() as http, http.post(
            f"{mock.base_url}/live/sessions/{live_id}/refer", json={"target_uri": "sip:agent@example.com"},
            headers={"Authorization": "Bearer sk-x"}) as resp:
        assert resp.status == 200 and await resp.read() == b""
        assert "Content-Type" not in resp.headers


async def test_live_reject_needs_a_status_from_300_to_699(client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await _call(control)
    for body, code, param in (({}, "missing_required_parameter", "status_code"),
                              ({"status_code": 200}, "invalid_value", "status_code"),
                              ({"status_code": 700}, "invalid_value", "status_code"),
                              ({"status_code": "486"}, "invalid_type", "status_code")):
        with pytest.raises(openai.BadRequestError) as exc:
            await client.post(f"/live/sessions/{live_id}/reject", body=body, cast_to=dict)
        assert (exc.value.code, exc.value.param) == (code, param), body
    assert (await control.call(call_id)).state == "ringing"  # nothing changed: the app may still decide
    await client.live.sessions.reject(live_id, status_code=302)  # a 3xx redirects the caller
    view = await control.call(call_id)
    assert (view.state, view.sip_final_status, view.surface) == ("rejected", 302, "live")


async def test_live_accept_bodies_from_the_sdk_types(client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(strict_accept=True)
    _, live_id = await _call(control)
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "session"),
        ({"session": {"type": "realtime", "model": "gpt-live-1"}}, "session.type"),
        ({"session": {"type": "live"}}, "session.model"),
        ({"session": {"type": "live", "model": " "}}, "session.model"),
        ({"session": {**LIVE_SESSION, "audio": {"format": {"type": "audio/pcmu"}}}}, "session.audio.format"),
        ({"session": {**LIVE_SESSION, "voice": "marin"}}, "session.voice"),
    ]
    for body, param in bad:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.post(f"/live/sessions/{live_id}/accept", body=body, cast_to=dict)
        assert exc.value.param == param, (body, exc.value.message)
    cedar: Any = {**LIVE_SESSION, "audio": {"output": {"voice": "cedar"}}}
    await client.live.sessions.accept(live_id, session=cedar)


async def test_an_invalid_live_accept_without_strict_fails_the_call(client: AsyncOpenAI, control: MockClient) -> None:
    call_id, live_id = await _call(control)
    await client.post(f"/live/sessions/{live_id}/accept", body={"session": {"type": "live"}}, cast_to=dict)
    view = await control.call(call_id)
    assert view.state == "failed" and "session.model" in (view.end_reason or "")


async def test_unknown_live_ids_and_bad_refer_targets(client: AsyncOpenAI, control: MockClient) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        await client.live.sessions.hangup("live_0000000000000000000000000000dead")
    assert exc.value.code == "session_not_found"
    call_id, live_id = await _call(control)
    with pytest.raises(openai.NotFoundError):  # a Realtime id is no Live id, and the other way round
        await client.live.sessions.hangup(call_id)
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(live_id)
    await client.live.sessions.accept(live_id, session=LIVE_SESSION)  # type: ignore[arg-type]
    for target in ("", "   ", "sip:a@b\r\nX-Evil: 1", "https://example.com"):
        with pytest.raises(openai.BadRequestError) as bad:
            await client.live.sessions.refer(live_id, target_uri=target)
        assert bad.value.param == "target_uri", target
    await client.live.sessions.refer(live_id, target_uri="tel:+14155550123")
    view = await control.wait_for(call_id, lambda v: v.terminal)
    assert (view.state, view.refer_target) == ("referred", "tel:+14155550123")


async def test_endpoints_an_app_registers_get_the_calls_they_subscribe_to(client: AsyncOpenAI,
                                                                          control: MockClient) -> None:
    live_app = await WebhookReceiver(secret="").start()
    realtime_app = await WebhookReceiver(secret="").start()
    try:
        live_ep = await client.webhooks.create(name="live", url=live_app.url,
                                               event_types=["live.transport.incoming"])  # type: ignore[list-item]
        rt_ep = await client.webhooks.create(name="rt", url=realtime_app.url, event_types=["realtime.call.incoming"])
        live_app.secret, realtime_app.secret = live_ep.signing_secret, rt_ep.signing_secret
        call_id, live_id = await _call(control)
        [to_live] = await live_app.wait(1)
        [to_rt] = await realtime_app.wait(1)
        assert to_live.error is None and to_live.event.type == "live.transport.incoming"  # verified with its secret
        assert to_live.event.data.session_id == live_id
        assert to_rt.error is None and to_rt.event.data.call_id == call_id
        # the first accept wins: the Live app takes the call, the Realtime app's accept loses
        await client.live.sessions.accept(live_id, session=LIVE_SESSION)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            await client.realtime.calls.accept(call_id, type="realtime")
        await client.webhooks.delete(live_ep.id)
        second = await control.start_call()
        assert [d.event.type for d in await realtime_app.wait(2)] == ["realtime.call.incoming"] * 2
        queued = (await control.call(second)).of_kind("webhook.queued")  # journaled as each delivery is spawned
        assert [e.data["url"] for e in queued] == [realtime_app.url]  # a deleted endpoint gets nothing more
    finally:
        await live_app.stop()
        await realtime_app.stop()
