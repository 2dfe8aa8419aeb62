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
  (:meth:`WorkerMedia._pump`).
* ``stdin``: parses commands into the pj thread's queue; EOF (parent gone) means shut down.
* ``ipc-out``: the only writer of the IPC stream, so slow parents never stall the clock thread.

The IPC stream is a private dup of fd 1; fd 1 itself is pointed at stderr so pjlib's console
logging can never corrupt the protocol.

This module keeps the endpoint's life cycle, the commands and the call state machine; the rest
lives beside it (and ``CallCtx``, ``EventWriter``, ``name_os_thread`` stay importable from here):

* :mod:`sipworker.worker_io`: thread names, fast ByteVector access, :class:`EventWriter` (the
  ``ipc-out`` thread), the clock thread's held Python thread state;
* :mod:`sipworker.worker_call`: :class:`CallCtx` and the pjsua2 ``Call``/``Account``/``Endpoint``
  subclasses whose callbacks call into the worker;
* :mod:`sipworker.worker_media`: the Python frame ports, and :class:`WorkerMedia`, the half of
  :class:`Worker` that binds ports to calls and runs the native media pump.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import heapq
import itertools
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pjsua2 as pj

from . import codecs as codecs_mod
from . import media, opus, sipmsg
from .codecs import CodecPlan
from .ipc import PROTOCOL_VERSION, Command, Op, ProtocolError, VadParams, WorkerConfig, name_addr
from .native import NativeMediaError, NativePorts
from .rtp_session import RtpSessionError, RtpSessions
from .worker_call import CallCtx as CallCtx
from .worker_call import _Account, _Call, _Endpoint, _stream_stats
from .worker_io import EventWriter as EventWriter
from .worker_io import _fast_bytes, _pick_io
from .worker_io import name_os_thread as name_os_thread
from .worker_media import WorkerMedia as WorkerMedia
from .worker_media import _FramePort

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


# ---- the worker --------------------------------------------------------------------------


