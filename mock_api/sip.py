"""The mock's SIP ingress: real SIP/TLS calls in, the same call lifecycle out.

A pool of SIP workers (answering role) takes INVITEs for ``sip:proj_<anything>@host:port``.
Each becomes a ringing call with the INVITE's headers, which fires the signed webhook;
the call lifecycle's effects (answer, final status, REFER, BYE) go back to the worker;
the worker's speech boundaries, DTMF and hang-ups feed the Realtime session; reply audio
streams back to the caller. This module only translates: ``calls.Call`` decides, the
session core speaks, the workers do the SIP. Media faults too: the call's ``FaultScript`` says what and
when (``media_steps``, timed here from the 200), the worker re-INVITEs or gates the audio; ``media_loss``
and ``media_jitter`` silence reply frames here, before they reach the worker; ``media_delay`` (and the jitter's
buffer) holds each direction's audio back in a :class:`mock_api.media_delay.DelayLane`.

It also places GPT-Live's outbound legs (:meth:`SipIngress.dial`, for :mod:`mock_api.live_create`): an
INVITE over TLS from a worker with a free slot, with digest credentials and the leg's SRTP offer; the
leg's states go to its watcher, and once answered it is a Live call like an inbound one (same media path).
The lifecycle's answer and final-status effects mean nothing and a CANCEL on such a leg.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from sipworker import sipmsg
from sipworker.codecs import G711, OPUS_FIRST
from sipworker.ipc import Ev, Event, Op, WorkerConfig
from sipworker.ports import PortInUse, port_taken
from sipworker.supervisor import WorkerError, WorkerPool, pool_configs

from . import audio, live_create, live_host, session_host
from . import calls as c
from . import journal_entries as je
from .certs import CertPaths, ensure_certs
from .fault_script import FrameLoss, MediaDelay, MediaStep, silence_lost
from .live.outputs import ClearMedia, MediaAudio, SendDtmf
from .live_host import TurnSettings
from .media_delay import DelayLane
from .realtime.session import AudioOut, ClearAudio
from .realtime.vad import EAGERNESS_SILENCE_MS
from .server import MockServer

SIP_RATE = 8000
FRAME_BYTES = SIP_RATE // 50 * 2  # one 20 ms frame of 8 kHz L16
_DIRECTIONS = {0: "inactive", 1: "sendonly", 2: "recvonly", 3: "sendrecv"}  # pjmedia_dir, from the worker's side
_STEP_OPS = {"hold": Op.HOLD, "unhold": Op.UNHOLD, "new_ssrc": Op.NEW_SSRC}
_FROM_CALLER = frozenset({Ev.SPEECH_STARTED, Ev.SPEECH_STOPPED, Ev.DTMF})  # the caller's audio, told by the worker
USER_PREFIX = "proj_"


def media_security(raw_invite: str) -> str:
    """``srtp`` when the SDP offer asks for RTP/SAVP, else ``rtp`` (the webhook's sip_media_security)."""
    return "srtp" if "RTP/SAVP" in raw_invite else "rtp"


def live_vad_params(settings: TurnSettings) -> dict[str, Any]:
    """The worker's speech detection for a GPT-Live call: the Live host's turn settings (Live has no knob)."""
    return {"enabled": True, "threshold": settings.threshold, "prefix_padding_ms": settings.prefix_padding_ms,
            "silence_duration_ms": settings.silence_ms}


def vad_params(session_config: dict[str, Any]) -> dict[str, Any]:
    """The worker's speech detection, from the session's ``audio.input.turn_detection``.

    With ``turn_detection: null`` (manual turns) detection keeps running, so the session
    still learns how much caller audio there is; it just does not end turns by itself.
    """
    td = ((session_config.get("audio") or {}).get("input") or {}).get("turn_detection")
    if not isinstance(td, dict):
        return {"enabled": True, "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}

    def knob(key: str, default: float) -> float:
        value = td.get(key)  # null means "the default", as in the session core
        return default if value is None else float(value)

    if td.get("type") == "semantic_vad":
        silence = EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", EAGERNESS_SILENCE_MS["auto"])
        return {"enabled": True, "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": silence}
    return {
        "enabled": True,
        "threshold": knob("threshold", 0.5),
        "prefix_padding_ms": int(knob("prefix_padding_ms", 300)),
        "silence_duration_ms": int(knob("silence_duration_ms", 200)),
    }


def turn_audio(data: dict[str, Any]) -> tuple[bytes, int] | None:
    """The caller audio a worker's ``speech_stopped`` carries (8 kHz PCM16, its start in audio ms), if any."""
    pcm, start = data.get("pcm"), data.get("pcm_start_ms")
    if not isinstance(pcm, str) or not isinstance(start, int):
        return None
    try:
        return base64.b64decode(pcm, validate=True), start
    except ValueError:
        return None


class SipIngressError(RuntimeError):
    """The SIP workers could not start (a bad certificate, no free RTP ports...); the message says why.

    A taken SIP port is :class:`sipworker.ports.PortInUse` instead, naming the setting to change."""


@dataclass
class _Leg:
    """One SIP call's link between a worker ref and a call_id, with its command lane."""

    ref: str
    call_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answered: bool = False
    ended: bool = False
    outbound: Callable[[Event], None] | None = None  # an outbound Live leg's watcher: gets its worker events
    media_timers: list[asyncio.TimerHandle] = field(default_factory=list)  # the call's media fault steps
    media_scheduled: bool = False
    losses: list[LossyReply] = field(default_factory=list)  # media_loss, media_jitter on the reply audio
    delay: MediaDelay | None = None  # media_delay, media_jitter's buffer: what the lanes below were made with
    to_caller: DelayLane | None = None  # media_delay: the reply audio's commands, held back
    to_model: DelayLane | None = None  # media_delay: the worker's speech and DTMF events, held back
    held_by_caller: bool = False  # the caller has put the call on hold at least once (caller_hold_reaction)
    ssrc_changed: bool = False  # the caller's RTP has changed SSRC at least once (caller_ssrc_reaction)

    def close_lanes(self) -> None:
        for lane in (self.to_caller, self.to_model):
            if lane is not None:
                lane.close()


class SipIngress:
    def __init__(self, server: MockServer, state_dir: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 port: int = 5061, workers: int = 1, tcp: bool = True, udp: bool = True,
                 rtp_base: int | None = None, record: bool = False, frame_ms: int = 60,
                 vad_frame_ms: int = 20, media: str = "native", opus: bool = True,
                 opus_rate: int = 48000) -> None:
        """``rtp_base``: the first RTP port of worker 0 (each worker takes ``sipworker.ports.RTP_SPAN``);
        by default a range free at start, so two mocks on one host keep apart.

        ``opus``: the workers load the Opus codec (``sipworker/opus``, when built) and can answer Opus/48000 as
        well as PCMU/PCMA, in the caller's order (pjsip's negotiator); outbound Live legs offer Opus first. Not
        built, they run G.711 only and say why (:meth:`status`, and ``sip.opus_unavailable`` on outbound legs)."""
        self.server = server
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.certs: CertPaths = ensure_certs(self.state_dir)
        self.record = record
        template = WorkerConfig(
            name="ingress", bind=host, tls_port=0, tcp_port=0 if tcp else None, udp_port=0 if udp else None,
            cert_file=str(self.certs.cert), key_file=str(self.certs.key), srtp="optional", user="proj_rtsip",
            ca_file=str(self.certs.ca),  # outbound Live legs verify the trunk against the local CA
            rtp_timeout_s=30.0, frame_ms=frame_ms, vad_frame_ms=vad_frame_ms, media=media,
            codecs=list(OPUS_FIRST if opus else G711), opus=opus, opus_rate=opus_rate,
        )
        # SIP's usual pair: TLS on `port` (5061), TCP and UDP one below (5060); 0 = any free ports
        plain = port - 1 if port else 0
        try:
            configs = pool_configs(workers, template, first_tls_port=port, first_tcp_port=plain if tcp else None,
                                   first_udp_port=plain if udp else None, rtp_base=rtp_base)
        except OSError as exc:  # NoFreePorts, or a host that is not this machine's
            raise SipIngressError(f"cannot start the SIP ingress on {host}:{port}: RTP ports: "
                                  f"{exc.strerror or exc}") from None
        # pjsip's own log goes to a file, not the user's terminal
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir / "logs" / "sip-ingress.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115  (closed in stop)
        self.pool = WorkerPool(configs, on_event=self._on_event, front_door=True, stderr=self._log)
        self._legs: dict[str, _Leg] = {}  # ref → leg
        self._by_call: dict[str, _Leg] = {}  # call_id → leg
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -----------------------------------------------------------------------

    def _check_ports(self) -> None:
        """Fail fast and clearly on a taken port (pjsip may not report it).

        Probed as pjsip binds (:func:`sipworker.ports.port_taken`): the TIME_WAIT connections of
        a mock that just stopped do not count.
        """
        if not self.port:
            return
        wanted = [(socket.SOCK_STREAM, self.port, "TLS")]
        cfg = self.pool.configs[0]
        if cfg.tcp_port:
            wanted.append((socket.SOCK_STREAM, cfg.tcp_port, "TCP"))
        if cfg.udp_port:
            wanted.append((socket.SOCK_DGRAM, cfg.udp_port, "UDP"))
        for kind, port, name in wanted:
            try:
                taken = port_taken(port, kind, self.host)
            except OSError as exc:  # not ours to bind at all (a privileged port, a foreign address)
                self._log.close()
                raise SipIngressError(f"cannot start the SIP ingress on {self.host}:{self.port}: {name} port "
                                      f"{port}: {exc.strerror or exc}") from None
            if taken:
                self._log.close()
                raise PortInUse(f"cannot start the SIP ingress on {self.host}:{self.port}: {name} port {port}: "
                                f"{os.strerror(errno.EADDRINUSE)}", port, "sip_port")

    async def start(self) -> None:
        self._check_ports()
        try:
            await self.pool.start()
        except WorkerError as exc:
            self._log.flush()
            reason = next((line.split("error:", 1)[-1].strip() for line in reversed(
                self.log_path.read_text(errors="replace").splitlines()) if "error" in line.lower()), str(exc))
            self._log.close()
            raise SipIngressError(f"cannot start the SIP ingress on {self.host}:{self.port}: {reason} "
                                  f"(log: {self.log_path})") from None
        self.port = self.pool.workers[0].ports.get("tls", self.port)
        self.server.on_effect(self._on_effect)
        self.server.on_call_active(self._on_active)
        self.server.sip_status = self.status
        live_create.registry(self.server).dialer = self
        self.server.journal.add(None, je.SipListening(uri=self.uri(), ca=str(self.certs.ca),
                                                      workers=len(self.pool.workers)))

    async def stop(self) -> None:
        if self.server.sip_status == self.status:
            self.server.sip_status = None
        outbound = live_create.registry(self.server)
        if outbound.dialer is self:
            outbound.dialer = None
        for leg in self._legs.values():
            for timer in leg.media_timers:
                timer.cancel()
            leg.close_lanes()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.stop()
        self._log.close()

    async def __aenter__(self) -> SipIngress:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def uri(self, user: str = "proj_rtsip", transport: str = "tls") -> str:
        return self.pool.contact_uri(0, user, transport)

    def status(self) -> dict[str, Any]:
        """What ``GET /_mock/sip`` shows: the front URI and each worker, with a contact a load
        generator can dial directly (spreading calls instead of bouncing off the front door)."""
        workers = []
        for w in self.pool.workers:
            contact = self.pool.contact_uri(w.index, "proj_rtsip") if "tls" in w.ports else None
            workers.append({"index": w.index, "pid": w.pid, "alive": w.alive, "restarts": w.restarts,
                            "returncode": w.returncode, "ports": dict(w.ports), "contact": contact,
                            "calls": len(w.calls), "max_calls": w.max_calls, "media": w.media,
                            "codecs": list(w.codecs), "opus_unavailable": w.opus_unavailable})
        return {"uri": self.uri(), "ca": str(self.certs.ca), "calls": len(self._legs), "workers": workers}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- worker events → calls and sessions ---------------------------------------------------

    async def _on_event(self, ev: Event) -> None:
        handler = _HANDLERS.get(ev.kind)
        if handler is None:
            return
        leg = self._legs.get(str(ev.ref)) if ev.kind in _FROM_CALLER else None
        if leg is not None and leg.to_model is not None:  # media_delay: the model hears the caller late
            leg.to_model.put(lambda: handler(self, ev))
            return
        await handler(self, ev)

    async def _incoming(self, ev: Event) -> None:
        d = ev.data
        ref = str(d["ref"])
        user = str(d.get("user") or "")
        if not user.startswith(USER_PREFIX):
            self.server.journal.add(None, je.SipRejected(reason="unknown user", user=user,
                                                         request_uri=d.get("request_uri"), status=404))
            with contextlib.suppress(WorkerError):
                await self.pool.call_command(ref, Op.REJECT, code=404, reason="Not Found")
            return
        headers = [(str(k), str(v)) for k, v in d.get("headers", [])]
        if self.server.fault_script(None).strict_contact and await self._contact_refused(ref, user, d, headers):
            return
        call = self.server.start_call(
            from_uri=str(d.get("from") or ""), to_uri=str(d.get("to") or ""), headers=headers, transport="sip",
            media_security=media_security(str(d.get("raw") or "")), sip_call_id=d.get("sip_call_id"),
        )
        leg = _Leg(ref, call.call_id)
        self._delay_lanes(leg)
        self._legs[ref] = leg
        self._by_call[call.call_id] = leg
        self.server.journal.add(call.call_id, je.SipInvite(request_uri=d.get("request_uri"), src=d.get("src"),
                                                           transport=d.get("transport"), worker=ev.worker, ref=ref))
        await self._command(leg, Op.RINGING, code=180)
        self.server.journal.add(call.call_id, je.SipSent(status=180))

    async def _contact_refused(self, ref: str, user: str, d: dict[str, Any], headers: list[tuple[str, str]]) -> bool:
        """strict_contact: a Contact that repeats a URI parameter gets 403 and no call (so no webhook)."""
        contact = next((v for k, v in headers if k.lower() == "contact"), "")
        repeated = sipmsg.repeated_uri_params(contact)
        if not repeated:
            return False
        self.server.journal.add(None, je.FaultFired(
            fault="strict_contact", detail=f"the Contact {contact} repeats ;{', ;'.join(repeated)}: 403, no call"))
        self.server.journal.add(None, je.SipRejected(reason=f"Contact repeats ;{', ;'.join(repeated)}", user=user,
                                                     request_uri=d.get("request_uri"), status=403, src=d.get("src")))
        with contextlib.suppress(WorkerError):
            await self.pool.call_command(ref, Op.REJECT, code=403, reason="Forbidden")
        return True

    async def _call_state(self, ev: Event) -> None:
        leg = self._legs.get(str(ev.ref))
        if leg is not None:
            self.server.journal.add(leg.call_id, je.SipState(state=ev.data.get("state"), code=ev.data.get("code"),
                                                             reason=ev.data.get("reason")))
            if leg.outbound is not None:
                if ev.data.get("state") in ("CONNECTING", "CONFIRMED"):
                    leg.answered = True
                if ev.data.get("state") == "CONFIRMED":
                    self._schedule_media(leg)  # an outbound leg's times count from the callee's 200
                leg.outbound(ev)

    async def _media_active(self, ev: Event) -> None:
        leg = self._legs.get(str(ev.ref))
        if leg is not None:
            self.server.journal.add(leg.call_id, je.SipMedia(codec=ev.data.get("codec"), srtp=ev.data.get("srtp"),
                                                             clock_rate=ev.data.get("clock_rate")))

    async def _media_state(self, ev: Event) -> None:
        """The leg's media went on hold or back (a re-INVITE, ours or the caller's): on the ladder."""
        leg = self._legs.get(str(ev.ref))
        if leg is not None:
            status, way = ev.data.get("status"), _DIRECTIONS.get(int(ev.data.get("dir") or 0), "inactive")
            self.server.journal.add(leg.call_id, je.SipState(state=f"media {status}", code=None, reason=way))
            if status == "remote_hold" and not leg.held_by_caller:
                leg.held_by_caller = True
                await self._caller_held(leg)

    async def _ssrc(self, ev: Event) -> None:
        """The SSRC the caller's RTP is heard under, journaled; its first change gets the script's answer."""
        leg = self._legs.get(str(ev.ref))
        if leg is None:
            return
        old = ev.data.get("old")
        self.server.journal.add(leg.call_id, je.SipSsrc(ssrc=int(ev.data.get("ssrc") or 0),
                                                        old=None if old is None else int(old)))
        if old is not None and not leg.ssrc_changed:
            leg.ssrc_changed = True
            script = self.server.fault_script(leg.call_id)
            await self._react(leg, "caller_ssrc_reaction", script.caller_ssrc, "the caller's RTP changed SSRC")

    async def _caller_held(self, leg: _Leg) -> None:
        """The caller's first hold: the script's ``caller_hold`` answer, journaled, then carried out."""
        reaction = self.server.fault_script(leg.call_id).caller_hold
        await self._react(leg, "caller_hold_reaction", reaction, "the caller put the call on hold")

    async def _react(self, leg: _Leg, fault: str, reaction: Literal["bye", "silence"] | None, what: str) -> None:
        """A caller-side media change met by a fault's answer: hang up, or send the caller no more audio."""
        if reaction is None or leg.ended:
            return
        detail = f"{what}: " + ("BYE" if reaction == "bye" else "no more audio to the caller, resumed or not")
        self.server.journal.add(leg.call_id, je.FaultFired(fault=fault, detail=detail))
        if reaction == "bye":
            await self._bye(leg, 0)
        else:
            await self._command(leg, Op.MEDIA_GATE, to_caller=False)

    async def _speech(self, ev: Event) -> None:
        leg = self._legs.get(str(ev.ref))
        if leg is None:
            return
        started = ev.kind == Ev.SPEECH_STARTED
        audio_ms = int(ev.data.get("audio_ms", 0))
        end_ms = int(ev.data.get("detected_ms", audio_ms))
        turn = None if started else turn_audio(ev.data)
        entry: je.EntryData
        if started:
            entry = je.SipSpeechStarted(audio_ms=audio_ms)
        else:  # where the handed-over audio lies (the audio itself stays out of the journal)
            span = je.ABSENT if turn is None else [turn[1], turn[1] + len(turn[0]) // (2 * SIP_RATE // 1000)]
            entry = je.SipSpeechStopped(audio_ms=audio_ms, detected_ms=end_ms, turn_audio_ms=span)
        self.server.journal.add(leg.call_id, entry)
        host = self._host(leg.call_id)
        if host is not None:
            if started:
                host.media_speech_started(audio_ms)
                return
            if turn is not None:  # the caller's words, before the turn ends, so the recogniser hears them
                host.media_audio(turn[0], SIP_RATE, turn[1])
            host.media_speech_stopped(audio_ms, end_ms)

    async def _dtmf(self, ev: Event) -> None:
        leg = self._legs.get(str(ev.ref))
        if leg is None:
            return
        digit = str(ev.data.get("digit"))
        self.server.journal.add(leg.call_id, je.SipDtmf(digit=digit, method=ev.data.get("method")))
        host = self._host(leg.call_id)
        if host is not None:
            host.dtmf(digit)

    def _host(self, call_id: str) -> session_host.SessionHost | live_host.LiveHost | None:
        """Whoever runs the accepted call: its Realtime session or its GPT-Live one (same media entry points)."""
        return session_host.get_session(self.server, call_id) or live_host.get_host(self.server, call_id)

    async def _refer_status(self, ev: Event) -> None:
        leg = self._legs.get(str(ev.ref))
        if leg is None:
            return
        self.server.journal.add(leg.call_id, je.SipReferStatus(code=ev.data.get("code"), final=ev.data.get("final")))
        call = self.server.calls.get(leg.call_id)
        if ev.data.get("final") and call is not None and call.state is c.CallState.REFERRING:
            # The transferee's final answer; the call lifecycle decides (2xx: transferred, else the call goes on).
            self.server.apply(call, c.ReferDone(int(ev.data.get("code") or 200)), source="sip")

    async def _ended(self, ev: Event) -> None:
        leg = self._legs.pop(str(ev.ref), None)
        if leg is None:
            return
        leg.ended = True
        self._by_call.pop(leg.call_id, None)
        for timer in leg.media_timers:
            timer.cancel()
        leg.close_lanes()  # what was still on its way is lost with the call
        for loss in leg.losses:
            if loss.frames:
                self.server.journal.add(leg.call_id, je.FaultFired(fault=loss.loss.fault, detail=loss.summary()))
        d = ev.data
        self.server.journal.add(leg.call_id, je.SipEnded(kind=ev.kind, code=d.get("code"), reason=d.get("reason"),
                                                         by=d.get("by"), cause=d.get("cause"),
                                                         recording=d.get("recording"), rtp=d.get("rtp")))
        call = self.server.calls.get(leg.call_id)
        if leg.outbound is not None:
            leg.outbound(ev)
            if call is not None and call.state is c.CallState.RINGING:
                return  # an outbound leg that never got its answer: its watcher fails the call
        if call is None or call.state.terminal:
            return
        if ev.kind == Ev.CALL_FAILED:
            self.server.apply(call, c.Fail(f"sip worker died (rc {d.get('returncode')})", 500), source="sip")
        else:
            self.server.apply(call, c.CallerBye(), source="sip")

    async def _rejected_incoming(self, ev: Event) -> None:
        d = ev.data
        self.server.journal.add(None, je.SipRejected(status=d.get("code"), reason=d.get("reason"),
                                                     request_uri=d.get("request_uri"), src=d.get("src")))

    async def _redirected(self, ev: Event) -> None:
        d = ev.data
        self.server.journal.add(None, je.SipRedirected(sip_call_id=d.get("sip_call_id"), to_worker=d.get("to_worker"),
                                                       contact=d.get("contact")))

    async def _worker_started(self, ev: Event) -> None:
        d = ev.data
        self.server.journal.add(None, je.SipWorkerStarted(
            worker=d["worker"], pid=d.get("pid"), restarts=d.get("restarts", 0),
            tls_port=d.get("tls_port", je.ABSENT), tcp_port=d.get("tcp_port", je.ABSENT),
            udp_port=d.get("udp_port", je.ABSENT)))  # a port the worker does not listen on stays out

    async def _worker_exited(self, ev: Event) -> None:
        d = ev.data
        self.server.journal.add(None, je.SipWorkerExited(worker=d["worker"], pid=d.get("pid"),
                                                         returncode=d.get("returncode"),
                                                         restarting=bool(d.get("restarting"))))

    # ---- call effects → worker commands ----------------------------------------------------------

    def _on_effect(self, call: c.Call, effect: c.Effect) -> None:
        leg = self._by_call.get(call.call_id)
        if leg is None or call.transport != "sip":
            return
        if leg.outbound is not None and isinstance(effect, c.AnswerSip | c.SendSipFinal):
            if isinstance(effect, c.SendSipFinal):  # an outbound leg not answered yet: CANCEL it
                self._spawn(self._command(leg, Op.HANGUP))
                self.server.journal.add(call.call_id, je.SipSent(request="CANCEL"))
            return  # the callee answered an outbound leg: nothing to send
        refusal = self.server.config.live_rtp_status
        if isinstance(effect, c.AnswerSip) and call.surface == "live" and call.media_security == "rtp" and refusal:
            self._spawn(self._command(leg, Op.REJECT, code=refusal))
            self.server.journal.add(call.call_id, je.LiveSrtpRequired(status=refusal, media_security="rtp"))
            self.server.journal.add(call.call_id, je.SipSent(status=refusal))
            asyncio.get_running_loop().call_soon(self._fail_plain_rtp, call, refusal)
            return
        if isinstance(effect, c.AnswerSip):
            config = call.accept_body or {}
            vad = live_vad_params(live_host.registry(self.server).turns) if call.surface == "live" else \
                vad_params(config)
            args: dict[str, Any] = {"code": 200, "vad": vad}
            if self.record:
                rec_dir = self.state_dir / "recordings"
                rec_dir.mkdir(parents=True, exist_ok=True)
                args["record"] = str(rec_dir / f"{call.call_id}-caller.wav")
            self._spawn(self._answer(leg, args))
        elif isinstance(effect, c.SendSipFinal):
            self._spawn(self._command(leg, Op.REJECT, code=effect.status_code))
            self.server.journal.add(call.call_id, je.SipSent(status=effect.status_code))
        elif isinstance(effect, c.SendRefer):
            self._spawn(self._command(leg, Op.REFER, target=effect.target_uri))
            self.server.journal.add(call.call_id, je.SipSent(request="REFER", refer_to=effect.target_uri))
        elif isinstance(effect, c.SendBye):
            self._spawn(self._bye(leg, effect.after_s))  # the table says when (e.g. a second after a bad accept)

    # ---- outbound GPT-Live legs ---------------------------------------------------------------------

    async def dial(self, call_id: str, uri: str, *, from_uri: str | None, auth: dict[str, str] | None,
                   srtp: str, on_event: Callable[[Event], None]) -> None:
        """Place an outbound Live call's leg to ``uri`` (TLS) from an ingress worker with a free slot, with
        digest credentials for the trunk's 401/407, turn detection as on an inbound Live call, SRTP when the
        trunk takes it. ``on_event`` gets the leg's call states and its end; raises when no INVITE left."""
        ref = f"out-{call_id}"
        leg = _Leg(ref, call_id, outbound=on_event)
        self._delay_lanes(leg)
        self._legs[ref] = leg  # before the INVITE: its events can precede the reply
        self._by_call[call_id] = leg
        args: dict[str, Any] = {"vad": live_vad_params(live_host.registry(self.server).turns), "srtp": srtp,
                                "codecs": list(OPUS_FIRST)}  # GPT-Live's trunks take Opus; G.711 kept as fallback
        if from_uri:
            args["from_uri"] = from_uri
        if auth is not None:
            args["auth"] = auth
        if self.record:
            rec_dir = self.state_dir / "recordings"
            rec_dir.mkdir(parents=True, exist_ok=True)
            args["record"] = str(rec_dir / f"{call_id}-callee.wav")
        try:
            _, reply = await self.pool.make_call(uri, ref=ref, **args)
        except Exception:
            self._legs.pop(ref, None)
            self._by_call.pop(call_id, None)
            raise
        self.server.journal.add(call_id, je.SipSent(request="INVITE"))
        if reply.get("opus_unavailable"):
            self.server.journal.add(call_id, je.SipOpusUnavailable(reason=str(reply["opus_unavailable"]),
                                                                   offered=list(reply.get("codecs") or [])))

    async def hang_up(self, call_id: str) -> None:
        """End an outbound leg: CANCEL while it rings, BYE once answered."""
        leg = self._by_call.get(call_id)
        if leg is not None and not leg.ended:
            await self._command(leg, Op.HANGUP)

    def _fail_plain_rtp(self, call: c.Call, status: int) -> None:
        if not call.state.terminal:
            self.server.apply(call, c.Fail(f"plain RTP offer refused on GPT-Live ({status}): SRTP is required"),
                              source="sip")

    async def _answer(self, leg: _Leg, args: dict[str, Any]) -> None:
        await self._command(leg, Op.ANSWER, **args)
        leg.answered = True
        self.server.journal.add(leg.call_id, je.SipSent(status=200, vad=args["vad"]))
        self._schedule_media(leg)

    def _schedule_media(self, leg: _Leg) -> None:
        """Time the call's media fault steps from now (its 200): the script says when, the worker does it."""
        if leg.media_scheduled or leg.ended:
            return
        leg.media_scheduled = True
        delay = leg.delay  # what the leg's lanes were made with (the faults may have changed since)
        if delay is not None:
            self.server.journal.add(leg.call_id, je.FaultFired(fault="media_delay", detail=delay.describe()))
            self.server.journal.add(leg.call_id, je.SipMediaDelay(to_caller_ms=delay.to_caller_s * 1000,
                                                                  to_model_ms=delay.to_model_s * 1000))
        loop = asyncio.get_running_loop()
        for step in self.server.fault_script(leg.call_id).media_steps:
            leg.media_timers.append(loop.call_later(step.at_s, self._start_media_step, leg, step))

    def _start_media_step(self, leg: _Leg, step: MediaStep) -> None:
        self._spawn(self._media_step(leg, step))

    async def _media_step(self, leg: _Leg, step: MediaStep) -> None:
        """One media fault step: journaled as fired, then carried out by the call's worker."""
        if leg.ended:
            return
        if step.action == "new_ssrc":  # no SIP message: journaled once done, with the two SSRCs
            done = await self._command(leg, Op.NEW_SSRC)
            if done is not None:
                detail = f"{step.detail}: {int(done['old']):#010x} → {int(done['new']):#010x}"
                self.server.journal.add(leg.call_id, je.FaultFired(fault=step.fault, detail=detail))
            return
        self.server.journal.add(leg.call_id, je.FaultFired(fault=step.fault, detail=step.detail,
                                                           edge="end" if step.end else "start"))
        if step.action == "gate":
            await self._command(leg, Op.MEDIA_GATE, **dict(step.gate))
            return
        self.server.journal.add(leg.call_id, je.SipSent(request="INVITE"))  # a re-INVITE
        await self._command(leg, _STEP_OPS[step.action])

    async def _bye(self, leg: _Leg, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not leg.ended:
            self.server.journal.add(leg.call_id, je.SipSent(request="BYE"))
            await self._command(leg, Op.HANGUP)

    async def _command(self, leg: _Leg, op: Op, **args: Any) -> dict[str, Any] | None:
        """Commands of one call go out in order; a worker that is gone is already journaled. Returns the
        worker's answer, None when the command was not carried out."""
        async with leg.lock:
            if leg.ended and op is not Op.HANGUP:
                return None
            try:
                return await self.pool.call_command(leg.ref, op, **args)
            except (WorkerError, KeyError) as exc:
                self.server.journal.add(leg.call_id, je.SipCommandFailed(op=str(op), error=str(exc)))
                return None

    # ---- media: the session's reply audio → the caller ------------------------------------------

    def _on_active(self, call: c.Call) -> None:
        if call.transport != "sip":
            return
        if call.surface == "live":
            self._on_live_active(call)
            return
        host = session_host.get_session(self.server, call.call_id)
        leg = self._by_call.get(call.call_id)
        if host is None or leg is None:
            return
        static = self.server.fault_script(call.call_id).static_audio
        host.media_sink = self._sink(leg, static, self._lossy(leg))
        host.on_session_config = lambda cfg: self._spawn(self._command(leg, Op.SET_VAD, **vad_params(cfg)))

    def _on_live_active(self, call: c.Call) -> None:
        """A call GPT-Live took: its model and fixture audio to the caller, its DTMF keys out as RFC 4733."""
        host = live_host.host_for_call(self.server, call)
        leg = self._by_call.get(call.call_id)
        if host is None or leg is None:
            return
        to_sip = audio.ToRate(SIP_RATE)
        stream = ReplyBatcher(lambda pcm: self._to_caller(leg, Op.PLAY_PCM, pcm=pcm))
        static = self.server.fault_script(call.call_id).static_audio
        lossy = self._lossy(leg)

        def sink(out: MediaAudio | ClearMedia | SendDtmf) -> None:
            if isinstance(out, SendDtmf):
                self._to_caller(leg, Op.SEND_DTMF, digits=out.digit, method="rfc2833")
            elif isinstance(out, ClearMedia):
                stream.clear()
                self.server.journal.add(leg.call_id, je.SipClearPlayback(response_id=None))
                self._to_caller(leg, Op.CLEAR_PLAYBACK)
            else:
                pcm = to_sip.convert(out.pcm, out.rate)
                stream.push(lossy(garble(pcm) if static else pcm))

        host.media_sink = sink

    def _lossy(self, leg: _Leg) -> Callable[[bytes], bytes]:
        """The call's reply audio through media_loss and media_jitter (lost frames silenced), or unchanged."""
        script = self.server.fault_script(leg.call_id)
        for loss in (script.frame_loss, script.jitter_loss):
            if loss is not None:
                leg.losses.append(LossyReply(loss, partial(self.server.journal.add, leg.call_id,
                                                           je.FaultFired(fault=loss.fault, detail=loss.describe()))))

        def lossy(pcm: bytes) -> bytes:
            for loss in leg.losses:
                pcm = loss(pcm)
            return pcm

        return lossy

    def _delay_lanes(self, leg: _Leg) -> None:
        """media_delay (and media_jitter's buffer): the lanes that hold each direction's audio back."""
        delay = self.server.fault_script(leg.call_id).media_delay
        if delay is None:
            return

        def bug(exc: BaseException) -> None:
            self.server.mock_bug(leg.call_id, "media delay", exc)

        leg.delay = delay
        leg.to_caller = DelayLane(delay.to_caller_s, bug) if delay.to_caller_s else None
        leg.to_model = DelayLane(delay.to_model_s, bug) if delay.to_model_s else None

    def _to_caller(self, leg: _Leg, op: Op, **args: Any) -> None:
        """A command that carries audio (or its cut) to the caller: late by the call's delay, in order."""
        if leg.to_caller is None:
            self._spawn(self._command(leg, op, **args))
        else:
            leg.to_caller.put(lambda: self._command(leg, op, **args))

    def _sink(self, leg: _Leg, static: bool,
              lossy: Callable[[bytes], bytes]) -> Callable[[AudioOut | ClearAudio], None]:
        to_sip = audio.ToRate(SIP_RATE)
        stream = ReplyBatcher(lambda pcm: self._to_caller(leg, Op.PLAY_PCM, pcm=pcm))

        def sink(out: AudioOut | ClearAudio) -> None:
            if isinstance(out, ClearAudio):
                stream.clear()
                self.server.journal.add(leg.call_id, je.SipClearPlayback(response_id=out.response_id))
                self._to_caller(leg, Op.CLEAR_PLAYBACK)
                return
            pcm = to_sip.convert(out.pcm, out.rate)
            if static or out.corrupt:
                pcm = garble(pcm)
            stream.push(lossy(pcm))

        return sink


class LossyReply:
    """media_loss on one call's reply audio: the frames :class:`FrameLoss` draws as lost become silence.

    Frames are counted over the reply audio handed to the worker (silence between replies is not reply audio),
    so the same seed loses the same frames of the same replies in a replay."""

    def __init__(self, loss: FrameLoss, on_first: Callable[[], object]) -> None:
        self.loss, self._on_first = loss, on_first
        self.offset = 0  # bytes of reply audio so far
        self.lost = 0

    @property
    def frames(self) -> int:
        return self.offset // FRAME_BYTES

    def __call__(self, pcm: bytes) -> bytes:
        if not self.offset and pcm:
            self._on_first()
        out, lost = silence_lost(pcm, self.offset, self.loss, FRAME_BYTES)
        self.offset += len(pcm)
        self.lost += lost
        return out

    def summary(self) -> str:
        return self.loss.tally(self.lost, self.frames)


class ReplyBatcher:
    """Reply audio to a worker in a few large commands instead of one per 100 ms chunk.

    The fake model makes audio faster than real time, so each chunk used to become its own
    play command (~80 a second per call, most of an ingress worker's CPU). The first chunk
    of a burst goes at once (no added latency before the caller hears it); later chunks are
    gathered and sent when half of the audio already sent ahead of the caller's playback has
    played, so the worker's queue never runs dry.
    """

    MIN_WAIT_S = 0.02
    MAX_WAIT_S = 0.5

    def __init__(self, send: Callable[[bytes], object], rate: int = SIP_RATE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send, self._rate, self._clock = send, rate, clock
        self._pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._burst_start = 0.0
        self._sent_s = 0.0  # audio sent since the burst started

    def push(self, pcm: bytes) -> None:
        self._pending.append(pcm)
        if self._timer is None:
            now = self._clock()
            if self._sent_s <= now - self._burst_start:  # what was sent has played: a new burst
                self._burst_start, self._sent_s = now, 0.0
            self._flush()

    def clear(self) -> None:
        """Barge-in: drop what is not sent yet; the worker clears what it queued."""
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sent_s = 0.0

    def _flush(self) -> None:
        self._timer = None
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._sent_s += len(data) / 2 / self._rate
        self._send(data)
        ahead = self._sent_s - (self._clock() - self._burst_start)
        wait = min(self.MAX_WAIT_S, max(self.MIN_WAIT_S, ahead / 2))
        self._timer = asyncio.get_running_loop().call_later(wait, self._flush)


def garble(pcm: bytes) -> bytes:
    """What a G.711 leg plays when it is handed the wrong encoding: loud broadband noise (failure modes 7, 8)."""
    return audio.pcm_to_ulaw(pcm) * 2  # raw µ-law bytes read as 16-bit PCM: static, same duration


_HANDLERS: dict[str, Callable[[SipIngress, Event], Any]] = {
    Ev.INCOMING_CALL: SipIngress._incoming,
    Ev.CALL_STATE: SipIngress._call_state,
    Ev.MEDIA_ACTIVE: SipIngress._media_active,
    Ev.MEDIA_STATE: SipIngress._media_state,
    Ev.SSRC: SipIngress._ssrc,
    Ev.SPEECH_STARTED: SipIngress._speech,
    Ev.SPEECH_STOPPED: SipIngress._speech,
    Ev.DTMF: SipIngress._dtmf,
    Ev.REFER_STATUS: SipIngress._refer_status,
    Ev.CALL_ENDED: SipIngress._ended,
    Ev.CALL_FAILED: SipIngress._ended,
    Ev.REJECTED_INCOMING: SipIngress._rejected_incoming,
    Ev.CALL_REDIRECTED: SipIngress._redirected,
    Ev.WORKER_STARTED: SipIngress._worker_started,
    Ev.WORKER_EXITED: SipIngress._worker_exited,
}
