"""Stateful fuzz of the call lifecycle over real HTTP: random calls, controls and failing receivers.

The mock runs on its own event loop in a thread; the state machine drives it with the
synchronous official SDK and plain HTTP, as a real app and caller would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from mock_api.config import MockConfig, RetryPolicy
from mock_api.running import RunningMock, free_port, running_mock
from tests.helpers import WebhookReceiver

TERMINAL = {"ended", "rejected", "referred", "failed", "no_answer"}


class Background:
    """A mock and a webhook receiver on a private loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.mock: RunningMock | None = None
        self.receiver: WebhookReceiver | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.thread.start()
        self.ready.wait(10)

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        retry = RetryPolicy(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.02, timeout_s=0.5)
        async with running_mock(MockConfig(retry=retry, ring_timeout_s=None)) as mock:
            self.mock = mock
            self.receiver = await WebhookReceiver(secret=mock.server.config.webhook_secret or "").start()
            self.ready.set()
            await self.stop.wait()
            await self.receiver.stop()

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


class Lifecycle(RuleBasedStateMachine):
    bg: Background
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        assert self.bg.mock is not None
        self.url = self.bg.mock.url
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.http.post("/_mock/reset").raise_for_status()
        self.sdk = openai.OpenAI(api_key="sk-fuzz", base_url=self.bg.mock.base_url, max_retries=0)
        self.terminal: set[str] = set()
        self.ops: dict[str, list[str]] = {}

    def _state(self, call_id: str) -> str:
        return str(self.http.get(f"/_mock/calls/{call_id}").json()["state"])

    def _op(self, call_id: str, name: str, fn: Any) -> None:
        """Run one REST op; no op may succeed on a call already ended."""
        was_terminal = call_id in self.terminal
        try:
            fn()
            ok = True
        except openai.NotFoundError:
            ok = False
        except openai.BadRequestError:
            ok = False
            assert not was_terminal, "an ended call must answer 404, not 400"
        assert not (ok and was_terminal), f"{name} succeeded on an ended call"
        self.ops.setdefault(call_id, []).append(name)
        if self._state(call_id) in TERMINAL:
            self.terminal.add(call_id)

    @rule(target=calls, headers=st.dictionaries(st.sampled_from(["X-A", "X-B", "X-Twilio-CallSid"]),
                                                st.text("abc123", min_size=1, max_size=5), max_size=2))
    def incoming(self, headers: dict[str, str]) -> str:
        r = self.http.post("/_mock/calls", json={"headers": headers})
        assert r.status_code == 201
        call_id: str = r.json()["call_id"]
        return call_id

    @rule(kind=st.sampled_from(["ok", "500", "down"]))
    def receiver(self, kind: str) -> None:
        assert self.bg.receiver is not None
        url = self.bg.receiver.url if kind != "down" else f"http://127.0.0.1:{free_port()}/webhook"
        self.bg.receiver.answers = [500] * 3 if kind == "500" else []
        self.http.put("/_mock/config", json={"webhook_url": url}).raise_for_status()

    @rule(call_id=calls, valid=st.booleans())
    def accept(self, call_id: str, valid: bool) -> None:
        extra: dict[str, Any] = {} if valid else {"extra_body": {"modalities": ["audio"]}}
        self._op(call_id, "accept", lambda: self.sdk.realtime.calls.accept(call_id, type="realtime", **extra))

    @rule(call_id=calls, code=st.sampled_from([None, 486, 603, 404]))
    def reject(self, call_id: str, code: int | None) -> None:
        kw: dict[str, Any] = {} if code is None else {"status_code": code}
        self._op(call_id, "reject", lambda: self.sdk.realtime.calls.reject(call_id, **kw))

    @rule(call_id=calls)
    def refer(self, call_id: str) -> None:
        self._op(call_id, "refer", lambda: self.sdk.realtime.calls.refer(call_id, target_uri="tel:+15550001"))

    @rule(call_id=calls)
    def hangup(self, call_id: str) -> None:
        self._op(call_id, "hangup", lambda: self.sdk.realtime.calls.hangup(call_id))

    @rule(call_id=consumes(calls))
    def caller_bye(self, call_id: str) -> None:
        r = self.http.post(f"/_mock/calls/{call_id}/caller_hangup")
        assert r.status_code in (200, 404)
        assert not (r.status_code == 200 and call_id in self.terminal)
        self.terminal.add(call_id)

    @invariant()
    def journal_in_order(self) -> None:
        for view in self.http.get("/_mock/calls").json()["calls"]:
            seqs = [e["seq"] for e in view["entries"]]
            assert seqs == sorted(seqs)
            ops = [e["data"]["op"] for e in view["entries"] if e["kind"] == "rest.request"]
            assert ops == self.ops.get(view["call_id"], [])

    def teardown(self) -> None:
        """Every call ends in exactly one terminal state; REST requests are answered in order."""
        for view in self.http.get("/_mock/calls").json()["calls"]:
            if view["state"] not in TERMINAL:
                self.http.post(f"/_mock/calls/{view['call_id']}/caller_hangup")
        for view in self.http.get("/_mock/calls").json()["calls"]:
            states = [e for e in view["entries"] if e["kind"] == "state"]
            into_terminal = [e for e in states if e["data"]["after"] in TERMINAL]
            assert len(into_terminal) == 1, view["call_id"]
            assert states[-1] is into_terminal[0], "no state change after the terminal one"
            assert view["state"] in TERMINAL and view["terminal"]
            # each REST request is answered in the journal right after it
            kinds = [e["kind"] for e in view["entries"] if e["kind"].startswith("rest.")]
            assert kinds == ["rest.request", "rest.response"] * (len(kinds) // 2)
        self.http.close()
        self.sdk.close()


def test_lifecycle_state_machine(background: Background) -> None:
    Lifecycle.bg = background
    run = Lifecycle.TestCase
    run.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run("runTest").runTest()
