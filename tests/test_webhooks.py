"""Webhook delivery as an app sees it: verified by the SDK's own unwrap, retried, faulted."""

from __future__ import annotations

import itertools

import pytest
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from mock_api.client import MockClient
from mock_api.config import RetryPolicy
from mock_api.running import RunningMock, free_port
from mock_api.webhooks import new_secret
from tests.helpers import WebhookReceiver


async def test_incoming_call_verifies_with_sdk(control: MockClient, receiver: WebhookReceiver) -> None:
    call_id = await control.start_call(from_="sip:+14155550123@carrier.example", headers={"X-Claim-Id": "CLM-77"},
                                       media_security="srtp")
    [d] = await receiver.wait(1)
    assert d.error is None
    assert isinstance(d.event, RealtimeCallIncomingWebhookEvent)
    assert d.event.type == "realtime.call.incoming"
    assert d.event.data.call_id == call_id
    names = [(h.name, h.value) for h in d.event.data.sip_headers]
    assert names[0] == ("From", "sip:+14155550123@carrier.example")
    assert ("X-Claim-Id", "CLM-77") in names
    assert d.event.data.sip_media_security == "srtp"
    assert d.headers["webhook-id"].startswith("wh_")
    assert d.headers["User-Agent"].startswith("OpenAI/1.0")
    assert d.event.id.startswith("evt_") and call_id.startswith("rtc_")


async def test_sdk_rejects_tampered_wrong_secret_and_stale(control: MockClient, receiver: WebhookReceiver,
                                                           mock: RunningMock) -> None:
    await control.start_call()
    [d] = await receiver.wait(1)
    secret = mock.server.config.webhook_secret
    sdk = OpenAI(api_key="sk-x", webhook_secret=secret)
    tampered = d.body.replace(b"realtime.call.incoming", b"realtime.call.incominG")
    with pytest.raises(InvalidWebhookSignatureError, match="does not match"):
        sdk.webhooks.unwrap(tampered, d.headers)
    with pytest.raises(InvalidWebhookSignatureError):
        OpenAI(api_key="sk-x", webhook_secret=new_secret()).webhooks.unwrap(d.body, d.headers)
    # The named fault makes the mock itself send a stale timestamp; the SDK refuses it.
    await control.configure(faults=[{"name": "webhook_stale_timestamp"}],
                            retry={"max_attempts": 1, "initial_delay_s": 0.01})
    await control.start_call()
    d2 = (await receiver.wait(2))[1]
    assert isinstance(d2.error, InvalidWebhookSignatureError)
    assert "too old" in str(d2.error)


@pytest.mark.parametrize("fault", ["webhook_bad_signature", "webhook_rotation"])
async def test_signature_faults(control: MockClient, receiver: WebhookReceiver, fault: str) -> None:
    await control.configure(faults=[fault], retry={"max_attempts": 1})
    await control.start_call()
    [d] = await receiver.wait(1)
    if fault == "webhook_bad_signature":
        assert isinstance(d.error, InvalidWebhookSignatureError)
    else:
        # Two v1 signatures, as during secret rotation: the SDK accepts if any matches.
        assert len(d.headers["webhook-signature"].split()) == 2
        assert d.error is None and d.event.data.call_id


async def test_duplicate_delivery_keeps_webhook_id(control: MockClient, receiver: WebhookReceiver,
                                                   mock: RunningMock) -> None:
    await control.configure(faults=["webhook_duplicate"])
    call_id = await control.start_call()
    a, b = await receiver.wait(2)
    assert a.headers["webhook-id"] == b.headers["webhook-id"]
    assert a.event.data.call_id == b.event.data.call_id == call_id
    await mock.server.drain()
    attempts = (await control.call(call_id)).of_kind("webhook.attempt")
    assert [e.data["duplicate"] for e in attempts] == [False, True]


async def test_drop_and_delay(control: MockClient, receiver: WebhookReceiver, mock: RunningMock) -> None:
    dropped = await control.start_call(faults=["webhook_drop"])
    delayed = await control.start_call(faults=[{"name": "webhook_delay", "seconds": 0.3}])
    [d] = await receiver.wait(1)
    assert d.event.data.call_id == delayed
    await mock.server.drain()
    assert len(receiver.deliveries) == 1
    assert "webhook.dropped" in (await control.call(dropped)).kinds()
    view = await control.call(delayed)
    queued = view.of_kind("webhook.queued")[0].t_ms
    sent = view.of_kind("webhook.attempt")[0]
    assert sent.t_ms - queued >= 290


async def test_receiver_down_then_up_gets_same_webhook_id(mock: RunningMock, control: MockClient) -> None:
    port = free_port()
    secret = mock.server.config.webhook_secret or ""
    await control.configure(webhook_url=f"http://127.0.0.1:{port}/webhook",
                            retry={"max_attempts": 8, "initial_delay_s": 0.1, "max_delay_s": 0.3, "timeout_s": 1})
    call_id = await control.start_call()
    await control.wait_for(call_id, lambda v: len(v.of_kind("webhook.attempt")) >= 2)
    receiver = await WebhookReceiver(secret=secret, port=port, answers=[503]).start()
    try:
        await receiver.wait(2, timeout=10)
        await mock.server.drain()
        view = await control.call(call_id)
        attempts = view.of_kind("webhook.attempt")
        assert attempts[0].data["error"].startswith("connection_error")
        assert attempts[-2].data["status"] == 503 and attempts[-1].data["ok"]
        assert len({a.data["webhook_id"] for a in attempts}) == 1
        assert {d.headers["webhook-id"] for d in receiver.deliveries} == {attempts[0].data["webhook_id"]}
        # each attempt carries its own timestamp; retries back off
        gaps = [b.t_ms - a.t_ms for a, b in itertools.pairwise(attempts)]
        assert gaps[1] >= gaps[0] * 0.9
        assert receiver.deliveries[-1].event.data.call_id == call_id
    finally:
        await receiver.stop()


async def test_receiver_that_never_answers_is_journaled_without_leaks(mock: RunningMock, control: MockClient) -> None:
    receiver = await WebhookReceiver(secret=mock.server.config.webhook_secret or "", hang=True).start()
    try:
        await control.configure(webhook_url=receiver.url,
                                retry=RetryPolicy(max_attempts=2, initial_delay_s=0.05, timeout_s=0.3).model_dump())
        call_id = await control.start_call()
        await mock.server.drain(timeout=5)
        assert mock.server.pending_tasks == 0
        view = await control.call(call_id)
        attempts = view.of_kind("webhook.attempt")
        assert [a.data["error"] for a in attempts] == ["timeout", "timeout"]
        assert all(250 <= a.data["latency_ms"] < 2000 for a in attempts)
        assert view.of_kind("webhook.gave_up")
        # the server still serves
        assert (await control.start_call()).startswith("rtc_")
    finally:
        await receiver.stop()
    await mock.server.reset()
    assert mock.server.pending_tasks == 0


async def test_non_2xx_is_retried_and_journaled(control: MockClient, receiver: WebhookReceiver,
                                                mock: RunningMock) -> None:
    receiver.answers = [500, 302]
    call_id = await control.start_call()
    await receiver.wait(3)
    await mock.server.drain()
    statuses = [a.data["status"] for a in (await control.call(call_id)).of_kind("webhook.attempt")]
    assert statuses == [500, 302, 200]
