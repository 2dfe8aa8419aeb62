"""GPT-Live's reflected audio in chunks of ``reflect_chunk_ms`` (:mod:`mock_api.live.playback`): the sidebands get
the same bytes as with the finest chunking, in fewer events whose spans tile the reply, with the transcripts
unchanged; the mock config's ``live.reflect_chunk_ms`` reaches a call's session and its sideband (the official
SDK's), and the session's ``live.settings`` journals it. Every event the core emits here is parsed with the SDK's
Live unions (:class:`tests.test_live_session.Bench`)."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest
from openai import AsyncOpenAI
from pydantic import ValidationError

from mock_api import audio
from mock_api.client import MockClient, MockControlError
from mock_api.config import MockConfig
from mock_api.ids import IdSource
from mock_api.live.outputs import MediaAudio
from mock_api.live.session import LiveSession
from mock_api.live.settings import REFLECT_CHUNK_MS, LiveSettings
from tests.test_live_session import ACCEPTED, SCRIPT, WALL, Bench, events
from tests.test_live_sideband import REPLY, live_call, sideband

BYTES_PER_MS = 24 * 2  # PCM16 at 24 kHz
TRANSCRIPTS = ("session.input_transcript.delta", "session.output_transcript.delta")


def conversation(reflect_chunk_ms: int, media_rate: int = 24000) -> Bench:
    """A SIP session with a sideband: 1.2 s of caller audio reflected, an utterance answered, the reply played out."""
    b = Bench(LiveSession.sip(dict(ACCEPTED), script=SCRIPT, ids=IdSource(7), wall=WALL,
                              reflect_chunk_ms=reflect_chunk_ms, media_rate=media_rate))
    b.begin()
    b.attach("sb")
    b.take(b.session.feed_audio(audio.tone(1200, 8000), 8000, b.now))
    b.now = 2.4
    b.speech("What's the weather in Paris?", 500, 2100)
    b.until(12.0)
    return b


def pcm_of(deltas: list[dict[str, Any]], key: str) -> bytes:
    return b"".join(base64.b64decode(e[key]) for e in deltas)


def test_a_bigger_chunk_carries_the_same_audio_in_fewer_events() -> None:
    fine, coarse = conversation(100), conversation(500)
    out_fine = events(fine.outputs, "session.output_audio.delta", to="sb")
    out_coarse = events(coarse.outputs, "session.output_audio.delta", to="sb")
    played = b"".join(o.pcm for o in coarse.outputs if isinstance(o, MediaAudio))
    assert pcm_of(out_coarse, "delta") == pcm_of(out_fine, "delta") == played  # what the caller heard, whole
    assert len(out_coarse) == -(-len(out_fine) // 5)
    assert all(len(base64.b64decode(e["delta"])) <= 500 * BYTES_PER_MS for e in out_coarse)
    assert out_coarse[0]["start_ms"] == out_fine[0]["start_ms"]
    assert all(a["end_ms"] == n["start_ms"] for a, n in itertools.pairwise(out_coarse))  # no gap: no frame dropped
    assert out_coarse[-1]["end_ms"] == out_fine[-1]["end_ms"]

    in_fine = events(fine.outputs, "session.input_audio.append", to="sb")
    in_coarse = events(coarse.outputs, "session.input_audio.append", to="sb")
    assert pcm_of(in_coarse, "audio") == pcm_of(in_fine, "audio")
    assert [len(base64.b64decode(e["audio"])) // BYTES_PER_MS for e in in_coarse] == [500, 500, 200]

    def transcripts(b: Bench) -> list[tuple[str, str, int, int]]:
        return [(e["type"], e["delta"], e["start_ms"], e["end_ms"]) for e in events(b.outputs)
                if e["type"] in TRANSCRIPTS]

    assert transcripts(coarse) == transcripts(fine)  # words at the time they are said, whatever the chunk


def test_a_sip_leg_at_8_khz_gets_the_reply_made_at_8_khz_and_the_sideband_the_same_24_khz() -> None:
    wide, narrow = conversation(500), conversation(500, media_rate=8000)
    media = [o for o in narrow.outputs if isinstance(o, MediaAudio)]
    assert media and {m.rate for m in media} == {8000}
    played_ms = sum(audio.duration_ms(m.pcm, m.rate) for m in media)
    assert played_ms == sum(audio.duration_ms(m.pcm, m.rate) for m in wide.outputs if isinstance(m, MediaAudio))
    assert pcm_of(events(narrow.outputs, "session.output_audio.delta"), "delta") == pcm_of(
        events(wide.outputs, "session.output_audio.delta"), "delta")  # the app's audio is unchanged


def test_each_delta_follows_the_words_said_where_it_starts() -> None:
    b = conversation(300)
    kinds = [(e["type"], e["start_ms"]) for e in events(b.outputs, to="sb")
             if e["type"] in ("session.output_audio.delta", "session.output_transcript.delta")]
    first_audio = next(i for i, (t, _) in enumerate(kinds) if t == "session.output_audio.delta")
    assert kinds[first_audio - 1] == ("session.output_transcript.delta", kinds[first_audio][1])


def test_a_barge_in_stops_reflection_after_the_chunk_playing() -> None:
    b = Bench(LiveSession.sip(dict(ACCEPTED), script=SCRIPT, ids=IdSource(8), wall=WALL, reflect_chunk_ms=500))
    b.begin()
    b.attach("sb")
    b.now = 2.4
    b.speech("What's the weather in Paris?", 500, 2100)  # the reply plays from 2.6 s
    b.until(3.3)
    cut_ms = 3300
    b.take(b.session.speech_started(cut_ms, b.now))
    b.until(12.0)
    deltas = events(b.outputs, "session.output_audio.delta", to="sb")
    assert [e["start_ms"] for e in deltas] == [2600, 3100]  # the chunk playing at the cut went out whole
    assert deltas[-1]["start_ms"] <= cut_ms < deltas[-1]["end_ms"]


@pytest.mark.parametrize("ms", [0, 50, 250])
def test_a_chunk_that_is_not_whole_reply_chunks_is_refused(ms: int) -> None:
    with pytest.raises(ValueError, match="multiple of 100"):
        LiveSession.sip(dict(ACCEPTED), reflect_chunk_ms=ms)
    with pytest.raises(ValidationError):
        LiveSettings(reflect_chunk_ms=ms)


def test_the_mock_default_is_the_configured_default() -> None:
    assert MockConfig().live.reflect_chunk_ms == REFLECT_CHUNK_MS


async def test_the_configured_chunk_reaches_a_calls_sideband(client: AsyncOpenAI, control: MockClient) -> None:
    with pytest.raises(MockControlError):
        await control.configure(live={"reflect_chunk_ms": 250})
    await control.configure(live={"reflect_chunk_ms": 300})
    call_id, live_id = await live_call(control, client)
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await control.say(call_id, "caller_policy_number", speed=4)
        await sb.text_of("session.output_transcript.delta", REPLY)
        deltas = sb.of("session.output_audio.delta")
        sizes = [len(base64.b64decode(e["delta"])) for e in deltas]
        assert sizes and sizes[0] == 300 * BYTES_PER_MS and max(sizes) == sizes[0]
        assert all(a["end_ms"] == n["start_ms"] for a, n in itertools.pairwise(deltas))
        appended = sb.of("session.input_audio.append")
        assert appended and all(len(base64.b64decode(e["audio"])) <= 300 * BYTES_PER_MS for e in appended)
    view = await control.call(call_id)
    (settings,) = view.of_kind("live.settings")
    assert settings.data["settings"]["reflect_chunk_ms"] == 300
