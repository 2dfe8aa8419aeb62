"""Native frame ports (``WorkerConfig.media = "native"``): call audio without Python on the clock thread.

A pjsua2 ``AudioMediaPort`` costs two Python callbacks per frame per call on pjmedia's clock
thread, which is most of a SIP worker's CPU (README, Benchmarks).  Here each call gets a port
written in C (``_rtport.c``): the clock thread copies 20 ms frames in and out of C buffers and
finds first audio and webrtcvad's speech decisions in each received frame; the worker's pump
thread (:meth:`sipworker.worker_media.WorkerMedia._pump`) collects those, received audio when it is
recorded or a call has VAD (its turns' audio goes to the parent), and where playback ended, for all
calls in one pass.

The port block starts with a ``pjmedia_port``.  The wheel ships no pjproject headers, so
:func:`probe_offsets` reads the layout off a port the wheel makes itself (``pjmedia_null_port``)
and refuses anything unexpected; the port info and the group lock are then filled by pjmedia's
own functions, and the ports are added to pjsua's conference with its C API, on the pj thread.
Like the Python ports, native ports are pooled and never destroyed while the endpoint lives.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import NamedTuple

import webrtcvad

from . import media

try:
    from . import _rtport
except ImportError:  # built without a C compiler (the extension is optional): Python ports only
    _rtport = None  # type: ignore[assignment]

_SIGNATURE = 0x52545054  # 'RTPT'
# The conference's slot 0: the null sound device (setNullDev). A port whose call must not hear it plays there, so
# the bridge keeps pulling its frames (a port nobody listens to is not read: its playback would wait, not be lost).
NULL_SLOT = 0
_WORD = ctypes.sizeof(ctypes.c_void_p)


class NativeMediaError(RuntimeError):
    """The native ports cannot be used with this pjsua2 build (the worker falls back to Python ports)."""


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_long)]


def _wheel_path() -> str:
    """The pjsua2 extension's file.  Imported here, not at module level: the unit tests use this
    module's types and C port without loading the wheel (and its own OpenSSL) into pytest."""
    import pjsua2._pjsua2 as ext

    return str(ext.__file__)


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(_wheel_path())  # the already-loaded wheel: same handle, its C symbols
    lib.pjsua_pool_create.restype = ctypes.c_void_p
    lib.pjsua_pool_create.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.pjmedia_null_port_create.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                             ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
    lib.pjmedia_port_info_init.argtypes = [ctypes.c_void_p, ctypes.POINTER(_PjStr), ctypes.c_uint, ctypes.c_uint,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_uint]
    lib.pjsua_conf_add_port.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.pjsua_conf_connect.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pjsua_conf_disconnect.argtypes = [ctypes.c_int, ctypes.c_int]
    return lib


