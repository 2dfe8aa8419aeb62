"""Input transcription honours `language`, `languages`, `prompt`.

The caller's spoken language comes from the script (`Turn.language`, default "en"). A transcription
forced to another language mis-hears the turn in the documented, deterministic way
(`mock_api.realtime.transcription.misheard`); a matching or unset language lets the scripted text through.
"""

from __future__ import annotations

import io
import wave
from typing import Any

import pytest
from openai import AsyncOpenAI

from mock_api.client import MockClient
from mock_api.realtime.transcription import misheard, primary, transcribe
from tests.realtime_fixtures import Driver, events_until, utterance

SPANISH = "Hola, buenos días. Quiero reportar un accidente de coche. Me llamo Rosalía Ricart."
SCRIPT = {"turns": [{"hears": SPANISH, "language": "es", "says": "Claro, le ayudo con el accidente."}],
          "transcription_delay_s": 0.05, "response_latency_s": 0.01}


def _turn(transcription: dict[str, Any] | None, script: dict[str, Any] | None = None) -> Driver:
    """One manual turn of ~1 s of speech under the given transcription config."""
    d = Driver(script=script or SCRIPT)
    (upd,) = d.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": None, "transcription": transcription}}}})
    assert upd["type"] == "session.updated", upd
    d.append_pcm(utterance(1000, lead_ms=0, tail_ms=0))
    d.send({"type": "input_audio_buffer.commit"})
    d.advance(3)
    return d


def _completed(d: Driver) -> dict[str, Any]:
    (comp,) = d.of("conversation.item.input_audio_transcription.completed")
    return comp


def test_misheard_rendering_is_deterministic_and_documented() -> None:
    assert misheard("I need to reset my password.") == "o niid tu risit my pesswurd"
    assert misheard(SPANISH) == misheard(SPANISH) != SPANISH
    assert len(misheard(SPANISH).split()) == len(SPANISH.split())
    assert misheard("My policy number is 5665-2870.") == "my pulocy nambir os 5665-2870"
    assert primary("es-MX") == primary("ES") == "es" and primary("") is None and primary(None) is None


