"""The sans-I/O GPT-Live session core on a manual clock.

Every event the core emits, in every test, goes through :meth:`Bench.take`, which parses it with the
SDK's Live server event unions (``ServerEvent`` for a primary, ``ConnectServerEvent`` for a
sideband) and refuses fields the SDK models do not declare.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from typing import Any

import pydantic
import pytest
from openai.types.live import ConnectServerEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent

from mock_api import audio
from mock_api.ids import IdSource
from mock_api.live.outputs import ClearMedia, Close, Event, Finished, InputAudio, MediaAudio, MockBug, Output, SendDtmf
from mock_api.live.outputs import FaultFired as Fired
from mock_api.live.refusals import Refusal
from mock_api.live.session import LiveSession, SelfEnd
from mock_api.live.settings import LiveSettings

UNIONS: dict[str, pydantic.TypeAdapter[Any]] = {"primary": pydantic.TypeAdapter(ServerEvent),
                                              "sideband": pydantic.TypeAdapter(ConnectServerEvent)}
NESTED: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
WALL = 1_780_000_000.0
ACCEPTED = {"type": "live", "model": "gpt-live-1", "instructions": "You answer support calls."}
SCRIPT = {"turns": [{"hears": "What's the weather in Paris?", "says": "It is sunny in Paris today."}],
          "response_latency_s": 0.2}


def _no_undeclared_fields(model: pydantic.BaseModel, path: str) -> None:
    assert not model.model_extra, f"{path}: fields the SDK does not declare: {sorted(model.model_extra or {})}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        for i, sub in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(sub, pydantic.BaseModel):
                _no_undeclared_fields(sub, f"{path}.{name}[{i}]")


def assert_live_event(event: dict[str, Any]) -> None:
    """The SDK parses ``event`` as the model its type names, on a primary and on a sideband alike."""
    for kind, union in UNIONS.items():
        parsed = union.validate_python(event)
        assert parsed.type == event["type"], f"{kind}: {event['type']} parsed as {type(parsed).__name__}"
        _no_undeclared_fields(parsed, event["type"])
    if event["type"] == "response.event":  # its payload is a dict to the Live models: the Responses models check it
        nested = NESTED.validate_python(event["event"])
        assert nested.type == event["event"]["type"], f"nested {event['event']['type']} parsed as {nested.type}"
        _no_undeclared_fields(nested, f"response.event.{nested.type}")


class Bench:
    """A LiveSession on a manual clock; every output passes through :meth:`take`."""

    def __init__(self, session: LiveSession) -> None:
        self.session = session
        self.now = 0.0
        self.outputs: list[Output] = []

    def take(self, outs: list[Output]) -> list[Output]:
        for o in outs:
            if isinstance(o, Event):
                assert_live_event(o.event)
        self.outputs.extend(outs)
        return outs

    def begin(self) -> list[Output]:
        return self.take(self.session.begin(self.now))

    def attach(self, conn: str = "sb", graceful_close: bool | None = None) -> list[Output]:
        return self.take(self.session.connect(conn, "sideband", self.now, graceful_close=graceful_close))

    def primary(self, conn: str = "p") -> list[Output]:
        return self.take(self.session.connect(conn, "primary", self.now))

    def send(self, conn: str, event: dict[str, Any] | str | bytes) -> list[Output]:
        frame = event if isinstance(event, (str, bytes)) else json.dumps(event)
        return self.take(self.session.receive(conn, frame, self.now))

    def speech(self, text: str, start_ms: float, end_ms: float) -> list[Output]:
        return self.take(self.session.speech(text, start_ms, end_ms, self.now))

    def until(self, t: float) -> list[Output]:
        """Move the clock to ``t``, firing each timer at its own deadline, as an adapter's loop does."""
        got: list[Output] = []
        while (deadline := self.session.next_deadline()) is not None and deadline <= t:
            self.now = max(self.now, deadline)
            got += self.take(self.session.advance(self.now))
        self.now = t
        return got + self.take(self.session.advance(t))