class Worker(WorkerMedia):
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
        self.opus_id: str | None = None  # its codec id once the Opus factory is registered
        self.opus_unavailable: str | None = None  # why not, when cfg.opus asked for it
        self.codecs_offered: list[str] = []  # the worker's order as set (what it lacks dropped)
        self.rtp: RtpSessions | None = None  # the calls' RTP sessions (SSRCs), once the endpoint runs

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
                    "codecs": self.codecs_offered,
                    "opus": self.opus_id,
                    "opus_unavailable": self.opus_unavailable,
                    **{f"{k}_port": v for k, v in self.ports.items()},
                },
            )
        if self.cfg.rtp_timeout_s > 0:
            self.later(1.0, self._check_rtp)
        if not self._stop:
            try:
                self.rtp = RtpSessions()
            except Exception as exc:  # another wheel build: calls go on, SSRCs are neither changed nor watched
                self.emit("log", {"level": "warning", "msg": f"no access to RTP sessions: {exc!r}"})
            if self.rtp is not None and self.cfg.ssrc_watch_s > 0:
                self.later(self.cfg.ssrc_watch_s, self._check_ssrc)
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

    def _check_ssrc(self) -> None:
        """Tell the parent the SSRC each call's audio is heard under, and when it changes (a carrier's failover,
        failure mode 28)."""
        for ctx in list(self.calls.values()):
            stream = ctx.streams.get(ctx.media_idx)
            if self.rtp is None or ctx.ended or not ctx.media_wired or stream is None:
                continue
            try:
                changed = ctx.ssrc.look(self.rtp.of_stream(stream))
            except RtpSessionError as exc:  # said once per call; the other calls are still watched
                if not ctx.ssrc.failed:
                    ctx.ssrc.failed = True
                    self.emit("log", {"level": "error", "msg": f"call {ctx.ref}: SSRC changes go unnoticed: {exc}"})
                continue
            if changed is not None:
                self.emit("ssrc", {"ref": ctx.ref, "ssrc": changed[1], "old": changed[0], "t_ms": ctx.ms()})
        self.later(self.cfg.ssrc_watch_s, self._check_ssrc)

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
        if cfg.opus:
            self._register_opus()
        self.codecs_offered = self._set_codecs(cfg.codecs).offered

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

    def _register_opus(self) -> None:
        """Opus's factory joins the codec manager (between libInit and libStart); unavailable, the worker goes
        on without it and says why in ``ready`` (``opus_unavailable``)."""
        try:
            library = Path(self.cfg.opus_library) if self.cfg.opus_library else None
            self.opus_id = opus.register(self.cfg.opus_settings(), library)
        except (opus.OpusUnavailable, OSError, AttributeError) as exc:
            self.opus_unavailable = str(exc)
            self.emit("log", {"level": "warning", "msg": f"Opus unavailable, G.711 only: {exc}"})

    def _set_codecs(self, order: list[str]) -> CodecPlan:
        """Priorities for ``order`` (sipworker.codecs rules 2-4): pjsua reads them when it builds an SDP."""
        plan = codecs_mod.plan(order, (str(c.codecId) for c in self.ep.codecEnum2()))
        for codec in self.ep.codecEnum2():
            self.ep.codecSetPriority(codec.codecId, plan.priorities.get(str(codec.codecId), 0))
        return plan

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
                ctx.account = None
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
        auth: dict[str, str] | None = None,
        srtp: str | None = None,
        codecs: list[str] | None = None,
        contact_params: str | None = None,
    ) -> dict[str, Any]:
        if ref in self.calls:
            raise ValueError(f"duplicate ref {ref!r}")
        plan = codecs_mod.plan(codecs or self.cfg.codecs, (str(c.codecId) for c in self.ep.codecEnum2()))
        op = self._op(headers=headers)
        ctx = CallCtx(
            ref=ref, role="uac", t0=time.monotonic(), refer_status=refer_status, hangup_on_refer=hangup_on_refer
        )
        acc = self.acc
        contact = None if contact_params is None else self._contact(contact_params)
        if auth is not None or srtp is not None or contact is not None:  # an account's settings: one for this call
            acc = ctx.account = self._call_account(from_uri or self.own_uri, auth, srtp or self.cfg.srtp, contact)
            from_uri = None  # the account's idUri is the From
        dst = self._address(op, uri, from_uri, display_name, to_uri)
        self._configure_media(ctx, play, record, vad)
        call = _Call(self, acc, ctx)
        ctx.call = call
        ctx.t0 = time.monotonic()
        ctx.mark("invite_sent")  # 0 by definition: the call's clock starts at makeCall
        own_order = codecs is not None and plan.offered != self.codecs_offered
        if own_order:  # pjsua builds the offer inside makeCall (no ICE: synchronously), from the global priorities
            self._set_codecs(plan.offered)
        try:
            call.makeCall(dst, op)
        except pj.Error:
            ctx.call = None
            del call
            self._drop_account(ctx)
            raise
        finally:
            if own_order:
                self._set_codecs(self.codecs_offered)
        self.calls[ref] = ctx
        with contextlib.suppress(pj.Error):
            ctx.sip_call_id = call.getInfo().callIdString
        out: dict[str, Any] = {"ref": ref, "sip_call_id": ctx.sip_call_id, "t0": ctx.t0, "codecs": plan.offered,
                               "dropped": plan.dropped}
        if "opus" in plan.dropped:
            out["opus_unavailable"] = self.opus_unavailable or "the worker was started without Opus (opus=false)"
        return out

    def _contact(self, params: str) -> str:
        """This worker's TLS Contact with URI ``params`` after ``;transport=tls`` (``";ob;ob"``: a repeated
        parameter, failure mode 29), sent through ``contactForced``: pjsip prints the URI again and keeps one
        ``transport``, so that one cannot be repeated; others go out as given."""
        sipmsg.check_contact_params(params)
        if "tls" not in self.ports:
            raise ValueError("contact_params needs the worker's TLS transport")
        return f"<sip:{self.cfg.user}@{self.cfg.bind}:{self.ports['tls']};transport=tls{params}>"

    def _call_account(self, id_uri: str, auth: dict[str, str] | None, srtp: str, contact: str | None = None) -> Any:
        """One call's account: answering 401/407 challenges with ``auth`` (``username``, ``password``, ``realm``
        "*") and offering media with ``srtp`` (``mandatory``: RTP/SAVP only), else the main account's media
        settings.  The wheel allows 8 accounts: with 4 calls a worker has room."""
        cfg = pj.AccountConfig()
        cfg.idUri = id_uri
        if auth is not None:
            cred = pj.AuthCredInfo("digest", auth.get("realm", "*"), auth["username"], 0, auth["password"])
            cfg.sipConfig.authCreds.append(cred)
        cfg.mediaConfig.srtpUse = _SRTP[srtp]
        cfg.mediaConfig.srtpSecureSignaling = 0
        cfg.mediaConfig.transportConfig.port = self.cfg.rtp_port
        cfg.mediaConfig.transportConfig.portRange = self.cfg.rtp_port_range
        cfg.mediaConfig.transportConfig.boundAddress = self.cfg.bind
        if contact is not None:
            cfg.sipConfig.contactForced = contact
        acc = _Account(self)
        acc.create(cfg, False)
        return acc

    def _drop_account(self, ctx: CallCtx) -> None:
        """A call's own account goes once the call is over (later, outside pjsua's callbacks)."""
        acc, ctx.account = ctx.account, None
        if acc is not None:
            self.later(0.1, acc.shutdown)

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

    def _op_reject(self, ref: str, code: int = 603, reason: str | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
        """A final non-2xx; with ``headers`` e.g. a 401's ``WWW-Authenticate`` (the challenge is checked by the
        parent, which sees the retried INVITE's ``Authorization`` as a new incoming call)."""
        ctx = self._ctx(ref)
        ctx.local_hangup = True
        ctx.call.hangup(self._op(code, reason, headers))
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

    # -- media faults: the parent says what and when (mock_api.fault_script); these only do it
    def _op_hold(self, ref: str) -> dict[str, Any]:
        """re-INVITE with a=sendonly; once pjsua reports local hold the port stops reaching the caller."""
        self._ctx(ref).call.setHold(pj.CallOpParam(True))
        return {}

    def _op_unhold(self, ref: str) -> dict[str, Any]:
        self._reinvite(self._ctx(ref), pj.PJSUA_CALL_UNHOLD)
        return {}

    @staticmethod
    def _reinvite(ctx: CallCtx, flag: int) -> None:
        op = pj.CallOpParam(True)
        op.opt.flag = flag
        ctx.call.reinvite(op)

    def _op_media_gate(self, ref: str, to_caller: bool | None = None, to_model: bool | None = None,
                       silent: bool | None = None) -> dict[str, Any]:
        ctx = self._ctx(ref)
        for name, value in (("to_caller", to_caller), ("to_model", to_model), ("silent", silent)):
            if value is not None:
                setattr(ctx, name, bool(value))
        if (ctx.nport is not None or ctx.port is not None) and ctx.media_idx >= 0:
            self.route_media(ctx, ctx.call.getAudioMedia(ctx.media_idx))
        return {"to_caller": ctx.to_caller, "to_model": ctx.to_model, "silent": ctx.silent}

    def _op_new_ssrc(self, ref: str) -> dict[str, Any]:
        """Go on sending as a new RTP source: a new random SSRC and sequence, the same stream and port."""
        ctx = self._ctx(ref)
        stream = ctx.streams.get(ctx.media_idx)
        if self.rtp is None or stream is None:
            raise ValueError("the call has no audio stream now")
        found = self.rtp.of_stream(stream)
        old = found.sending_ssrc
        new = old
        while new in (old, 0):
            new = secrets.randbits(32)
        found.new_source(new, secrets.randbits(16))
        return {"old": old, "new": new}

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
            self._drop_account(ctx)
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
