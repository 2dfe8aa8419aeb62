"""The fidelity guard itself: it must catch a malformed event and see every real one."""

from __future__ import annotations

from openai import AsyncOpenAI

from mock_api import fidelity
from mock_api.client import MockClient
from mock_api.running import RunningMock


def test_problem_flags_what_the_sdk_rejects() -> None:
    assert fidelity.problem({"type": "session.created", "event_id": "event_1"}) is not None
    assert fidelity.problem({"type": "no.such.event", "event_id": "event_1"}) is not None
    ok = {"type": "input_audio_buffer.cleared", "event_id": "event_1"}
    assert fidelity.problem(ok) is None


async def test_every_socket_event_is_checked(mock: RunningMock, control: MockClient, client: AsyncOpenAI) -> None:
    before = fidelity.checked
    call_id = await control.start_call()
    await client.realtime.calls.accept(call_id, type="realtime")
    async with client.realtime.connect(call_id=call_id) as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        await conn.send({"type": "input_audio_buffer.clear"})
        assert (await conn.recv()).type == "input_audio_buffer.cleared"
    sent = [e for e in (await control.call(call_id)).entries if e.kind == "ws.server"]
    assert fidelity.checked - before >= len(sent) == 2