def events(outs: list[Output], type_: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
    return [o.event for o in outs if isinstance(o, Event) and (type_ is None or o.event["type"] == type_)
            and (to is None or to in o.to)]


def one(outs: list[Output], type_: str, to: str | None = None) -> dict[str, Any]:
    (found,) = events(outs, type_, to)
    return found


def error_of(outs: list[Output], sender: str) -> dict[str, Any]:
    """The one error the command caused, sent to its sender only."""
    (err,) = [o for o in outs if isinstance(o, Event) and o.event["type"] == "error"]
    assert err.to == (sender,)
    return err.event


def sip(script: dict[str, Any] | None = None, **settings: Any) -> Bench:
    b = Bench(LiveSession.sip(dict(ACCEPTED), script=script or SCRIPT, settings=LiveSettings(**settings),
                              ids=IdSource(1), wall=WALL))
    b.begin()
    return b


def websocket(fmt: dict[str, Any] | None = None, **settings: Any) -> Bench:
    b = Bench(LiveSession.websocket(script=SCRIPT, settings=LiveSettings(**settings), ids=IdSource(2), wall=WALL))
    b.primary("p")
    start: dict[str, Any] = {"model": "gpt-live-1"}
    if fmt:
        start["audio"] = {"format": fmt}
    b.send("p", {"type": "session.start", "event_id": "start_1", "session": start})
    return b


def pcm24(ms: int) -> bytes:
    return audio.tone(ms, 24000, freq=300.0)


# ---- start and the session resource -------------------------------------------------------------


def test_sip_session_started_resource_and_replay_on_attach() -> None:
    b = Bench(LiveSession.sip(dict(ACCEPTED), ids=IdSource(1), wall=WALL))
    started = one(b.begin(), "session.started")
    s = started["session"]
    assert s["id"].startswith("live_") and s["status"] == "active" and s["model"] == "gpt-live-1"
    assert s["expires_at"] == int(WALL) + 7200
    assert s["audio"] == {"output": {"voice": "marin"}}  # SIP: no audio.format, it is negotiated
    assert s["delegation"] == {"type": "client", "acknowledgement_delay_ms": 0} and s["store"] is False
    assert s["instructions"] == "You answer support calls." and "type" not in s and "client_event_id" not in started
    attached = b.attach("sb1")
    replay = [o for o in attached if isinstance(o, Event)]
    assert [e.event for e in replay] == [started] and all(e.to == ("sb1",) for e in replay)


def test_replay_is_short_and_configurable() -> None:
    b = sip(attach_replay_events=2)
    b.attach("sb1")
    for i in range(3):
        b.send("sb1", {"type": "session.input_audio.mute", "event_id": f"m{i}"})
    got = events(b.attach("sb2"), to="sb2")
    assert [e["type"] for e in got] == ["session.started", "session.input_audio.muted", "session.input_audio.muted"]
    assert [e["client_event_id"] for e in got[1:]] == ["m1", "m2"]
    none = sip(attach_replay_events=0, attach_replay_started=False)
    assert events(none.attach("sb1")) == []


def test_primary_start_once_and_nothing_before_it() -> None:
    b = Bench(LiveSession.websocket(ids=IdSource(3), wall=WALL))
    b.primary("p")
    err = error_of(b.send("p", {"type": "session.input_audio.mute", "event_id": "m1"}), "p")
    assert err["error"] == {"type": "invalid_request_error", "code": "session_not_started", "param": None,
                            "message": err["error"]["message"], "client_event_id": "m1"}
    assert err["client_event_id"] == "m1" and not b.session.muted
    started = one(b.send("p", {"type": "session.start", "event_id": "s1", "session": {"model": "gpt-live-1.1"}}),
                  "session.started", to="p")
    assert started["client_event_id"] == "s1"
    assert started["session"]["audio"] == {"format": {"type": "audio/pcm", "rate": 24000},
                                           "output": {"voice": "marin"}}
    again = error_of(b.send("p", {"type": "session.start", "session": {"model": "gpt-live-1"}}), "p")
    assert again["error"]["code"] == "session_already_started" and "client_event_id" not in again
    assert b.session.resource is not None and b.session.resource["model"] == "gpt-live-1.1"


# ---- refusals of malformed commands --------------------------------------------------------------


@pytest.mark.parametrize(("frame", "code", "param"), [
    ({"type": "conversation.item.create", "event_id": "e1"}, "invalid_value", "type"),
    ({"type": "session.input_audio.mute", "event_id": "e1", "extra": 1}, "unknown_parameter", "extra"),
    ({"type": "session.thinking.append", "event_id": "e1", "delegation_id": None}, "missing_required_parameter",
     "content"),
    ({"type": "session.thinking.append", "event_id": "e1", "content": 7, "delegation_id": None}, "invalid_type",
     "content"),
    ({"type": "session.commentary.append", "event_id": "e1", "content": "hi"}, "missing_required_parameter",
     "delegation_id"),
    ({"event_id": "e1"}, "missing_required_parameter", "type"),
    ({"type": "session.update", "event_id": "e1", "session": {"triggers": [{"type": "decisions"}]}},
     "missing_required_parameter", "session.triggers[0].decisions"),
])
def test_bad_commands_are_refused_and_change_nothing(frame: dict[str, Any], code: str, param: str) -> None:
    b = sip()
    b.attach("sb")
    before = json.dumps(b.session.resource)
    err = error_of(b.send("sb", frame), "sb")
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["code"] == code
    assert err["error"]["param"] == param and err["error"]["message"]
    assert err["client_event_id"] == err["error"]["client_event_id"] == "e1"
    assert json.dumps(b.session.resource) == before and not b.session.muted
    assert one(b.send("sb", {"type": "session.input_audio.mute"}), "session.input_audio.muted")  # still working


@pytest.mark.parametrize(("frame", "code"), [
    (b"\x00binary", "invalid_event"), ("{not json", "invalid_json"), ("[1, 2]", "invalid_event"),
    ('{"type": "session.close", "x": NaN}', "invalid_json"),
])
def test_frames_that_are_not_events(frame: str | bytes, code: str) -> None:
    b = sip()
    b.attach("sb")
    assert error_of(b.send("sb", frame), "sb")["error"]["code"] == code
    assert not b.session.closed


def test_commands_of_the_other_connection_kind() -> None:
    b = sip()
    b.attach("sb")
    for frame in ({"type": "session.start", "event_id": "x", "session": {"model": "gpt-live-1"}},
                  {"type": "session.input_audio.append", "event_id": "x", "audio": ""}):
        err = error_of(b.send("sb", frame), "sb")
        assert err["error"]["code"] == "invalid_event_for_connection" and err["error"]["param"] == "type"
    w = websocket()
    err = error_of(w.send("p", {"type": "transport.dtmf.send", "event": "1"}), "p")
    assert err["error"]["code"] == "invalid_event_for_connection"


def test_lax_settings_ignore_unknown_fields_and_omitted_delegation_id() -> None:
    b = sip(strict_unknown_fields=False, require_delegation_id=False)
    b.attach("sb")
    assert one(b.send("sb", {"type": "session.input_audio.mute", "extra": {"a": 1}}), "session.input_audio.muted")
    got = one(b.send("sb", {"type": "session.instructions.append", "content": "Be brief.", "nested": 1}),
              "session.instructions.appended")
    assert got["start_ms"] == got["end_ms"] == 0
    # a wrong value is still refused
    assert error_of(b.send("sb", {"type": "session.thinking.append", "content": 1}), "sb")["error"]["code"] == \
        "invalid_type"


def test_error_codes_can_be_renamed() -> None:
    b = Bench(LiveSession.websocket(settings=LiveSettings(error_codes={Refusal.NOT_STARTED: "not_yet"}),
                                    ids=IdSource(4), wall=WALL))
    b.primary("p")
    assert error_of(b.send("p", {"type": "session.close"}), "p")["error"]["code"] == "not_yet"


# ---- session.update ---------------------------------------------------------------------------------


def test_session_update_changes_delegation_and_triggers_only() -> None:
    b = Bench(LiveSession.sip({**ACCEPTED, "delegation": {"type": "responses", "responses": {
        "model": "gpt-5.5", "tool_choice": "auto", "instructions": "Look up orders."}}}, ids=IdSource(5), wall=WALL))
    b.begin()
    b.attach("sb")
    b.attach("sb2")
    trigger = {"type": "decisions", "event_type": "session.input_transcript.delta",
               "decisions": {"questions": [{"type": "predicate", "instructions": "Is the caller angry?"}]}}
    out = b.send("sb", {"type": "session.update", "event_id": "u1", "session": {
        "delegation": {"type": "responses", "responses": {"tool_choice": "required"}}, "triggers": [trigger]}})
    upd = one(out, "session.updated", to="sb")
    assert [o.to for o in out if isinstance(o, Event)] == [("sb", "sb2")]  # a state change: every connection
    assert upd["client_event_id"] == "u1" and upd["session"]["triggers"] == [trigger]
    assert upd["session"]["delegation"] == {"type": "responses", "acknowledgement_delay_ms": 0, "responses": {
        "model": "gpt-5.5", "tool_choice": "required", "instructions": "Look up orders."}}
    assert upd["session"]["instructions"] == "You answer support calls." and upd["session"]["id"] == b.session.id
    before = json.dumps(b.session.resource)
    err = error_of(b.send("sb", {"type": "session.update", "event_id": "u2", "session": {
        "delegation": {"type": "client"}}}), "sb")
    assert err["error"]["code"] == "delegation_type_mismatch" and err["error"]["param"] == "session.delegation.type"
    for field, value in (("instructions", "Be rude."), ("audio", {"output": {"voice": "ash"}}), ("model", "x")):
        err = error_of(b.send("sb", {"type": "session.update", "session": {field: value}}), "sb")
        assert err["error"]["code"] == "immutable_parameter" and err["error"]["param"] == f"session.{field}"
    assert one(b.send("sb", {"type": "session.update", "session": {"triggers": []}}), "session.updated")[
        "session"]["triggers"] == []
    assert json.loads(before)["delegation"] == b.session.resource["delegation"]  # type: ignore[index]


def test_client_delegation_null_update_keeps_client() -> None:
    b = sip()
    b.attach("sb")
    upd = one(b.send("sb", {"type": "session.update", "session": {"delegation": None}}), "session.updated")
    assert upd["session"]["delegation"] == {"type": "client", "acknowledgement_delay_ms": 0}
    upd = one(b.send("sb", {"type": "session.update", "session": {"delegation": {
        "type": "client", "acknowledgement_delay_ms": 250}}}), "session.updated")
    assert upd["session"]["delegation"]["acknowledgement_delay_ms"] == 250


# ---- mute, audio in, reflection -----------------------------------------------------------------------


def test_mute_makes_the_model_hear_silence_but_reflection_goes_on() -> None:
    b = sip()
    b.attach("sb")
    assert one(b.send("sb", {"type": "session.input_audio.mute", "event_id": "m"}), "session.input_audio.muted")[
        "client_event_id"] == "m"
    reflected = b.take(b.session.feed_audio(audio.tone(200, 8000), 8000, b.now))
    chunks = events(reflected, "session.input_audio.append", to="sb")
    assert len(chunks) == 2 and all("event_id" not in c for c in chunks)
    assert sum(len(base64.b64decode(c["audio"])) for c in chunks) == 200 * 24 * 2  # PCM16 at 24 kHz
    assert b.speech("What's the weather in Paris?", 0, 1500) == []  # dropped: no transcript, no reply
    assert b.take(b.session.speech_started(1600, b.now)) == []
    assert b.until(5.0) == []
    one(b.send("sb", {"type": "session.input_audio.unmute"}), "session.input_audio.unmuted")
    assert events(b.speech("Hello there", 5000, 5600), "session.input_transcript.delta")


def test_primary_audio_in_its_format_is_heard_and_reflected() -> None:
    b = websocket({"type": "audio/pcmu", "rate": 8000})
    b.attach("sb")
    ulaw = audio.pcm_to_ulaw(audio.tone(100, 8000))
    out = b.send("p", {"type": "session.input_audio.append", "audio": base64.b64encode(ulaw).decode()})
    (heard,) = [o for o in out if isinstance(o, InputAudio)]
    assert heard.rate == 8000 and len(heard.pcm) == 1600
    (reflected,) = events(out, "session.input_audio.append")
    assert [o.to for o in out if isinstance(o, Event)] == [("sb",)]
    assert len(base64.b64decode(reflected["audio"])) == 4800
    bad = error_of(b.send("p", {"type": "session.input_audio.append", "event_id": "a", "audio": "%%%"}), "p")
    assert bad["error"]["code"] == "invalid_audio"
    one(b.send("p", {"type": "session.input_audio.mute"}), "session.input_audio.muted")
    out = b.send("p", {"type": "session.input_audio.append", "audio": base64.b64encode(ulaw).decode()})
    assert not [o for o in out if isinstance(o, InputAudio)] and events(out, "session.input_audio.append")


def test_primary_gets_reply_audio_in_its_format_without_timestamps() -> None:
    b = websocket({"type": "audio/pcmu", "rate": 8000})
    b.attach("sb")
    b.speech("What's the weather in Paris?", 0, 1500)
    out = b.until(4.0)
    primary = [o.event for o in out if isinstance(o, Event) and o.to == ("p",)]
    assert primary and all(e["type"] == "session.output_audio.delta" and "start_ms" not in e for e in primary)
    assert len(base64.b64decode(primary[0]["delta"])) == 800  # 100 ms of G.711 at 8 kHz
    sideband = events(out, "session.output_audio.delta", to="sb")
    assert sideband and all(e["end_ms"] > e["start_ms"] for e in sideband)
    assert not [o for o in out if isinstance(o, MediaAudio)]  # no media path on a WebSocket session


# ---- fixtures ----------------------------------------------------------------------------------------------


def test_fixture_plays_once_at_a_time_mutes_input_and_refuses_appends() -> None:
    b = sip()
    b.attach("sb")
    fixture = pcm24(1500)
    out = b.send("sb", {"type": "session.output_audio.fixture.play", "event_id": "fx1",
                        "audio": base64.b64encode(fixture).decode()})
    assert one(out, "session.output_audio.fixture.playing")["client_event_id"] == "fx1"
    (media,) = [o for o in out if isinstance(o, MediaAudio)]
    assert media.source == "fixture" and media.pcm == fixture and media.rate == 24000
    err = error_of(b.send("sb", {"type": "session.output_audio.fixture.play", "event_id": "fx2",
                                 "audio": base64.b64encode(pcm24(100)).decode()}), "sb")
    assert err["error"]["code"] == "fixture_already_active" and err["error"]["client_event_id"] == "fx2"
    for kind in ("instructions", "thinking", "commentary"):
        err = error_of(b.send("sb", {"type": f"session.{kind}.append", "content": "x", "delegation_id": None}), "sb")
        assert err["error"]["code"] == "fixture_playing"
    assert b.speech("What's the weather in Paris?", 100, 900) == []  # caller speech is dropped
    assert events(b.take(b.session.feed_audio(audio.tone(20, 8000), 8000, b.now)), "session.input_audio.append")
    one(b.send("sb", {"type": "session.input_audio.unmute"}), "session.input_audio.unmuted")
    assert b.speech("Hello", 900, 1200) == []  # unmute does not end the fixture's pause
    assert b.until(1.49) == []
    played = one(b.until(1.5), "session.output_audio.fixture.played")
    assert played["client_event_id"] == "fx1"
    assert one(b.send("sb", {"type": "session.thinking.append", "content": "x", "delegation_id": None}),
               "session.thinking.appended")


@pytest.mark.parametrize(("payload", "code"), [
    ("not base64!", "invalid_audio"), (base64.b64encode(b"\x01\x02\x03").decode(), "invalid_audio"),
    ("", "invalid_audio"), (base64.b64encode(bytes(24000 * 2 * 30 + 2)).decode(), "audio_fixture_too_long"),
])
def test_bad_fixtures_are_refused_whole(payload: str, code: str) -> None:
    b = sip()
    b.attach("sb")
    out = b.send("sb", {"type": "session.output_audio.fixture.play", "event_id": "fx", "audio": payload})
    assert error_of(out, "sb")["error"]["code"] == code
    assert not [o for o in out if isinstance(o, MediaAudio)] and b.session.next_deadline() == 10.0


def test_fixture_of_thirty_seconds_is_accepted_and_interrupts_the_model() -> None:
    b = sip(greets_first=True)
    b.attach("sb")
    b.until(0.5)  # the greeting is playing
    out = b.send("sb", {"type": "session.output_audio.fixture.play",
                        "audio": base64.b64encode(bytes(24000 * 2 * 30)).decode()})
    assert [type(o).__name__ for o in out] == ["ClearMedia", "Event", "MediaAudio"]
    assert out[0] == ClearMedia("fixture")
    assert not events(b.until(20.0), "session.output_transcript.delta")  # the greeting stopped for good
    assert one(b.until(31.0), "session.output_audio.fixture.played")


def test_fixture_on_a_primary_websocket_goes_out_as_its_audio() -> None:
    b = websocket()
    b.attach("sb")
    out = b.send("p", {"type": "session.output_audio.fixture.play", "audio": base64.b64encode(pcm24(1500)).decode()})
    deltas = [o for o in out if isinstance(o, Event) and o.event["type"] == "session.output_audio.delta"]
    assert len(deltas) == 15 and all(d.to == ("p",) and "start_ms" not in d.event for d in deltas)
    assert b"".join(base64.b64decode(d.event["delta"]) for d in deltas) == pcm24(1500)  # PCM16 24 kHz start format
    heard = b.send("p", {"type": "session.input_audio.append", "audio": base64.b64encode(pcm24(100)).decode()})
    assert not [o for o in heard if isinstance(o, InputAudio)]  # the model hears silence while a fixture plays
    assert events(heard, "session.input_audio.append", to="sb")  # reflection goes on


# ---- appends, DTMF, decisions, responses ----------------------------------------------------------------------


def test_appends_land_on_the_timeline() -> None:
    b = sip()
    b.attach("sb")
    b.until(2.5)
    for kind in ("instructions", "thinking", "commentary"):
        got = one(b.send("sb", {"type": f"session.{kind}.append", "event_id": kind, "content": "Caller is a VIP.",
                                "delegation_id": None}), f"session.{kind}.appended")
        assert got["start_ms"] == got["end_ms"] == 2500 and got["client_event_id"] == kind
    err = error_of(b.send("sb", {"type": "session.commentary.append", "content": "x", "delegation_id": "del_1"}),
                   "sb")
    assert err["error"]["code"] == "delegation_not_found" and err["error"]["param"] == "delegation_id"
    err = error_of(b.send("sb", {"type": "session.instructions.append", "content": "x" * 2001,
                                 "delegation_id": None}), "sb")
    assert err["error"]["code"] == "content_too_long"


def test_delegation_id_is_refused_under_responses_delegation() -> None:
    b = Bench(LiveSession.sip({**ACCEPTED, "delegation": {"type": "responses", "responses": {"model": "gpt-5.5"}}},
                              ids=IdSource(6), wall=WALL))
    b.begin()
    b.attach("sb")
    err = error_of(b.send("sb", {"type": "session.thinking.append", "content": "x", "delegation_id": "d"}), "sb")
    assert err["error"]["code"] == "delegation_id_not_allowed"
    assert b.send("sb", {"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{}"}}) == []  # kept, no ack
    alone = events(b.send("sb", {"type": "response.create"}), "response.event")  # no delegation to continue
    assert alone and all("delegation_id" not in e for e in alone)