@pytest.mark.parametrize("model", ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe"])
def test_matching_or_unset_language_gives_the_scripted_text(model: str) -> None:
    for language in ("es", "es-ES", None):
        comp = _completed(_turn({"model": model, "language": language}))
        assert comp["transcript"] == SPANISH, (model, language)


@pytest.mark.parametrize("model", ["whisper-1", "gpt-4o-transcribe", "gpt-transcribe"])
def test_wrong_language_mis_hears_the_turn(model: str) -> None:
    d = _turn({"model": model, "language": "en"})
    comp = _completed(d)
    assert comp["transcript"] == misheard(SPANISH) != SPANISH
    deltas = "".join(e["delta"] for e in d.of("conversation.item.input_audio_transcription.delta"))
    assert deltas == comp["transcript"]  # deltas spell out the same (wrong) transcript
    # the model itself still understood the caller: an out-of-band transcription gets the words right
    user = next(e for e in d.of("conversation.item.done") if e["item"]["role"] == "user")["item"]
    got = d.send({"type": "response.create", "response": {
        "conversation": "none", "output_modalities": ["text"], "instructions": "Transcribe the user's turn.",
        "input": [{"type": "item_reference", "id": user["id"]}]}}) + d.advance(3)
    done = next(e for e in got if e["type"] == "response.done")
    assert done["response"]["output"][0]["content"][0]["text"] == SPANISH


def test_english_caller_is_the_default_language() -> None:
    script = {"turns": [{"hears": "What's the weather in Paris?"}], "transcription_delay_s": 0.05}
    assert _completed(_turn({"model": "gpt-4o-transcribe", "language": "en"}, script))["transcript"] == \
        "What's the weather in Paris?"
    assert _completed(_turn({"model": "gpt-4o-transcribe", "language": "es"}, script))["transcript"] == \
        misheard("What's the weather in Paris?")


def test_languages_field_only_for_gpt_transcribe_models() -> None:
    for model in ("gpt-transcribe", "gpt-live-transcribe"):
        comp = _completed(_turn({"model": model}))
        assert comp["languages"] == [{"code": "es"}]  # detected spoken language
        comp = _completed(_turn({"model": model, "language": "en"}))
        assert comp["languages"] == [{"code": "en"}] and comp["transcript"] == misheard(SPANISH)
    for model in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"):
        assert "languages" not in _completed(_turn({"model": model, "language": "es"}))


def test_languages_candidates_and_keywords() -> None:
    comp = _completed(_turn({"model": "gpt-transcribe", "languages": ["en", "fr"]}))
    assert comp["transcript"] == misheard(SPANISH) and comp["languages"] == [{"code": "en"}]
    comp = _completed(_turn({"model": "gpt-transcribe", "languages": ["en", "es"]}))
    assert comp["transcript"] == SPANISH and comp["languages"] == [{"code": "es"}]
    # `languages` is a gpt-transcribe knob: other models ignore it
    assert _completed(_turn({"model": "gpt-4o-transcribe", "languages": ["en"]}))["transcript"] == SPANISH
    # `language` wins over `languages`
    assert _completed(_turn({"model": "gpt-transcribe", "language": "es", "languages": ["en"]}))["transcript"] \
        == SPANISH
    comp = _completed(_turn({"model": "gpt-transcribe", "keywords": ["ROSALÍA", "Coche"]}))
    assert comp["transcript"] == SPANISH.replace("Rosalía", "ROSALÍA").replace("coche", "Coche")


def test_prompt_still_applies_and_updates_echo_the_config() -> None:
    d = _turn({"model": "gpt-4o-transcribe", "language": "es", "prompt": "ACCIDENTE"})
    assert _completed(d)["transcript"] == SPANISH.replace("accidente", "ACCIDENTE")
    upd = d.of("session.updated")[0]["session"]["audio"]["input"]["transcription"]
    assert upd == {"model": "gpt-4o-transcribe", "language": "es", "prompt": "ACCIDENTE"}
    # prompting happens after decoding: it cannot rescue a turn decoded in the wrong language
    assert transcribe("hola", "es", {"model": "whisper-1", "language": "en", "prompt": "hola"}).text == "hule"
    assert transcribe("hola", "es", {"model": "whisper-1", "prompt": "HOLA"}).text == "HOLA"




@pytest.mark.parametrize(("language", "recognised"), [("es", True), ("en", False)])
async def test_spanish_caller_over_the_socket(client: AsyncOpenAI, control: MockClient, language: str,
                                              recognised: bool) -> None:
    """A Spanish caller, an accept body with whisper-1 and `language` set, SDK over a real socket."""
    call_id = await control.start_call(script=SCRIPT)
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime", audio={"input": {
        "transcription": {"model": "whisper-1", "language": language},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500, "create_response": False}}})
    async with client.realtime.connect(call_id=call_id) as conn:
        created = (await events_until(conn, "session.created"))[-1]
        assert created.session.audio.input.transcription.language == language
        await control.say(call_id, "caller_spanish", speed=4)
        got = await events_until(conn, "conversation.item.input_audio_transcription.completed")
    committed = next(e for e in got if e.type == "input_audio_buffer.committed")
    completed = got[-1]
    assert completed.item_id == committed.item_id
    assert completed.transcript == (SPANISH if recognised else misheard(SPANISH))
    assert completed.usage.type == "duration" and completed.usage.seconds > 1
    assert completed.languages is None  # whisper-1 does not report languages


async def test_rest_transcriptions_honour_language_and_prompt(client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(script=SCRIPT)
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(utterance(1500, rate=16000, lead_ms=0, tail_ms=500))
    data = wav.getvalue()
    same = await client.audio.transcriptions.create(model="whisper-1", file=("t.wav", data), language="es")
    assert same.text == SPANISH
    wrong = await client.audio.transcriptions.create(model="whisper-1", file=("t.wav", data), language="en")
    assert wrong.text == misheard(SPANISH)
    auto = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("t.wav", data),
                                                    prompt="COCHE")
    assert auto.text == SPANISH.replace("coche", "COCHE")
    verbose = await client.audio.transcriptions.create(model="whisper-1", file=("t.wav", data),
                                                       response_format="verbose_json")
    assert verbose.language == "spanish" and verbose.text == SPANISH
