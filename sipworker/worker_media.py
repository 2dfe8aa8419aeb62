"""How a SIP worker moves a call's audio: Python frame ports, or native ports and their pump.

* ``_FramePort``: a pjsua2 ``AudioMediaPort`` between a call and :mod:`sipworker.media`
  (``cfg.media == "python"``); pooled per worker, never destroyed while the endpoint lives;
* :class:`WorkerMedia`: the :class:`sipworker.worker.Worker` methods that bind ports to calls,
  drain and reuse them, wire native ports (:mod:`sipworker.native`) and run the ``media-pump``
  thread, and turn received audio into recordings, ``first_audio`` and VAD input.

Moved out of :mod:`sipworker.worker` (``Worker`` inherits :class:`WorkerMedia`; ``_FramePort``
is re-exported there).  This module does not import the worker module.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pjsua2 as pj

from . import media
from .ipc import WorkerConfig
from .native import NULL_SLOT, Drained, NativePlayback, NativePorts
from .native import poll as native_poll
from .worker_call import CallCtx
from .worker_io import (
    _FRAME_AUDIO,
    _HOLD,
    _drop_thread_state,
    _hold_thread_state,
    _memmove,
    _vector_data,
    name_os_thread,
)


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

    def __init__(self, worker: WorkerMedia, name: str, frame_ms: int) -> None:
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


class WorkerMedia:
    """Media half of :class:`sipworker.worker.Worker`; the attributes below are set by its ``__init__``."""

    cfg: WorkerConfig
    ep: Any
    native: NativePorts | None
    bound_ports: int
    read_bytes: Callable[[Any], bytes]
    write_in_place: bool
    _stop: bool
    _ports: list[_FramePort]
    _free_ports: dict[int, list[_FramePort]]
    _pumped: dict[str, CallCtx]
    _pump_ctxs: list[CallCtx]
    _pump_addrs: list[int]
    _pump_fast: bool
    _pump_lock: threading.Lock

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError  # Worker.emit

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        raise NotImplementedError  # Worker.later

    @staticmethod
    def _flush_pending(ctx: CallCtx) -> None:
        for pcm in ctx.pending_play:
            ctx.playback.push(pcm)
        ctx.pending_play.clear()

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
                if ctx.null_routed:  # gated or held: the pooled port leaves the null device
                    null = self._null_media()
                    _transmit(port, null, False)
                    _transmit(null, port, False)
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
        ctx.call_slot = slot
        self.route_media(ctx, aud)
        with self._pump_lock:
            self._pumped[ctx.ref] = ctx
            self._pumped_changed()

    def route_media(self, ctx: CallCtx, aud: Any) -> None:
        """Wire a call's port(s) as its gates and hold say (pj thread; ``aud`` is the call's AudioMedia).

        The caller hears the port unless the call is held by us, gated ``to_caller`` off or ``silent``; then the
        port plays into the null device (slot 0), so its queue still runs and that audio is lost (a port nobody
        listens to is not read: its audio would wait, not be lost). Held, gated or silent, the call's stream is
        fed silence (the null device's, or the conference's for a slot with no transmitter): pjmedia keeps
        sending RTP either way, and the wheel exports no handle to pause a stream. ``to_model`` off, the port
        hears the null device instead of the caller: silence, with its clocks still running. (Conference levels
        would be simpler, but a slot's level set to 0 changed nothing in this wheel.)"""
        sending = ctx.to_caller and ctx.media_status != "local_hold"
        plan = ((sending and not ctx.silent), (not sending or ctx.silent), (sending and ctx.silent), ctx.to_model)
        to_call, to_null, null_to_call, hear = plan
        ctx.null_routed = ctx.null_routed or to_null or not hear
        if self.native is not None and ctx.nport is not None:
            port, slot, route = ctx.nport.slot, ctx.call_slot, self.native.route
            route(port, slot, to_call)
            route(port, NULL_SLOT, to_null)
            route(NULL_SLOT, slot, null_to_call)
            route(slot, port, hear)
            route(NULL_SLOT, port, not hear)
        elif ctx.port is not None:
            null, rx = self._null_media(), ctx.rx_port or ctx.port
            for src, dst, on in ((ctx.port, aud, to_call), (ctx.port, null, to_null), (null, aud, null_to_call),
                                 (aud, rx, hear), (null, rx, not hear)):
                if on or ctx.null_routed:  # never gated nor held: nothing to undo (a stop would raise and log)
                    _transmit(src, dst, on)

    def _null_media(self) -> Any:
        """The null sound device's conference port (slot 0), as an AudioMedia."""
        return self.ep.audDevManager().getPlaybackDevMedia()

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
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = _MEDIA_STATUS.get(int(mi.status), str(mi.status))
            if status != ctx.media_status:
                ctx.media_status = status
                self.emit("media_state", {"ref": ctx.ref, "status": status, "dir": int(mi.dir), "t_ms": ctx.ms(),
                                          "local_rtp": _local_rtp(call, int(mi.index))})
            if status in ("local_hold", "remote_hold") and (ctx.nport is not None or ctx.port is not None):
                # A held stream still runs one way, often on a new slot: keep the port on it, so the clocks and the
                # recording go on (silence while nothing comes) and, held by us, the caller hears nothing.
                held = call.getAudioMedia(mi.index)
                if self.native is not None:
                    self._wire_native(ctx, held)
                else:
                    self.route_media(ctx, held)
            if mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
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
                self.route_media(ctx, aud)
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
                        "local_rtp": _local_rtp(call, int(mi.index)),
                        "t_ms": ctx.mark("media"),
                    },
                )


def _transmit(src: Any, dst: Any, on: bool) -> None:
    """Start (idempotent) or stop one conference connection between two AudioMedia (Python ports)."""
    if on:
        src.startTransmit(dst)
    else:
        with contextlib.suppress(pj.Error):  # not connected
            src.stopTransmit(dst)


def _local_rtp(call: Any, idx: int) -> str | None:
    """The RTP address this side's stream sends from and listens on ("127.0.0.1:4002"), if pjsua tells."""
    try:
        return str(call.getMedTransportInfo(idx).localRtpName) or None
    except pj.Error:
        return None


_MEDIA_STATUS = {
    int(pj.PJSUA_CALL_MEDIA_NONE): "none",
    int(pj.PJSUA_CALL_MEDIA_ACTIVE): "active",
    int(pj.PJSUA_CALL_MEDIA_LOCAL_HOLD): "local_hold",
    int(pj.PJSUA_CALL_MEDIA_REMOTE_HOLD): "remote_hold",
    int(pj.PJSUA_CALL_MEDIA_ERROR): "error",
}
