"""The typed journal: every kind the mock writes is defined once, round-trips, and a real call parses whole."""

from __future__ import annotations

import ast
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from harness.journal_view import JournalView
from mock_api import journal_entries as je
from mock_api.client import MockClient
from mock_api.running import RunningMock
from sipworker.ipc import Ev
from tests.helpers import WebhookReceiver
from tests.realtime_fixtures import events_until

MOCK_API = Path(__file__).resolve().parent.parent / "mock_api"
SCRIPT = {"turns": [{"hears": "My policy number is 5665-2870.", "says": "Thanks, I found it."}]}


def _kind_strings(node: ast.expr) -> list[str] | None:
    """The kind strings a ``record`` call's kind argument can be (None: not known statically)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _kind_strings(node.body), _kind_strings(node.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


def _record_calls() -> list[tuple[str, ast.Call]]:
    """Every ``<something>.record(call_id, kind, ...)`` in mock_api, with where it is."""
    found = []
    for path in sorted(MOCK_API.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record"
                    and len(node.args) == 2):
                found.append((f"{path.relative_to(MOCK_API.parent)}:{node.lineno}", node))
    return found


def test_every_kind_written_in_the_code_is_registered_with_those_keys() -> None:
    calls = _record_calls()
    assert len(calls) > 50  # the scan sees the writers (a refactor that renames record must update it)
    problems = []
    for where, call in calls:
        kinds = _kind_strings(call.args[1])
        if kinds is None:  # f"sip.{ev.kind}": the supervisor's worker events, checked below
            assert isinstance(call.args[1], ast.JoinedStr), f"{where}: a kind the scan cannot read"
            continue
        keys = {kw.arg for kw in call.keywords if kw.arg is not None}
        spread = any(kw.arg is None for kw in call.keywords)  # **extra: its keys are checked at run time
        for kind in kinds:
            cls = je.KINDS.get(kind)
            if cls is None:
                problems.append(f"{where}: {kind!r} is not registered")
                continue
            unknown = keys - set(cls.FIELDS)
            required = {f.name for f in fields(cls) if f.default is not je.ABSENT} - keys
            if unknown:
                problems.append(f"{where}: {kind} has no field(s) {sorted(unknown)}")
            if required and not spread:
                problems.append(f"{where}: {kind} misses {sorted(required)}")
    assert problems == []


def test_the_worker_events_journaled_under_sip_are_registered() -> None:
    for ev in (Ev.WORKER_STARTED, Ev.WORKER_EXITED):
        assert f"sip.{ev.value}" in je.KINDS
    started = je.parse("sip.worker_started", {"worker": 0, "pid": 42, "restarts": 0, "tls_port": 5061,
                                              "tcp_port": 5060})
    assert isinstance(started, je.SipWorkerStarted) and started.udp_port is je.ABSENT


_SAMPLES: dict[Any, Any] = {bool: True, int: 7, float: 2.5, str: "text", list: [1, "two"], dict: {"k": [1]}}


def _sample(hint: Any) -> Any:
    """A JSON-able value of the type a field is annotated with (the first concrete member of a union)."""
    if hint is typing.Any:
        return {"type": "any.json", "n": 1}
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        usable = [a for a in args if a not in (type(None), je.Absent)]
        return _sample(usable[0]) if usable else None
    return _SAMPLES[typing.get_origin(hint) or hint]


def _full(cls: type[je.EntryData]) -> je.EntryData:
    hints = typing.get_type_hints(cls, vars(je))
    return cls(**{name: _sample(hints[name]) for name in cls.FIELDS})


@pytest.mark.parametrize("kind", sorted(je.KINDS))
def test_every_registered_kind_round_trips(kind: str) -> None:
    cls = je.KINDS[kind]
    assert kind == cls.KIND and cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(")  # its own, not
    # the signature dataclass puts there: a line saying when the entry is written
    full = _full(cls)
    assert list(full.to_data()) == list(cls.FIELDS)
    assert je.parse(kind, full.to_data()) == full
    minimal = cls(**{k: v for k, v in full.to_data().items()
                     if next(f for f in fields(cls) if f.name == k).default is not je.ABSENT})
    assert je.parse(kind, minimal.to_data()) == minimal
    assert all(v is not je.ABSENT for v in minimal.to_data().values())


def test_what_does_not_fit_parses_to_unknown_and_keeps_its_data() -> None:
    old = je.parse("ws.close", {"code": 1000, "why": "renamed key"})
    assert isinstance(old, je.Unknown) and old.journal_kind == "ws.close"
    assert old.to_data() == {"code": 1000, "why": "renamed key"}
    partial = je.parse("audio.out", {"ms": 100.0})  # written by hand: the missing keys read as absent
    assert isinstance(partial, je.AudioOut) and partial.ms == 100.0 and partial.corrupt is je.ABSENT
    assert je.missing(partial) == ["response_id", "corrupt", "voice"] and partial.to_data() == {"ms": 100.0}
    assert je.given(partial.voice) is None and f"[{partial.voice}]" == "[]"
    with pytest.raises(je.EntryError, match="not registered"):
        je.build("ws.closed", {})
    assert isinstance(je.build("test.filler", {"n": 1}), je.Unknown)


async def test_a_real_call_parses_with_no_unknown_entry(client: AsyncOpenAI, control: MockClient,
                                                       receiver: WebhookReceiver, mock: RunningMock) -> None:
    call_id = await control.start_call(script=SCRIPT)
    await receiver.wait(1)
    await client.realtime.calls.accept(call_id, type="realtime", audio={"input": {
        "transcription": {"model": "gpt-4o-transcribe"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
    async with client.realtime.connect(call_id=call_id) as conn:
        await events_until(conn, "session.created")
        await control.say(call_id, "caller_policy_number", speed=4)
        await events_until(conn, "response.done")
        await control.dtmf(call_id, "1")
        await control.caller_hangup(call_id)
    await mock.server.drain()
    view = await control.call(call_id)
    kinds = set(view.kinds())
    assert {"call.created", "state", "webhook.attempt", "rest.request", "ws.connect", "ws.server",
            "audio.out", "audio.heard", "caller.say", "caller.dtmf"} <= kinds
    entries = [(e.kind, e.data) for e in view.entries]
    entries += [(e["kind"], e["data"]) for e in await control.server_journal()]
    for kind, data in entries:
        typed = je.parse(kind, data)
        assert not isinstance(typed, je.Unknown) and je.missing(typed) == [], (kind, data)
        assert typed.to_data() == data  # the wire shape is the typed entry's, key for key
    assert "mock.bug" not in kinds


def test_the_reader_answers_from_typed_entries() -> None:
    def entry(seq: int, t_ms: float, kind: str, **data: Any) -> dict[str, Any]:
        return {"seq": seq, "t_ms": t_ms, "kind": kind, "data": data}

    stopped = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900}
    journal = JournalView([
        entry(1, 0.0, "webhook.attempt", webhook_id="wh_1", attempt=1, url="http://x", timestamp=1, signature="s",
              status=200, ok=True, error=None, latency_ms=40.0, response_body="", duplicate=False),
        entry(2, 45.0, "rest.request", op="accept", path="/v1/realtime/calls/rtc_1/accept", call_id="rtc_1",
              body={"type": "realtime"}, headers={}),
        entry(3, 60.0, "ws.server", event=stopped), entry(4, 70.0, "ws.client", event={"type": "response.create"}),
        entry(5, 80.0, "audio.out", response_id="resp_1", ms=60.0, corrupt=False, voice="alloy"),
        entry(6, 90.0, "test.filler", n=1),
    ])
    assert journal.kinds() == {"webhook.attempt", "rest.request", "ws.server", "ws.client", "audio.out", "test.filler"}
    (hook,) = journal.of(je.WebhookAttempt)
    assert journal.webhook_sent_ms(hook) == -40.0 and journal.accepts()[0].entry.body == {"type": "realtime"}
    assert [e.seq for e in journal.speech_stops()] == [3] and journal.client_event_types() == ["response.create"]
    audio = journal.first_audio_after(61.0)
    assert audio is not None and audio.seq == 5 and journal.first(je.AudioOut, after=81.0) is None
    assert journal.count("response.create") == 1 and journal.count("audio.out") == 1
    assert isinstance(journal.entries[-1].entry, je.Unknown) and journal.entries[-1].kind == "test.filler"


@pytest.mark.parametrize("data", [{"code": 1000, "status": 1}, {"reason": "no code"}])
def test_check_refuses_what_build_refuses(data: dict[str, Any]) -> None:
    with pytest.raises(je.EntryError, match=r"ws\.close"):
        je.build("ws.close", data)
    with pytest.raises(je.EntryError, match=r"ws\.close"):
        je.check("ws.close", data)
    je.check("ws.close", {"code": None, "reason": "call ended", "dropped": True})
    je.check("test.anything", {"x": 1})
