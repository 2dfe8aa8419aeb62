"""The native frame port's C state machine (``sipworker/_rtport.c``), driven without pjmedia.

The test stands in for pjmedia's conference: it calls the port's put_frame/get_frame through the
function pointers the port block carries, with frames laid out like ``pjmedia_frame``.  The same
port inside real calls is covered in ``test_sip_calls.py``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import webrtcvad

from audio_fixtures import fixture
from sipworker import _rtport, media
from sipworker.ipc import VadParams
from sipworker.native import Drained

FRAME = _rtport.FRAME_BYTES
PUT, GET, DESTROY = 96, 104, 112  # where the pjsua2 wheel's pjmedia_port keeps them (native.probe_offsets)


class Frame(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("buf", ctypes.c_void_p), ("size", ctypes.c_size_t),
                ("timestamp", ctypes.c_uint64), ("bit_info", ctypes.c_uint32)]


Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Frame))


def _slot(address: int) -> int:
    """The function pointer stored at ``address``; an empty slot would crash the call, so fail the test first."""
    fn = ctypes.c_void_p.from_address(address).value
    assert fn is not None, f"no callback stored at {address:#x}"
    return fn


class Bridge:
    """One port and the two calls the conference makes on it every 20 ms tick."""

    def __init__(self) -> None:
        _rtport.setup(PUT, GET, DESTROY)
        self.port = _rtport.new()
        self._put = Callback(_slot(self.port + PUT))
        self._get = Callback(_slot(self.port + GET))

    def get(self, frames: int = 1) -> bytes:
        buf = ctypes.create_string_buffer(b"\x55" * (frames * FRAME), frames * FRAME)  # garbage in: must be overwritten
        f = Frame(0, ctypes.addressof(buf), frames * FRAME, 0, 0)
        assert self._get(self.port, ctypes.byref(f)) == 0
        assert f.type == 1 and f.size == frames * FRAME
        return buf.raw

    def put(self, pcm: bytes, frame_type: int = 1) -> None:
        buf = ctypes.create_string_buffer(pcm, len(pcm))
        assert self._put(self.port, ctypes.byref(Frame(frame_type, ctypes.addressof(buf), len(pcm), 0, 0))) == 0

    def drain(self) -> dict[str, Any]:  # each key has its own type (see Drained): Any, not a union
        return Drained(*_rtport.drain(self.port))._asdict()


def tone(frames: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(-9000, 9000, frames * FRAME // 2, dtype="<i2").tobytes()


def test_playback_pads_the_tail_and_reports_where_it_ran_dry_once() -> None:
    b = Bridge()
    assert b.get() == bytes(FRAME)  # nothing queued: silence, never the buffer's old bytes
    audio = tone(3, 1)[: 2 * FRAME + 100]  # 2.3 frames
    assert _rtport.push(b.port, audio, False) == 3
    assert b.drain()["pending"] == 3
    played = b.get() + b.get() + b.get()
    assert played == audio + bytes(FRAME - 100)
    assert b.drain()["done_at"] == -1  # the last frame went out, but the queue has not yet run dry
    assert b.get() == bytes(FRAME)
    d = b.drain()
    assert d["done_at"] == 4 and d["sent"] == 5 and d["pending"] == 0  # audio ended 4 frames into the call
    b.get()
    assert b.drain()["done_at"] == -1  # reported once


def test_clear_stops_playback_where_the_clock_stands() -> None:
    b = Bridge()
    _rtport.push(b.port, tone(5, 2), False)
    b.get(2)  # a 40 ms request takes two frames at once
    assert _rtport.clear(b.port) == 3
    assert b.get() == bytes(FRAME)
    assert b.drain()["done_at"] == 2
    _rtport.push(b.port, tone(1, 3), False)
    _rtport.push(b.port, tone(1, 4), True)  # push with clear replaces what was queued
    assert b.get() == tone(1, 4)


def test_received_audio_is_kept_in_order_and_heartbeats_are_ignored() -> None:
    b = Bridge()
    b.put(tone(1, 5))
    b.put(b"", frame_type=0)  # the conference's heart-beat to a port nobody transmits to
    b.put(tone(2, 6))
    d = b.drain()
    assert d["rx"] == tone(1, 5) + tone(2, 6) and d["rx_frames"] == 3 and d["last_ns"] > 0
    assert b.drain()["rx"] == b""


def test_received_audio_is_only_counted_while_nothing_reads_it() -> None:
    b = Bridge()
    _rtport.set_rx(b.port, False)
    b.put(tone(4, 7))
    d = b.drain()
    assert d["rx"] == b"" and d["rx_frames"] == 4
    _rtport.set_rx(b.port, True)
    b.put(tone(1, 8))
    d = b.drain()
    assert d["rx"] == tone(1, 8) and d["rx_frames"] == 5  # the rx clock kept running


def test_a_late_drain_keeps_the_newest_three_seconds_and_counts_the_rest() -> None:
    b = Bridge()
    frames = [tone(1, 100 + i) for i in range(160)]
    for f in frames:
        b.put(f)
    d = b.drain()
    assert d["rx"] == b"".join(frames[10:]) and d["dropped"] == 10 and d["rx_frames"] == 160


def test_reset_leaves_nothing_for_the_next_call() -> None:
    b = Bridge()
    _rtport.push(b.port, tone(3, 9), False)
    b.get()
    b.put(tone(1, 10))
    _rtport.set_rx(b.port, False)
    _rtport.reset(b.port)
    d = b.drain()
    assert d == {"rx": b"", "rx_frames": 0, "last_ns": 0, "done_at": -1, "sent": 0, "dropped": 0, "pending": 0,
                 "voiced": b"", "voiced_from": 0, "loud_frame": -1, "loud_ns": 0}
    assert b.get() == bytes(FRAME)
    assert b.drain()["done_at"] == -1  # a reset port was never playing
    b.put(tone(1, 11))
    assert b.drain()["rx"] == tone(1, 11)  # and hears again


def test_setup_refuses_offsets_outside_the_reserved_header() -> None:
    with pytest.raises(ValueError, match="outside the reserved header"):
        _rtport.setup(PUT, GET, _rtport.HDR_BYTES)
    _rtport.setup(PUT, GET, DESTROY)


# ---- analysis on the clock thread: first audio and speech decisions -------------------------------


def speech_frames() -> list[bytes]:
    """A spoken fixture at 8 kHz, framed, with a second of quiet line noise before and after."""
    pcm = media.read_wav_8k(str(fixture("caller_confirm").path))
    noise = np.random.default_rng(3).normal(0, 40, 8000).astype("<i2").tobytes()
    audio = noise + pcm + noise
    return [audio[o : o + FRAME] for o in range(0, len(audio) - FRAME + 1, FRAME)]


class DecisionLog(media.TurnDetector):
    """A TurnDetector that keeps the decisions feed() hands to its state machine."""

    def __init__(self, params: VadParams) -> None:
        super().__init__(params, lambda *_: None, "t")
        self.decisions: list[int] = []

    def feed_voiced(self, voiced: Sequence[int], audio_ms: int) -> None:
        self.decisions.extend(int(v) for v in voiced)


def python_decisions(frames: list[bytes], params: VadParams) -> list[int]:
    """What TurnDetector.feed decides for the same frames (its own webrtcvad, numpy floor)."""
    det = DecisionLog(params)
    for f in frames:
        det.feed(f, 0)
    return det.decisions


@pytest.mark.parametrize("params", [VadParams(), VadParams(threshold=0.9, energy_floor_dbfs=-30.0)],
                         ids=["default", "aggressive-floor"])
def test_speech_decisions_match_the_python_detector_frame_for_frame(params: VadParams) -> None:
    _rtport.vad_setup(*media.webrtcvad_entry_points())
    frames = speech_frames()
    b = Bridge()
    det = media.TurnDetector(params, lambda *_: None, "t")
    _rtport.set_vad(b.port, webrtcvad.Vad()._vad, params.mode, det.power_floor)
    voiced = b""
    for i, f in enumerate(frames):
        b.put(f)
        if i % 7 == 6:  # drains at odd moments: the decisions still line up
            d = b.drain()
            assert d["voiced_from"] == len(voiced)
            voiced += d["voiced"]
    voiced += b.drain()["voiced"]
    expected = python_decisions(frames, params)
    assert list(voiced) == expected
    assert 0 < sum(expected) < len(expected)  # the fixture has speech and quiet


def test_speech_decisions_stop_with_the_vad_and_a_late_drain_keeps_the_newest() -> None:
    _rtport.vad_setup(*media.webrtcvad_entry_points())
    b = Bridge()
    vad = webrtcvad.Vad()
    b.put(tone(2, 20))  # before the VAD is on: counted, not decided
    _rtport.set_vad(b.port, vad._vad, 2, -1.0)
    for i in range(160):
        b.put(tone(1, 200 + i))
    d = b.drain()
    assert len(d["voiced"]) == 150 and d["voiced_from"] == 2 + 10 and d["rx_frames"] == 162
    _rtport.set_vad(b.port, None, 0, 0.0)
    b.put(tone(1, 21))
    assert b.drain()["voiced"] == b""
    with pytest.raises(ValueError, match="refused mode 7"):
        _rtport.set_vad(b.port, vad._vad, 7, -1.0)


def test_first_audio_is_the_first_frame_reaching_the_peak_reported_once() -> None:
    b = Bridge()
    quiet = np.full(FRAME // 2, 299, dtype="<i2").tobytes()
    loud = np.zeros(FRAME // 2, dtype="<i2")
    loud[100] = -300
    _rtport.set_peak(b.port, 300)
    b.put(quiet + quiet)  # one 40 ms frame from the bridge: two frames
    assert b.drain()["loud_frame"] == -1
    b.put(quiet)
    b.put(loud.tobytes())
    b.put(loud.tobytes())
    d = b.drain()
    assert d["loud_frame"] == 3 and d["loud_ns"] > 0 and d["loud_ns"] <= d["last_ns"]
    b.put(loud.tobytes())
    assert b.drain()["loud_frame"] == -1  # once
    _rtport.set_peak(b.port, 300)  # looking again (a new call on a pooled port)
    b.put(loud.tobytes())
    assert b.drain()["loud_frame"] == 6
    _rtport.reset(b.port)
    b.put(loud.tobytes())
    assert b.drain()["loud_frame"] == -1  # a reset port is not looking



def test_poll_reports_only_ports_with_something_to_act_on() -> None:
    _rtport.vad_setup(*media.webrtcvad_entry_points())
    ports = [Bridge() for _ in range(4)]
    addrs = [b.port for b in ports]
    floor = media.TurnDetector(VadParams(), lambda *_: None, "t").power_floor
    for b in ports:
        _rtport.set_vad(b.port, webrtcvad.Vad()._vad, 3, floor)
        _rtport.set_rx(b.port, False)
    quiet = bytes(FRAME)
    frames = speech_frames()
    loud = [f for f in frames if python_decisions([f], VadParams(threshold=0.9))[0]][:1]
    for b in ports:
        b.put(quiet)
    assert _rtport.poll(addrs) == []  # idle detectors, unvoiced frames: nothing to do
    assert _rtport.clocks(ports[0].port) == (1, 0)  # the clocks still ran
    ports[1].put(loud[0])  # a voiced frame
    _rtport.push(ports[2].port, quiet, False)
    ports[2].get()
    ports[2].get()  # playback ran dry
    _rtport.set_follow(ports[3].port, True)  # mid-turn: silence counts
    ports[3].put(quiet)
    got = {i: Drained(*raw) for i, raw in _rtport.poll(addrs)}
    assert sorted(got) == [1, 2, 3]
    assert got[1].voiced == b"\x01" and got[1].voiced_from == 1
    assert got[2].done_at == 1 and got[2].voiced == b""  # its unvoiced frame was dropped at the first poll
    assert got[3].voiced == b"\x00" and got[3].voiced_from == 1
    assert _rtport.poll(addrs) == []
    with pytest.raises(TypeError):
        _rtport.poll(5)  # type: ignore[arg-type]