def test_response_commands_need_responses_delegation() -> None:
    b = sip()
    b.attach("sb")
    for frame in ({"type": "response.create", "event_id": "r"},
                  {"type": "response.item.create", "event_id": "r", "item": {
                      "type": "function_call_output", "call_id": "call_1", "output": "{}"}}):
        err = error_of(b.send("sb", frame), "sb")
        assert err["error"]["code"] == "responses_delegation_required" and err["client_event_id"] == "r"


def test_dtmf_both_ways() -> None:
    b = sip()
    b.attach("sb")
    b.attach("sb2")
    out = b.send("sb", {"type": "transport.dtmf.send", "event": "#", "event_id": "dtmf_1"})
    assert out[0] == SendDtmf("#")
    sent = [o for o in out if isinstance(o, Event)]
    assert [(e.event["type"], e.event["event"], e.event["client_event_id"], e.to) for e in sent] == [
        ("transport.dtmf.sent", "#", "dtmf_1", ("sb", "sb2"))]
    for bad in ("12", "E", ""):
        err = error_of(b.send("sb", {"type": "transport.dtmf.send", "event": bad, "event_id": "d"}), "sb")
        assert err["error"]["code"] == "invalid_dtmf_event" and err["error"]["param"] == "event"
    (got,) = b.take(b.session.dtmf("5", b.now))
    assert isinstance(got, Event) and got.to == ("sb", "sb2")
    assert set(got.event) == {"type", "event_id", "event"} and got.event["event"] == "5"
    w = websocket()
    w.attach("sb")
    err = error_of(w.send("sb", {"type": "transport.dtmf.send", "event": "1"}), "sb")
    assert err["error"]["code"] == "dtmf_not_supported"


