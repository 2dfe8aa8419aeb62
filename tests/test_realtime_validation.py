"""Session-config and client-payload validation against the SDK's own types."""

from __future__ import annotations

import pytest
from openai.types.realtime import ConversationItemParam, RealtimeResponseCreateParamsWithReferencesParam

from mock_api.realtime.validation import ParamError, validate_payload, validate_session_config


def test_missing_type_is_reported_before_unknown_fields() -> None:
    # as the forum thread of failure mode 3 reports: a beta field and no type -> the type error wins
    err = validate_session_config({"input_audio_transcription": {"model": "gpt-4o-transcribe"}})
    assert err == ParamError(
        "missing_required_parameter", "Missing required parameter: 'session.type'.", "session.type"
    )


@pytest.mark.parametrize(
    "field",
    ["input_audio_transcription", "input_audio_format", "modalities", "turn_detection", "temperature", "voice",
     "bogus_field", "output_audio_format", "input_audio_noise_reduction", "max_response_output_tokens"],
)
def test_beta_fields_are_unknown_parameters(field: str) -> None:
    err = validate_session_config({"type": "realtime", field: "x"})
    assert err is not None
    assert err.code == "unknown_parameter"
    assert err.message == f"Unknown parameter: 'session.{field}'."
    assert err.param == f"session.{field}"


def test_first_unknown_in_payload_order_depth_first() -> None:
    payload = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "sample": 1}}}, "zzz": 1}
    err = validate_session_config(payload)
    assert err is not None and err.param == "session.audio.input.format.sample"
    # unknown params win over value errors that come earlier in the payload
    err = validate_session_config({"type": "realtime", "max_output_tokens": 0, "temperature": 1})
    assert err is not None and err.code == "unknown_parameter" and err.param == "session.temperature"


def test_invalid_session_type() -> None:
    err = validate_session_config({"type": "session"})
    assert err is not None
    assert err.code == "invalid_value"
    assert err.param == "session.type"
    assert err.message.startswith("Invalid value: 'session'. Supported values are: 'realtime' and 'transcription'")


def test_transcription_update_to_realtime_session_refused() -> None:
    err = validate_session_config({"type": "transcription"}, kind="realtime")
    assert err is not None
    assert err.message == "Passing a transcription session update event to a realtime session is not allowed."


def test_rate_below_24000() -> None:
    err = validate_session_config(
        {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}
    )
    assert err is not None
    assert err.code == "integer_below_min_value"
    assert err.param == "session.audio.input.format.rate"
    assert "Expected a value >= 24000" in err.message


def test_discriminated_unions_use_the_selected_member() -> None:
    # threshold belongs to server_vad only
    err = validate_session_config(
        {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad", "threshold": 0.3}}}}
    )
    assert err is not None and err.code == "unknown_parameter"
    assert err.param == "session.audio.input.turn_detection.threshold"
    err = validate_session_config({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "vad"}}}})
    assert err is not None and err.code == "invalid_value"
    assert err.message == "Invalid value: 'vad'. Supported values are: 'server_vad' and 'semantic_vad'."
    err = validate_session_config({"type": "realtime", "audio": {"output": {"format": {"type": "g711_ulaw"}}}})
    assert err is not None and err.param == "session.audio.output.format.type"
    assert "'audio/pcm', 'audio/pcmu', and 'audio/pcma'" in err.message


