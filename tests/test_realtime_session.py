"""The sans-I/O session core on a manual clock."""

from __future__ import annotations

import base64
import json

from mock_api import audio
from mock_api.faults import Fault
from mock_api.realtime.session import ClearAudio
from tests.realtime_fixtures import Driver, utterance

TRANSCRIBE = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
    "transcription": {"model": "gpt-4o-transcribe", "language": "es"}}}}}
TRANSCRIBE_EN = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
    "transcription": {"model": "gpt-4o-transcribe", "language": "en"}}}}}  # the script's callers speak English
SCRIPT = {"turns": [{"hears": "What's the weather in Paris?", "says": "It is sunny in Paris today."}],
          "response_latency_s": 0.05}


def test_session_created_has_section_3_defaults() -> None:
    d = Driver(model="gpt-realtime")
    (created,) = d.events
    s = created["session"]
    assert created["type"] == "session.created"
    assert s["type"] == "realtime" and s["object"] == "realtime.session" and s["id"].startswith("sess_")
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["input"]["transcription"] is None
    assert s["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200,
        "idle_timeout_ms": None, "create_response": True, "interrupt_response": True}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0}
    assert s["max_output_tokens"] == "inf" and s["tools"] == [] and s["tool_choice"] == "auto"


def test_sip_session_keeps_negotiated_g711_unless_overridden() -> None:
    d = Driver(transport="sip", sip_format="audio/pcma",
               config={"type": "realtime", "instructions": "hi", "audio": {"output": {"voice": "ash"}}})
    s = d.events[0]["session"]
    assert s["audio"]["input"]["format"] == {"type": "audio/pcma"}
    assert s["audio"]["output"]["format"] == {"type": "audio/pcma"}
    assert s["audio"]["output"]["voice"] == "ash" and s["instructions"] == "hi"
    (upd,) = d.send({"type": "session.update", "session": {"type": "realtime", "tools": []}})
    assert upd["session"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    (upd,) = d.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "output": {"format": {"type": "audio/pcm"}}}}})
    assert upd["session"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_update_is_atomic_and_reports_the_seed_errors() -> None:
    d = Driver()
    (err,) = d.send({"type": "session.update", "event_id": "evt_1", "session": {
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "es", "prompt": ""}}})
    assert err["error"] == {"type": "invalid_request_error", "code": "missing_required_parameter",
                            "message": "Missing required parameter: 'session.type'.", "param": "session.type",
                            "event_id": "evt_1"}
    # a correct nested field bundled with a beta field is lost too (failure mode 4)
    (err,) = d.send({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}},
        "input_audio_transcription": {"model": "whisper-1"}}})
    assert err["error"]["code"] == "unknown_parameter"
    assert err["error"]["message"] == "Unknown parameter: 'session.input_audio_transcription'."
    assert d.session.config["audio"]["input"]["transcription"] is None
    (ok,) = d.send(TRANSCRIBE)
    assert ok["type"] == "session.updated" and "event_id" in ok
    assert ok["session"]["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-transcribe", "language": "es", "prompt": None}
    # other fields untouched; null clears
    assert ok["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    (ok,) = d.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}})
    assert ok["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}
    assert ok["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"


def test_bad_input_gets_real_errors_and_session_keeps_working() -> None:
    d = Driver()
    (e,) = d.send("{not json")
    assert e["error"]["code"] == "invalid_json"
    assert e["error"]["message"].startswith("Invalid event: failed to parse JSON value.")
    (e,) = d.send({"type": "nope", "event_id": "x"})
    assert e["error"]["code"] == "invalid_value" and e["error"]["param"] == "type"
    assert e["error"]["event_id"] == "x"
    assert e["error"]["message"].startswith("Invalid value: 'nope'. Supported values are: 'session.update', ")
    assert "'output_audio_buffer.clear'" not in e["error"]["message"]
    assert e["error"]["message"].endswith("'response.create', and 'response.cancel'.")
    (e,) = d.send({"event_id": "y"})
    assert e["error"]["code"] == "invalid_event" and e["error"]["message"] == "The 'type' field is missing."
    (e,) = d.send({"type": "input_audio_buffer.append", "audio": "***not base64***"})
    assert e["error"]["param"] == "audio"
    (e,) = d.send({"type": "input_audio_buffer.commit"})
    assert e["error"]["code"] == "input_audio_buffer_commit_empty"
    assert e["error"]["message"] == ("Error committing input audio buffer: buffer too small. Expected at least 100ms "
                                     "of audio, but buffer only has 0.00ms of audio.")
    (e,) = d.send({"type": "conversation.item.delete", "item_id": "item_missing"})
    assert e["error"]["param"] == "item_id" and "item_missing" in e["error"]["message"]
    (e,) = d.send({"type": "conversation.item.retrieve", "item_id": "item_missing"})
    assert e["type"] == "error"
    (e,) = d.send({"type": "response.cancel"})
    assert e["error"] == {"type": "invalid_request_error", "code": "response_cancel_not_active",
                          "message": "Cancellation failed: no active response found", "param": None,
                          "event_id": None}
    (e,) = d.send({"type": "response.create", "response": {"modalities": ["text"]}})
    assert e["error"]["message"] == "Unknown parameter: 'response.modalities'."
    out = d.session.receive(b"\x00\x01", d.now)
    assert out[0]["error"]["code"] == "invalid_event"  # type: ignore[index]
    # still works
    got = d.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                "content": [{"type": "input_text", "text": "hi"}]}})
    assert d.types(got) == ["conversation.item.added", "conversation.item.done"]