def test_decisions() -> None:
    questions = [
        {"type": "choice", "name": "intent", "instructions": "Why do they call?",
         "choices": [{"value": "billing"}, {"value": "support"}]},
        {"type": "predicate", "name": "angry", "instructions": "Is the caller angry?"},
        {"type": "score", "instructions": "How urgent?", "levels": [{"label": "low"}, {"label": "high"}]},
    ]
    b = Bench(LiveSession.sip({**ACCEPTED, "delegation": {"type": "decisions", "decisions": {
        "model": "gpt-decide", "questions": questions}}}, ids=IdSource(7), wall=WALL))
    assert one(b.begin(), "session.started")["session"]["delegation"]["acknowledgement_delay_ms"] == 400
    b.attach("sb")
    b.attach("sb2")
    out = b.send("sb", {"type": "decision.create", "event_id": "dc1"})
    (result,) = [o for o in out if isinstance(o, Event)]
    assert result.to == ("sb",) and "client_event_id" not in result.event
    decision = result.event["event"]["decision"]
    assert decision["model"] == "gpt-decide"
    assert [a["type"] for a in decision["answers"]] == ["choice", "predicate", "score"]
    assert decision["answers"][0]["choice"] == "billing"
    err = error_of(b.send("sb2", {"type": "decision.create", "event_id": "dc1"}), "sb2")
    assert err["error"]["code"] == "duplicate_event_id" and err["error"]["param"] == "event_id"
    assert error_of(b.send("sb", {"type": "decision.create"}), "sb")["error"]["code"] == "missing_required_parameter"
    created = one(b.send("sb", {"type": "decision.item.create", "event_id": "i1", "item": {
        "role": "user", "content": "Order 42 is late."}}), "decision.item.created")
    assert created["item"]["id"] and created["client_event_id"] == "i1"
    deleted = one(b.send("sb", {"type": "decision.item.delete", "item_id": created["item"]["id"]}),
                  "decision.item.deleted")
    assert deleted["item_id"] == created["item"]["id"]
    err = error_of(b.send("sb", {"type": "decision.item.delete", "item_id": created["item"]["id"]}), "sb")
    assert err["error"]["code"] == "item_not_found"
    plain = sip()
    plain.attach("sb")
    assert error_of(plain.send("sb", {"type": "decision.create", "event_id": "x"}), "sb")["error"]["code"] == \
        "decisions_not_configured"