@pytest.mark.parametrize(
    ("payload", "code", "param"),
    [
        ({"max_output_tokens": 0}, "integer_below_min_value", "session.max_output_tokens"),
        ({"max_output_tokens": 5000}, "integer_above_max_value", "session.max_output_tokens"),
        ({"max_output_tokens": "lots"}, "invalid_value", "session.max_output_tokens"),
        ({"instructions": 5}, "invalid_type", "session.instructions"),
        ({"audio": "pcm"}, "invalid_type", "session.audio"),
        ({"audio": {"output": {"speed": 2}}}, "decimal_above_max_value", "session.audio.output.speed"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": -0.1}}}},
         "decimal_below_min_value", "session.audio.input.turn_detection.threshold"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 10}}}},
         "integer_below_min_value", "session.audio.input.turn_detection.idle_timeout_ms"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": "yes"}}}},
         "invalid_type", "session.audio.input.turn_detection.create_response"),
        ({"output_modalities": ["audio", "text"]}, "invalid_value", "session.output_modalities"),
        ({"output_modalities": ["video"]}, "invalid_value", "session.output_modalities[0]"),
        ({"tools": [{"type": "function", "name": "x", "strict": True}]}, "unknown_parameter",
         "session.tools[0].strict"),
        ({"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
    ],
)
def test_value_errors(payload: dict, code: str, param: str) -> None:
    err = validate_session_config({"type": "realtime", **payload})
    assert err is not None, payload
    assert (err.code, err.param) == (code, param), err


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "realtime"},
        {"type": "realtime", "model": "gpt-realtime", "instructions": "You are Alex."},
        {"type": "realtime", "model": "gpt-realtime", "instructions": "Janet",
         "audio": {"input": {"transcription": {"model": "whisper-1", "language": "es"},
                             "turn_detection": {"type": "semantic_vad", "interrupt_response": True}},
                   "output": {"voice": "alloy"}},
         "tools": [{"type": "function", "name": "end_call", "description": "Ends the call.",
                    "parameters": {"type": "object", "properties": {}, "required": []}}],
         "tool_choice": "auto"},
        {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None,
                                                 "transcription": None, "noise_reduction": {"type": "near_field"}},
                                       "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                                  "voice": {"id": "voice_123"}, "speed": 1.2}}},
        {"type": "realtime", "model": "gpt-realtime-2.1", "tracing": "auto", "max_output_tokens": "inf",
         "truncation": {"type": "retention_ratio", "retention_ratio": 0.5},
         "tool_choice": {"type": "function", "name": "x"}, "include": ["item.input_audio_transcription.logprobs"]},
        {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                      "transcription": {"model": "gpt-4o-transcribe", "prompt": ""},
                                                      "turn_detection": {"type": "server_vad", "threshold": 0.4}}}},
    ],
)
def test_valid_payloads_pass(payload: dict) -> None:
    assert validate_session_config(payload) is None


def test_non_object_session() -> None:
    err = validate_session_config("realtime")
    assert err is not None and err.code == "invalid_type" and err.param == "session"


def test_response_create_params() -> None:
    tp = RealtimeResponseCreateParamsWithReferencesParam
    ok = {"conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "transcription"},
          "input": [{"type": "item_reference", "id": "item_A"}], "instructions": "Transcribe."}
    assert validate_payload(tp, ok, "response") is None
    err = validate_payload(tp, {"modalities": ["text"]}, "response")
    assert err is not None and err.message == "Unknown parameter: 'response.modalities'."
    err = validate_payload(tp, {"metadata": {str(i): "v" for i in range(17)}}, "response")
    assert err is not None and err.param == "response.metadata"


def test_conversation_items() -> None:
    tp = ConversationItemParam
    assert validate_payload(tp, {"type": "message", "role": "user",
                                 "content": [{"type": "input_text", "text": "hi"}]}, "item") is None
    assert validate_payload(tp, {"type": "function_call_output", "call_id": "call_1", "output": "{}"}, "item") is None
    err = validate_payload(tp, {"type": "function_call_output", "output": "x"}, "item")
    assert err is not None and err.code == "missing_required_parameter" and err.param == "item.call_id"
    err = validate_payload(tp, {"type": "message", "role": "bot", "content": []}, "item")
    assert err is not None and err.code == "invalid_value" and err.param == "item.role"
    err = validate_payload(tp, {"type": "message", "role": "system",
                                "content": [{"type": "input_audio", "audio": "AAAA"}]}, "item")
    assert err is not None and err.code == "unknown_parameter"
