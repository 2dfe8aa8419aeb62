"""One SIP worker process: a pjsua2 endpoint on one dedicated thread, driven over JSON lines.

Run as ``python -m sipworker.worker --config '<WorkerConfig JSON>'``.  Threads:

* ``pj``: creates the endpoint (``threadCnt=0`` + ``mainThreadOnly``), polls ``libHandleEvents``,
  runs every command and every pjsua callback, and destroys the endpoint.  Because only this
  thread touches pj objects, the "unknown thread" and "Call outlives libDestroy" aborts of the
  wheel (pjsua2 wheel item 2) cannot happen.  "pjsua2 wheel item N" cites docs/architecture.md,
  'What the pjsua2 wheel imposes'.
* pjmedia's clock thread moves 20 ms frames between each call and its native port (C, no
  Python; :mod:`sipworker.native`), or with ``cfg.media == "python"`` calls the Python frame ports
  (``onFrameReceived``/``onFrameRequested``) once per ``cfg.frame_ms`` of audio; these only touch
  :mod:`sipworker.media` objects and enqueue events.
* ``media-pump`` (native media): polls every call's port in one C call and, for the calls with
  news (playback ran dry, first audio, speech decisions, kept audio for a recording or for the
  turn audio that goes with ``speech_stopped``), does what the frame callbacks do for Python ports
  (:meth:`Worker._pump`).
* ``stdin``: parses commands into the pj thread's queue; EOF (parent gone) means shut down.
* ``ipc-out``: the only writer of the IPC stream, so slow parents never stall the clock thread.

The IPC stream is a private dup of fd 1; fd 1 itself is pointed at stderr so pjlib's console
logging can never corrupt the protocol.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import gc
import heapq
import itertools
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pjsua2 as pj

from . import media, sipmsg
from .ipc import PROTOCOL_VERSION, Command, Event, Op, ProtocolError, VadParams, WorkerConfig, name_addr
from .native import Drained, NativeMediaError, NativePlayback, NativePort, NativePorts
from .native import poll as native_poll

# libHandleEvents timeout.  Each return costs ~50-70 µs of CPU (select, timer heap, GIL
# handoff): 5 ms polls cost a worker ~1 % of a core doing nothing, 10 ms ~0.7 % (what
# bench/bare_pjsua2.py uses).  SIP events end the wait at once; only commands from the parent
# wait for it, up to POLL_MS.
POLL_MS = 10
MAX_CALLS_COMPILED = 4  # PJSUA_MAX_CALLS of the wheel (pjsua2 wheel item 1)

_SRTP = {
    "disabled": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}


def name_os_thread() -> None:
    """Give the OS thread the Python thread's name, so top -H, perf and /proc tell them apart."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(15, threading.current_thread().name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


# ---- ByteVector <-> bytes ---------------------------------------------------------------


_VEC_PTRS = ctypes.POINTER(ctypes.c_void_p * 2)  # libstdc++ vector: begin, end, capacity end
_FRAME_AUDIO = pj.PJMEDIA_FRAME_TYPE_AUDIO
_memmove = ctypes.memmove


def _slow_bytes(vec: Any) -> bytes:
    return bytes(vec)


def _fast_bytes(vec: Any) -> bytes:
    """Read a SWIG ``std::vector<unsigned char>`` directly: ~2 µs instead of ~170 µs (pjsua2 wheel item 6).

    Relies on libstdc++'s vector layout (begin, end pointers first), which :func:`_pick_io`
    verifies against the slow path once at start-up before trusting it.
    """
    start, finish = ctypes.cast(int(vec.this), _VEC_PTRS).contents
    if not start or not finish:
        return b""
    return ctypes.string_at(start, finish - start)


def _vector_data(vec: Any) -> int:
    """Address of a ByteVector's storage; stable for as long as the vector is not resized."""
    return int(ctypes.cast(int(vec.this), _VEC_PTRS).contents[0] or 0)


def _pick_io() -> tuple[Callable[[Any], bytes], bool]:
    """(vector reader, whether ports may write into their own vectors in place).

    Both rely on the libstdc++ layout, checked here against SWIG's own conversions; if anything
    disagrees the slow paths are used.
    """
    probe = bytes(range(256)) * 12 + bytes(range(64))
    reader: Callable[[Any], bytes] = _slow_bytes
    try:
        if _fast_bytes(pj.ByteVector(probe)) == probe and _fast_bytes(pj.ByteVector(b"")) == b"":
            reader = _fast_bytes
    except Exception:
        pass
    in_place = False
    try:
        vec = pj.ByteVector(bytes(len(probe)))
        ptr = _vector_data(vec)
        ctypes.memmove(ptr, probe, len(probe))
        frame = pj.MediaFrame()
        frame.buf = vec
        in_place = bool(ptr) and bytes(vec) == probe and bytes(frame.buf) == probe and _vector_data(vec) == ptr
    except Exception:
        pass
    return reader, in_place


# ---- IPC output --------------------------------------------------------------------------