# ---- the conversation ----------------------------------------------------------------------------------------------


def conversation(seed: int) -> list[Output]:
    """An inbound SIP call: a sideband attaches, the caller talks, the model answers, the caller hangs up."""
    b = Bench(LiveSession.sip(dict(ACCEPTED), script=SCRIPT, ids=IdSource(seed), wall=WALL))
    b.begin()
    b.now = 0.1
    b.attach("sb", graceful_close=True)
    for i in range(100):  # two seconds of caller audio, 20 ms at a time
        b.now = 0.2 + i * 0.02
        b.take(b.session.feed_audio(audio.tone(20, 8000, freq=200.0 + i), 8000, b.now))
    b.now = 2.4
    b.speech("What's the weather in Paris?", 500, 2100)
    b.until(12.0)
    b.take(b.session.close("remote_hangup", b.now))
    return b.outputs


def test_inbound_sip_conversation() -> None:
    outs = conversation(11)
    assert not [o for o in outs if isinstance(o, MockBug)]
    said = events(outs, "session.input_transcript.delta", to="sb")
    assert "".join(e["delta"] for e in said) == "What's the weather in Paris?"
    assert said[0]["start_ms"] == 500 and said[-1]["end_ms"] == 2100
    heard = events(outs, "session.output_transcript.delta", to="sb")
    assert "".join(e["delta"] for e in heard) == "It is sunny in Paris today."
    transcripts = [e for e in events(outs) if e["type"].endswith("_transcript.delta")]
    starts = [e["start_ms"] for e in transcripts]
    assert starts == sorted(starts) and all(e["end_ms"] >= e["start_ms"] for e in transcripts)
    out_audio = events(outs, "session.output_audio.delta", to="sb")
    assert out_audio[0]["start_ms"] == 2600  # response_latency_s after the utterance was handed over
    assert all(a["end_ms"] == n["start_ms"] for a, n in itertools.pairwise(out_audio))
    assert all("event_id" not in a for a in out_audio)
    kinds = [e["type"] for e in events(outs) if e["type"] in ("session.output_audio.delta",
                                                              "session.output_transcript.delta")]
    assert kinds[:2] == ["session.output_transcript.delta", "session.output_audio.delta"]  # interleaved
    media = [o for o in outs if isinstance(o, MediaAudio)]
    assert media and all(m.source == "model" and m.rate == 24000 and m.voice == "marin" for m in media)
    reflected = b"".join(base64.b64decode(a["delta"]) for a in out_audio)
    assert reflected == b"".join(m.pcm for m in media)  # the sideband hears what the caller heard
    assert len(events(outs, "session.input_audio.append")) == 100
    assert [e["usage"]["seconds"] for e in events(outs, "session.usage.updated")] == [10.0]
    closed = one(outs, "session.closed", to="sb")
    assert closed["reason"] == "remote_hangup" and closed["usage"] == {"seconds": 12.0}
    assert closed["session"]["status"] == "active" and "client_event_id" not in closed
    assert outs[-2:] == [Close("sb", 1000, "session closed", True), Finished("remote_hangup")]
    sent = {id(e): e for e in events(outs)}.values()  # a replay sends the same event again
    ids = [e["event_id"] for e in sent if "event_id" in e]
    assert len(ids) == len(set(ids)) and all(i.startswith("event_") and len(i) == 27 for i in ids)


