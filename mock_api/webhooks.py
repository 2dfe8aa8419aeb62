"""Standard Webhooks signing and delivery with bounded retries and faults.

Signing and event building are pure; ``WebhookSender`` is the small async adapter that
posts, retries and journals every attempt. What the faults do to a delivery (drop, hold,
duplicate, stale timestamp, bad or rotated signature) arrives decided, as a
:class:`~mock_api.fault_script.DeliveryPlan`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import ids
from . import journal_entries as je
from .calls import Call
from .config import RetryPolicy
from .fault_script import DeliveryPlan
from .journal import Journal
from .webhook_endpoints import new_secret as new_secret  # one maker of signing secrets, re-exported here

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


def _key(secret: str) -> bytes:
    # Same rule as the SDK: whsec_ + base64 key bytes, otherwise the UTF-8 bytes of the string.
    return base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str | Sequence[str], webhook_id: str, timestamp: int, body: bytes,
                   extra_signatures: Sequence[str] = ()) -> dict[str, str]:
    """Standard Webhooks headers signed with every secret given: one ``v1,`` signature each, space-separated
    (during a secret rotation's overlap the SDK's verifier accepts whichever secret the app holds)."""
    keys = (secret,) if isinstance(secret, str) else tuple(secret)
    sigs = [*(f"v1,{s}" for s in extra_signatures), *(f"v1,{signature(k, webhook_id, timestamp, body)}" for k in keys)]
    return {
        "user-agent": USER_AGENT,
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sigs),
    }


def incoming_call_event(call: Call, created_at: int | None = None) -> dict[str, Any]:
    """The ``realtime.call.incoming`` body in exactly the real service's shape."""
    data: dict[str, Any] = {"call_id": call.call_id, "sip_headers": call.sip_headers}
    if call.media_security:
        data["sip_media_security"] = call.media_security
    return {
        "object": "event",
        "id": ids.webhook_event_id(),
        "type": "realtime.call.incoming",
        "created_at": int(created_at if created_at is not None else time.time()),
        "data": data,
    }


def incoming_event(call: Call, event_type: str, created_at: int | None = None) -> dict[str, Any]:
    """One of the three events an incoming call fires, in the real shapes: ``realtime.call.incoming`` names
    the Realtime id; ``live.transport.incoming`` the GPT-Live id with ``data.type: "sip"``; the deprecated
    ``live.call.incoming`` the same without ``data.type``. Each has its own event id."""
    if event_type == "realtime.call.incoming":
        return incoming_call_event(call, created_at)
    data: dict[str, Any] = {"session_id": call.live_id}
    if event_type == "live.transport.incoming":
        data["type"] = "sip"
    data["sip_headers"] = call.sip_headers
    if call.media_security:
        data["sip_media_security"] = call.media_security
    return {"object": "event", "id": ids.webhook_event_id(), "type": event_type,
            "created_at": int(created_at if created_at is not None else time.time()), "data": data}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


@dataclass
class Delivery:
    """What became of one event: the attempts are in the journal, this is the summary."""

    webhook_id: str
    delivered: bool
    attempts: int
    status: int | None = None
    response_body: str | None = None
    error: str | None = None  # the last attempt's, when it got no HTTP answer (timeout, refused connection)


class WebhookSender:
    """Posts signed events, retrying non-2xx, timeouts and refused connections with backoff."""

    def __init__(self, journal: Journal, clock: Callable[[], float] = time.monotonic) -> None:
        self._journal = journal
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookie jar, no redirects: 3xx counts as a failed attempt, as on the real service.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True)
        return self._session

    async def deliver(self, call_id: str | None, url: str, secret: str | Sequence[str], event: dict[str, Any],
                      policy: RetryPolicy, plan: DeliveryPlan | None = None) -> Delivery:
        """Deliver ``event`` to ``url``, signed with ``secret`` (several during a rotation's overlap: the
        newest first), journaling each attempt on ``call_id``'s timeline (None: the server's)."""
        plan = plan or DeliveryPlan()
        secret = (secret,) if isinstance(secret, str) else tuple(secret)
        webhook_id = ids.webhook_id()
        body = encode(event)
        self._journal.add(call_id, je.WebhookQueued(webhook_id=webhook_id, url=url, event_type=event.get("type"),
                                                    event=event))
        if plan.drop:
            self._journal.add(call_id, je.WebhookDropped(webhook_id=webhook_id, fault="webhook_drop"))
            return Delivery(webhook_id, delivered=False, attempts=0)
        if plan.delay_s is not None:
            self._journal.add(call_id, je.WebhookDelayed(webhook_id=webhook_id, seconds=plan.delay_s))
            await asyncio.sleep(plan.delay_s)
        result = await self._attempts(call_id, url, secret, webhook_id, body, policy, plan)
        if result.delivered:
            for _ in range(plan.copies - 1):
                await self._attempts(call_id, url, secret, webhook_id, body, policy, plan, duplicate=True)
        return result

    async def _attempts(self, call_id: str | None, url: str, secret: Sequence[str], webhook_id: str, body: bytes,
                        policy: RetryPolicy, plan: DeliveryPlan, duplicate: bool = False) -> Delivery:
        attempt = 0
        status: int | None = None
        text: str | None = None
        error: str | None = None
        while attempt < policy.max_attempts:
            attempt += 1
            headers = self._headers(secret, webhook_id, body, plan)
            started = self._clock()
            error = None
            status = None
            text = None
            try:
                async with self._http().post(
                    url, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=policy.timeout_s),
                ) as resp:
                    status = resp.status
                    text = (await resp.text(errors="replace"))[:2048]
            except TimeoutError:
                error = "timeout"
            except aiohttp.ClientConnectorError as exc:
                error = f"connection_error: {exc.os_error or exc}"
            except aiohttp.ClientError as exc:
                error = f"client_error: {type(exc).__name__}: {exc}"
            latency_ms = (self._clock() - started) * 1000.0
            ok = status is not None and 200 <= status < 300
            self._journal.add(call_id, je.WebhookAttempt(
                webhook_id=webhook_id, attempt=attempt, url=url, timestamp=int(headers["webhook-timestamp"]),
                signature=headers["webhook-signature"], status=status, ok=ok, error=error,
                latency_ms=round(latency_ms, 3), response_body=text, duplicate=duplicate,
            ))
            if ok:
                self._journal.add(call_id, je.WebhookDelivered(webhook_id=webhook_id, attempts=attempt))
                return Delivery(webhook_id, True, attempt, status, text)
            if attempt < policy.max_attempts:
                await asyncio.sleep(policy.delay(attempt))
        self._journal.add(call_id, je.WebhookGaveUp(webhook_id=webhook_id, attempts=attempt, last_status=status))
        return Delivery(webhook_id, False, attempt, status, text, error)

    @staticmethod
    def _headers(secret: Sequence[str], webhook_id: str, body: bytes, plan: DeliveryPlan) -> dict[str, str]:
        ts = plan.timestamp(int(time.time()))  # fresh per attempt, as on the real service
        if plan.bad_signature:
            return signed_headers(new_secret(), webhook_id, ts, body)
        extra = [signature(new_secret(), webhook_id, ts, body)] if plan.rotation else []
        return signed_headers(secret, webhook_id, ts, body, extra)
