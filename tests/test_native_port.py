"""The native frame port's C state machine (``sipworker/_rtport.c``), driven without pjmedia.

The test stands in for pjmedia's conference: it calls the port's put_frame/get_frame through the
function pointers the port block carries, with frames laid out like ``pjmedia_frame``.  The same
port inside real calls is covered in ``test_sip_calls.py``.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from sipworker import _rtport

FRAME = _rtport.FRAME_BYTES
PUT, GET, DESTROY = 96, 104, 112  # where the pjsua2 wheel's pjmedia_port keeps them (native.probe_offsets)


class Frame(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("buf", ctypes.c_void_p), ("size", ctypes.c_size_t),
                ("timestamp", ctypes.c_uint64), ("bit_info", ctypes.c_uint32)]


Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Frame))


class Bridge:
    """One port and the two calls the conference makes on it every 20 ms tick."""

    def __init__(self) -> None:
        _rtport.setup(PUT, GET, DESTROY)
        self.port = _rtport.new()
        self._put = Callback(ctypes.c_void_p.from_address(self.port + PUT).value)
        self._get = Callback(ctypes.c_void_p.from_address(self.port + GET).value)

    def get(self, frames: int = 1) -> bytes:
        buf = ctypes.create_string_buffer(b"\x55" * (frames * FRAME), frames * FRAME)  # garbage in: must be overwritten
        f = Frame(0, ctypes.addressof(buf), frames * FRAME, 0, 0)
        assert self._get(self.port, ctypes.byref(f)) == 0
        assert f.type == 1 and f.size == frames * FRAME
        return buf.raw

    def put(self, pcm: bytes, frame_type: int = 1) -> None:
        buf = ctypes.create_string_buffer(pcm, len(pcm))
        assert self._put(self.port, ctypes.byref(Frame(frame_type, ctypes.addressof(buf), len(pcm), 0, 0))) == 0

    def drain(self) -> dict[str, int | bytes]:
        rx, rx_frames, last_ns, done_at, sent, dropped, pending = _rtport.drain(self.port)
        return {"rx": rx, "rx_frames": rx_frames, "last_ns": last_ns, "done_at": done_at, "sent": sent,
                "dropped": dropped, "pending": pending}


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
    assert d == {"rx": b"", "rx_frames": 0, "last_ns": 0, "done_at": -1, "sent": 0, "dropped": 0, "pending": 0}
    assert b.get() == bytes(FRAME)
    assert b.drain()["done_at"] == -1  # a reset port was never playing
    b.put(tone(1, 11))
    assert b.drain()["rx"] == tone(1, 11)  # and hears again


def test_setup_refuses_offsets_outside_the_reserved_header() -> None:
    with pytest.raises(ValueError, match="outside the reserved header"):
        _rtport.setup(PUT, GET, _rtport.HDR_BYTES)
    _rtport.setup(PUT, GET, DESTROY)