def test_the_sdk_transcript_grouper_sees_no_timestamp_reset() -> None:
    from openai.lib.live import TranscriptGrouper, TranscriptSegment, TranscriptSegmentClosedEvent

    segments: list[TranscriptSegment] = []
    closes: list[TranscriptSegmentClosedEvent] = []
    with TranscriptGrouper() as grouper:
        grouper.on("segment.updated", segments.append)
        grouper.on("segment.closed", closes.append)
        for e in events(conversation(12)):
            grouper.push(UNIONS["sideband"].validate_python(e))
    assert {s.speaker for s in segments} == {"user", "assistant"}
    assert "timestamp_reset" not in [c.reason for c in closes]


def test_the_same_seed_replays_byte_for_byte() -> None:
    def digest(outs: list[Output]) -> str:
        return hashlib.sha256(repr(outs).encode()).hexdigest()

    assert digest(conversation(21)) == digest(conversation(21))
    assert digest(conversation(21)) != digest(conversation(22))


def test_barge_in_stops_the_reply_and_the_next_turn_is_answered() -> None:
    b = sip({"turns": [{"hears": "Hi", "says": "Hello, thank you for calling Example Corp, how can I help?"},
                       {"hears": "billing", "says": "Billing it is."}], "response_latency_s": 0})
    b.attach("sb")
    b.speech("Hi", 0, 400)
    b.until(1.0)
    cut = b.take(b.session.speech_started(1000, b.now))
    assert cut == [ClearMedia("barge_in")]
    assert not events(b.until(3.0), "session.output_transcript.delta")  # the rest of the reply never plays
    heard_first = "".join(e["delta"] for e in events(b.outputs, "session.output_transcript.delta"))
    assert heard_first and "Example Corp" not in heard_first  # trimmed where the caller cut in
    b.speech("I need billing", 1000, 2600)
    b.until(6.0)
    heard = "".join(e["delta"] for e in events(b.outputs, "session.output_transcript.delta"))
    assert heard.endswith("Billing it is.")


def test_unscripted_speech_gets_the_default_reply_and_turns_are_used_once() -> None:
    b = sip({"turns": [{"hears": "hello", "says": "Hi there."}], "default_reply": "Sorry?", "response_latency_s": 0})
    for t, text in ((0.0, "hello"), (2.0, "hello"), (4.0, "something else")):
        b.until(t)
        b.speech(text, t * 1000, t * 1000 + 300)
    b.until(8.0)
    heard = "".join(e["delta"] for e in events(b.outputs, "session.output_transcript.delta"))
    assert heard == "Hi there.Sorry?Sorry?"


def test_reply_audio_file_comes_through_the_loader() -> None:
    asked: list[tuple[str, int]] = []

    def loader(path: str, rate: int) -> bytes:
        asked.append((path, rate))
        return pcm24(250)

    b = Bench(LiveSession.sip(dict(ACCEPTED), script={"turns": [{"hears": "hi", "says": "Hello.", "audio": "hi.wav"}],
                                                       "response_latency_s": 0},
                              ids=IdSource(8), wall=WALL, audio_loader=loader))
    b.begin()
    b.speech("hi", 0, 300)
    b.until(2.0)
    assert asked == [("hi.wav", 24000)]
    assert b"".join(o.pcm for o in b.outputs if isinstance(o, MediaAudio)) == pcm24(250)


def test_greets_first() -> None:
    b = sip({"greeting": "Thanks for calling.", "response_latency_s": 0}, greets_first=True)
    b.attach("sb")
    b.until(3.0)
    heard = events(b.outputs, "session.output_transcript.delta", to="sb")  # the first words in the replay
    assert "".join(e["delta"] for e in heard) == "Thanks for calling."
    quiet = sip({"greeting": "Thanks for calling."})
    assert not events(quiet.until(3.0), "session.output_transcript.delta")


# ---- the end --------------------------------------------------------------------------------------------------------


def test_session_close_ends_every_connection() -> None:
    b = websocket(graceful_close_default=False)
    b.attach("sb1")
    b.attach("sb2", graceful_close=True)
    b.now = 3.7
    out = b.send("sb1", {"type": "session.close", "event_id": "close_1"})
    closed = one(out, "session.closed")
    assert [o.to for o in out if isinstance(o, Event)] == [("p", "sb1", "sb2")]
    assert closed["reason"] == "close_requested" and closed["client_event_id"] == "close_1"
    assert closed["usage"] == {"seconds": 3.0}
    assert [o for o in out if isinstance(o, (Close, Finished))] == [
        Close("p", 1000, "session closed", True), Close("sb1", 1000, "session closed", False),
        Close("sb2", 1000, "session closed", True), Finished("close_requested")]
    assert b.send("p", {"type": "session.input_audio.mute"}) == []
    assert b.session.next_deadline() is None and b.take(b.session.close("remote_hangup", 4.0)) == []


def test_close_reasons_from_the_adapter_and_expiry() -> None:
    for reason in ("remote_hangup", "connection_lost", "content"):
        b = sip()
        b.attach("sb")
        assert one(b.take(b.session.close(reason, 1.0)), "session.closed")["reason"] == reason
    b = sip(expires_after_s=25, usage_period_s=10)
    b.attach("sb")
    out = b.until(30.0)
    assert [e["usage"]["seconds"] for e in events(out, "session.usage.updated")] == [10.0, 20.0]
    closed = one(out, "session.closed")
    assert closed["reason"] == "expired" and closed["usage"] == {"seconds": 25.0}
    assert b.session.close_reason == "expired" and b.session.resource is not None
    assert b.session.resource["expires_at"] == int(WALL) + 25
    assert isinstance(out[-1], Finished)


def test_a_sideband_that_left_gets_nothing_more() -> None:
    b = sip()
    b.attach("sb1")
    b.attach("sb2")
    b.take(b.session.disconnect("sb1", b.now))
    (muted,) = [o for o in b.send("sb2", {"type": "session.input_audio.mute"}) if isinstance(o, Event)]
    assert muted.to == ("sb2",)
    out = b.take(b.session.close("remote_hangup", 1.0))
    assert [o.conn for o in out if isinstance(o, Close)] == ["sb2"]


