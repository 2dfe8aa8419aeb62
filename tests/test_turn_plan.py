"""Script turns follow what the caller says, not how the VAD cut it (mock_api/realtime/turn_plan.py)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from audio_fixtures import fixture
from mock_api import audio
from mock_api.realtime.script import Script
from mock_api.realtime.session import Heard
from mock_api.realtime.turn_plan import TurnPlan
from mock_api.recognisers import Chain, FingerprintRecogniser, Recognition
from tests.realtime_fixtures import Driver

FAST = {"transcription_delay_s": 0.05, "response_latency_s": 0.01, "generation_speed": 50, "ms_per_char": 20}
TRANSFER = {"type": "function", "name": "transfer_to_human", "parameters": {"type": "object", "properties": {}}}
# the faithful default: server_vad, 200 ms of silence ends a turn, a response per turn
SESSION = {"type": "realtime", "tools": [TRANSFER], "audio": {"input": {
    "transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad"}}}}


def plan(*turns: dict[str, Any]) -> TurnPlan:
    return TurnPlan(Script.model_validate({"turns": list(turns)}))


def test_a_script_without_matchers_goes_by_order() -> None:
    p = plan({"says": "one"}, {"says": "two"})
    assert p.by_order
    got = [p.assign(clip="caller_greeting", text="whatever") for _ in range(3)]
    assert [(a.index, a.how) for a in got] == [(0, "order"), (1, "order"), (-1, "order")]
    assert p.turn(got[2]).says is None  # past the end: the defaults answer


def test_clip_match_waits_for_the_end_of_the_utterance_and_is_used_once() -> None:
    p = plan({"says": "anything"}, {"match_clip": "caller_ask_human", "says": "transferring"})
    first = p.assign(clip="caller_ask_human", text="This is not helping.", ends_utterance=False)
    assert (first.index, first.how, first.partial) == (1, "partial", True)
    assert p.turn(first).says is None  # a partial is not the turn: its tool must not fire yet
    rest = p.assign(clip="caller_ask_human", text="Can I please speak to a human agent?", ends_utterance=True)
    assert (rest.index, rest.how, rest.partial) == (1, "clip", False)
    again = p.assign(clip="caller_ask_human", text="Can I please speak to a human agent?", ends_utterance=True)
    assert (again.index, again.how) == (0, "unmatched")  # used once; then the next turn without a matcher
    assert (p.assign(text="hello").index, p.assign().how) == (-1, "none")


def test_text_match_ignores_case_and_punctuation() -> None:
    p = plan({"match_text": "speak to a HUMAN", "says": "ok"}, {"says": "fallback"})
    assert (p.assign(text="Hello there.").how) == "unmatched"
    got = p.assign(text="Can I please speak to a human, agent?")
    assert (got.index, got.how) == (0, "text")
    assert p.assign(text=None).how == "none"  # nothing recognised and no free turn


def run_call(script: dict[str, Any]) -> tuple[Driver, list[Heard]]:
    """caller_greeting then caller_ask_human, each followed by a second of silence, at 8 kHz on the
    session's own 200 ms server_vad; every event is checked against the SDK's models by the Driver."""
    d = Driver(script={**FAST, **script})
    d.send({"type": "session.update", "session": SESSION})
    for name in ("caller_greeting", "caller_ask_human"):
        fx = fixture(name)
        pcm = audio.resample(fx.pcm(), fx.rate, 24000) + audio.silence(1000, 24000)
        d.append_pcm(pcm, 24000)
    d.advance(3.0)
    return d, [o for o in d.other if isinstance(o, Heard)]


def tool_fired_after(d: Driver) -> list[str]:
    """For each function call the model made: the item id of the user turn committed just before it."""
    last, out = "", []
    for e in d.events:
        if e["type"] == "input_audio_buffer.committed":
            last = e["item_id"]
        elif e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call":
            out.append(last)
    return out


def test_one_script_turn_per_utterance_fires_its_tool_on_the_right_utterance() -> None:
    script = {"turns": [
        {"match_clip": "caller_greeting", "says": "Hi Michelle, how can I help?"},
        {"match_clip": "caller_ask_human", "tool_calls": [{"name": "transfer_to_human"}],
         "after_tool": "Transferring you now."},
    ]}
    d, heard = run_call(script)
    said = [(h.recognition.text, h.turn.how if h.turn else None) for h in heard]
    # the 200 ms default commits each utterance as two turns: the first half of each is a partial
    assert said == [("Hi, this is Michelle.", "partial"), ("I'm calling about my car insurance.", "clip"),
                    ("This is not helping.", "partial"), ("Can I please speak to a human agent?", "clip")]
    by_text = {h.recognition.text: h.item_id for h in heard}
    assert tool_fired_after(d) == [by_text["Can I please speak to a human agent?"]]
    replies = [e["transcript"] for e in d.of("response.output_audio_transcript.done")]
    assert "Hi Michelle, how can I help?" in replies and "Mm-hmm." in replies  # partial_reply, talked over


def test_the_same_script_by_order_fires_the_tool_mid_greeting() -> None:
    """What match_clip fixes: by order, the second committed turn is half of the greeting."""
    script = {"turns": [{"says": "Hi Michelle, how can I help?"},
                        {"tool_calls": [{"name": "transfer_to_human"}], "after_tool": "Transferring you now."}]}
    d, heard = run_call(script)
    by_text = {h.recognition.text: h.item_id for h in heard}
    assert tool_fired_after(d) == [by_text["I'm calling about my car insurance."]]
    assert all(h.turn is not None and h.turn.how == "order" for h in heard)


def test_a_typed_user_message_is_matched_by_its_text() -> None:
    d = Driver(script={**FAST, "turns": [{"says": "first"}, {"match_text": "human", "tool_calls": [
        {"name": "transfer_to_human"}]}]})
    d.send({"type": "session.update", "session": {**SESSION, "audio": {"input": {"turn_detection": None}}}})
    d.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Get me a human, please."}]}})
    d.send({"type": "response.create"})
    d.advance(2.0)
    [done] = d.of("response.done")
    assert [o["type"] for o in done["response"]["output"]] == ["function_call"]
    assert done["response"]["output"][0]["name"] == "transfer_to_human"


class HeldRecogniser:
    """A recogniser whose answers the test releases: each turn's audio gets a Future, resolved on demand
    (as a new sound's fingerprint resolves on a worker thread, at a time nobody controls)."""

    def __init__(self) -> None:
        self.pending: list[Future[Recognition]] = []

    def __call__(self, pcm: bytes, rate: int) -> Future[Recognition]:
        fut: Future[Recognition] = Future()
        self.pending.append(fut)
        return fut


def test_a_matched_reply_waits_for_a_recognition_running_on_a_thread() -> None:
    """The fuzz run's 823 ms loop stall was a new sound's fingerprint on the loop; on a thread, the turn's
    reply must still follow what was said, however late the thread answers (no race with the reply)."""
    ear = HeldRecogniser()
    script = {"turns": [{"says": "Anything else?"},
                        {"match_clip": "caller_policy_number", "says": "Let me look up that policy."}]}
    d = Driver(script={**FAST, **script}, recogniser=ear)
    d.send({"type": "session.update", "session": {**SESSION, "audio": {"input": {
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}}}})
    fx = fixture("caller_policy_number")
    d.append_pcm(audio.resample(fx.pcm(), fx.rate, 24000) + audio.silence(1500, 24000), 24000)
    d.advance(2.0)
    assert d.of("input_audio_buffer.committed") and ear.pending
    assert not d.of("response.created")  # by order it would be turn 0; it waits for the words
    for fut in ear.pending:
        fut.set_result(Recognition(fx.text, True, "fingerprint", "test", fx.duration_ms, clip="caller_policy_number"))
    d.advance(2.0)
    replies = [e["transcript"] for e in d.of("response.output_audio_transcript.done")]
    assert replies[:1] == ["Let me look up that policy."]


def test_an_offloading_chain_answers_a_known_sound_at_once_and_a_new_one_on_a_thread() -> None:
    fx = fixture("caller_policy_number")
    ear = Chain([FingerprintRecogniser()], offload=True)
    first = ear(fx.pcm(), fx.rate)
    assert isinstance(first, Future)  # a new sound: its spectrogram is computed off the caller's thread
    got = first.result(timeout=30)
    assert got.recognised and got.clip == "caller_policy_number"
    again = ear(fx.pcm(), fx.rate)
    assert isinstance(again, Recognition) and again == got  # the cache answers inline
    assert isinstance(Chain(ear.members)(fx.pcm(), fx.rate), Recognition)  # a plain chain never offloads