class EventWriter:
    """Single writer thread for the event stream; ``emit`` is safe from any thread."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "wb", buffering=0)
        self._q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._t = threading.Thread(target=self._run, name="ipc-out", daemon=True)
        self._t.start()

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self._q.put(Event(kind, data).to_line())

    def _run(self) -> None:
        """Write whatever is queued in one syscall per wake-up: a burst of replies (the mock
        streams reply audio as many small play_pcm commands) costs one write, not one each."""
        name_os_thread()
        q = self._q
        while True:
            batch = [q.get()]
            while not q.empty():
                batch.append(q.get_nowait())
            last = None in batch
            data = b"".join(line for line in batch if line is not None)
            try:
                view = memoryview(data)
                while view:
                    view = view[self._out.write(view) or 0 :]
            except (BrokenPipeError, OSError):
                return  # parent gone; the stdin reader will see EOF and shut us down
            if last:
                return

    def close(self, timeout: float = 1.0) -> None:
        self._q.put(None)
        self._t.join(timeout)


# ---- the clock thread's Python thread state ---------------------------------------------


class _ThreadStateHold(threading.local):
    held = False


_HOLD = _ThreadStateHold()
_HOLD_ENABLED = os.environ.get("RTSIP_HOLD_TSTATE", "1") == "1"


def _hold_thread_state() -> None:
    """Keep this (pjmedia clock) thread's Python thread state alive between frame callbacks.

    SWIG's director wraps every callback in PyGILState_Ensure/Release.  For a thread Python did
    not create, a Release that drops the count to zero destroys the thread state, so each frame
    callback built and freed a fresh one (allocations and a 16 kB frame stack): about a quarter
    of the clock thread's Python cost.  One extra Ensure, taken here with the GIL held, keeps the
    count above zero; the director's Release then only releases the GIL.  ``RTSIP_HOLD_TSTATE=0``
    in the worker's environment turns this off (a switch for diagnosis, not a tuning knob).
    """
    if _HOLD_ENABLED:
        ctypes.pythonapi.PyGILState_Ensure()
        _HOLD.held = True


def _drop_thread_state() -> None:
    """Undo :func:`_hold_thread_state` (GIL held, same thread): the callback's own Release then
    frees the thread state, so a clock thread that pjmedia stops (sound device auto-close after
    the last call) leaves nothing behind."""
    ctypes.pythonapi.PyGILState_Release(0)  # PyGILState_LOCKED: we hold the GIL and keep it
    _HOLD.held = False


# ---- per-call state ----------------------------------------------------------------------


@dataclass
class CallCtx:
    ref: str
    role: str  # "uac" (we called) | "uas" (we answer)
    t0: float
    call: Any = None  # _Call; dropped in the DISCONNECTED callback (pjsua2 wheel item 3)
    port: Any = None  # _FramePort: plays to the call, and receives from it unless rx_port is set
    rx_port: Any = None  # receive-only _FramePort (cfg.vad_frame_ms) of a call with VAD (see on_media_state)
    nport: NativePort | None = None  # instead of port/rx_port with native media
    call_slot: int = -1  # the call's conference slot, while nport is connected to it
    rx_lost: int = 0  # received frames nport dropped because the pump came too late
    sip_call_id: str = ""
    playback: media.Playback | NativePlayback = field(default_factory=media.Playback)
    recorder: media.Recorder | None = None
    vad: media.TurnDetector | None = None
    turn_audio: media.TurnAudio | None = None  # the caller's audio of the current turn, while VAD is on
    pending_play: list[bytes] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    answered: bool = False
    invite_code: int = 0
    invite_reason: str = ""
    local_hangup: bool = False
    heard: bool = False
    rx_frames: int = 0  # 20 ms sub-frames received so far: the call's rx audio clock
    refer_status: int = 603
    hangup_on_refer: bool = True
    refer_target: str | None = None
    redirected_to: str | None = None
    media_wired: bool = False
    media_idx: int = -1
    ended: bool = False
    cause: str | None = None  # why we hung up on our own (rtp_timeout, shutdown)
    last_rx_pkt: int = -1
    last_rx_at: float = 0.0
    final_rtp: dict[str, int] | None = None  # stream counters saved as the stream is destroyed

    @property
    def vad_on(self) -> bool:
        return self.vad is not None and self.vad.params.enabled

    @property
    def reads_rx(self) -> bool:
        """Something still needs the received audio (else it is only counted, not copied): a recording,
        or the turn audio that goes with speech_stopped.  A native port finds first audio itself."""
        return self.recorder is not None or self.vad_on or (self.nport is None and not self.heard)

    @property
    def tx_frames(self) -> int:
        """20 ms sub-frames sent so far (playback and silence): the call's tx audio clock."""
        return self.playback.sent

    def sync_clocks(self) -> None:
        """Bring rx_frames and tx_frames up to date: the pump skips native ports with no news."""
        if self.nport is not None and isinstance(self.playback, NativePlayback):
            self.rx_frames, self.playback.sent = self.nport.clocks()

    def ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def mark(self, name: str, at: int | None = None) -> int:
        """Record ``name`` once, at ``at`` (ms since t0) or now."""
        if name not in self.marks:
            self.marks[name] = self.ms() if at is None else at
        return self.marks[name]


class _FramePort(pj.AudioMediaPort):
    """L16 frames of ``cfg.frame_ms`` between a call and Python.  Runs on the clock thread.

    The bridge ticks every 20 ms; a port with a longer frame is buffered by pjmedia's conference
    (conf.c rx_buf/tx_buf), so each callback carries ``frame_ms`` of audio and the per-callback
    cost (SWIG director dispatch, GIL handoff) is paid ``frame_ms / 20`` times less often.  Inside
    a frame, :mod:`sipworker.media` works per 20 ms sub-frame, so audio times stay exact.  A call
    with VAD gets a second, receive-only port of ``cfg.vad_frame_ms`` (``CallCtx.rx_port``), so turn detection is
    not held back by the buffering.

    Ports are pooled per worker and never destroyed while the endpoint lives: pjmedia's
    conference removes ports asynchronously, so a clock tick can still call a port whose
    Python/C++ object was just freed (seen as a SIGSEGV under load).  A free port has
    ``ctx = None`` and ignores frames; the call's teardown drops its connections.
    """

    def __init__(self, worker: Worker, name: str, frame_ms: int) -> None:
        super().__init__()
        self.worker = worker
        self.ctx: CallCtx | None = None
        self.rx = True  # False: a play-only port whose call has a separate rx_port
        self.frame_ms = frame_ms
        self.subframes = self.frame_ms // media.FRAME_MS
        self.drained = True  # see Worker._release_port
        self.frame_bytes = self.subframes * media.FRAME_BYTES
        self.silence = pj.ByteVector(bytes(self.frame_bytes))
        self._read = worker.read_bytes
        # Outgoing audio is copied into this vector's fixed storage (one memmove), then the frame
        # takes a C++ copy of it: pj.ByteVector(bytes) would convert ~30 µs per 100 ms byte by byte.
        self._tx = pj.ByteVector(bytes(self.frame_bytes))
        self._tx_ptr = _vector_data(self._tx) if worker.write_in_place else 0
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, media.SAMPLE_RATE, 1, self.frame_ms * 1000, 16)
        self.createPort(name, fmt)

    def onFrameRequested(self, frame: Any) -> None:
        # frame.size arrives preset to the requested size (our frame_bytes); pjsua2 sends
        # min(size, len(buf)), so only the type and the buffer need setting.
        frame.type = _FRAME_AUDIO
        ctx = self.ctx
        if ctx is None:
            frame.buf = self.silence
            self.drained = True  # whatever the bridge still held of the last call is used up
            return
        if not _HOLD.held:
            _hold_thread_state()
        data, done_ms = cast(media.Playback, ctx.playback).fill(self.subframes)  # Python ports: a Playback
        if data is None:
            frame.buf = self.silence
        elif self._tx_ptr:
            _memmove(self._tx_ptr, data, self.frame_bytes)  # fill() returns exactly frame_bytes
            frame.buf = self._tx
        else:
            frame.buf = pj.ByteVector(data)
        if done_ms is not None:
            self.worker.emit("playback_done", {"ref": ctx.ref, "audio_ms": done_ms})

    def onFrameReceived(self, frame: Any) -> None:
        ctx = self.ctx
        if ctx is None or not self.rx:
            # Free pooled ports still get (empty) frames while other calls keep the clock running;
            # once no call is bound, let the thread state go with the clock thread.
            if ctx is None and _HOLD.held and not self.worker.bound_ports:
                _drop_thread_state()
            return
        if not _HOLD.held:
            _hold_thread_state()
        if not ctx.reads_rx:
            ctx.rx_frames += int(frame.size) // media.FRAME_BYTES  # skip the copy
            return
        data = self._read(frame.buf)
        n = len(data) // media.FRAME_BYTES
        if not n:
            return
        if len(data) != n * media.FRAME_BYTES:
            data = data[: n * media.FRAME_BYTES]
        start = ctx.rx_frames
        ctx.rx_frames = start + n
        self.worker.on_received(ctx, data, start * media.FRAME_MS, ctx.ms())


