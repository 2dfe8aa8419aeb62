"""Pure parts of the SIP worker package: IPC, SIP header parsing, frame-level audio, certificates.

Plus one check of the frame-port pool on a real (call-less) pjsua2 endpoint, in a subprocess.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509

from mock_api import certs
from mock_api.audio import load_audio
from sipworker import media, sipmsg
from sipworker.ipc import PROTOCOL_VERSION, Command, Event, Op, ProtocolError, VadParams, WorkerConfig
from tests.helpers import until

FIXTURES = Path(__file__).resolve().parent.parent / "audio_fixtures"

INVITE = (
    "INVITE sip:proj_abc@127.0.0.1:5061;transport=tls SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 127.0.0.1:40000;rport;branch=z9hG4bKx\r\n"
    "f: <sip:alice@127.0.0.1>;tag=1\r\n"
    "To: <sip:proj_abc@127.0.0.1>\r\n"
    "i: abc-123\r\n"
    "X-Test-Id: lab-1\r\n"
    "X-Long: part one\r\n"
    " part two\r\n"
    "Authorization: Digest secret\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
)


def test_sip_parse_expands_compact_forms_and_folds_lines() -> None:
    msg = sipmsg.parse(INVITE)
    assert msg.is_request and msg.method == "INVITE"
    assert msg.request_uri == "sip:proj_abc@127.0.0.1:5061;transport=tls"
    assert msg.get("From") == "<sip:alice@127.0.0.1>;tag=1"
    assert msg.get("call-id") == "abc-123"
    assert msg.get("X-Long") == "part one part two"
    assert [k for k, _ in msg.headers][:3] == ["Via", "From", "To"]
    assert msg.body == "v=0\n"
    assert sipmsg.user_of(msg.request_uri) == "proj_abc"
    assert sipmsg.uri_of(msg.get("From") or "") == "sip:alice@127.0.0.1"
    assert sipmsg.parse("SIP/2.0 486 Busy Here\r\n\r\n").status_code == 486


def test_ipc_round_trip_and_version_check() -> None:
    cmd = Command(op=Op.MAKE_CALL.value, args={"ref": "r1", "uri": "sip:x@y", "headers": {"X-A": "1"}}, req=7)
    back = Command.from_line(cmd.encode())
    assert back == cmd
    ev = Event.from_line(Event("call_state", {"ref": "r1", "code": 180}).to_line())
    assert ev.kind == "call_state" and ev.ref == "r1" and ev.data["code"] == 180
    with pytest.raises(ProtocolError):
        Command.from_line(json.dumps({"v": PROTOCOL_VERSION + 1, "op": "ping"}))
    with pytest.raises(ProtocolError):
        Command.from_line(json.dumps({"v": PROTOCOL_VERSION, "op": "explode"}))
    with pytest.raises(ValueError, match="unknown VadParams fields"):
        VadParams.from_dict({"silence_ms": 3})
    cfg = WorkerConfig(tls_port=5061, udp_port=None)
    assert WorkerConfig.from_json(cfg.to_json()) == cfg


def test_ipc_bytes_arguments_travel_raw_after_the_line() -> None:
    """Streamed PCM is not base64 in the JSON: it follows the line, and the next command follows it."""
    pcm = bytes(range(256)) * 3 + b"\n\n"  # newlines inside the payload must not end anything
    play = Command(op=Op.PLAY_PCM.value, args={"ref": "r1", "pcm": pcm, "clear": True}, req=3)
    wire = play.encode()
    head, _, tail = wire.partition(b"\n")
    assert json.loads(head)["bin"] == [["pcm", len(pcm)]] and "pcm" not in json.loads(head) and tail == pcm
    stream = io.BytesIO(b"\n" + wire + Command(op=Op.PING.value, req=4).encode())
    assert Command.read(stream) == play
    assert Command.read(stream) == Command(op=Op.PING.value, req=4)
    assert Command.read(stream) is None  # EOF
    with pytest.raises(ProtocolError, match="pcm: stream ended 10 bytes short"):
        Command.read(io.BytesIO(wire[:-10]))


def test_playback_queue_frames_pads_and_reports_drain_once() -> None:
    pb = media.Playback()
    assert pb.push(b"\x01\x00" * 200) == 2  # 400 bytes → 2 frames, tail padded
    f1, done1 = pb.next_frame()
    f2, done2 = pb.next_frame()
    assert f1 is not None and f2 is not None and len(f2) == media.FRAME_BYTES and not done1 and not done2
    assert f2.endswith(bytes(media.FRAME_BYTES - 80))
    assert pb.next_frame() == (None, True)
    assert pb.next_frame() == (None, False)
    pb.push(bytes(3200))
    assert pb.clear() == 10


def test_turn_detector_finds_fixture_speech_segments() -> None:
    """Frame-by-frame VAD as the worker runs it, against the fixture's sidecar segments."""
    meta = json.loads((FIXTURES / "caller_two_utterances.json").read_text())
    pcm = load_audio(FIXTURES / "caller_two_utterances.wav", 8000)
    events: list[tuple[str, dict[str, object]]] = []
    det = media.TurnDetector(VadParams(silence_duration_ms=500), lambda k, d: events.append((k, d)), "r")
    for i in range(0, len(pcm) - media.FRAME_BYTES + 1, media.FRAME_BYTES):
        det.feed(pcm[i : i + media.FRAME_BYTES], i // 16)
    for k in range(40):  # trailing silence so the last stop fires
        det.feed(media.SILENCE, len(pcm) // 16 + k * media.FRAME_MS)
    starts = [int(str(d["audio_ms"])) for k, d in events if k == "speech_started"]
    stops = [int(str(d["audio_ms"])) for k, d in events if k == "speech_stopped"]
    segs = meta["speech_segments"]
    assert len(starts) == len(stops) == len(segs)
    for (s, e), a, b in zip(segs, starts, stops, strict=True):
        assert abs(a - s) <= 100 and abs(b - e) <= 150, (segs, starts, stops)


def test_turn_detector_ignores_quiet_noise() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 30, 8000 * 2)).astype("<i2").tobytes()  # about -60 dBFS
    events: list[tuple[str, dict[str, object]]] = []
    det = media.TurnDetector(VadParams(), lambda k, d: events.append((k, d)), "r")
    for i in range(0, len(noise), media.FRAME_BYTES):
        det.feed(noise[i : i + media.FRAME_BYTES], i // 16)
    assert events == []


def _vad_events(pcm: bytes, chunk_frames: int, params: VadParams) -> list[tuple[str, dict[str, object]]]:
    """Run the worker's TurnDetector over ``pcm`` (plus trailing silence) in chunks of sub-frames."""
    events: list[tuple[str, dict[str, object]]] = []
    det = media.TurnDetector(params, lambda k, d: events.append((k, d)), "r")
    step = chunk_frames * media.FRAME_BYTES
    pcm = pcm[: len(pcm) // media.FRAME_BYTES * media.FRAME_BYTES] + media.SILENCE * 50
    pcm += bytes(-len(pcm) % step)
    for off in range(0, len(pcm), step):
        det.feed(pcm[off : off + step], off // 16)
    return events


@pytest.mark.parametrize("frame_ms", [60, 100, 200])
def test_turn_detector_keeps_20ms_boundaries_with_larger_frames(frame_ms: int) -> None:
    """A frame port of frame_ms hands the VAD chunks; boundaries must not snap to chunk edges."""
    meta = json.loads((FIXTURES / "caller_two_utterances.json").read_text())
    pcm = load_audio(FIXTURES / "caller_two_utterances.wav", 8000)
    params = VadParams(silence_duration_ms=500)
    per_frame = _vad_events(pcm, 1, params)
    chunked = _vad_events(pcm, frame_ms // media.FRAME_MS, params)
    assert chunked == per_frame  # identical events, audio_ms and detected_ms included
    starts = [int(str(d["audio_ms"])) for k, d in chunked if k == "speech_started"]
    stops = [int(str(d["audio_ms"])) for k, d in chunked if k == "speech_stopped"]
    detected = [int(str(d["detected_ms"])) for k, d in chunked if k == "speech_stopped"]
    assert len(starts) == len(stops) == len(meta["speech_segments"]) == 2
    for (s, e), a, b in zip(meta["speech_segments"], starts, stops, strict=True):
        assert abs(a - s) <= 100 and abs(b - e) <= 150
    # sub-frame resolution: the decision lands exactly one hangover after the last voiced sub-frame,
    # and at least one boundary is not on a chunk edge
    assert [d - b for d, b in zip(detected, stops, strict=True)] == [500, 500]
    assert all(v % media.FRAME_MS == 0 for v in starts + stops)
    assert any(v % frame_ms for v in starts + stops + detected)


def test_turn_detector_onset_inside_a_chunk() -> None:
    """Speech starting mid-chunk is reported at its first voiced sub-frame, not at the chunk start."""
    pcm = load_audio(FIXTURES / "caller_two_utterances.wav", 8000)
    first_voiced = 300  # sidecar: the first segment starts at 300 ms
    lead = 140  # shift the clip so the onset falls 2 sub-frames into a 100 ms chunk
    shifted = bytes(lead * 16) + pcm
    base = _vad_events(pcm, 1, VadParams(silence_duration_ms=500))
    moved = _vad_events(shifted, 5, VadParams(silence_duration_ms=500))
    start0 = int(str(base[0][1]["audio_ms"]))
    assert abs(start0 - first_voiced) <= 100
    assert moved[0][0] == "speech_started" and moved[0][1]["audio_ms"] == start0 + lead
    assert [k for k, _ in moved] == [k for k, _ in base]


def _numbered(frames: int, first: int = 0) -> bytes:
    """Frames whose samples all hold their frame's index: any slice tells where it came from."""
    return b"".join(np.full(media.FRAME_SAMPLES, first + i, "<i2").tobytes() for i in range(frames))


def test_turn_audio_keeps_a_ring_before_the_start_and_exact_times() -> None:
    keeper = media.TurnAudio(prefix_ms=300, onset_ms=60)
    for k in range(0, 50, 5):  # idle, 100 ms chunks: only the ring survives
        keeper.add(_numbered(5, k), k * media.FRAME_MS)
        # the ring: prefix and onset run (300 + 60 ms) before the newest chunk, which the VAD has yet to see
        assert keeper.span_ms == (max(0, k * media.FRAME_MS - 360), (k + 5) * media.FRAME_MS)
    keeper.start(940)  # first voiced ms inside the last chunk: the turn keeps 300 ms before it
    for k in range(50, 80, 5):
        keeper.add(_numbered(5, k), k * media.FRAME_MS)
    clip = keeper.stop(1500)  # audio after the turn's end stays for the next ring
    assert clip.start_ms == 640 and clip.clipped_ms == 0
    assert clip.pcm == _numbered(1500 // media.FRAME_MS - 32, 32)
    assert not keeper.in_turn and keeper.span_ms[1] == 1600


def test_turn_audio_lost_frames_leave_silence_in_place() -> None:
    keeper = media.TurnAudio(prefix_ms=0, onset_ms=0)
    keeper.add(_numbered(2), 0)
    keeper.start(0)
    keeper.add(_numbered(2, 5), 5 * media.FRAME_MS)  # frames 2..4 never arrived
    keeper.add(_numbered(3, 6), 6 * media.FRAME_MS)  # one already kept, two new
    clip = keeper.stop(9 * media.FRAME_MS)
    assert clip.start_ms == 0
    assert clip.pcm == _numbered(2) + bytes(3 * media.FRAME_BYTES) + _numbered(4, 5)


def test_turn_audio_is_bounded_and_keeps_the_newest() -> None:
    keeper = media.TurnAudio(prefix_ms=100, onset_ms=60, max_ms=1000)
    keeper.add(_numbered(10), 0)
    keeper.start(120)  # the turn starts at 20 ms
    for k in range(10, 100, 10):  # 2 s of speech: more than the bound
        keeper.add(_numbered(10, k), k * media.FRAME_MS)
    clip = keeper.stop(2000)
    assert clip.start_ms == 1000 and clip.clipped_ms == 980 and clip.pcm == _numbered(50, 50)
    assert len(clip.pcm) == 1000 * media.BYTES_PER_MS
    keeper.configure(VadParams(enabled=False))
    assert keeper.span_ms == (keeper.span_ms[0], keeper.span_ms[0])  # a disabled VAD drops what was kept


@pytest.mark.parametrize("chunk_frames", [1, 3, 75])
def test_turn_audio_with_the_detector_hands_over_each_turn(chunk_frames: int) -> None:
    """As the worker runs them: audio into the keeper first, then the VAD, whose boundaries cut the turns
    (chunks of one port frame, three, and a native port's idle drain of 1.5 s)."""
    pcm = load_audio(FIXTURES / "caller_two_utterances.wav", 8000)
    pcm = pcm[: len(pcm) // media.FRAME_BYTES * media.FRAME_BYTES] + media.SILENCE * 50
    pcm += bytes(-len(pcm) % (chunk_frames * media.FRAME_BYTES))
    params = VadParams(silence_duration_ms=500)
    keeper = media.TurnAudio.for_vad(params)
    turns: list[tuple[int, media.TurnClip]] = []
    starts: list[int] = []

    def emit(kind: str, data: dict[str, object]) -> None:
        if kind == "speech_started":
            starts.append(int(str(data["audio_ms"])))
            keeper.start(starts[-1])
        else:
            turns.append((int(str(data["detected_ms"])), keeper.stop(int(str(data["detected_ms"])))))

    det = media.TurnDetector(params, emit, "r")
    step = chunk_frames * media.FRAME_BYTES
    for off in range(0, len(pcm), step):
        keeper.add(pcm[off : off + step], off // media.BYTES_PER_MS)
        det.feed(pcm[off : off + step], off // media.BYTES_PER_MS)
    assert len(turns) == len(starts) == 2
    for start, (end, clip) in zip(starts, turns, strict=True):
        assert clip.start_ms == max(0, start - 300) and clip.clipped_ms == 0
        assert clip.pcm == pcm[clip.start_ms * media.BYTES_PER_MS : end * media.BYTES_PER_MS]


def test_native_port_hands_kept_audio_over_with_news_or_when_half_full() -> None:
    """Kept audio alone is not worth a Python pass every 20 ms: poll reports it once 1.5 s wait, or
    with other news; either way it ends at the rx clock, so its audio time is exact."""
    from sipworker import _rtport
    from tests.test_native_port import Bridge

    b = Bridge()
    frames = _numbered(80)
    for k in range(74):
        b.put(frames[k * media.FRAME_BYTES : (k + 1) * media.FRAME_BYTES])
    assert _rtport.poll([b.port]) == [] and _rtport.clocks(b.port) == (74, 0)
    b.put(frames[74 * media.FRAME_BYTES : 75 * media.FRAME_BYTES])
    [(_, raw)] = _rtport.poll([b.port])
    assert raw[0] == frames[: 75 * media.FRAME_BYTES] and raw[1] == 75
    b.put(frames[75 * media.FRAME_BYTES :])
    _rtport.push(b.port, media.SILENCE, False)
    b.get()
    b.get()  # playback ran dry: news, and the kept audio comes along
    [(_, raw)] = _rtport.poll([b.port])
    assert raw[0] == frames[75 * media.FRAME_BYTES :] and raw[1] == 80 and raw[3] == 1


def test_subframe_levels_match_per_frame_helpers() -> None:
    rng = np.random.default_rng(7)
    frames = [bytes(media.FRAME_BYTES), (rng.normal(0, 30, 160)).astype("<i2").tobytes(),
              (rng.normal(0, 3000, 160)).astype("<i2").tobytes(), b"\x00\x80" * 160]  # last: all -32768
    chunk = b"".join(frames)
    levels = media.subframe_dbfs(chunk)
    assert levels.shape == (4,) and levels[0] == -120.0
    def dbfs(frame: bytes) -> float:  # computed independently, frame by frame
        rms = float(np.sqrt(np.mean(np.frombuffer(frame, "<i2").astype(np.float64) ** 2)))
        return 20 * np.log10(rms / 32768.0) if rms else -120.0

    assert list(levels) == pytest.approx([dbfs(f) for f in frames], abs=1e-4)
    assert -75 < levels[1] < -55 and -25 < levels[2] < -15 and levels[3] == pytest.approx(0.0, abs=1e-4)
    assert media.first_loud_subframe(chunk, 300) == 2
    assert media.first_loud_subframe(chunk[: 2 * media.FRAME_BYTES], 300) is None
    assert media.first_loud_subframe(frames[3], 32767) == 0  # -32768 counts as a 32768 peak


def test_playback_fill_across_a_chunk_boundary() -> None:
    pb = media.Playback()
    subs = [bytes([i + 1]) * media.FRAME_BYTES for i in range(7)]  # 140 ms, each sub-frame distinct
    assert pb.push(b"".join(subs)) == 7 and pb.pending_ms == 140
    first, done1 = pb.fill(5)
    assert first == b"".join(subs[:5]) and done1 is None and pb.pending_ms == 40
    pb.push(bytes([9]) * (media.FRAME_BYTES + 100))  # arrives while the queue still has 2: no drain between
    second, done2 = pb.fill(5)
    assert second is not None and len(second) == 5 * media.FRAME_BYTES
    assert second[: 2 * media.FRAME_BYTES] == b"".join(subs[5:])
    tail = second[2 * media.FRAME_BYTES :]
    assert tail[: media.FRAME_BYTES + 100] == bytes([9]) * (media.FRAME_BYTES + 100)
    assert tail[media.FRAME_BYTES + 100 :] == bytes(len(tail) - media.FRAME_BYTES - 100)  # padded with silence
    # 5 + 4 real sub-frames were sent: the audio ended 180 ms into the tx clock, mid-frame
    assert done2 == 180 and pb.sent == 10
    assert pb.fill(5) == (None, None) and pb.sent == 15  # silence, drain reported only once


def test_playback_done_audio_ms_exact_frame_multiple_and_after_idle() -> None:
    pb = media.Playback()
    assert pb.fill(3) == (None, None)  # idle: silence advances the tx clock
    pb.push(bytes(6 * media.FRAME_BYTES))  # exactly two 60 ms frames
    assert pb.fill(3)[1] is None and pb.fill(3)[1] is None
    data, done = pb.fill(3)  # the frame after the last one finds the queue dry
    assert data is None and done == 60 + 120 and pb.sent == 12
    pb.push(bytes(media.FRAME_BYTES), clear=True)
    assert pb.fill(3)[1] == 12 * media.FRAME_MS + media.FRAME_MS
    pb.push(bytes(4 * media.FRAME_BYTES))
    assert pb.clear() == 4
    assert pb.fill(3) == (None, 15 * media.FRAME_MS)  # a cleared playback ends where the clock stands
    assert pb.fill(3) == (None, None)


def test_worker_config_frame_ms_must_fit_the_bridge() -> None:
    assert WorkerConfig().frame_ms % media.FRAME_MS == 0
    assert WorkerConfig.from_json(WorkerConfig(frame_ms=100).to_json()).frame_ms == 100
    for bad in (0, 30, 220):
        with pytest.raises(ValueError, match="frame_ms must be a multiple of 20"):
            WorkerConfig(frame_ms=bad)
    assert WorkerConfig(frame_ms=60, vad_frame_ms=60).vad_frame_ms == 60
    for frame, vad in ((60, 100), (60, 0), (100, 50)):
        with pytest.raises(ValueError, match=r"vad_frame_ms must be a multiple of 20 in 20\.\.frame_ms"):
            WorkerConfig(frame_ms=frame, vad_frame_ms=vad)


ENDPOINT_PREAMBLE = """
import json, os, sys, time
import numpy as np
import pjsua2 as pj
if sys.argv[1:] == ["hide"]:
    sys.modules["sipworker._rtport"] = None  # as if pip had no C compiler: the import fails
from sipworker.ipc import WorkerConfig
from sipworker.worker import CallCtx, Worker

class Sink(pj.AudioMediaPort):
    def __init__(self):
        super().__init__()
        self.loud = []
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
        self.createPort("sink", fmt)
        self.frames = []  # every frame the bridge delivered: its loud samples, -1 when empty
    def onFrameReceived(self, frame):
        a = np.frombuffer(bytes(frame.buf), "<i2")
        self.frames.append(int(np.count_nonzero(a)) if a.size else -1)
        if a.size:
            self.loud.append(int(np.count_nonzero(a)))

class Writer:
    logs = []
    def emit(self, kind, data):
        if kind == "log":
            self.logs.append(data["msg"])

def pump(w, s):
    end = time.monotonic() + s
    while time.monotonic() < end:
        w.ep.libHandleEvents(5)
        w._drain()

def pump_until(w, done, limit=10.0):
    # pump until done() holds: the bridge's clock thread decides when a change takes effect
    end = time.monotonic() + limit
    while not done():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting on the bridge")
        w.ep.libHandleEvents(5)
        w._drain()
"""

PORT_REUSE_SCRIPT = """
w = Worker(WorkerConfig(tls_port=None, udp_port=0, frame_ms=100, rtp_timeout_s=0, media="python"), Writer())
w._start()
sink = Sink()
first = CallCtx(ref="a", role="uas", t0=time.monotonic())
port = first.port = w._acquire_port(first, 100)
first.playback.push(np.full(16000, 8000, "<i2").tobytes())
port.startTransmit(sink)
pump(w, 0.33)
port.stopTransmit(sink)
w._release_ports(first)
pump(w, 0.6)
second = CallCtx(ref="b", role="uas", t0=time.monotonic())
again = second.port = w._acquire_port(second, 100)
sink.loud.clear()
again.startTransmit(sink)
pump(w, 0.3)
print(json.dumps({"reused": again is port, "heard": sink.loud[:10]}), flush=True)
os._exit(0)
"""

NATIVE_SCRIPT = """
writer = Writer()
w = Worker(WorkerConfig(tls_port=None, udp_port=0, rtp_timeout_s=0, media="native"), writer)
w._start()
out = {"native": w.native is not None, "logs": writer.logs}
if w.native is not None:
    sink = Sink()
    port = w.native.acquire()
    w.native._lib.pjsua_conf_connect(port.slot, sink.getPortId())
    from sipworker import _rtport
    _rtport.push(port.addr, np.full(16000, 8000, "<i2").tobytes(), False)
    pump(w, 0.3)
    out["first"] = sink.loud[:5]
    mark = len(sink.frames)
    w.native._lib.pjsua_conf_disconnect(port.slot, sink.getPortId())
    # the bridge applies a disconnect on its own clock: until a frame without the port's audio
    # arrives, one mixed before it may still be on its way to the sink
    pump_until(w, lambda: any(n != 160 for n in sink.frames[mark:]))
    w.native.release(port, -1)  # with two seconds of audio still queued
    again = w.native.acquire()
    sink.loud.clear()
    w.native._lib.pjsua_conf_connect(again.slot, sink.getPortId())
    pump(w, 0.3)
    out["reused"] = again is port
    out["heard"] = sink.loud[:10]
print(json.dumps(out), flush=True)
os._exit(0)
"""


def run_on_endpoint(script: str, *args: str) -> dict[str, Any]:
    """Run a script on a real, call-less worker endpoint in a subprocess; its last line is JSON."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", ENDPOINT_PREAMBLE + script, *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_native_port_plays_then_is_reused_silent() -> None:
    """A native port on a real endpoint (no SIP) plays what is pushed; released with audio still
    queued and handed to the next call, it plays nothing of the first."""
    out = run_on_endpoint(NATIVE_SCRIPT)
    assert out["native"] is True and out["logs"] == []
    assert out["first"] == [160] * 5  # whole 20 ms frames of the pushed audio
    assert out["reused"] is True and out["heard"] == [0] * 10


def test_worker_without_the_c_module_falls_back_to_python_ports() -> None:
    out = run_on_endpoint(NATIVE_SCRIPT, "hide")
    assert out["native"] is False
    logs = out["logs"]
    assert isinstance(logs, list) and any("native media unavailable, using Python ports" in m for m in logs)


def test_reused_frame_port_carries_no_audio_into_the_next_call() -> None:
    """A 100 ms port leaves up to 80 ms of its last frame in the bridge; the drain on release must
    keep that from playing into the next call that gets the pooled port (real endpoint, no SIP)."""
    out = run_on_endpoint(PORT_REUSE_SCRIPT)
    assert out["reused"] is True  # the second call got the same pooled port
    assert len(out["heard"]) == 10 and out["heard"] == [0] * 10  # and heard silence, not the first call


def test_certs_created_once_then_reused(tmp_path: Path) -> None:
    first = certs.ensure_certs(tmp_path)
    assert first.created
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    again = certs.ensure_certs(tmp_path)
    assert not again.created and again.ca.read_bytes() == first.ca.read_bytes()
    first.key.write_bytes(b"")  # a damaged set is regenerated
    assert certs.ensure_certs(tmp_path).created


async def test_reply_audio_goes_to_the_worker_in_few_commands() -> None:
    """Reply chunks made faster than real time are batched; the first one is not held back."""
    from mock_api.sip import ReplyBatcher

    sent: list[bytes] = []
    batcher = ReplyBatcher(sent.append)
    chunks = [bytes([i]) * 1600 for i in range(20)]  # 20 × 100 ms at 8 kHz, as the fake model makes them
    batcher.push(chunks[0])
    assert sent == [chunks[0]]  # the first chunk of a burst goes at once
    for c in chunks[1:]:
        batcher.push(c)
        await asyncio.sleep(0.01)  # the fake model's pace: chunks arrive faster than real time
    # nothing lost, order kept
    await until(lambda: b"".join(sent) == b"".join(chunks), timeout=10, what="every chunk sent")
    assert 2 <= len(sent) <= 6, len(sent)
    batcher.push(b"\x01" * 1600)  # barge-in before the next batch: nothing more goes out
    batcher.push(b"\x02" * 1600)
    n = len(sent)
    batcher.clear()
    await asyncio.sleep(ReplyBatcher.MAX_WAIT_S + 0.1)  # longer than any batch wait: an absence, not a race
    assert len(sent) == n