def test_settings_are_journaled_whole() -> None:
    settings = LiveSettings(usage_period_s=5, error_codes={Refusal.BAD_DTMF: "bad_key"})
    journaled = settings.journal()
    assert journaled["usage_period_s"] == 5 and journaled["error_codes"] == {"invalid_dtmf_event": "bad_key"}
    assert set(journaled) == set(LiveSettings.model_fields)
    with pytest.raises(pydantic.ValidationError):
        LiveSettings(replay_on_attach=3)  # type: ignore[call-arg]  # a misspelt knob is an error, not ignored


def test_close_during_a_fixture_sends_no_played() -> None:
    b = sip()
    b.attach("sb")
    b.send("sb", {"type": "session.output_audio.fixture.play", "audio": base64.b64encode(pcm24(2000)).decode()})
    out = b.take(b.session.close("remote_hangup", 0.5))
    assert ClearMedia("closed") in out and not events(out, "session.output_audio.fixture.played")


def test_a_bug_of_ours_is_a_server_error_and_a_mock_bug() -> None:
    def broken(path: str, rate: int) -> bytes:
        raise RuntimeError("loader exploded")

    b = Bench(LiveSession.sip(dict(ACCEPTED), script={"turns": [{"hears": "hi", "audio": "x.wav"}]},
                              ids=IdSource(9), wall=WALL, audio_loader=broken))
    b.begin()
    b.attach("sb")
    out = b.speech("hi", 0, 300)
    (bug,) = [o for o in out if isinstance(o, MockBug)]
    assert bug.where == "speech" and "loader exploded" in bug.error
    assert one(out, "error")["error"]["type"] == "server_error"
    assert one(b.send("sb", {"type": "session.input_audio.mute"}), "session.input_audio.muted")  # still serving


# ---- delegation ----------------------------------------------------------------------------------------

WEATHER = {"hears": "weather in Paris", "says": "It is sunny.", "after_tool": "Paris has 21 degrees and sun.",
           "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "call_id": "call_w1"}]}
DELEGATING = {"turns": [WEATHER], "response_latency_s": 0.1, "ms_per_char": 20}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def delegating(delegation: dict[str, Any], **settings: Any) -> Bench:
    b = Bench(LiveSession.sip({**ACCEPTED, "delegation": delegation}, script=DELEGATING,
                              settings=LiveSettings(**settings), ids=IdSource(11), wall=WALL))
    b.begin()
    b.attach("sb")
    return b


def said(outs: list[Output]) -> str:
    return "".join(e["delta"] for e in events(outs, "session.output_transcript.delta"))


def test_a_turn_with_tool_calls_is_delegated_to_the_client_and_its_commentary_is_said() -> None:
    b = delegating({"type": "client", "acknowledgement_delay_ms": 1500})
    b.until(1.0)
    outs = b.speech("What's the weather in Paris?", 200, 1000)
    created = one(outs, "session.delegation.created", "sb")
    assert created["delegation"]["target"] == "client" and "response_id" not in created["delegation"]
    assert created["offset_ms"] == 1000 and not events(outs, "session.output_transcript.delta")
    delegation_id = created["delegation"]["id"]
    b.until(2.0)  # before the acknowledgement is due
    got = b.send("sb", {"type": "session.commentary.append", "event_id": "c1", "content": "It is 21 degrees.",
                        "delegation_id": delegation_id})
    assert one(got, "session.commentary.appended")["client_event_id"] == "c1"
    later = b.until(10.0)
    assert said(later) == "It is 21 degrees."  # the acknowledgement was cancelled by the append
    assert any(isinstance(o, MediaAudio) and o.source == "model" for o in later)
    assert events(later, "session.output_audio.delta", "sb")


def test_the_acknowledgement_is_said_after_its_delay_unless_an_append_came_first() -> None:
    b = delegating({"type": "client", "acknowledgement_delay_ms": 1500})
    b.speech("weather in Paris please", 0, 800)
    assert said(b.until(1.49)) == ""
    assert said(b.until(5.0)) == "One moment."
    b.speech("and the weather in Paris tomorrow?", 5000, 6000)  # the turn is used up: answered, not delegated
    assert said(b.until(9.0)) == "Sure, I can help you with that."
    b2 = delegating({"type": "client", "acknowledgement_delay_ms": 1500}, acknowledgement="Let me check.")
    b2.speech("weather in Paris", 0, 800)
    b2.send("sb", {"type": "session.instructions.append", "content": "Be brief.", "delegation_id": None})
    assert said(b2.until(5.0)) == "Let me check."  # instructions do not cancel it
    b3 = delegating({"type": "client", "acknowledgement_delay_ms": 1500})
    b3.speech("weather in Paris", 0, 800)
    b3.send("sb", {"type": "session.thinking.append", "content": "Looking it up.", "delegation_id": None})
    assert said(b3.until(5.0)) == ""  # thinking is silent, and any such append cancels it


def test_acknowledgements_can_be_cancelled_only_by_appends_naming_them() -> None:
    b = delegating({"type": "client", "acknowledgement_delay_ms": 1000}, acknowledgement_cancelled_by="naming_append")
    b.speech("weather in Paris", 0, 800)
    b.send("sb", {"type": "session.thinking.append", "content": "Unrelated.", "delegation_id": None})
    assert said(b.until(5.0)) == "One moment."


def test_an_acknowledgement_and_the_answer_are_said_one_after_the_other() -> None:
    b = delegating({"type": "client", "acknowledgement_delay_ms": 0})
    delegation_id = one(b.speech("weather in Paris", 0, 800), "session.delegation.created")["delegation"]["id"]
    b.until(0.2)  # the acknowledgement is playing
    b.send("sb", {"type": "session.commentary.append", "content": "Sunny.", "delegation_id": delegation_id})
    outs = b.until(10.0)
    assert said(b.outputs) == "One moment.Sunny."
    deltas = events(outs, "session.output_audio.delta", "sb")
    assert all(a["end_ms"] <= z["start_ms"] for a, z in itertools.pairwise(deltas))  # no overlap


def test_responses_delegation_calls_the_function_and_says_the_answer_after_its_output() -> None:
    b = delegating({"type": "responses", "acknowledgement_delay_ms": 0,
                    "responses": {"model": "gpt-5.5", "tools": [WEATHER_TOOL], "instructions": "Be exact."}})
    outs = b.speech("weather in Paris", 0, 800)
    created = one(outs, "session.delegation.created")["delegation"]
    nested = events(outs, "response.event")
    assert {e["delegation_id"] for e in nested} == {created["id"]} and created["target"] == "responses"
    inner = [e["event"] for e in nested]
    assert [e["type"] for e in inner] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in inner] == list(range(len(inner)))
    assert inner[0]["response"]["id"] == created["response_id"] == inner[-1]["response"]["id"]
    for snapshot in (inner[0]["response"], inner[-1]["response"]):  # lifecycle snapshots stay small
        assert snapshot["instructions"] is None and snapshot["tools"] == [] and snapshot["output"] == []
        assert "input" not in snapshot and snapshot["model"] == "gpt-5.5"
    call = inner[5]["item"]
    assert (call["name"], call["call_id"]) == ("get_weather", "call_w1")
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert said(b.until(3.0)) == "One moment."
    assert b.send("sb", {"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_w1", "output": '{"c": 21}'}}) == []
    second = events(b.send("sb", {"type": "response.create", "event_id": "r1"}), "response.event")
    assert {(e["delegation_id"], e["client_event_id"]) for e in second} == {(created["id"], "r1")}
    text = "".join(e["event"]["delta"] for e in second if e["event"]["type"] == "response.output_text.delta")
    assert text == WEATHER["after_tool"] and second[-1]["event"]["type"] == "response.completed"
    assert said(b.until(10.0)) == WEATHER["after_tool"]


