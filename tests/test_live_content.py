"""A stored GPT-Live session's recording, ``GET /v1/live/sessions/{id}/content``: downloaded with the SDK's
``client.live.sessions.download_recording`` and with ``requests``, from a virtual call accepted with
``store: true`` (during and after the call) and from a primary WebSocket; the refusals for a session that was
not stored and for unknown ids; and the recording's own rules on a manual clock."""

from __future__ import annotations

import asyncio
import io
import wave
from typing import Any

import numpy as np
import openai
import pytest
import requests
from openai import AsyncOpenAI

from audio_fixtures import fixture
from mock_api import audio, live_host
from mock_api.client import MockClient
from mock_api.live_host import Recording, RecordingSettings
from mock_api.running import RunningMock
from tests.test_live_primary import caller_turn, primary
from tests.test_live_sideband import sideband

REPLY = "Thanks, I found your policy."
HEARD = "My policy number is 5665-2870."
SCRIPT: dict[str, Any] = {"turns": [{"hears": "policy number", "says": REPLY}], "response_latency_s": 0.05}
STORED: dict[str, Any] = {"type": "live", "model": "gpt-live-1.1", "store": True}


def read_wav(data: bytes) -> tuple[bytes, int]:
    """A 16-bit mono WAV's samples and rate."""
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.readframes(w.getnframes()), w.getframerate()


def best_match(recording: bytes, clip: bytes) -> float:
    """The highest normalised correlation of ``clip`` with any same-length window of ``recording``."""
    r = audio.to_array(recording).astype(np.float64)
    c = audio.to_array(clip).astype(np.float64)
    assert len(r) >= len(c)
    n = 1 << (len(r) + len(c)).bit_length()
    dots = np.fft.irfft(np.fft.rfft(r, n) * np.conj(np.fft.rfft(c, n)), n)[: len(r) - len(c) + 1]
    sums = np.concatenate(([0.0], np.cumsum(r * r)))
    energy = sums[len(c):] - sums[: len(r) - len(c) + 1]  # each window's energy
    scores = dots / (np.sqrt(np.maximum(energy, 1e-9)) * np.linalg.norm(c))
    return float(np.max(scores))


def billed_s(entries: list[dict[str, Any]]) -> float:
    """The session's length in whole seconds, on its own timeline: session.closed's final usage."""
    (closed,) = [e["data"]["event"] for e in entries
                 if e["kind"] == "live.server" and e["data"]["event"]["type"] == "session.closed"]
    return float(closed["usage"]["seconds"])


async def test_a_stored_call_s_recording_has_the_caller_and_the_session_s_length(
        mock: RunningMock, client: AsyncOpenAI, control: MockClient) -> None:
    call_id = await control.start_call(script=SCRIPT)
    live_id = (await control.call(call_id)).live_id
    await client.live.sessions.accept(live_id, session=STORED)  # type: ignore[arg-type]
    async with sideband(client, live_id) as sb:
        await sb.until("session.started")
        await control.say(call_id, "caller_policy_number")
        heard = await sb.text_of("session.input_transcript.delta", HEARD)
        during = await client.live.sessions.download_recording(live_id)  # while the call goes on
        pcm, rate = read_wav(during.read())
        assert rate == 24000 and audio.duration_ms(pcm, rate) >= heard[-1]["end_ms"]
        await sb.text_of("session.output_transcript.delta", REPLY)
        await client.live.sessions.hangup(live_id)
        await sb.until("session.closed")
    got = await client.live.sessions.download_recording(live_id)
    assert got.response.headers["content-type"] == "audio/wav"
    pcm, rate = read_wav(got.content)
    view = await control.call(call_id)
    seconds = billed_s([e.model_dump() for e in view.entries])
    assert seconds <= audio.duration_ms(pcm, rate) / 1000 < seconds + 1  # the whole session, no more
    assert best_match(pcm, fixture("caller_policy_number").pcm(24000)) > 0.9  # the caller, as spoken
    reply = audio.to_array(pcm[(heard[-1]["end_ms"] + 300) * 48:])  # the model's part, after the caller's
    assert view.of_kind("audio.out") and np.abs(reply).max() > 1000
    plain = await asyncio.to_thread(requests.get, f"{mock.base_url}/live/sessions/{live_id}/content",
                                    headers={"Authorization": "Bearer sk-test-key"}, timeout=10)
    assert (plain.status_code, plain.headers["Content-Type"], plain.content) == (200, "audio/wav", got.content)
    served = [e.data for e in (await control.call(call_id)).of_kind("live.content")]
    assert [s["status"] for s in served] == [200, 200, 200] and served[-1]["bytes"] == len(got.content)


