"""The typed journal: every kind the mock writes is defined once, round-trips, and a real call parses whole."""

from __future__ import annotations

import ast
import asyncio
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from harness.journal_view import JournalView
from harness.softphone import Softphone
from mock_api import calls as c
from mock_api import journal_entries as je
from mock_api import sip
from mock_api.client import MockClient
from mock_api.limits import Hit
from mock_api.running import RunningMock
from mock_api.server import MockServer, effect_entry
from sipworker.ipc import Ev, Event
from tests.helpers import WebhookReceiver
from tests.realtime_fixtures import events_until
from tests.sip_helpers import CALLER, App, Receiver

MOCK_API = Path(__file__).resolve().parent.parent / "mock_api"
SCRIPT = {"turns": [{"hears": "My policy number is 5665-2870.", "says": "Thanks, I found it."}]}


def _calls_in_mock() -> list[tuple[str, ast.Call]]:
    """Every call expression in mock_api's code, with where it is."""
    found = []
    for path in sorted(MOCK_API.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                found.append((f"{path.relative_to(MOCK_API.parent)}:{node.lineno}", node))
    return found


def _called_name(call: ast.Call) -> str | None:
    """``X`` of ``je.X(...)``, ``something.X(...)`` or ``X(...)``."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def test_every_writer_in_the_mock_builds_a_typed_entry() -> None:
    calls = _calls_in_mock()
    adds = [where for where, call in calls if _called_name(call) == "add" and len(call.args) == 2]
    assert len(adds) > 50  # the scan sees the writers (a refactor that renames add must update it)
    untyped = [where for where, call in calls if _called_name(call) == "record" and len(call.args) >= 2]
    assert untyped == []  # journal.record(call_id, kind, **data) is for tests' filler only
    built = {_called_name(call) for _, call in calls}
    never_written = sorted(cls.__name__ for cls in je.KINDS.values() if cls.__name__ not in built)
    assert never_written == []  # a registered kind no writer builds is a reader's dead branch


def _worker_event(kind: Ev, data: dict[str, Any]) -> dict[str, Any]:
    """What the SIP ingress journals for one of the supervisor's worker events."""
    server = MockServer()
    ingress = types.SimpleNamespace(server=server)  # a worker event's handler only reaches the server's journal
    handler = sip._HANDLERS[kind.value]
    asyncio.run(handler(typing.cast("sip.SipIngress", ingress), Event(kind.value, dict(data), worker=data["worker"])))
    (entry,) = server.journal.entries(None, f"sip.{kind.value}")
    assert isinstance(entry.typed, je.SipWorkerStarted | je.SipWorkerExited)
    return entry.data


def test_worker_events_are_journaled_with_the_keys_the_supervisor_sent() -> None:
    started = {"worker": 0, "pid": 42, "restarts": 1, "tls_port": 5061, "tcp_port": 5060}  # no UDP listener
    assert _worker_event(Ev.WORKER_STARTED, started) == started
    exited = {"worker": 1, "pid": 43, "returncode": -9, "restarting": True}
    assert _worker_event(Ev.WORKER_EXITED, exited) == exited


def test_a_limit_hit_keeps_only_the_fields_its_writer_gave() -> None:
    server = MockServer()
    server.limit_hit(None, Hit("requests", 10, 10, 1, 1.23456), "rest", op="accept")
    server.limit_hit(None, Hit("sessions", 1, 1, 1, None), "websocket", model=None, intent="transcription")
    rest, socket = (e.data for e in server.journal.entries(None, "limits.hit"))
    assert rest == {"limit": "requests", "where": "rest", "value": 10, "used": 10, "requested": 1,
                    "retry_after_s": 1.235, "op": "accept"}
    assert socket == {"limit": "sessions", "where": "websocket", "value": 1, "used": 1, "requested": 1,
                      "retry_after_s": None, "model": None, "intent": "transcription"}


def test_a_call_effect_names_only_what_the_sip_leg_acts_on() -> None:
    assert effect_entry(c.SendSipFinal(486)).to_data() == {"effect": "SendSipFinal", "status_code": 486}
    assert effect_entry(c.SendRefer("sip:desk@x")).to_data() == {"effect": "SendRefer", "target_uri": "sip:desk@x"}
    assert effect_entry(c.EndSession("hangup")).to_data() == {"effect": "EndSession", "reason": "hangup"}
    assert effect_entry(c.SendBye(after_s=1.0)).to_data() == {"effect": "SendBye"}  # the delay is the table's
    assert effect_entry(c.StartSession({"type": "realtime"})).to_data() == {"effect": "StartSession"}


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
    _assert_typed_key_for_key(entries)
    assert "mock.bug" not in kinds


def _assert_typed_key_for_key(entries: list[tuple[str, dict[str, Any]]]) -> None:
    for kind, data in entries:
        typed = je.parse(kind, data)
        assert not isinstance(typed, je.Unknown) and je.missing(typed) == [], (kind, data)
        assert typed.to_data() == data  # the wire shape is the typed entry's, key for key


async def test_a_real_sip_call_parses_with_no_unknown_entry(sip_stack: tuple[RunningMock, Receiver, MockClient],
                                                           sip_phone: Softphone) -> None:
    mock, receiver, control = sip_stack
    assert mock.sip is not None
    app = receiver.app = App(mock, action="hangup")
    call = await sip_phone.call(mock.sip.uri("proj_claims"), audio=[CALLER.path])
    assert await call.answered(timeout=10)
    await call.ended(timeout=30)
    await asyncio.wait_for(app.closed.wait(), 10)
    await mock.server.drain()
    [delivery] = receiver.deliveries
    # the mock's worker reports the leg's end over its own pipe, which may come after the caller's BYE: wait
    # on the journal for it rather than on the caller
    view = await control.wait_for(delivery.event.data.call_id, lambda v: "sip.ended" in v.kinds(), timeout=15)
    assert {"sip.invite", "sip.sent", "sip.state", "sip.media", "sip.speech_started", "sip.speech_stopped",
            "sip.ended", "call.effect"} <= set(view.kinds())
    server = await control.server_journal()
    assert {"sip.listening", "sip.worker_started"} <= {e["kind"] for e in server}
    _assert_typed_key_for_key([(e.kind, e.data) for e in view.entries] + [(e["kind"], e["data"]) for e in server])
    assert "mock.bug" not in view.kinds()


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