def test_items_create_retrieve_delete_truncate() -> None:
    d = Driver(script={"response_latency_s": 0})
    a = d.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]}})[0]["item"]
    b = d.send({"type": "conversation.item.create", "previous_item_id": "root", "item": {
        "type": "message", "role": "system", "content": [{"type": "input_text", "text": "be brief"}]}})
    assert b[0]["previous_item_id"] is None
    assert [i["id"] for i in d.session.items] == [b[0]["item"]["id"], a["id"]]
    (e,) = d.send({"type": "conversation.item.create", "previous_item_id": "item_nope", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}})
    assert e["type"] == "error" and e["error"]["param"] == "previous_item_id"
    (r,) = d.send({"type": "conversation.item.retrieve", "item_id": a["id"]})
    assert r["type"] == "conversation.item.retrieved" and r["item"]["content"][0]["text"] == "first"
    (dl,) = d.send({"type": "conversation.item.delete", "item_id": a["id"]})
    assert dl == {**dl, "type": "conversation.item.deleted", "item_id": a["id"]}
    assert a["id"] not in [i["id"] for i in d.session.items]
    # assistant audio: respond, then truncate what was "heard"
    d.send({"type": "response.create"})
    d.advance(5)
    done = d.of("response.done")[-1]["response"]
    item_id = done["output"][0]["id"]
    (r,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    assert r["item"]["content"][0]["audio"]
    (t,) = d.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                   "audio_end_ms": 300})
    assert t["type"] == "conversation.item.truncated" and t["audio_end_ms"] == 300
    (e,) = d.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                   "audio_end_ms": 100000})
    assert e["error"]["message"].startswith("Audio content of 300ms is already shorter than 100000ms")