async def test_a_stored_primary_session_is_recorded_too(client: AsyncOpenAI, control: MockClient) -> None:
    await control.configure(script=SCRIPT)
    async with primary(client) as p:
        live_id = (await p.start(store=True))["session"]["id"]
        await p.say(caller_turn(), 8000, "audio/pcm", chunk_ms=2000)  # frames over 64 KiB: read off the loop
        await p.text_of("session.output_transcript.delta", REPLY)
        await p.conn.session.close()
        await p.until("session.closed")
    pcm, rate = read_wav((await client.live.sessions.download_recording(live_id)).read())
    entries = await control.session_journal(live_id)
    assert "mock.bug" not in {e["kind"] for e in entries}
    # audio sent faster than real time plays out on the timeline: the recording runs to its end
    assert audio.duration_ms(pcm, rate) >= max(billed_s(entries) * 1000, audio.duration_ms(caller_turn(), 8000))
    assert best_match(pcm, fixture("caller_policy_number").pcm(24000)) > 0.9


async def test_unstored_and_unknown_sessions_are_refused(mock: RunningMock, client: AsyncOpenAI,
                                                         control: MockClient) -> None:
    call_id = await control.start_call(script=SCRIPT)
    live_id = (await control.call(call_id)).live_id
    with pytest.raises(openai.NotFoundError) as missing:  # ringing: no session yet
        await client.live.sessions.download_recording(live_id)
    assert missing.value.code == "session_not_found"
    unstored: dict[str, Any] = {**STORED, "store": False}
    await client.live.sessions.accept(live_id, session=unstored)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.live.sessions.download_recording(live_id)
    assert (refused.value.code, refused.value.param) == ("session_not_stored", "session_id")
    live_host.registry(mock.server).recording = RecordingSettings(unstored_status=404)  # the other choice
    with pytest.raises(openai.NotFoundError):
        await client.live.sessions.download_recording(live_id)
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.live.sessions.download_recording("live_0000000000000000000000000000dead")
    assert unknown.value.code == "session_not_found"
    nokey = await asyncio.to_thread(requests.get, f"{mock.base_url}/live/sessions/{live_id}/content", timeout=10)
    assert nokey.status_code == 401
    view = await control.call(call_id)
    assert [(e.data["status"], e.data.get("code")) for e in view.of_kind("live.content")] == [
        (404, "session_not_found"), (400, "session_not_stored"), (404, "session_not_stored"), (401, "unauthorized")]


async def test_a_primary_without_store_has_no_recording(client: AsyncOpenAI) -> None:
    async with primary(client) as p:
        live_id = (await p.start())["session"]["id"]
        with pytest.raises(openai.BadRequestError):
            await client.live.sessions.download_recording(live_id)
        await p.conn.session.close()


# ---- the recording's rules, on a manual clock -----------------------------------------------------------


def test_caller_audio_stays_contiguous_and_a_cut_drops_unplayed_model_audio() -> None:
    rec = Recording("live_x", max_seconds=10)
    tone = audio.tone(100, 24000)
    rec.hear(tone, 24000, now_ms=100)
    rec.hear(tone, 24000, now_ms=150)  # sent faster than real time: laid after the first, not over it
    assert len(rec.caller) == 2 * len(tone)
    rec.hear(tone, 24000, now_ms=400)  # 100 ms late: jitter, not a pause
    assert len(rec.caller) == 3 * len(tone)
    rec.hear(audio.tone(100, 8000), 8000, now_ms=1000)  # after a pause: where it was heard
    assert abs(len(rec.caller) // 48 - 1000) <= 25  # (the resampler holds back its last ~21 ms)
    rec.play(audio.tone(1000, 24000), 24000, now_ms=200)  # a reply generated at once, playing from 200 ms
    rec.cut(500)  # a barge-in at 500 ms: the rest was never played
    assert len(rec.model) == 500 * 48
    rec.finish(1200)
    caller, model, n = rec.tracks(now_ms=9999)  # ended: its end, not now
    assert n == 1200 * 48 and len(caller) == len(rec.caller) and len(model) == 500 * 48


def test_past_the_cap_audio_is_not_kept() -> None:
    rec = Recording("live_x", max_seconds=1)
    assert rec.hear(audio.tone(800, 24000), 24000, now_ms=800) is False
    assert rec.hear(audio.tone(800, 24000), 24000, now_ms=1600) is True  # once
    assert rec.hear(audio.tone(800, 24000), 24000, now_ms=2400) is False
    assert len(rec.caller) == 1000 * 48 and rec.length_ms(5000) == 1000


def test_ended_recordings_leave_oldest_first_past_the_byte_budget() -> None:
    reg = live_host.LiveRegistry(recording=RecordingSettings(max_total_bytes=120_000))
    recs = [Recording(f"live_{i}", max_seconds=10) for i in range(3)]
    for i, rec in enumerate(recs):
        rec.hear(audio.tone(1000, 24000), 24000, now_ms=1000)
        reg.remember(rec.session_id, rec)
        if i < 2:
            rec.finish(1000)
    reg.remember("live_unstored", None)
    reg.evict_recordings()
    assert list(reg.recordings) == ["live_1", "live_2", "live_unstored"]  # live_2 runs: never evicted