def test_responses_delegation_without_the_tool_answers_in_text_at_once() -> None:
    b = delegating({"type": "responses", "acknowledgement_delay_ms": 500, "responses": {"model": "gpt-5.5"}})
    outs = b.speech("weather in Paris", 0, 800)
    inner = [e["event"] for e in events(outs, "response.event")]
    assert "response.function_call_arguments.delta" not in [e["type"] for e in inner]
    assert said(b.until(10.0)) == WEATHER["after_tool"]  # no acknowledgement: the answer came first


def test_decisions_delegation_answers_with_a_decision_then_says_the_result() -> None:
    question = {"type": "predicate", "name": "wants_forecast", "instructions": "Does the caller want a forecast?"}
    b = delegating({"type": "decisions", "decisions": {"model": "gpt-5.5", "questions": [question]}})
    outs = b.speech("weather in Paris", 0, 800)
    created = one(outs, "session.delegation.created")["delegation"]
    assert created["target"] == "decisions"
    decided = one(outs, "decision.event")
    assert decided["delegation_id"] == created["id"] and decided["event"]["type"] == "decision.completed"
    assert len(decided["event"]["decision"]["answers"]) == 1 and "client_event_id" not in decided
    assert said(b.until(5.0)) == WEATHER["after_tool"]  # the result, at once: no acknowledgement first


def test_a_delegation_id_that_exists_is_accepted_and_others_are_not() -> None:
    b = delegating({"type": "client"})
    delegation_id = one(b.speech("weather in Paris", 0, 800), "session.delegation.created")["delegation"]["id"]
    for kind in ("thinking", "commentary", "instructions"):
        one(b.send("sb", {"type": f"session.{kind}.append", "content": "ok", "delegation_id": delegation_id}),
            f"session.{kind}.appended")
    err = error_of(b.send("sb", {"type": "session.commentary.append", "content": "x", "delegation_id": "del_x"}),
                   "sb")
    assert err["error"]["code"] == "delegation_not_found"


def test_response_create_continues_the_delegation_its_function_output_answers() -> None:
    other = {**WEATHER, "hears": "weather in Rome", "after_tool": "Rome is cloudy.",
             "tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}, "call_id": "call_w2"}]}
    b = Bench(LiveSession.sip({**ACCEPTED, "delegation": {"type": "responses", "responses": {
        "model": "gpt-5.5", "tools": [WEATHER_TOOL]}}}, script={**DELEGATING, "turns": [WEATHER, other]},
        ids=IdSource(13), wall=WALL))
    b.begin()
    b.attach("sb")
    paris = one(b.speech("weather in Paris", 0, 800), "session.delegation.created")["delegation"]["id"]
    rome = one(b.speech("weather in Rome", 1000, 1800), "session.delegation.created")["delegation"]["id"]
    assert paris != rome
    b.send("sb", {"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_w1", "output": "21"}})
    first = events(b.send("sb", {"type": "response.create"}), "response.event")
    assert {e["delegation_id"] for e in first} == {paris}  # named by its call, not the newest
    b.send("sb", {"type": "response.item.create", "item": {
        "type": "function_call_output", "call_id": "call_w2", "output": "18"}})
    second = events(b.send("sb", {"type": "response.create"}), "response.event")
    assert {e["delegation_id"] for e in second} == {rome}  # the one still open


def test_response_create_without_the_tool_output_is_refused() -> None:
    b = delegating({"type": "responses", "responses": {"model": "gpt-5.5", "tools": [WEATHER_TOOL]}})
    b.speech("weather in Paris", 0, 800)
    err = error_of(b.send("sb", {"type": "response.create", "event_id": "r"}), "sb")
    assert (err["error"]["code"], err["client_event_id"]) == ("tool_output_missing", "r")
    assert "call_w1" in err["error"]["message"]
    b2 = delegating({"type": "responses", "responses": {"model": "gpt-5.5", "tools": [WEATHER_TOOL]}},
                    require_tool_outputs=False)
    b2.speech("weather in Paris", 0, 800)
    assert events(b2.send("sb", {"type": "response.create"}), "response.event")  # continues anyway


# ---- the session ending by itself (the live_session_end fault) -------------------------------------------


def test_a_session_made_to_end_closes_itself_on_its_clock() -> None:
    b = Bench(LiveSession.sip(dict(ACCEPTED), script=SCRIPT, ids=IdSource(12), wall=WALL,
                              ends_after=SelfEnd(3.0, "connection_lost", "live_session_end")))
    b.now = 5.0
    b.begin()  # the clock counts from the start, not from the making
    b.attach("sb")
    assert not [o for o in b.until(7.99) if isinstance(o, (Fired, Finished))]
    outs = b.until(8.0)
    fired = [o for o in outs if isinstance(o, Fired)]
    assert [f.fault for f in fired] == ["live_session_end"] and outs.index(fired[0]) == 0
    assert one(outs, "session.closed")["reason"] == "connection_lost"
    assert isinstance(outs[-1], Finished) and b.session.next_deadline() is None