def _code_range() -> tuple[int, int]:
    """Address range of the wheel's executable code, from /proc/self/maps."""
    ranges = []
    path = _wheel_path()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == path and "x" in parts[1]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((lo, hi))
    if not ranges:
        raise NativeMediaError("cannot find the pjsua2 extension's code in /proc/self/maps")
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def probe_offsets(lib: ctypes.CDLL, pool: int) -> tuple[int, int, int]:
    """Offsets of put_frame, get_frame and on_destroy in this build's ``pjmedia_port``.

    A null port sets exactly those three callbacks, in that order, right after get_clock_src
    (NULL), the group lock (NULL) and port_data (zero); the port info before them names the port.
    """
    port = ctypes.c_void_p()
    status = lib.pjmedia_null_port_create(pool, media.SAMPLE_RATE, 1, media.FRAME_SAMPLES, 16, ctypes.byref(port))
    if status != 0 or not port.value:
        raise NativeMediaError(f"pjmedia_null_port_create failed ({status})")
    words = (ctypes.c_size_t * (_rtport.HDR_BYTES // _WORD)).from_address(port.value)
    lo, hi = _code_range()
    code = [lo <= w < hi for w in words]
    for i in range(4, len(words) - 3):
        if code[i] and code[i + 1] and code[i + 2] and not code[i + 3] and not any(words[i - 4 : i]):
            return i * _WORD, (i + 1) * _WORD, (i + 2) * _WORD
    raise NativeMediaError("unexpected pjmedia_port layout in this pjsua2 build")


class Drained(NamedTuple):
    """What a native port gathered since the last drain."""

    rx: bytes  # received audio, the newest whole frames (only while kept, see keep_rx)
    rx_frames: int  # frames received so far: the call's rx audio clock
    last_ns: int  # CLOCK_MONOTONIC of the last received frame
    done_at: int  # tx frame where playback ran dry, or -1
    sent: int  # frames sent so far: the tx audio clock
    dropped: int  # received frames lost because the drain came late
    pending: int  # frames still queued for playback
    voiced: bytes  # one speech decision (0/1) per received frame ...
    voiced_from: int  # ... from this rx frame on
    loud_frame: int  # the first frame that reached the first-audio peak, or -1 (reported once)
    loud_ns: int  # CLOCK_MONOTONIC of its arrival


@dataclass
class NativePort:
    addr: int
    slot: int
    rx_on: bool = True
    vad: webrtcvad.Vad = field(default_factory=webrtcvad.Vad)  # the port's own, re-initialised per call
    following: bool = False  # poll reports unvoiced decisions too

    def drain(self) -> Drained:
        return Drained(*_rtport.drain(self.addr))

    def clocks(self) -> tuple[int, int]:
        """(rx frames, tx frames) so far, without draining."""
        return _rtport.clocks(self.addr)

    def follow(self, on: bool) -> None:
        """Whether unvoiced decisions matter (the detector is mid-turn); see :func:`poll`."""
        if on != self.following:
            _rtport.set_follow(self.addr, on)
            self.following = on

    def set_vad(self, detector: media.TurnDetector | None) -> None:
        """Speech decisions with ``detector``'s mode and floor on every received frame, or none."""
        if detector is None or not detector.params.enabled:
            _rtport.set_vad(self.addr, None, 0, 0.0)
        else:
            _rtport.set_vad(self.addr, self.vad._vad, detector.mode, detector.power_floor)

    def find_first_audio(self, peak: int) -> None:
        """Report the first received frame whose peak reaches ``peak`` (0: stop looking)."""
        _rtport.set_peak(self.addr, peak)

    def keep_rx(self, on: bool) -> None:
        """Copy received audio (on) or only count and analyse it (no recording, no VAD needs it)."""
        if on != self.rx_on:
            _rtport.set_rx(self.addr, on)
            self.rx_on = on


def poll(addrs: list[int]) -> list[tuple[int, Drained]]:
    """Drain, in one C call, the ports (by address) that have something to act on, with their index
    in ``addrs``: playback ran dry, first audio, lost frames, 1.5 s of kept audio, or speech decisions
    that can move a detector (a voiced frame, or any while it follows).  The others keep their
    clocks (:meth:`NativePort.clocks`) and drop their unvoiced decisions."""
    return [(i, Drained(*raw)) for i, raw in _rtport.poll(addrs)]


class NativePorts:
    """The worker's pool of native ports.  Pj thread only (pjsua's conference calls need it)."""

    def __init__(self) -> None:
        if _rtport is None:
            raise NativeMediaError("sipworker._rtport was not built (no C compiler when rtsip was installed)")
        self._lib = _lib()
        pool = self._lib.pjsua_pool_create(b"rtsip-native", 4096, 4096)
        if not pool:
            raise NativeMediaError("pjsua_pool_create failed")
        self._pool = pool
        _rtport.setup(*probe_offsets(self._lib, pool))
        try:
            _rtport.vad_setup(*media.webrtcvad_entry_points())
        except (OSError, AttributeError, ValueError) as exc:
            raise NativeMediaError(f"cannot reach webrtcvad's C entry points: {exc}") from exc
        self._free: list[NativePort] = []
        self.made = 0

    def acquire(self) -> NativePort:
        if self._free:
            port = self._free.pop()
            _rtport.reset(port.addr)
            port.rx_on, port.following = True, False
            return port
        addr = _rtport.new()
        name_bytes = f"rtsip{self.made}".encode()
        name = _PjStr(name_bytes, len(name_bytes))
        status = self._lib.pjmedia_port_info_init(addr, ctypes.byref(name), _SIGNATURE, media.SAMPLE_RATE, 1, 16,
                                                  media.FRAME_SAMPLES)
        if status != 0:
            raise NativeMediaError(f"pjmedia_port_info_init failed ({status})")
        slot = ctypes.c_int(-1)
        status = self._lib.pjsua_conf_add_port(self._pool, addr, ctypes.byref(slot))
        if status != 0:
            raise NativeMediaError(f"pjsua_conf_add_port failed ({status})")
        self.made += 1
        return NativePort(addr, slot.value)

    def connect(self, call_slot: int, port: NativePort) -> None:
        for src, dst in ((call_slot, port.slot), (port.slot, call_slot)):
            status = self._lib.pjsua_conf_connect(src, dst)
            if status != 0:
                raise NativeMediaError(f"pjsua_conf_connect({src}, {dst}) failed ({status})")

    def route(self, src: int, dst: int, on: bool) -> None:
        """Connect (idempotent) or disconnect one direction between two conference slots."""
        if on:
            status = self._lib.pjsua_conf_connect(src, dst)
            if status != 0:
                raise NativeMediaError(f"pjsua_conf_connect({src}, {dst}) failed ({status})")
        else:
            self._lib.pjsua_conf_disconnect(src, dst)  # fails harmlessly when not connected

    def disconnect(self, call_slot: int, port: NativePort) -> None:
        """Both directions; fails harmlessly once pjsua has removed the call's stream."""
        if call_slot >= 0:
            self._lib.pjsua_conf_disconnect(call_slot, port.slot)
            self._lib.pjsua_conf_disconnect(port.slot, call_slot)

    def release(self, port: NativePort, call_slot: int) -> None:
        self.disconnect(call_slot, port)
        self.route(port.slot, NULL_SLOT, False)  # a gated or held call's port played into the null device
        self.route(NULL_SLOT, port.slot, False)  # and one gated to_model heard it
        _rtport.reset(port.addr)  # nothing of this call is played into the next one
        self._free.append(port)


class NativePlayback:
    """The call's playback queue, kept in the native port (what the worker uses of :class:`media.Playback`)."""

    def __init__(self, port: NativePort) -> None:
        self.port = port
        self.sent = 0  # tx clock in sub-frames, as of the last drain

    def push(self, pcm: bytes, clear: bool = False) -> int:
        return _rtport.push(self.port.addr, pcm, clear)

    def clear(self) -> int:
        return _rtport.clear(self.port.addr)
