"""Per-call state of a SIP worker and the pjsua2 subclasses whose callbacks feed the worker.

* :class:`CallCtx`: everything the worker knows about one call (media ports, playback, VAD,
  timing marks, how it ended);
* ``_Call``, ``_Account``, ``_Endpoint``: pjsua2 director subclasses; each callback only hands
  its parameters to the owning worker (:class:`sipworker.worker.Worker`, seen here only as the
  :class:`CallbackSink` of what the callbacks call) on the pj thread;
* ``_stream_stats`` and ``_contact_of_event``: reading RTP counters and 3xx Contacts out of pj objects.

Moved out of :mod:`sipworker.worker`, which re-exports these names.  The worker is not imported
at all: the callbacks need only the few methods :class:`CallbackSink` names, so this module does
not depend on the one that depends on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pjsua2 as pj

from . import media, sipmsg
from .native import NativePlayback, NativePort
from .rtp_session import SsrcWatch

# ---- per-call state ----------------------------------------------------------------------


@dataclass
class CallCtx:
    ref: str
    role: str  # "uac" (we called) | "uas" (we answer)
    t0: float
    call: Any = None  # _Call; dropped in the DISCONNECTED callback (pjsua2 wheel item 3)
    account: Any = None  # the call's own _Account (digest credentials), shut down after the call
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
    media_status: str = ""  # the audio stream's pjsua media status, as last reported (media_state)
    to_caller: bool = True  # media gates (Op.MEDIA_GATE): audio to the caller passes
    to_model: bool = True  # the caller's audio passes to this worker's port (else it hears silence)
    silent: bool = False  # the caller gets digital silence instead of what the port plays
    null_routed: bool = False  # a gate or hold connected the call's port(s) to the null device
    streams: dict[int, int] = field(default_factory=dict)  # media index → its pjmedia_stream's address, while alive
    ssrc: SsrcWatch = field(default_factory=SsrcWatch)  # the SSRC its audio is heard under (Ev.SSRC)

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


class CallbackSink(Protocol):
    """What the pjsua2 callbacks below hand their parameters to (the worker), all on the pj thread."""

    def emit(self, kind: str, data: dict[str, Any]) -> None: ...
    def later(self, delay: float, fn: Callable[[], None]) -> None: ...
    def hangup_ctx(self, ctx: CallCtx, code: int | None, reason: str | None) -> None: ...
    def on_call_state(self, ctx: CallCtx, call: Any) -> None: ...
    def on_media_state(self, ctx: CallCtx, call: Any) -> None: ...
    def on_stream_destroyed(self, ctx: CallCtx, call: Any, idx: int) -> None: ...
    def on_incoming(self, acc: Any, prm: Any) -> None: ...


class _Call(pj.Call):
    def __init__(self, worker: CallbackSink, acc: Any, ctx: CallCtx, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self._w = worker
        self.ctx = ctx

    def onCallState(self, prm: Any) -> None:
        self._w.on_call_state(self.ctx, self)

    def onCallMediaState(self, prm: Any) -> None:
        self._w.on_media_state(self.ctx, self)

    def onStreamCreated(self, prm: Any) -> None:
        if prm.stream is not None:
            self.ctx.streams[int(prm.streamIdx)] = int(prm.stream)

    def onStreamDestroyed(self, prm: Any) -> None:
        self.ctx.streams.pop(int(prm.streamIdx), None)
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
    def __init__(self, worker: CallbackSink) -> None:
        super().__init__()
        self._w = worker

    def onIncomingCall(self, prm: Any) -> None:
        self._w.on_incoming(self, prm)


class _Endpoint(pj.Endpoint):
    def __init__(self, worker: CallbackSink) -> None:
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
