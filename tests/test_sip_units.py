"""Pure parts of the SIP worker package: IPC, SIP header parsing, frame-level audio, certificates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509

from mock_api import certs
from mock_api.audio import load_audio
from sipworker import media, sipmsg
from sipworker.ipc import PROTOCOL_VERSION, Command, Event, Op, ProtocolError, VadParams, WorkerConfig

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
    back = Command.from_line(cmd.to_line())
    assert back == cmd
    ev = Event.from_line(Event("call_state", {"ref": "r1", "code": 180}).to_line())
    assert ev.kind == "call_state" and ev.ref == "r1" and ev.data["code"] == 180
    with pytest.raises(ProtocolError):
        Command.from_line(json.dumps({"v": PROTOCOL_VERSION + 1, "op": "ping"}))
    with pytest.raises(ProtocolError):
        Command.from_line(json.dumps({"v": PROTOCOL_VERSION, "op": "explode"}))
    with pytest.raises(ValueError):
        VadParams.from_dict({"silence_ms": 3})
    cfg = WorkerConfig(tls_port=5061, udp_port=None)
    assert WorkerConfig.from_json(cfg.to_json()) == cfg


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