def test_vad_turn_with_transcription_full_order() -> None:
    d = Driver(script=SCRIPT)
    d.send(TRANSCRIBE_EN)
    pcm = utterance(1200, lead_ms=500, tail_ms=900)
    d.append_pcm(pcm)
    d.advance(3)
    types = d.types()
    started, stopped = d.of("input_audio_buffer.speech_started")[0], d.of("input_audio_buffer.speech_stopped")[0]
    # speech starts at 500 ms; prefix padding 300 ms; stop includes the 200 ms silence
    assert 150 <= started["audio_start_ms"] <= 260
    assert 1700 <= stopped["audio_end_ms"] <= 1960
    assert started["item_id"] == stopped["item_id"]
    i = types.index("input_audio_buffer.speech_stopped")
    assert types[i:i + 5] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                              "conversation.item.added", "conversation.item.done", "response.created"]
    added = d.of("conversation.item.added")[0]["item"]
    assert added["content"] == [{"type": "input_audio", "transcript": None}]
    completed = d.of("conversation.item.input_audio_transcription.completed")[0]
    assert completed["item_id"] == started["item_id"] and completed["transcript"] == "What's the weather in Paris?"
    deltas = d.of("conversation.item.input_audio_transcription.delta")
    assert "".join(x["delta"] for x in deltas) == completed["transcript"] and len(deltas) > 1
    assert completed["usage"]["type"] == "tokens" and completed["usage"]["input_token_details"]["audio_tokens"] > 10
    # response event order (WebSocket: audio deltas, no output_audio_buffer.*)
    r = types[types.index("response.created"):]
    r = [t for t in r if not t.startswith("conversation.item.input_audio_transcription")]
    assert r[:4] == ["response.created", "response.output_item.added", "conversation.item.added",
                     "response.content_part.added"]
    assert r[-7:] == ["response.output_audio.done", "response.output_audio_transcript.done",
                      "response.content_part.done", "conversation.item.done", "response.output_item.done",
                      "response.done", "rate_limits.updated"]
    assert "response.output_audio.delta" in r and not any(t.startswith("output_audio_buffer") for t in types)
    transcript = "".join(x["delta"] for x in d.of("response.output_audio_transcript.delta"))
    assert transcript == "It is sunny in Paris today."
    done = d.of("response.done")[0]["response"]
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_token_details"]["audio_tokens"] >= 10  # ~1.5 s of user audio
    audio_ms = sum(audio.duration_ms(base64.b64decode(x["delta"]), 24000) for x in d.of("response.output_audio.delta"))
    assert usage["output_token_details"]["audio_tokens"] == -(-int(audio_ms) // 50)
    # retrieve after transcription has the transcript
    (r2,) = d.send({"type": "conversation.item.retrieve", "item_id": started["item_id"]})
    assert r2["item"]["content"][0]["transcript"] == "What's the weather in Paris?"


def test_no_transcription_configured_means_null_forever() -> None:
    d = Driver(script=SCRIPT)
    d.append_pcm(utterance())
    d.advance(5)
    assert d.of("conversation.item.done")[0]["item"]["content"][0]["transcript"] is None
    assert not [t for t in d.types() if "input_audio_transcription" in t]
    assert d.of("response.done")


def test_transcription_403_fault() -> None:
    d = Driver(script=SCRIPT, faults=[Fault(name="transcription_403")])
    d.send(TRANSCRIBE)
    d.append_pcm(utterance())
    d.advance(3)
    (failed,) = d.of("conversation.item.input_audio_transcription.failed")
    item_id = failed["item_id"]
    assert failed["error"] == {"type": "server_error", "code": None, "param": None,
                               "message": f"Input transcription failed for item '{item_id}'. 403 Forbidden"}
    assert not d.of("conversation.item.input_audio_transcription.completed")


def test_whisper_usage_is_duration_and_prompt_is_honoured() -> None:
    d = Driver(script={"turns": [{"hears": "my account at acme corp"}]})
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": None, "transcription": {"model": "whisper-1", "prompt": "ACME Corp"}}}}})
    d.append_pcm(utterance(1000, lead_ms=0, tail_ms=0))
    assert not d.of("input_audio_buffer.speech_started")  # manual turns
    got = d.send({"type": "input_audio_buffer.commit"})
    assert d.types(got) == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    d.advance(2)
    (delta,) = d.of("conversation.item.input_audio_transcription.delta")
    (comp,) = d.of("conversation.item.input_audio_transcription.completed")
    assert delta["delta"] == comp["transcript"] == "my account at ACME Corp"
    assert comp["usage"] == {"type": "duration", "seconds": 1.0}
    assert not d.of("response.created")  # manual turns never auto-respond


def test_out_of_band_transcription_and_metadata() -> None:
    d = Driver(script=SCRIPT)
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "create_response": False}}}}})
    d.append_pcm(utterance())
    item_id = d.of("input_audio_buffer.committed")[0]["item_id"]
    got = d.send({"type": "response.create", "response": {
        "conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "transcription"},
        "instructions": "Return a verbatim transcript of the user's latest turn.",
        "input": [{"type": "item_reference", "id": item_id}]}})
    got += d.advance(2)
    types = d.types(got)
    assert "conversation.item.added" not in types and "conversation.item.done" not in types
    created, done = d.of("response.created", got)[0]["response"], d.of("response.done", got)[0]["response"]
    assert created["conversation_id"] is None and created["metadata"] == {"topic": "transcription"}
    assert done["metadata"] == {"topic": "transcription"} and done["output_modalities"] == ["text"]
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "What's the weather in Paris?"}]
    assert done["usage"]["output_token_details"]["audio_tokens"] == 0
    assert [t for t in types if t in ("response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.done", "rate_limits.updated")] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.done",
        "rate_limits.updated"]
    # OOB runs alongside a default-conversation response
    d.send({"type": "response.create"})
    extra = d.send({"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"]}})
    assert extra[0]["type"] == "response.created"
    (e,) = d.send({"type": "response.create"})
    assert e["error"]["code"] == "conversation_already_has_active_response"
    assert e["error"]["message"] == (
        f"Conversation already has an active response in progress: {d.session.active_response_id}. "
        "Wait until the response is finished before creating a new one.")
    d.send({"type": "response.create", "response": {"input": [{"type": "item_reference", "id": "item_nope"}],
                                                    "conversation": "none"}})
    assert d.events[-1]["type"] == "error"


