"""One turn detector (sipworker.turns): the same audio gives the same turns on every path.

Paths: the session core's own VAD (WebSocket audio, ``mock_api.realtime.vad``), the SIP worker's
Python media path (``sipworker.media.TurnDetector.feed``) and the native frame port (``_rtport.c``
deciding frames on the clock thread, the worker's state machine on its pump thread).  At 8 kHz
(SIP, G.711 over WebSocket) all three agree exactly; 24 kHz WebSocket audio is resampled to 8 kHz
first, and a resampled frame can fall on the other side of webrtcvad's decision, so boundaries
agree to within one 20 ms frame.
"""

from __future__ import annotations

from typing import Any

import pytest

from audio_fixtures import fixture
from mock_api import audio as A
from mock_api.realtime.vad import TurnDetector as SessionDetector
from mock_api.sip import vad_params
from sipworker import _rtport, media, turns
from sipworker.ipc import VadParams
from sipworker.native import NativePort
from tests.realtime_fixtures import Driver
from tests.test_native_port import Bridge

Turn = tuple[int, int]  # (first voiced ms, audio ms the silence ran out)
CLIPS = ["caller_two_utterances", "caller_spell_name", "assistant_spanish", "caller_accident_claim"]
TURN_DETECTION: dict[str, dict[str, Any]] = {
    "default": {"type": "server_vad"},
    "strict": {"type": "server_vad", "threshold": 0.8, "silence_duration_ms": 500},
    "semantic-high": {"type": "semantic_vad", "eagerness": "high"},
}


def clip(name: str) -> bytes:
    """The fixture followed by enough silence for its last turn to end."""
    return fixture(name).pcm() + A.silence(2000)


def sip_params(td: dict[str, Any]) -> VadParams:
    """What the SIP ingress tells its worker for this turn_detection (the product's own mapping)."""
    return VadParams.from_dict(vad_params({"audio": {"input": {"turn_detection": td}}}))


def pair_up(events: list[tuple[str, dict[str, object]]]) -> list[Turn]:
    """Worker events as turns: speech_started's audio_ms with the following speech_stopped's detected_ms."""
    starts = [int(str(d["audio_ms"])) for k, d in events if k == "speech_started"]
    stops = [int(str(d["detected_ms"])) for k, d in events if k == "speech_stopped"]
    assert len(starts) == len(stops)
    return list(zip(starts, stops, strict=True))


