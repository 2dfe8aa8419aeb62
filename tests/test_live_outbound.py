"""Outbound GPT-Live calls over real SIP/TLS: an app creates a session with a SIP transport through the
official SDK, the mock dials ``rtsip answer``'s UAS (its own pjsua2 process, a trunk that challenges with
digest auth), and the app's sideband hears ``transport.ringing`` / ``transport.answered`` and the callee's
words; the callee's recording holds the model's spoken reply. A wrong password ends in ``transport.failed``,
a busy trunk too; every sideband event parses with the SDK's ``ConnectServerEvent``."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from audio_fixtures import fixture
from harness.audio_compare import windowed_correlation
from harness.commands.answer import Answerer, AnswerOptions
from harness.softphone import prepare_audio
from mock_api.audio import load_audio
from mock_api.client import MockClient
from mock_api.running import RunningMock, free_port
from tests.helpers import until
from tests.sip_helpers import Receiver
from tests.test_live_sideband import Sideband

pytestmark = [pytest.mark.sip, pytest.mark.timeout(90)]

CALLEE = fixture("caller_policy_number")  # what the called person says
REPLY = fixture("assistant_confirm_policy")  # what the model answers, spoken from its WAV
SESSION: dict[str, Any] = {"model": "gpt-live-1", "instructions": "You call to confirm a policy."}
USER, PASSWORD = "acct-42", "s3cret"
RTSIP = Path(sys.executable).parent / "rtsip"
ROOT = Path(__file__).resolve().parent.parent

Stack = tuple[RunningMock, Receiver, MockClient]


def sip_transport(url: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"type": "sip", "destination": "+14155550123",
            "trunk": {"provider_url": url, "auth": {"type": "digest", "username": USER, "password": password},
                      "caller_number": "+18005550100"}}


@pytest.fixture
async def app(sip_stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(api_key="sk-app", base_url=sip_stack[0].base_url, max_retries=0)
    yield client
    await client.close()


async def answerer(mock: RunningMock, tmp_path: Path, **opts: Any) -> Answerer:
    """``rtsip answer``'s UAS with the mock's local CA (what the mock verifies the trunk against)."""
    assert mock.sip is not None
    wav = prepare_audio(CALLEE.path, tmp_path / "audio-8k")
    return Answerer(mock.sip.state_dir, AnswerOptions(fixture=wav, **opts), printer=lambda line: None)


async def create(app: AsyncOpenAI, transport: dict[str, Any]) -> str:
    created = await app.live.create(session=SESSION, transport=transport)  # type: ignore[arg-type]
    assert created.transport.type == "sip"
    return created.session.id


@asynccontextmanager
async def dialing(app: AsyncOpenAI, url: str, password: str = PASSWORD) -> AsyncIterator[tuple[str, Sideband]]:
    """Create an outbound session to the trunk at ``url`` and attach a sideband (the dial waits for one)."""
    live_id = await create(app, sip_transport(url, password))
    async with app.live.sideband.connect(session_id=live_id) as conn:
        yield live_id, Sideband(conn)


async def test_an_outbound_call_rings_answers_and_talks(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    mock, _, control = sip_stack
    await control.configure(script={"turns": [{"hears": "policy number", "says": REPLY.text,
                                               "audio": str(REPLY.path)}], "response_latency_s": 0.05})
    async with await answerer(mock, tmp_path, record=str(tmp_path / "callee.wav"), username=USER,
                              password=PASSWORD) as callee:
        async with dialing(app, callee.url) as (live_id, sb):
            assert live_id.startswith("live_")
            ringing = await sb.until("transport.ringing")
            assert ringing["session_id"] == live_id and "client_event_id" not in ringing
            await sb.until("transport.answered", session_id=live_id)
            await sb.until("session.started")
            await sb.text_of("session.input_transcript.delta", CALLEE.text)
            await sb.text_of("session.output_transcript.delta", REPLY.text)
            await callee.wait_for(lambda: any(c.heard for c in callee.calls), 30)  # the reply has played
            await app.live.sessions.hangup(live_id)
            closed = await sb.until("session.closed")
            assert closed["reason"] == "close_requested"
        await callee.wait_for(lambda: len(callee.finished()) == 1, 15)
    [challenged, taken] = callee.calls
    assert (challenged.outcome, challenged.auth, taken.outcome, taken.auth) == ("challenged", "missing",
                                                                                "answered", None)
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    assert [e.data["state"] for e in view.of_kind("live.transport")] == ["ringing", "answered"]
    [media] = view.of_kind("sip.media")
    assert media.data["srtp"], media.data  # the trunk took SDES-SRTP
    assert (view.surface, view.state) == ("live", "ended")
    heard = load_audio(taken.recording or "", 8000)
    res = windowed_correlation(load_audio(REPLY.path, 8000), heard, 8000, window_ms=500)
    assert res.median >= 0.9, res


async def test_a_wrong_password_fails_the_call(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    mock, _, control = sip_stack
    async with (await answerer(mock, tmp_path, username=USER, password=PASSWORD) as callee,
                dialing(app, callee.url, password="wrong") as (live_id, sb)):
        failed = await sb.until("transport.failed")
        assert failed["error"]["type"] == "call_error"
        assert failed["error"]["code"] == "authentication_failed"
        closed = await sb.until("session.closed")
        assert closed["reason"] == "connection_lost"
    assert {c.auth for c in callee.calls} == {"missing", "wrong password"}
    assert not any(c.outcome == "answered" for c in callee.calls)
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    assert view.state == "failed"
    assert [e.data["state"] for e in view.of_kind("live.transport")] == ["failed"]


async def test_a_busy_trunk_fails_the_call(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    mock = sip_stack[0]
    async with await answerer(mock, tmp_path, reject=486) as callee, dialing(app, callee.url) as (_, sb):
        failed = await sb.until("transport.failed")
        assert failed["error"]["code"] == "busy"
        await sb.until("session.closed")


async def test_a_trunk_without_srtp_fails_the_call(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    mock = sip_stack[0]
    async with await answerer(mock, tmp_path, srtp="disabled") as callee, dialing(app, callee.url) as (_, sb):
        failed = await sb.until("transport.failed")
        assert failed["error"]["code"] == "media_not_acceptable"  # 488 to an RTP/SAVP-only offer


async def test_real_rules_refuse_a_loopback_trunk(sip_stack: Stack, app: AsyncOpenAI) -> None:
    await sip_stack[2].configure(live_outbound={"rules": "real"})
    with pytest.raises(openai.BadRequestError) as err:
        await create(app, sip_transport("sips:127.0.0.1:5071"))
    assert err.value.status_code == 400
    assert err.value.body["param"] == "transport.trunk.provider_url"  # type: ignore[index]


async def test_a_proxy_challenge_and_the_call_cap(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    """407 ``Proxy-Authenticate`` is answered as 401 is; an answered call ends ``expired`` at ``max_call_s``."""
    mock = sip_stack[0]
    await sip_stack[2].configure(live_outbound={"max_call_s": 1})
    async with await answerer(mock, tmp_path, username=USER, password=PASSWORD, challenge=407) as callee:
        async with dialing(app, callee.url) as (_, sb):
            await sb.until("transport.answered")
            started = await sb.until("session.started")
            closed = await sb.until("session.closed")
            assert closed["reason"] == "expired"
            assert closed["session"]["expires_at"] == started["session"]["expires_at"]
        await callee.wait_for(lambda: len(callee.finished()) == 1, 15)
    [challenged, taken] = callee.calls
    assert (challenged.auth, taken.auth, taken.end["by"]) == ("missing", None, "remote")  # the mock's BYE


async def test_the_ring_cap_cancels_the_call(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    mock, _, control = sip_stack
    await control.configure(live_outbound={"ring_timeout_s": 0.5})
    async with await answerer(mock, tmp_path, ring_ms=60_000) as callee:  # rings far longer than the cap
        async with dialing(app, callee.url) as (live_id, sb):
            await sb.until("transport.ringing")
            failed = await sb.until("transport.failed")
            assert failed["error"]["code"] == "no_answer"
        await callee.wait_for(lambda: all(c.ended.is_set() for c in callee.calls), 15)  # CANCELled
    [view] = [v for v in await control.calls() if v.live_id == live_id]
    assert [e.data["state"] for e in view.of_kind("live.transport")] == ["ringing", "failed"]


async def test_rtsip_answer_as_a_process(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    """The command itself: prints its sips: URL, answers, records, and exits 0 after ``--calls 1``."""
    mock = sip_stack[0]
    assert mock.sip is not None
    record = tmp_path / "heard.wav"
    proc = await asyncio.create_subprocess_exec(
        str(RTSIP), "answer", "--port", "0", "--fixture", str(CALLEE.path), "--record", str(record),
        "--calls", "1", "--state-dir", str(mock.sip.state_dir), stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert first.startswith("listening sips:127.0.0.1:"), first
        async with dialing(app, first.split()[1]) as (live_id, sb):
            await sb.until("transport.answered")
            await sb.text_of("session.input_transcript.delta", CALLEE.text)
            await app.live.sessions.hangup(live_id)
            await sb.until("session.closed")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        out = (await proc.stdout.read()).decode()
        assert "answered" in out and f"recording {record}" in out
        assert record.stat().st_size > 44
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_app_hangs_up_while_it_rings(sip_stack: Stack, app: AsyncOpenAI, tmp_path: Path) -> None:
    """A ringing outbound call is not offered to the app (no accept/reject); its hangup CANCELs the leg."""
    mock = sip_stack[0]
    async with await answerer(mock, tmp_path, ring_ms=60_000) as callee:
        async with dialing(app, callee.url) as (live_id, sb):
            await sb.until("transport.ringing")
            with pytest.raises(openai.BadRequestError) as err:
                await app.live.sessions.accept(live_id, session={"type": "live", "model": "gpt-live-1"})
            assert err.value.code == "invalid_call_state"
            await app.live.sessions.hangup(live_id)
            failed = await sb.until("transport.failed")
            assert failed["error"]["code"] == "cancelled"
            assert (await sb.until("session.closed"))["reason"] == "close_requested"
        await callee.wait_for(lambda: all(c.ended.is_set() for c in callee.calls), 15)


async def test_live_can_require_srtp_of_an_inbound_call(sip_stack: Stack, sip_phone: Any, app: AsyncOpenAI) -> None:
    """With ``rtp_status`` set, a plain-RTP call accepted on Live is refused on its SIP leg and fails."""
    mock, _, control = sip_stack
    assert mock.sip is not None
    await control.configure(live_rtp_status=488)
    call = await sip_phone.call(mock.sip.uri())  # the test phone offers plain RTP
    [ringing] = await until(lambda: _ringing(control), what="the phone's call ringing at the mock")
    await app.live.sessions.accept(ringing.live_id, session={"type": "live", "model": "gpt-live-1"})
    assert await call.ended(timeout=15) == 488
    view = await control.call(ringing.call_id)
    assert view.state == "failed"
    assert view.of_kind("call.created")[0].data["media_security"] == "rtp"
    assert [e.data for e in view.of_kind("live.srtp_required")] == [{"status": 488, "media_security": "rtp"}]



async def _ringing(control: MockClient) -> list[Any]:
    return [v for v in await control.calls(entries=False) if v.state == "ringing"]


async def test_the_readme_example_app_calls_out_through_rtsip_answer(sip_stack: Stack, tmp_path: Path) -> None:
    """README's GPT-Live session as written: ``rtsip answer`` as the trunk, ``examples/live_outbound_call.py``
    (the SDK's ``client.live.create`` and sideband) as the app; then the same app against a port nobody serves."""
    mock, _, control = sip_stack
    assert mock.sip is not None
    await control.configure(script={})  # README's mock has no script: the model's default reply
    env = {**os.environ, "OPENAI_BASE_URL": mock.base_url, "OPENAI_API_KEY": "sk-anything"}
    example = [sys.executable, str(ROOT / "examples" / "live_outbound_call.py")]
    trunk = await asyncio.create_subprocess_exec(
        str(RTSIP), "answer", "--port", "0", "--fixture", str(CALLEE.path), "--username", USER, "--password",
        PASSWORD, "--calls", "1", "--state-dir", str(mock.sip.state_dir), stdout=asyncio.subprocess.PIPE)
    try:
        assert trunk.stdout is not None
        url = (await asyncio.wait_for(trunk.stdout.readline(), 30)).decode().split()[1]
        app = await asyncio.create_subprocess_exec(*example, "--trunk", url, env=env, stdout=asyncio.subprocess.PIPE)
        out = (await asyncio.wait_for(app.communicate(), 60))[0].decode().splitlines()
        assert app.returncode == 0, out
        assert out[0].startswith("created live_") and out[1:4] == ["transport.ringing", "transport.answered",
                                                                    "session.started"]
        assert out[4] == f"callee: {CALLEE.text}" and out[5] == "model:  Sure, I can help you with that."
        assert out[6].startswith("session.closed close_requested after ")
        assert await asyncio.wait_for(trunk.wait(), 30) == 0
        lines = (await trunk.stdout.read()).decode()
        assert "challenged" in lines and "authenticated" in lines and "answered" in lines
    finally:
        if trunk.returncode is None:
            trunk.kill()
            await trunk.wait()
    nobody = f"sips:127.0.0.1:{free_port()}"
    app = await asyncio.create_subprocess_exec(*example, "--trunk", nobody, env=env, stdout=asyncio.subprocess.PIPE)
    out = (await asyncio.wait_for(app.communicate(), 60))[0].decode().splitlines()
    assert out[1].startswith("transport.failed connection_failed: ") and out[2].startswith(
        "session.closed connection_lost")