def test_function_call_flow() -> None:
    tool = {"type": "function", "name": "get_weather", "description": "w",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    d = Driver(script={"response_latency_s": 0, "turns": [{
        "hears": "weather?", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        "after_tool": "Sunny, 24 degrees."}]})
    d.send({"type": "session.update", "session": {"type": "realtime", "tools": [tool]}})
    d.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                          "content": [{"type": "input_text", "text": "weather?"}]}})
    got = d.send({"type": "response.create"}) + d.advance(1)
    types = d.types(got)
    assert types[:3] == ["response.created", "response.output_item.added", "conversation.item.added"]
    assert types[-6:] == ["response.function_call_arguments.delta", "response.function_call_arguments.done",
                          "conversation.item.done", "response.output_item.done", "response.done",
                          "rate_limits.updated"]
    args_done = d.of("response.function_call_arguments.done", got)[0]
    assert args_done["name"] == "get_weather" and json.loads(args_done["arguments"]) == {"city": "Paris"}
    assert args_done["call_id"].startswith("call_")
    fc = d.of("response.done", got)[0]["response"]["output"][0]
    assert fc["type"] == "function_call" and fc["status"] == "completed"
    d.send({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                          "call_id": args_done["call_id"], "output": "{\"t\":24}"}})
    got = d.send({"type": "response.create"}) + d.advance(5)
    assert "".join(x["delta"] for x in d.of("response.output_audio_transcript.delta", got)) == "Sunny, 24 degrees."


def test_cancel_and_greeting_from_instructions() -> None:
    d = Driver(script={"response_latency_s": 0.2})
    d.send({"type": "response.create", "response": {
        "instructions": "Say to the user 'Thank you for calling, how can I help you'"}})
    got = d.advance(0.21)  # some output emitted
    assert d.of("response.output_audio.delta", got)
    (cancel_done, _rl) = [e for e in d.send({"type": "response.cancel"}) if e["type"] in ("response.done",
                                                                                      "rate_limits.updated")]
    r = cancel_done["response"]
    assert r["status"] == "cancelled" and r["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert r["output"][0]["status"] == "incomplete"
    assert "Thank you for calling, how can I help you".startswith(r["output"][0]["content"][0]["transcript"])
    assert r["usage"]["output_tokens"] > 0
    assert d.advance(5) == []  # nothing more from the cancelled response
    (e,) = d.send({"type": "response.cancel"})
    assert e["error"]["code"] == "response_cancel_not_active"


def test_sip_barge_in_output_buffer_and_audio_to_media_path() -> None:
    d = Driver(transport="sip", config={"type": "realtime"},
               script={"greeting": "Welcome to Example Corp, how may I direct your call today?",
                       "response_latency_s": 0, "generation_speed": 1000})
    got = d.send({"type": "response.create"}) + d.advance(0.5)
    types = d.types(got)
    assert "response.output_audio.delta" not in types  # SIP: audio goes to RTP
    assert types.index("output_audio_buffer.started") < types.index("response.output_audio_transcript.delta")
    assert "response.done" in types and "output_audio_buffer.stopped" not in types  # still playing
    assert d.audio and all(a.rate == 8000 and not a.corrupt for a in d.audio)
    played_total = sum(audio.duration_ms(a.pcm, a.rate) for a in d.audio)
    assert played_total > 2000
    # the caller talks over the greeting: playback is cut, the item truncated
    got = d.feed(utterance(800, rate=8000, lead_ms=0, tail_ms=300), rate=8000)
    types = d.types(got)
    assert types.index("input_audio_buffer.speech_started") < types.index("output_audio_buffer.cleared")
    rid = d.of("response.created")[0]["response"]["id"]
    assert [o.response_id for o in d.other if isinstance(o, ClearAudio)] == [rid]
    greeting = d.session.items[0]
    assert len(greeting["content"][0]["transcript"]) < len("Welcome to Example Corp, how may I direct your call today?")
    d.advance(5)
    assert not [e for e in d.of("output_audio_buffer.stopped") if e["response_id"] == d.of(
        "response.created")[0]["response"]["id"]]


def test_sip_playback_stops_and_dtmf() -> None:
    d = Driver(transport="sip", config={"type": "realtime"}, script={"greeting": "Hi.", "response_latency_s": 0})
    d.send({"type": "response.create"})
    d.advance(3)
    rid = d.of("response.created")[0]["response"]["id"]
    assert [e["response_id"] for e in d.of("output_audio_buffer.stopped")] == [rid]
    assert d.types().index("rate_limits.updated") < d.types().index("output_audio_buffer.stopped")
    (dt,) = d.session.dtmf("9", d.now)
    assert isinstance(dt, dict)
    assert dt["type"] == "input_audio_buffer.dtmf_event_received" and dt["event"] == "9" and "event_id" not in dt
    d._take([dt])


def test_vad_barge_in_cancels_websocket_response() -> None:
    d = Driver(script={"greeting": "A long greeting " * 10, "response_latency_s": 0, "generation_speed": 1.0})
    d.send({"type": "response.create"})
    d.advance(0.3)
    d.append_pcm(utterance(600, lead_ms=0, tail_ms=0))
    done = d.of("response.done")[0]["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}


def test_static_after_update_fault_resets_formats_and_corrupts_media() -> None:
    d = Driver(transport="sip", config={"type": "realtime"}, faults=[Fault(name="static_after_update")],
               script={"response_latency_s": 0})
    (upd,) = d.send({"type": "session.update", "session": {"type": "realtime", "tools": []}})
    assert upd["session"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    d.send({"type": "response.create"})
    d.advance(3)
    assert d.audio and all(a.corrupt for a in d.audio)
    # the forum fix: re-specify G.711 both ways
    d.audio.clear()
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}})
    d.send({"type": "response.create"})
    d.advance(3)
    assert d.audio and not any(a.corrupt for a in d.audio)


