"""A virtual call's steps as control-API requests, sans I/O: the one walk behind ``rtsip load``'s
virtual callers (asyncio, :func:`run_async`) and the Locust users (gevent, :func:`run_blocking`).

Rules:

1. The steps are walked by :func:`harness.caller_steps.plan`; this module answers each of its acts with
   requests to the mock's control API and pauses, which a runner carries out and answers.
2. ``answered``: the call is read every ANSWER_POLL_S until it leaves ``ringing``; ``active`` or
   ``referring`` is answered, anything else is not; at most ANSWER_WAIT_S.
3. ``say`` and ``dial``: one POST each (``say`` waits for the audio to have played); under 400 is done.
4. ``wait_event``: the call is read every EVENT_POLL_S until its journal holds ``count`` entries of
   ``kind``; a call that ended (``terminal``) or an answer other than 200 ends the wait unmet.
5. The caller's hangup follows the steps (``hang_up`` does nothing), and whether the call is ``over`` is
   never known up front: a request to a call that is gone answers 4xx. Notes are not kept: a load
   call's result comes from its journal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from audio_fixtures import FixtureNotFound
from audio_fixtures import fixture as find_fixture

from .caller_steps import plan
from .journal_view import JournalView
from .load_plan import TRAILING_SILENCE_MS
from .scenario import Step, resolve_audio

ANSWER_POLL_S = 0.1
ANSWER_WAIT_S = 15.0
EVENT_POLL_S = 0.25

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """A control-API request; the runner answers it with ``(status, parsed JSON body or None)``."""

    method: str
    path: str
    body: Any = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Pause:
    """The runner's own sleep (asyncio's or gevent's), answered with None."""

    seconds: float


Walk = Generator[Request | Pause, Any, T]
Clock = Callable[[], float]


def say_body(ref: str, base: Path, speed: float) -> dict[str, Any]:
    """``POST /_mock/calls/{id}/say``'s body: a fixture by name, else a file relative to the scenario."""
    body: dict[str, Any] = {"speed": speed, "trailing_silence_ms": TRAILING_SILENCE_MS, "wait": True}
    try:
        find_fixture(ref)
        body["fixture"] = ref
    except FixtureNotFound:
        body["path"] = str(resolve_audio(ref, base))
    return body


def wait_answered(call_id: str, timeout: float, clock: Clock = time.monotonic) -> Walk[bool]:
    """Rule 2."""
    end = clock() + min(timeout, ANSWER_WAIT_S)
    while clock() < end:
        status, body = yield Request("GET", f"/_mock/calls/{call_id}")
        if status == 200 and body.get("state") != "ringing":
            return str(body.get("state")) in ("active", "referring")
        yield Pause(ANSWER_POLL_S)
    return False


def journal_wait(call_id: str, kind: str, count: int, timeout: float, clock: Clock = time.monotonic) -> Walk[bool]:
    """Rule 4."""
    end = clock() + timeout
    while clock() < end:
        status, body = yield Request("GET", f"/_mock/calls/{call_id}")
        if status != 200 or body.get("terminal"):
            return False
        if JournalView.count_raw(body.get("entries", []), kind) >= count:
            return True
        yield Pause(EVENT_POLL_S)
    return False


def virtual_call(steps: Sequence[Step], max_duration_s: float, call_id: str, base: Path, speed: float,
                 clock: Clock = time.monotonic) -> Walk[None]:
    """The whole walk of one virtual call's steps (rules 1-5)."""
    walk = plan(steps, max_duration_s, clock)
    answered = False
    answer: Any = None
    while True:
        try:
            act = walk.send(answer)
        except StopIteration:
            return
        match act.op, act.args:
            case "over", _:
                answer = False
            case "note", _:
                answer = None
            case "sleep", (seconds,):
                answer = yield Pause(seconds)
            case "answered", (timeout,):
                if not answered:  # once answered, a call that ends shows in the next request's status
                    answered = yield from wait_answered(call_id, timeout, clock)
                answer = None if answered else "the call is not active"
            case "say", (ref, left):
                status, _ = yield Request("POST", f"/_mock/calls/{call_id}/say", say_body(ref, base, speed),
                                          timeout=max(5.0, left + 5))
                answer = status < 400
            case "dial", (digits,):
                status, _ = yield Request("POST", f"/_mock/calls/{call_id}/dtmf", {"digits": digits})
                answer = status < 400
            case "hold", _:  # refused before any call: a scenario holds only in mode: sip (CallSpec)
                raise ValueError("a virtual call cannot hold: hold_ms needs mode: sip")
            case "new_ssrc", _:  # refused before any call, as hold
                raise ValueError("a virtual call sends no RTP: new_ssrc needs mode: sip")
            case "hang_up", _:
                answer = False
            case "wait_event", (kind, count, timeout):
                answer = yield from journal_wait(call_id, kind, count, timeout, clock)
            case _:
                raise ValueError(f"no control-API answer for {act}")


Send = Callable[[str, str, Any, float], Awaitable[tuple[int, Any]]]
SendBlocking = Callable[[str, str, Any, float], tuple[int, Any]]


async def run_async(walk: Walk[T], send: Send) -> T:
    """Carry ``walk`` out on asyncio: ``send(method, path, body, timeout)`` makes a request."""
    answer: Any = None
    while True:
        try:
            need = walk.send(answer)
        except StopIteration as done:
            return done.value
        if isinstance(need, Pause):
            await asyncio.sleep(need.seconds)
            answer = None
        else:
            answer = await send(need.method, need.path, need.body, need.timeout)


def run_blocking(walk: Walk[T], send: SendBlocking, sleep: Callable[[float], None]) -> T:
    """Carry ``walk`` out on a blocking caller (``sleep`` is its cooperative sleep: ``gevent.sleep``)."""
    answer: Any = None
    while True:
        try:
            need = walk.send(answer)
        except StopIteration as done:
            return done.value
        if isinstance(need, Pause):
            sleep(need.seconds)
            answer = None
        else:
            answer = send(need.method, need.path, need.body, need.timeout)