def session_turns(pcm: bytes, rate: int, td: dict[str, Any], chunk_ms: int = 100) -> list[Turn]:
    """The session core's detector (WebSocket path), fed as appends arrive; no prefix padding, so a
    start is the first voiced ms as on the SIP path."""
    det = SessionDetector(vad_type=td["type"], threshold=td.get("threshold", 0.5), prefix_padding_ms=0,
                          silence_duration_ms=td.get("silence_duration_ms", 200), eagerness=td.get("eagerness"))
    step = A.frame_bytes(rate, chunk_ms)
    events = [e for i in range(0, len(pcm), step) for e in det.process(pcm[i : i + step], rate, i * 500 / rate)]
    assert [e.kind for e in events] == ["start", "stop"] * (len(events) // 2)
    return [(a.ms, b.ms) for a, b in zip(events[::2], events[1::2], strict=True)]


def worker_turns(pcm: bytes, params: VadParams, frame_ms: int = 60) -> list[Turn]:
    """The SIP worker's Python media path: chunks of ``frame_ms`` from the frame port."""
    events: list[tuple[str, dict[str, object]]] = []
    det = media.TurnDetector(params, lambda k, d: events.append((k, d)), "py")
    step = frame_ms * 16
    for off in range(0, len(pcm) - step + 1, step):
        det.feed(pcm[off : off + step], off // 16)
    return pair_up(events)


def native_turns(pcm: bytes, params: VadParams) -> list[Turn]:
    """The native port deciding each frame in C (as pjmedia's clock thread would drive it), the
    worker's state machine fed from its drains."""
    _rtport.vad_setup(*media.webrtcvad_entry_points())
    bridge = Bridge()
    events: list[tuple[str, dict[str, object]]] = []
    det = media.TurnDetector(params, lambda k, d: events.append((k, d)), "c")
    NativePort(bridge.port, 0).set_vad(det)
    step = 3 * media.FRAME_BYTES  # the bridge hands over 60 ms at a time
    for off in range(0, len(pcm) - step + 1, step):
        bridge.put(pcm[off : off + step])
        d = bridge.drain()
        det.feed_voiced(d["voiced"], d["voiced_from"] * media.FRAME_MS)
    return pair_up(events)


@pytest.mark.parametrize("td", TURN_DETECTION.values(), ids=TURN_DETECTION.keys())
@pytest.mark.parametrize("name", CLIPS)
def test_8khz_audio_gives_the_same_turns_on_every_path(name: str, td: dict[str, Any]) -> None:
    pcm = clip(name)
    params = sip_params(td)
    python = worker_turns(pcm, params)
    assert python, "the clip has speech"
    assert native_turns(pcm, params) == python
    assert session_turns(pcm, 8000, td) == python


@pytest.mark.parametrize("name", CLIPS)
def test_24khz_websocket_audio_agrees_within_one_frame(name: str) -> None:
    pcm = clip(name)
    sip = worker_turns(pcm, sip_params(TURN_DETECTION["default"]))
    ws = session_turns(A.resample(pcm, 8000, 24000), 24000, TURN_DETECTION["default"])
    assert len(ws) == len(sip)
    for (a0, a1), (b0, b1) in zip(ws, sip, strict=True):
        assert abs(a0 - b0) <= turns.FRAME_MS and abs(a1 - b1) <= turns.FRAME_MS, (ws, sip)


def test_line_noise_is_no_turn_on_any_path() -> None:
    """-50 dBFS, the SIP path's old fixed floor, let the committed line noise open a turn."""
    pcm = clip("line_noise_3s")
    params = sip_params(TURN_DETECTION["default"])
    assert worker_turns(pcm, params) == native_turns(pcm, params) == []
    assert session_turns(pcm, 8000, TURN_DETECTION["default"]) == []
    assert session_turns(A.resample(pcm, 8000, 24000), 24000, TURN_DETECTION["default"]) == []


def test_the_session_reports_the_same_turns_over_websocket_and_sip() -> None:
    """End to end in the session core: G.711 appends (its own VAD) against the SIP worker's
    boundaries handed over as media_speech_started/stopped."""
    pcm = A.ulaw_to_pcm(A.pcm_to_ulaw(clip("caller_two_utterances")))
    ws = Driver(config={"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    ws.append_pcm(pcm, rate=8000, fmt="audio/pcmu")
    sip = Driver(transport="sip", config={"type": "realtime"})
    events: list[tuple[str, dict[str, object]]] = []
    det = media.TurnDetector(sip_params({"type": "server_vad"}), lambda k, d: events.append((k, d)), "r")
    det.feed(pcm, 0)
    for kind, data in events:
        if kind == "speech_started":
            sip._take(sip.session.media_speech_started(int(str(data["audio_ms"])), sip.now))
        else:
            sip._take(sip.session.media_speech_stopped(int(str(data["audio_ms"])), int(str(data["detected_ms"])),
                                                       sip.now))

    def reported(d: Driver) -> list[tuple[str, int]]:
        """Each speech event's type and audio ms (audio_start_ms or audio_end_ms)."""
        return [(e["type"], int(e.get("audio_start_ms", e.get("audio_end_ms", -1)))) for e in d.events
                if e["type"] in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped")]

    assert len(reported(ws)) >= 4  # two utterances at least
    assert reported(ws) == reported(sip)


def test_rules_map_the_api_knobs() -> None:
    assert [turns.vad_mode(t) for t in (0.0, 0.3, 0.5, 0.8, 1.0)] == [0, 1, 2, 3, 3]
    assert turns.floor_dbfs(0.5) == -40.0 and turns.floor_dbfs(0.0) < turns.floor_dbfs(1.0)
    assert turns.silence_ms_for("server_vad", 350) == 350
    assert [turns.silence_ms_for("semantic_vad", 350, e) for e in ("high", None, "low")] == [300, 700, 1500]
    assert turns.padded_start(1000, 300) == 700 and turns.padded_start(100, 300) == 0
    # the SIP worker's floor follows the threshold as the session's does; a higher explicit one wins
    assert media.effective_floor_dbfs(VadParams(threshold=0.8)) == turns.floor_dbfs(0.8)
    assert media.effective_floor_dbfs(VadParams(threshold=0.5, energy_floor_dbfs=-20.0)) == -20.0


def test_tracker_onset_hangover_and_chunking() -> None:
    voiced = [0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0]  # a 40 ms blip, then a turn
    whole = turns.TurnTracker(silence_ms=100).feed(voiced, 1000)
    assert whole == [turns.Boundary("start", 1080, 1140), turns.Boundary("stop", 1200, 1300)]
    pieces = turns.TurnTracker(silence_ms=100)
    assert [b for k in range(0, len(voiced), 3) for b in pieces.feed(voiced[k : k + 3], 1000 + 20 * k)] == whole
    # a turn still open at the end of a clip is measured to its last voiced frame
    assert turns.speech_spans(voiced[:12], silence_ms=100) == [(80, 200)]
    assert turns.speech_spans([1, 1, 0] * 4, silence_ms=20, min_speech_ms=40) == [(0, 40), (60, 100), (120, 160),
                                                                                 (180, 220)]


def test_classifier_gates_webrtcvad_by_the_floor() -> None:
    speech = fixture("caller_greeting").pcm()
    loud = turns.FrameClassifier(2, turns.NO_FLOOR_DBFS).classify(speech)
    assert len(loud) == len(speech) // media.FRAME_BYTES and any(loud)
    quiet = A.from_array(A.to_array(speech) // 64)  # 36 dB down: under the floor of threshold 0.5
    assert turns.FrameClassifier(2, turns.NO_FLOOR_DBFS).classify(quiet) != [False] * len(loud)
    assert not any(turns.FrameClassifier(2, turns.floor_dbfs(0.5)).classify(quiet))