def test_voice_is_frozen_after_first_audio() -> None:
    d = Driver(script={"response_latency_s": 0})
    (ok,) = d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "ash"}}}})
    assert ok["session"]["audio"]["output"]["voice"] == "ash"
    d.send({"type": "response.create"})
    d.advance(3)
    assert d.of("response.created")[0]["response"]["audio"]["output"]["voice"] == "ash"
    (e,) = d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "coral"}}}})
    assert e["type"] == "error" and e["error"]["param"] == "session.audio.output.voice"


def test_idle_timeout_commits_and_responds() -> None:
    d = Driver(script={"response_latency_s": 0})
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}}})
    d.append_pcm(audio.silence(6000, 24000))
    types = d.types()
    i = types.index("input_audio_buffer.timeout_triggered")
    assert types[i:i + 5] == ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed",
                              "conversation.item.added", "conversation.item.done", "response.created"]
    t = d.of("input_audio_buffer.timeout_triggered")[0]
    assert t["audio_end_ms"] - t["audio_start_ms"] >= 4900


def test_g711_input_format_over_websocket() -> None:
    d = Driver(script={"response_latency_s": 0})
    d.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}})
    d.append_pcm(utterance(rate=8000), rate=8000, fmt="audio/pcmu")
    d.advance(3)
    assert d.of("input_audio_buffer.speech_started") and d.of("response.done")
    chunk = base64.b64decode(d.of("response.output_audio.delta")[0]["delta"])
    assert len(chunk) == 800  # 100 ms of µ-law at 8 kHz


def test_transcription_session() -> None:
    d = Driver(kind="transcription", script=SCRIPT)
    assert d.events[0]["session"]["object"] == "realtime.transcription_session"
    (e,) = d.send({"type": "session.update", "session": {"type": "realtime"}})
    assert e["error"]["message"] == "Passing a realtime session update event to a transcription session is not allowed."
    (e,) = d.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}}}}})
    assert e["error"]["code"] == "integer_below_min_value"
    d.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-4o-mini-transcribe"}}}}})
    d.append_pcm(utterance())
    d.advance(3)
    assert d.of("conversation.item.input_audio_transcription.completed")
    assert not d.of("response.created") and not d.of("rate_limits.updated")
    (e,) = d.send({"type": "response.create"})
    assert e["error"]["code"] == "invalid_value"