class _Call(pj.Call):
    def __init__(self, worker: Worker, acc: Any, ctx: CallCtx, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self._w = worker
        self.ctx = ctx

    def onCallState(self, prm: Any) -> None:
        self._w.on_call_state(self.ctx, self)

    def onCallMediaState(self, prm: Any) -> None:
        self._w.on_media_state(self.ctx, self)

    def onStreamDestroyed(self, prm: Any) -> None:
        self._w.on_stream_destroyed(self.ctx, self, int(prm.streamIdx))

    def onDtmfDigit(self, prm: Any) -> None:
        method = "rfc2833" if prm.method == pj.PJSUA_DTMF_METHOD_RFC2833 else "info"
        self._w.emit("dtmf", {"ref": self.ctx.ref, "digit": prm.digit, "method": method, "t_ms": self.ctx.ms()})

    def onCallTransferRequest(self, prm: Any) -> None:
        ctx = self.ctx
        ctx.refer_target = prm.dstUri
        # 2xx would make pjsua dial the target itself; the softphone only reports it (pjsua2 wheel item 7).
        prm.statusCode = ctx.refer_status
        ctx.mark("refer_received")
        self._w.emit("refer_received", {"ref": ctx.ref, "target": prm.dstUri, "status": ctx.refer_status})
        if ctx.hangup_on_refer:
            self._w.later(0.05, lambda: self._w.hangup_ctx(ctx, None, None))

    def onCallTransferStatus(self, prm: Any) -> None:
        self._w.emit(
            "refer_status",
            {"ref": self.ctx.ref, "code": prm.statusCode, "reason": prm.reason, "final": bool(prm.finalNotify)},
        )
        if prm.finalNotify:
            prm.cont = False

    def onCallRedirected(self, prm: Any) -> int:
        # prm.targetUri renders without the port in this wheel; take the Contact from the 3xx itself.
        target = _contact_of_event(prm.e) or str(prm.targetUri)
        self.ctx.redirected_to = target
        self._w.emit(
            "call_state",
            {"ref": self.ctx.ref, "state": "REDIRECTED", "code": 302, "reason": target, "t_ms": self.ctx.ms()},
        )
        return int(pj.PJSIP_REDIRECT_ACCEPT_REPLACE)


def _stream_stats(call: Any, idx: int) -> dict[str, int]:
    st = call.getStreamStat(idx).rtcp
    return {
        "rx_pkt": int(st.rxStat.pkt),
        "rx_loss": int(st.rxStat.loss),
        "tx_pkt": int(st.txStat.pkt),
        "rx_jitter_mean_us": int(st.rxStat.jitterUsec.mean),
    }


def _contact_of_event(e: Any) -> str | None:
    """Contact URI of the response carried by a SipEvent (tsx state or rx message), if any."""
    for get in (lambda: e.body.tsxState.src.rdata.wholeMsg, lambda: e.body.rxMsg.rdata.wholeMsg):
        try:
            raw = get()
        except Exception:
            continue
        if raw:
            contact = sipmsg.parse(raw).get("Contact")
            if contact:
                return sipmsg.uri_of(contact)
    return None


class _Account(pj.Account):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._w = worker

    def onIncomingCall(self, prm: Any) -> None:
        self._w.on_incoming(self, prm)


class _Endpoint(pj.Endpoint):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._w = worker

    def onTransportState(self, prm: Any) -> None:
        info = prm.tlsInfo
        data: dict[str, Any] = {"state": int(prm.state), "error": int(prm.lastError)}
        if info is not None and not info.isEmpty():
            data.update(
                tls_established=bool(info.established),
                tls_verify_status=int(info.verifyStatus),
                tls_verify_msgs=list(info.verifyMsgs),
                cipher=info.cipherName,
            )
        if prm.lastError or data.get("tls_verify_status"):
            self._w.emit("transport", data)

    def onRejectedIncomingCall(self, prm: Any) -> None:
        raw = prm.rdata.wholeMsg if prm.rdata is not None else ""
        msg = sipmsg.parse(raw)
        self._w.emit(
            "rejected_incoming",
            {
                "code": int(prm.statusCode),
                "reason": prm.reason,
                "sip_call_id": msg.get("Call-ID", ""),
                "request_uri": msg.request_uri,
                "src": prm.rdata.srcAddress if prm.rdata is not None else "",
                "raw": raw,
            },
        )


# ---- the worker --------------------------------------------------------------------------


class Worker:
    """Owns the endpoint; every method except :meth:`submit`/:meth:`emit` runs on the pj thread."""

    def __init__(self, cfg: WorkerConfig, writer: EventWriter) -> None:
        self.cfg = cfg
        self._writer = writer
        self._cmds: queue.SimpleQueue[Command | Callable[[], None]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []  # heap: (due, seq, fn)
        self._timer_seq = itertools.count()
        self._stop = False
        self.calls: dict[str, CallCtx] = {}
        self._in_seq = 0
        self.read_bytes, self.write_in_place = _pick_io()
        self.ep: Any = None
        self.acc: Any = None
        self.own_uri = f"sip:{cfg.user}@{cfg.bind}"  # the account's: the From of a call that names none
        self.ports: dict[str, int | None] = {}
        self._ports: list[_FramePort] = []  # every frame port ever made (kept for the process life)
        self._free_ports: dict[int, list[_FramePort]] = {}  # by frame_ms
        self.bound_ports = 0  # ports with a call (read by the clock thread)
        self.native: NativePorts | None = None  # cfg.media == "native" and the build fits
        self._pumped: dict[str, CallCtx] = {}  # calls with a native port (read by the pump thread)
        self._pump_ctxs: list[CallCtx] = []  # the same, and their ports' addresses, for poll()
        self._pump_addrs: list[int] = []
        self._pump_fast = False  # some pumped call has VAD on
        self._pump_lock = threading.Lock()  # one drain of a port at a time: pump thread or the call's end
        self.failed: str | None = None

    # -- thread-safe entry points
    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self._writer.emit(kind, data)

    def submit(self, item: Command | Callable[[], None]) -> None:
        self._cmds.put(item)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the pj thread after ``delay`` s (pj thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn))

    # -- lifecycle
    def run(self) -> None:
        name_os_thread()
        try:
            self._start()
        except Exception as exc:  # report, then fall through to the destroy path
            self.failed = f"start failed: {exc!r} {getattr(exc, 'info', lambda: '')()}"
            self.emit("log", {"level": "error", "msg": self.failed})
            self._stop = True
        else:
            self.emit(
                "ready",
                {
                    "protocol": PROTOCOL_VERSION,
                    "pid": os.getpid(),
                    "name": self.cfg.name,
                    "max_calls": min(self.cfg.max_calls, MAX_CALLS_COMPILED),
                    "fast_frames": self.read_bytes is _fast_bytes and self.write_in_place,
                    "frame_ms": self.cfg.frame_ms,
                    "media": "native" if self.native is not None else "python",
                    **{f"{k}_port": v for k, v in self.ports.items()},
                },
            )
        if self.cfg.rtp_timeout_s > 0:
            self.later(1.0, self._check_rtp)
        if self.native is not None:
            threading.Thread(target=self._pump_loop, name="media-pump", daemon=True).start()
        if not self._stop:
            handle_events, drain = self.ep.libHandleEvents, self._drain
            while not self._stop:
                handle_events(POLL_MS)
                drain()
        self._destroy()

    def _check_rtp(self) -> None:
        """Hang up calls whose peer stopped sending RTP (a dead caller never sends BYE)."""
        now = time.monotonic()
        for ctx in list(self.calls.values()):
            if ctx.call is None or ctx.ended or not ctx.media_wired or ctx.media_idx < 0:
                continue
            try:
                pkt = int(ctx.call.getStreamStat(ctx.media_idx).rtcp.rxStat.pkt)
            except pj.Error:
                continue
            if pkt != ctx.last_rx_pkt:
                ctx.last_rx_pkt, ctx.last_rx_at = pkt, now
            elif now - ctx.last_rx_at >= self.cfg.rtp_timeout_s:
                ctx.cause = "rtp_timeout"
                self.hangup_ctx(ctx, None, "RTP timeout")
        self.later(1.0, self._check_rtp)

    def _start(self) -> None:
        cfg = self.cfg
        self.ep = _Endpoint(self)
        self.ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = True
        ep_cfg.uaConfig.maxCalls = min(cfg.max_calls, MAX_CALLS_COMPILED)
        ep_cfg.uaConfig.userAgent = cfg.user_agent
        ep_cfg.logConfig.level = cfg.log_level
        ep_cfg.logConfig.consoleLevel = cfg.log_level
        ep_cfg.medConfig.clockRate = media.SAMPLE_RATE
        ep_cfg.medConfig.sndClockRate = media.SAMPLE_RATE
        ep_cfg.medConfig.channelCount = 1
        ep_cfg.medConfig.ecTailLen = 0
        ep_cfg.medConfig.noVad = True
        self.ep.libInit(ep_cfg)
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():
            self.ep.codecSetPriority(codec.codecId, 0)
        self.ep.codecSetPriority("PCMU/8000/1", 255)
        self.ep.codecSetPriority("PCMA/8000/1", 254)

        self.ports = {}
        if cfg.tls_port is not None:
            self.ports["tls"] = self._transport(pj.PJSIP_TRANSPORT_TLS, cfg.tls_port, tls=True)
        if cfg.tcp_port is not None:
            self.ports["tcp"] = self._transport(pj.PJSIP_TRANSPORT_TCP, cfg.tcp_port)
        if cfg.udp_port is not None:
            self.ports["udp"] = self._transport(pj.PJSIP_TRANSPORT_UDP, cfg.udp_port)
        self.ep.libStart()

        acc_cfg = pj.AccountConfig()
        acc_cfg.idUri = self.own_uri
        acc_cfg.mediaConfig.srtpUse = _SRTP[cfg.srtp]
        acc_cfg.mediaConfig.srtpSecureSignaling = 0
        acc_cfg.mediaConfig.transportConfig.port = cfg.rtp_port
        acc_cfg.mediaConfig.transportConfig.portRange = cfg.rtp_port_range
        acc_cfg.mediaConfig.transportConfig.boundAddress = cfg.bind
        self.acc = _Account(self)
        self.acc.create(acc_cfg, True)
        if cfg.media == "native":
            try:
                self.native = NativePorts()
            except (NativeMediaError, OSError, AttributeError) as exc:
                self.emit("log", {"level": "warning", "msg": f"native media unavailable, using Python ports: {exc}"})

    def _transport(self, kind: int, port: int, tls: bool = False) -> int:
        tcfg = pj.TransportConfig()
        tcfg.port = port
        tcfg.boundAddress = self.cfg.bind
        if self.cfg.no_delay and kind != pj.PJSIP_TRANSPORT_UDP:
            so = pj.SockOpt()
            so.level = 6  # IPPROTO_TCP
            so.optName = 1  # TCP_NODELAY; setOptValInt, not optVal (pjsua2 wheel item 5)
            so.setOptValInt(1)
            if tls:
                tcfg.tlsConfig.sockOptParams.sockOpts.append(so)
            else:
                tcfg.sockOptParams.sockOpts.append(so)
        if tls:
            t = tcfg.tlsConfig
            t.method = pj.PJSIP_TLSV1_2_METHOD
            if self.cfg.ca_file:
                t.CaListFile = self.cfg.ca_file
            if self.cfg.cert_file:
                t.certFile = self.cfg.cert_file
            if self.cfg.key_file:
                t.privKeyFile = self.cfg.key_file
            t.verifyServer = bool(self.cfg.verify_server)
            t.verifyClient = bool(self.cfg.verify_client)
        tid = self.ep.transportCreate(kind, tcfg)
        name = self.ep.transportGetInfo(tid).localName  # "127.0.0.1:5061"
        return int(str(name).rsplit(":", 1)[1])

    def _destroy(self) -> None:
        """Hang up, drop every Call and port *before* libDestroy (pjsua2 wheel item 2), then destroy."""
        if self.ep is None:
            return
        try:
            if self.calls:
                self.ep.hangupAllCalls()
                deadline = time.monotonic() + 0.8
                while any(not c.ended for c in self.calls.values()) and time.monotonic() < deadline:
                    self.ep.libHandleEvents(10)
            for ctx in list(self.calls.values()):
                if not ctx.ended:
                    self._finish(ctx, None)
                ctx.call = None
                self._release_ports(ctx)
            self.calls.clear()
            # Frame ports are deliberately left alive: the process ends with os._exit right after
            # libDestroy, so their destructors never run against a destroyed or busy bridge.
            self._timers.clear()
            if self.acc is not None:
                self.acc.shutdown()
            self.acc = None
            gc.collect()
            self.ep.libDestroy()
        except Exception as exc:
            self.emit("log", {"level": "error", "msg": f"destroy: {exc!r}"})
        self.ep = None

    def _drain(self) -> None:
        """Run due timers, then every queued command.  Cheap when idle: it runs every poll."""
        timers = self._timers
        if timers and timers[0][0] <= time.monotonic():
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                self._guard(heapq.heappop(timers)[2])
        cmds = self._cmds
        while not cmds.empty():
            item = cmds.get_nowait()
            if isinstance(item, Command):
                self._execute(item)
            else:
                self._guard(item)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            self.emit("log", {"level": "error", "msg": f"{exc!r}"})

    def _execute(self, cmd: Command) -> None:
        handler = getattr(self, f"_op_{cmd.op}", None)
        try:
            if handler is None:
                raise ValueError(f"unsupported op {cmd.op!r}")
            result = handler(**cmd.args)
        except pj.Error as exc:
            self.emit(
                "reply", {"req": cmd.req, "ok": False, "error": f"{exc.title}: {exc.reason}", "status": int(exc.status)}
            )
        except Exception as exc:
            self.emit("reply", {"req": cmd.req, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            self.emit("reply", {"req": cmd.req, "ok": True, "result": result or {}})

    # -- helpers
    def _ctx(self, ref: str) -> CallCtx:
        ctx = self.calls.get(ref)
        if ctx is None or ctx.call is None:
            raise KeyError(f"unknown or ended call {ref!r}")
        return ctx

    @staticmethod
    def _op(code: int | None = None, reason: str | None = None, headers: dict[str, str] | None = None) -> Any:
        op = pj.CallOpParam(True)
        if code is not None:
            op.statusCode = int(code)
        if reason:
            op.reason = reason
        for name, value in (headers or {}).items():
            h = pj.SipHeader()
            h.hName, h.hValue = name, str(value)
            op.txOption.headers.append(h)
        return op

    def _address(self, op: Any, uri: str, from_uri: str | None, display_name: str | None,
                 to_uri: str | None) -> str:
        """Set the caller's identity on ``op``; returns the URI to pass to makeCall (it becomes the To).

        pjsua puts the account's idUri in the From unless ``txOption.localUri`` names another, so
        any From costs no account (the wheel aborts on a ninth, PJSUA_MAX_ACC); the dialog keeps it
        for the BYE.  ``txOption.targetUri`` is the Request-URI when the To must differ from it.
        """
        if from_uri or display_name:
            op.txOption.localUri = name_addr(from_uri or self.own_uri, display_name)
        if not to_uri:
            return uri
        op.txOption.targetUri = uri
        return name_addr(to_uri)

    def _configure_media(
        self, ctx: CallCtx, play: list[str] | None, record: str | None, vad: dict[str, Any] | None
    ) -> None:
        for path in play or []:
            ctx.pending_play.append(media.read_wav_8k(path))
        if record:
            ctx.recorder = media.Recorder(record)
        if vad is not None:
            self._set_vad(ctx, vad)
        if ctx.media_wired:
            self._flush_pending(ctx)

    def _set_vad(self, ctx: CallCtx, vad: dict[str, Any]) -> None:
        params = VadParams.from_dict(vad)
        if ctx.vad is None:
            ctx.turn_audio = media.TurnAudio.for_vad(params)
            ctx.vad = media.TurnDetector(params, lambda kind, data: self._speech(ctx, kind, data), ctx.ref)
        else:
            ctx.vad.configure(params)
            if ctx.turn_audio is not None:
                ctx.turn_audio.configure(params)
        if ctx.nport is not None:
            ctx.nport.set_vad(ctx.vad)
            with self._pump_lock:
                ctx.nport.keep_rx(ctx.reads_rx)  # the turn audio needs the received audio copied
                self._pumped_changed()

    def _speech(self, ctx: CallCtx, kind: str, data: dict[str, Any]) -> None:
        """A speech boundary from the call's detector (its media thread): the turn audio starts,
        or goes out with ``speech_stopped`` (``pcm`` base64, from audio time ``pcm_start_ms``)."""
        keeper = ctx.turn_audio
        if keeper is not None and kind == "speech_started":
            keeper.start(int(data["audio_ms"]))
        elif keeper is not None and kind == "speech_stopped":
            clip = keeper.stop(int(data["detected_ms"]))
            data = {**data, "pcm": base64.b64encode(clip.pcm).decode("ascii"), "pcm_start_ms": clip.start_ms}
            if clip.clipped_ms:
                self.emit("log", {"level": "warning", "msg": f"{ctx.ref}: turn longer than {keeper.max_ms} ms, "
                                  f"its first {clip.clipped_ms} ms not handed over"})
        self.emit(kind, data)

    @staticmethod
    def _flush_pending(ctx: CallCtx) -> None:
        for pcm in ctx.pending_play:
            ctx.playback.push(pcm)
        ctx.pending_play.clear()

    # -- commands (names: _op_<Op value>)
    def _op_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "calls": len(self.calls), "cpu_s": time.process_time()}

    def _op_shutdown(self) -> dict[str, Any]:
        self._stop = True
        return {}

    def _op_make_call(
        self,
        ref: str,
        uri: str,
        headers: dict[str, str] | None = None,
        play: list[str] | None = None,
        record: str | None = None,
        vad: dict[str, Any] | None = None,
        refer_status: int = 603,
        hangup_on_refer: bool = True,
        from_uri: str | None = None,
        display_name: str | None = None,
        to_uri: str | None = None,
    ) -> dict[str, Any]:
        if ref in self.calls:
            raise ValueError(f"duplicate ref {ref!r}")
        op = self._op(headers=headers)
        dst = self._address(op, uri, from_uri, display_name, to_uri)
        ctx = CallCtx(
            ref=ref, role="uac", t0=time.monotonic(), refer_status=refer_status, hangup_on_refer=hangup_on_refer
        )
        self._configure_media(ctx, play, record, vad)
        call = _Call(self, self.acc, ctx)
        ctx.call = call
        ctx.t0 = time.monotonic()
        ctx.mark("invite_sent")  # 0 by definition: the call's clock starts at makeCall
        try:
            call.makeCall(dst, op)
        except pj.Error:
            ctx.call = None
            del call
            raise
        self.calls[ref] = ctx
        with contextlib.suppress(pj.Error):
            ctx.sip_call_id = call.getInfo().callIdString
        return {"ref": ref, "sip_call_id": ctx.sip_call_id, "t0": ctx.t0}

    def _op_ringing(self, ref: str, code: int = 180) -> dict[str, Any]:
        ctx = self._ctx(ref)
        ctx.call.answer(self._op(code))
        ctx.mark("ringing_sent")
        return {}

    def _op_answer(
        self,
        ref: str,
        code: int = 200,
        play: list[str] | None = None,
        record: str | None = None,
        vad: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        ctx = self._ctx(ref)
        self._configure_media(ctx, play, record, vad)
        ctx.call.answer(self._op(code, headers=headers))
        ctx.mark("answer_sent")
        return {}

    def _op_reject(self, ref: str, code: int = 603, reason: str | None = None) -> dict[str, Any]:
        ctx = self._ctx(ref)
        ctx.local_hangup = True
        ctx.call.hangup(self._op(code, reason))
        return {}

    def _op_redirect(self, ref: str, contact: str, code: int = 302) -> dict[str, Any]:
        ctx = self._ctx(ref)
        ctx.local_hangup = True
        ctx.redirected_to = contact
        ctx.call.hangup(self._op(code, headers={"Contact": f"<{contact}>"}))
        return {}

    def _op_refer(self, ref: str, target: str) -> dict[str, Any]:
        ctx = self._ctx(ref)
        ctx.call.xfer(target, pj.CallOpParam(True))
        ctx.mark("refer_sent")
        return {}

    def _op_hangup(self, ref: str, code: int | None = None, reason: str | None = None) -> dict[str, Any]:
        self.hangup_ctx(self._ctx(ref), code, reason)
        return {}

    def hangup_ctx(self, ctx: CallCtx, code: int | None, reason: str | None) -> None:
        if ctx.call is None or ctx.ended:
            return
        ctx.local_hangup = True
        ctx.call.hangup(self._op(code, reason))

    def _op_play(self, ref: str, path: str, clear: bool = False) -> dict[str, Any]:
        ctx = self._ctx(ref)
        pcm = media.read_wav_8k(path)
        if clear:
            ctx.playback.clear()
        if ctx.media_wired:
            n = ctx.playback.push(pcm)
        else:
            ctx.pending_play.append(pcm)
            n = len(pcm) // media.FRAME_BYTES
        return {"queued_ms": n * media.FRAME_MS}

    def _op_play_pcm(self, ref: str, pcm: bytes, clear: bool = False) -> dict[str, Any]:
        ctx = self._ctx(ref)
        if clear:
            ctx.playback.clear()
        if ctx.media_wired:
            ctx.playback.push(pcm)
        else:
            ctx.pending_play.append(pcm)
        return {"queued_ms": len(pcm) * 1000 // (2 * media.SAMPLE_RATE)}

    def _op_clear_playback(self, ref: str) -> dict[str, Any]:
        ctx = self._ctx(ref)
        ctx.pending_play.clear()
        return {"cleared_ms": ctx.playback.clear() * media.FRAME_MS}

    def _op_record(self, ref: str, path: str) -> dict[str, Any]:
        self._ctx(ref).recorder = media.Recorder(path)
        return {}

    def _op_set_vad(self, ref: str, **params: Any) -> dict[str, Any]:
        self._set_vad(self._ctx(ref), params)
        return {}

    def _op_send_dtmf(self, ref: str, digits: str, method: str = "rfc2833") -> dict[str, Any]:
        ctx = self._ctx(ref)
        prm = pj.CallSendDtmfParam()
        prm.digits = digits
        prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO if method == "info" else pj.PJSUA_DTMF_METHOD_RFC2833
        ctx.call.sendDtmf(prm)
        return {}

    def _op_stats(self, ref: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r, ctx in self.calls.items():
            if (ref is None or r == ref) and ctx.call is not None and ctx.media_wired:
                out[r] = self._rtp_stats(ctx)
        return {"calls": out, "cpu_s": time.process_time()}

    def _rtp_stats(self, ctx: CallCtx) -> dict[str, Any]:
        ctx.sync_clocks()
        try:
            info = ctx.call.getInfo()
            for mi in info.media:
                if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                    return {**_stream_stats(ctx.call, mi.index), "rx_frames": ctx.rx_frames, "tx_frames": ctx.tx_frames}
        except pj.Error:
            pass
        return {"rx_frames": ctx.rx_frames, "tx_frames": ctx.tx_frames}

    def on_stream_destroyed(self, ctx: CallCtx, call: Any, idx: int) -> None:
        """Keep the stream's last counters: by the DISCONNECTED callback the stream is gone."""
        with contextlib.suppress(pj.Error):
            ctx.final_rtp = _stream_stats(call, idx)

    # -- callbacks (pj thread)
    def on_incoming(self, acc: Any, prm: Any) -> None:
        self._in_seq += 1
        ref = f"in-{os.getpid()}-{self._in_seq}"
        ctx = CallCtx(ref=ref, role="uas", t0=time.monotonic())
        ctx.call = _Call(self, acc, ctx, prm.callId)  # keep the reference (pjsua2 wheel item 3)
        self.calls[ref] = ctx
        raw = prm.rdata.wholeMsg
        msg = sipmsg.parse(raw)
        ctx.sip_call_id = msg.get("Call-ID", "") or ""
        self.emit(
            "incoming_call",
            {
                "ref": ref,
                "sip_call_id": ctx.sip_call_id,
                "request_uri": msg.request_uri,
                "user": sipmsg.user_of(msg.request_uri),
                "from": msg.get("From", ""),
                "to": msg.get("To", ""),
                "headers": [list(h) for h in msg.headers],
                "src": prm.rdata.srcAddress,
                "transport": _transport_of(msg.get("Via", "") or ""),
                "raw": raw,
                "t": ctx.t0,
            },
        )

    def on_call_state(self, ctx: CallCtx, call: Any) -> None:
        info = call.getInfo()
        state = info.state
        code, reason = int(info.lastStatusCode), str(info.lastReason)
        name = _STATE_NAMES.get(state, str(state))
        if not ctx.sip_call_id:
            ctx.sip_call_id = info.callIdString
        if state == pj.PJSIP_INV_STATE_EARLY:
            ctx.mark("ringing" if ctx.role == "uac" else "early")
        elif state == pj.PJSIP_INV_STATE_CONNECTING:
            ctx.mark("answered")
            ctx.answered, ctx.invite_code, ctx.invite_reason = True, code or 200, reason
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            ctx.mark("answered")
            ctx.mark("confirmed")
            if not ctx.answered:
                ctx.answered, ctx.invite_code, ctx.invite_reason = True, code or 200, reason
        self.emit(
            "call_state",
            {
                "ref": ctx.ref,
                "state": name,
                "code": code,
                "reason": reason,
                "t_ms": ctx.ms(),
                "sip_call_id": ctx.sip_call_id,
            },
        )
        if state == pj.PJSIP_INV_STATE_DISCONNECTED:
            if not ctx.answered:
                ctx.invite_code, ctx.invite_reason = code, reason
            self._finish(ctx, (code, reason))
            ctx.call = None  # drop the Call inside its DISCONNECTED callback (pjsua2 wheel item 3)
            self._release_ports(ctx)
            self.calls.pop(ctx.ref, None)

    def _finish(self, ctx: CallCtx, end: tuple[int, str] | None) -> None:
        if ctx.ended:
            return
        ctx.ended = True
        ctx.mark("ended")
        if ctx.port is not None or ctx.nport is not None:
            ctx.playback.clear()
        if ctx.nport is not None:
            with self._pump_lock:
                self._pump(ctx)  # what arrived since the last pass, for the recording
        rec: dict[str, Any] = {}
        if ctx.recorder is not None:
            try:
                dur = ctx.recorder.write()
                rec = {"recording": ctx.recorder.path, "recording_ms": dur}
                self.emit("recording", {"ref": ctx.ref, "path": ctx.recorder.path, "duration_ms": dur})
            except OSError as exc:
                self.emit("log", {"level": "error", "msg": f"recording {ctx.recorder.path}: {exc}"})
        end_code, end_reason = end if end is not None else (0, "worker shutdown")
        self.emit(
            "call_ended",
            {
                "ref": ctx.ref,
                "role": ctx.role,
                "sip_call_id": ctx.sip_call_id,
                "answered": ctx.answered,
                "code": ctx.invite_code if ctx.answered else end_code,
                "reason": ctx.invite_reason if ctx.answered else end_reason,
                "end_code": end_code,
                "end_reason": end_reason,
                "by": "local" if ctx.local_hangup else "remote",
                "cause": ctx.cause,
                "refer_target": ctx.refer_target,
                "redirected_to": ctx.redirected_to,
                "marks": dict(ctx.marks),
                "rx_frames": ctx.rx_frames,
                "tx_frames": ctx.tx_frames,
                "rtp": self._final_rtp(ctx),
                "t0": ctx.t0,
                **rec,
            },
        )

    def _final_rtp(self, ctx: CallCtx) -> dict[str, int] | None:
        """The call's RTP stream counters as the call ends (None if it never had media)."""
        if ctx.final_rtp is None and ctx.call is not None and ctx.media_wired:
            stats = self._rtp_stats(ctx)
            if "rx_pkt" in stats:
                return {k: stats[k] for k in ("rx_pkt", "rx_loss", "tx_pkt", "rx_jitter_mean_us")}
        return ctx.final_rtp

    def _acquire_port(self, ctx: CallCtx, frame_ms: int, rx: bool = True) -> _FramePort:
        free = self._free_ports.setdefault(frame_ms, [])
        port = free.pop() if free else _FramePort(self, f"fp{len(self._ports)}", frame_ms)
        if port not in self._ports:
            self._ports.append(port)
        port.rx = rx
        port.ctx = ctx
        self.bound_ports += 1
        return port

    def _release_ports(self, ctx: CallCtx) -> None:
        if ctx.nport is not None and self.native is not None:
            with self._pump_lock:
                self._pumped.pop(ctx.ref, None)
                self._pumped_changed()
            self.native.release(ctx.nport, ctx.call_slot)
            ctx.nport, ctx.call_slot = None, -1
        for port in (ctx.port, ctx.rx_port):
            if port is not None:
                self._release_port(port)
        ctx.port = ctx.rx_port = None

    def _release_port(self, port: _FramePort) -> None:
        port.drained = False
        port.ctx = None
        self.bound_ports -= 1
        free = self._free_ports.setdefault(port.frame_ms, [])
        if port.subframes == 1 or self._stop:  # 20 ms ports are unbuffered; at shutdown nothing reuses it
            free.append(port)
            return
        # The bridge still holds up to frame_ms - 20 ms of this call's outgoing audio for the
        # port (conf.c rx_buf, consumed 20 ms per tick) and would play it into the next call
        # that gets the port.  Loop the port to itself until the bridge has asked for a new
        # frame (silence now): from then on the remainder is silence.
        try:
            port.startTransmit(port)
        except pj.Error:
            return  # not reusable without the drain; the next call makes a new port
        self.later(port.frame_ms / 1000, lambda: self._finish_drain(port))

    def _finish_drain(self, port: _FramePort) -> None:
        if not port.drained:
            self.later(port.frame_ms / 1000, lambda: self._finish_drain(port))
            return
        with contextlib.suppress(pj.Error):
            port.stopTransmit(port)
        self._free_ports.setdefault(port.frame_ms, []).append(port)

    # -- native media (cfg.media == "native")
    def _wire_native(self, ctx: CallCtx, aud: Any) -> None:
        assert self.native is not None
        slot = int(aud.getPortId())
        if ctx.nport is None:
            ctx.nport = self.native.acquire()
            ctx.playback = NativePlayback(ctx.nport)
            ctx.nport.find_first_audio(0 if ctx.heard else self.cfg.first_audio_peak)
            ctx.nport.set_vad(ctx.vad)
            ctx.nport.keep_rx(ctx.reads_rx)
        elif ctx.call_slot not in (-1, slot):  # a re-INVITE gave the call a new stream: same port, queue kept
            self.native.disconnect(ctx.call_slot, ctx.nport)
        self.native.connect(slot, ctx.nport)  # idempotent for an already connected pair
        ctx.call_slot = slot
        with self._pump_lock:
            self._pumped[ctx.ref] = ctx
            self._pumped_changed()

    def _pump_loop(self) -> None:
        """Poll the calls' native ports: every vad_frame_ms while a call has VAD on (turn
        detection), else every frame_ms."""
        name_os_thread()
        fast, slow = self.cfg.vad_frame_ms / 1000, self.cfg.frame_ms / 1000
        due = time.monotonic()
        while not self._stop:
            due += fast if self._pump_fast else slow
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                due = time.monotonic()  # late (busy box): no catch-up burst
            with self._pump_lock:
                # one C call for every port; Python runs only for those with news
                for i, d in native_poll(self._pump_addrs):
                    ctx = self._pump_ctxs[i]
                    try:
                        self._pump(ctx, d)
                    except Exception as exc:
                        self.emit("log", {"level": "error", "msg": f"media pump {ctx.ref}: {exc!r}"})

    def _pumped_changed(self) -> None:
        """After a call joins or leaves the pump, or its VAD changes (``_pump_lock`` held)."""
        wired = [(c, c.nport.addr) for c in self._pumped.values() if c.nport is not None]
        self._pump_ctxs, self._pump_addrs = [c for c, _ in wired], [a for _, a in wired]
        self._pump_fast = any(c.vad_on for c in self._pump_ctxs)

    def _pump(self, ctx: CallCtx, d: Drained | None = None) -> None:
        """A native port's news since the last pass (``_pump_lock`` held): playback_done, recording,
        and the first audio and speech decisions the port found.  ``d``: what poll() drained, else
        drain now (the call's end)."""
        port = ctx.nport
        if port is None or not isinstance(ctx.playback, NativePlayback):
            return
        if d is None:
            d = port.drain()
        ctx.playback.sent = d.sent
        if d.done_at >= 0:
            self.emit("playback_done", {"ref": ctx.ref, "audio_ms": d.done_at * media.FRAME_MS})
        if d.dropped > ctx.rx_lost:
            ctx.rx_lost = d.dropped
            self.emit("log", {"level": "warning", "msg": f"{ctx.ref}: media pump late, {d.dropped} rx frames lost"})
        ctx.rx_frames = d.rx_frames
        if d.rx:
            if ctx.recorder is not None:
                ctx.recorder.add(d.rx)
            if ctx.turn_audio is not None and ctx.vad_on:  # d.rx is the newest audio: it ends at rx_frames
                ctx.turn_audio.add(d.rx, (d.rx_frames - len(d.rx) // media.FRAME_BYTES) * media.FRAME_MS)
        if d.loud_frame >= 0 and not ctx.heard:
            self._heard(ctx, d.loud_frame * media.FRAME_MS, int((d.loud_ns / 1e9 - ctx.t0) * 1000))
        if ctx.vad is not None and d.voiced:
            ctx.vad.feed_voiced(d.voiced, d.voiced_from * media.FRAME_MS)
            port.follow(ctx.vad.busy)
        port.keep_rx(ctx.reads_rx)

    def on_received(self, ctx: CallCtx, pcm: bytes, audio_ms: int, last_ms: int) -> None:
        """Received audio of a Python port, whole 20 ms frames from audio time ``audio_ms``, the
        last of them at ``last_ms`` (ms since the call's t0): recording, first_audio, VAD.  Runs on
        the clock thread."""
        if ctx.recorder is not None:
            ctx.recorder.add(pcm)
        if ctx.turn_audio is not None and ctx.vad_on:  # before the VAD: a turn it ends is kept whole
            ctx.turn_audio.add(pcm, audio_ms)
        if not ctx.heard:
            k = media.first_loud_subframe(pcm, self.cfg.first_audio_peak)
            if k is not None:
                # frame k arrived (n - 1 - k) frames before the last one
                n = len(pcm) // media.FRAME_BYTES
                self._heard(ctx, audio_ms + k * media.FRAME_MS, last_ms - (n - 1 - k) * media.FRAME_MS)
        if ctx.vad is not None:
            ctx.vad.feed(pcm, audio_ms)

    def _heard(self, ctx: CallCtx, audio_ms: int, at_ms: int) -> None:
        """The first loud frame, at audio time ``audio_ms``, arrived ``at_ms`` after the call's t0."""
        ctx.heard = True
        at = max(at_ms, ctx.marks.get("media", 0))
        self.emit("first_audio", {"ref": ctx.ref, "audio_ms": audio_ms, "t_ms": ctx.mark("first_audio", at)})

    def on_media_state(self, ctx: CallCtx, call: Any) -> None:
        info = call.getInfo()
        for mi in info.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            aud = call.getAudioMedia(mi.index)
            if self.native is not None:
                self._wire_native(ctx, aud)
            elif ctx.port is None:
                frame_ms, vad_ms = self.cfg.frame_ms, self.cfg.vad_frame_ms
                # A call with VAD may hear through its own, smaller port (cfg.vad_frame_ms): a
                # larger frame holds received audio back up to frame_ms before the VAD sees it,
                # delaying every speech_started/stopped (turn taking, barge-in).  Playback keeps
                # frame_ms.
                split = vad_ms < frame_ms and ctx.vad_on
                ctx.port = self._acquire_port(ctx, frame_ms, rx=not split)
                if split:
                    ctx.rx_port = self._acquire_port(ctx, vad_ms)
            if self.native is None:
                aud.startTransmit(ctx.rx_port or ctx.port)
                ctx.port.startTransmit(aud)
            first = not ctx.media_wired
            ctx.media_wired, ctx.media_idx = True, int(mi.index)
            ctx.last_rx_at = time.monotonic()
            if first:
                self._flush_pending(ctx)
                si = call.getStreamInfo(mi.index)
                self.emit(
                    "media_active",
                    {
                        "ref": ctx.ref,
                        "codec": si.codecName,
                        "clock_rate": int(si.codecClockRate),
                        "srtp": int(si.proto) == int(pj.PJMEDIA_TP_PROTO_RTP_SAVP),
                        "t_ms": ctx.mark("media"),
                    },
                )


_STATE_NAMES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}


def _transport_of(via: str) -> str:
    """``SIP/2.0/TLS 127.0.0.1:5061;...`` → ``tls``."""
    proto = via.split(" ", 1)[0]
    return proto.rsplit("/", 1)[-1].lower() if "/" in proto else ""


# ---- process entry -----------------------------------------------------------------------


def _read_commands(worker: Worker, stdin: Any) -> None:
    name_os_thread()
    while True:
        try:
            cmd = Command.read(stdin)
        except ProtocolError as exc:
            worker.emit("log", {"level": "error", "msg": f"bad command: {exc}"})
            continue
        if cmd is None:
            break
        worker.submit(cmd)
    worker.submit(Command(op=Op.SHUTDOWN.value, req=-1))  # EOF: the parent is gone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default="{}", help="WorkerConfig as JSON")
    args = parser.parse_args(argv)
    cfg = WorkerConfig.from_json(args.config)
    if cfg.rec_dir:
        os.makedirs(cfg.rec_dir, exist_ok=True)

    ipc_fd = os.dup(1)
    os.dup2(2, 1)  # pjlib console output goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    writer = EventWriter(ipc_fd)
    worker = Worker(cfg, writer)

    def _on_signal(signum: int, frame: Any) -> None:
        worker.submit(Command(op=Op.SHUTDOWN.value, req=-1))

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # A 64 kB buffer: a burst of commands (streamed reply audio) is parsed from one read, not one
    # read (and GIL round trip) per 8 kB.
    stdin = open(sys.stdin.fileno(), "rb", buffering=1 << 16, closefd=False)  # noqa: SIM115 (process life)
    threading.Thread(target=_read_commands, args=(worker, stdin), name="stdin", daemon=True).start()
    pj_thread = threading.Thread(target=worker.run, name="pj")
    pj_thread.start()
    while pj_thread.is_alive():
        pj_thread.join(0.2)  # short joins keep the main thread responsive to signals
    writer.emit("exit", {"failed": worker.failed})
    writer.close()
    sys.stderr.flush()
    # os._exit: no interpreter teardown, so no late pj destructor can run after libDestroy (pjsua2 wheel item 2).
    os._exit(1 if worker.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
