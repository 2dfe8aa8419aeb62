"""The softphone: an async API for placing real SIP calls from SIP worker processes.

Why a pool of worker processes rather than pjsua2 in-process: the harness must survive a
pjsua2 abort (it then only fails that call) and the wheel allows 4 calls per process.  This
module never imports pjsua2; it drives :class:`sipworker.supervisor.WorkerPool` in calling role.

    async with Softphone(ca="state/tls/ca.pem") as phone:
        call = await phone.call("sip:proj_x@127.0.0.1:5061;transport=tls",
                                headers={"X-Test-Id": "t1"}, audio=["claim.wav"],
                                from_uri="tel:+14155550123", display_name="Alice Smith")
        if await call.answered():
            await call.send_dtmf("12#")
            await call.hangup()
        await call.ended()
        print(call.final_status, call.refer_target, call.recording, call.marks)

Audio files of any format pydub can read are converted to 8 kHz mono 16-bit WAV at this edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sipworker import require_sip
from sipworker.codecs import G711, normalise, wants_opus
from sipworker.ipc import Ev, Event, Op, VadParams, WorkerConfig, name_addr
from sipworker.sipmsg import check_contact_params
from sipworker.supervisor import WorkerError, WorkerPool, pool_configs

ProgressCallback = Callable[["SoftphoneCall", Event], None]


class SoftphoneError(RuntimeError):
    pass


def _load_8k_pcm(path: str) -> bytes:
    """Decode any audio file to 8 kHz mono 16-bit PCM with the project's one conversion helper."""
    from mock_api.audio import load_audio  # WAV natively, anything else through pydub/ffmpeg

    return load_audio(path, 8000)


def prepare_audio(path: str | os.PathLike[str], cache_dir: Path) -> str:
    """Path of an 8 kHz mono 16-bit WAV with the content of ``path`` (converted once, cached)."""
    src = str(path)
    if not os.path.isfile(src):
        raise FileNotFoundError(src)
    with contextlib.suppress(wave.Error, EOFError, OSError), wave.open(src, "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (8000, 1, 2, "NONE"):
            return os.path.abspath(src)
    st = os.stat(src)
    key = hashlib.sha1(f"{os.path.abspath(src)}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:16]
    out = cache_dir / f"{Path(src).stem}-{key}.wav"
    if not out.exists():
        pcm = _load_8k_pcm(src)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(pcm)
        tmp.replace(out)
    return str(out)


def uri_host(uri: str) -> str:
    """The host of a SIP URI: ``sip:proj_x@127.0.0.1:5061;transport=tls`` → ``127.0.0.1``."""
    rest = uri.partition(":")[2].rpartition("@")[2]
    hostport = rest.split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):  # IPv6 reference
        return hostport[: hostport.find("]") + 1]
    return hostport.partition(":")[0]


def sip_form(uri: str, request_uri: str) -> str:
    """``uri`` as a SIP From or To must carry it: a SIP URI as given, ``tel:+1...`` as
    ``sip:+1...@<host of request_uri>;user=phone`` (the RFC 3261 §19.1.6 mapping; its
    parameters go with the number)."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() in ("sip", "sips") and rest:
        return uri
    if scheme.lower() == "tel" and rest:
        return f"sip:{rest}@{uri_host(request_uri)};user=phone"
    raise ValueError(f"{uri!r} is not a sip:, sips: or tel: URI")


def caller_identity(uri: str, from_uri: str | None, display_name: str | None, to_uri: str | None) -> dict[str, str]:
    """The make_call arguments for a caller's From and To (only those given), checked here so a
    mistake is a ValueError before any INVITE."""
    out: dict[str, str] = {}
    if from_uri:
        out["from_uri"] = sip_form(from_uri, uri)
    if display_name:
        name_addr(out.get("from_uri", uri), display_name)  # refuses what cannot be sent
        out["display_name"] = display_name
    if to_uri:
        out["to_uri"] = sip_form(to_uri, uri)
    return out


@dataclass
class SoftphoneCall:
    """One outgoing call.  Fields fill in as worker events arrive."""

    ref: str
    uri: str
    phone: Softphone
    on_progress: ProgressCallback | None = None
    events: list[Event] = field(default_factory=list)
    sip_call_id: str = ""
    final_status: int | None = None  # the INVITE's final response code (200 when answered)
    final_reason: str = ""
    end_code: int | None = None  # status of the call's end (BYE: 200; TLS failure: 503 ...)
    end_reason: str = ""
    ended_by: str | None = None  # "local" | "remote" | "worker_died"
    refer_target: str | None = None
    redirected_to: str | None = None
    recording: str | None = None
    offered: list[str] = field(default_factory=list)  # the codecs the INVITE offered, in order
    opus_unavailable: str | None = None  # why an Opus call went out without Opus
    codec: str | None = None  # what the answer chose (media_active), e.g. "opus" or "PCMU"
    srtp: bool = False
    dtmf_received: str = ""
    marks: dict[str, int] = field(default_factory=dict)  # ms since the INVITE was sent
    t0: float | None = None  # time.monotonic() of the INVITE in the worker (same clock as ours)
    _answered: asyncio.Future[bool] = field(init=False, repr=False)
    _confirmed: asyncio.Future[bool] = field(init=False, repr=False)
    _ended: asyncio.Future[int | None] = field(init=False, repr=False)
    _waiters: list[tuple[str, asyncio.Future[Event]]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._answered = loop.create_future()
        self._confirmed = loop.create_future()
        self._ended = loop.create_future()

    # -- awaiting
    async def answered(self, timeout: float | None = None) -> bool:
        """True once a 2xx arrived; False if the call ended without being answered."""
        return await asyncio.wait_for(asyncio.shield(self._answered), timeout)

    async def ended(self, timeout: float | None = None) -> int | None:
        """Wait for the end of the call; returns :attr:`final_status`."""
        return await asyncio.wait_for(asyncio.shield(self._ended), timeout)

    async def wait_event(self, kind: str, timeout: float | None = None) -> Event:
        """The next event of ``kind`` for this call (or the latest already seen, if none is pending)."""
        for ev in reversed(self.events):
            if ev.kind == kind and not any(k == kind for k, _ in self._waiters):
                return ev
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((kind, fut))
        return await asyncio.wait_for(fut, timeout)

    @property
    def is_ended(self) -> bool:
        return self._ended.done()

    @property
    def was_answered(self) -> bool:
        return self._answered.done() and self._answered.result()

    @property
    def time_to_first_audio_ms(self) -> int | None:
        """From the 200 OK to the first received audio above the noise gate."""
        if "first_audio" in self.marks and "answered" in self.marks:
            return self.marks["first_audio"] - self.marks["answered"]
        return None

    # -- actions
    async def _cmd(self, op: Op, **args: Any) -> dict[str, Any]:
        if self.is_ended:
            raise SoftphoneError(f"call {self.ref} has ended")
        try:
            return await self.phone.pool.call_command(self.ref, op, **args)
        except KeyError as exc:  # the pool has forgotten the call: it ended
            raise SoftphoneError(f"call {self.ref} has ended") from exc
        except WorkerError as exc:
            if str(exc).startswith("KeyError"):  # the worker no longer has it: it ended meanwhile (a BYE)
                raise SoftphoneError(f"call {self.ref} has ended") from exc
            raise

    async def play(self, path: str | os.PathLike[str], clear: bool = False) -> int:
        """Queue an audio file after whatever is playing; returns its duration in ms."""
        wav = prepare_audio(path, self.phone.cache_dir)
        res = await self._cmd(Op.PLAY, path=wav, clear=clear)
        return int(res.get("queued_ms", 0))

    async def clear_playback(self) -> None:
        await self._cmd(Op.CLEAR_PLAYBACK)

    async def send_dtmf(self, digits: str, method: str = "rfc2833") -> None:
        await self._cmd(Op.SEND_DTMF, digits=digits, method=method)

    async def hold_for(self, seconds: float, timeout: float = 10.0) -> None:
        """Put the far side on hold (a re-INVITE with a=sendonly) for ``seconds``, then resume it (a=sendrecv).

        A re-INVITE needs the dialog confirmed (the 2xx ACKed), which may come just after "answered", and no
        other re-INVITE pending: the hold waits for the first and the resume for the hold's answer (the
        call's next ``media_state``), each up to ``timeout``. A call that has ended is not held; one that ends
        meanwhile is not resumed."""
        if not await asyncio.wait_for(asyncio.shield(self._confirmed), timeout) or self.is_ended:
            return
        held = asyncio.get_running_loop().create_future()
        self._waiters.append((Ev.MEDIA_STATE, held))
        await self._cmd(Op.HOLD)
        with contextlib.suppress(TimeoutError, SoftphoneError):
            await asyncio.wait_for(held, timeout)
        with contextlib.suppress(TimeoutError):
            await self.ended(timeout=seconds)
        if not self.is_ended:
            with contextlib.suppress(SoftphoneError):  # it ended just now
                await self._cmd(Op.UNHOLD)

    async def new_ssrc(self, timeout: float = 10.0) -> tuple[int, int]:
        """Go on sending as a new RTP source, as a carrier's session border controller that fails over does:
        a new SSRC and sequence on the same stream and port, no re-INVITE (failure mode 28). Waits for the
        dialog to be confirmed, up to ``timeout``. Returns the old and the new SSRC."""
        await asyncio.wait_for(asyncio.shield(self._confirmed), timeout)
        res = await self._cmd(Op.NEW_SSRC)
        return int(res["old"]), int(res["new"])

    async def set_vad(self, **params: Any) -> None:
        await self._cmd(Op.SET_VAD, **VadParams.from_dict(params).to_dict())

    async def stats(self) -> dict[str, Any]:
        res = await self._cmd(Op.STATS)
        return dict(res.get("calls", {}).get(self.ref, {}))

    async def hangup(self, code: int | None = None, reason: str | None = None) -> None:
        """BYE (or CANCEL before the answer).  A no-op once the call has ended."""
        if self.is_ended:
            return
        args: dict[str, Any] = {}
        if code is not None:
            args["code"] = code
        if reason:
            args["reason"] = reason
        with contextlib.suppress(KeyError):
            await self.phone.pool.call_command(self.ref, Op.HANGUP, **args)

    # -- event intake (called by Softphone in event order)
    def _on_event(self, ev: Event) -> None:
        self.events.append(ev)
        d = ev.data
        if ev.kind == Ev.CALL_STATE:
            self.sip_call_id = d.get("sip_call_id") or self.sip_call_id
            state = d.get("state")
            if state == "REDIRECTED":
                self.redirected_to = str(d.get("reason") or "") or None
            elif state == "EARLY":
                self.marks.setdefault("ringing", int(d.get("t_ms", 0)))
            elif state in ("CONNECTING", "CONFIRMED"):
                self.marks.setdefault("answered", int(d.get("t_ms", 0)))
                if not self._answered.done():
                    self._answered.set_result(True)
                if state == "CONFIRMED" and not self._confirmed.done():
                    self._confirmed.set_result(True)
        elif ev.kind == Ev.MEDIA_ACTIVE:
            self.codec, self.srtp = d.get("codec"), bool(d.get("srtp"))
            self.marks.setdefault("media", int(d.get("t_ms", 0)))
        elif ev.kind == Ev.FIRST_AUDIO:
            self.marks.setdefault("first_audio", int(d.get("t_ms", 0)))
        elif ev.kind == Ev.REFER_RECEIVED:
            self.refer_target = d.get("target")
        elif ev.kind == Ev.DTMF:
            self.dtmf_received += str(d.get("digit", ""))
        elif ev.kind == Ev.CALL_ENDED:
            self.final_status, self.final_reason = d.get("code"), str(d.get("reason", ""))
            self.end_code, self.end_reason = d.get("end_code"), str(d.get("end_reason", ""))
            self.ended_by = d.get("by")
            self.refer_target = d.get("refer_target") or self.refer_target
            self.redirected_to = d.get("redirected_to") or self.redirected_to
            self.recording = d.get("recording") or self.recording
            self.marks.update({k: int(v) for k, v in (d.get("marks") or {}).items()})
            self._finish()
        elif ev.kind == Ev.CALL_FAILED:
            self.ended_by = "worker_died"
            self.end_reason = f"SIP worker exited (rc {d.get('returncode')})"
            if self.final_status is None and not self.was_answered:
                self.final_status = 0
                self.final_reason = self.end_reason
            elif self.final_status is None:
                self.final_status = 200
            self._finish()
        for kind, fut in list(self._waiters):
            if kind == ev.kind and not fut.done():
                fut.set_result(ev)
                self._waiters.remove((kind, fut))
        if self.on_progress is not None:
            try:
                self.on_progress(self, ev)
            except Exception as exc:
                print(f"softphone progress callback failed: {exc!r}", file=sys.stderr)

    def _finish(self) -> None:
        if not self._answered.done():
            self._answered.set_result(False)
        if not self._ended.done():
            self._ended.set_result(self.final_status)
        if not self._confirmed.done():
            self._confirmed.set_result(False)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(SoftphoneError(f"call {self.ref} ended"))
        self._waiters.clear()


class Softphone:
    """A pool of calling-role SIP workers.  Verifies the server certificate unless ``insecure``.

    ``media`` and ``frame_ms`` are the workers' (:class:`sipworker.ipc.WorkerConfig`): native
    frame ports by default, and received audio taken every 60 ms; a load test, which needs no
    live audio, passes 200.  ``rtp_base``: the first RTP port (each worker takes
    ``sipworker.ports.RTP_SPAN``); by default a range that is free when the phone starts.
    ``codecs``: the offer, most preferred first (default G.711: PCMU, PCMA); naming ``opus`` loads the Opus codec
    into the workers (``opus_rate`` below 48000 runs its streams at that rate, for less CPU).
    """

    def __init__(
        self,
        *,
        ca: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        workers: int = 1,
        state_dir: str | os.PathLike[str] | None = None,
        srtp: str = "disabled",
        rtp_base: int | None = None,
        record: bool = True,
        user: str = "softphone",
        log_level: int = 1,
        stderr: int | TextIO | None = None,
        frame_ms: int = 60,
        media: str = "native",
        codecs: Sequence[str] = G711,
        opus_rate: int = 48000,
    ) -> None:
        if ca is None and not insecure:
            raise ValueError("pass ca=<CA PEM> to verify the SIP server, or insecure=True")
        if ca is not None and not os.path.isfile(ca):
            raise FileNotFoundError(f"CA file not found: {ca}")
        self.ca = str(ca) if ca is not None else None
        self.insecure = insecure
        self.n_workers = workers
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="rtsip-phone-"))
        self.cache_dir = self.state_dir / "audio-8k"
        self.rec_dir = self.state_dir / "recordings"
        self.srtp = srtp
        self.rtp_base = rtp_base  # None: a range free when the workers start (sipworker.ports)
        self.record = record
        self.user = user
        self.log_level = log_level
        self.stderr = stderr
        self.frame_ms = frame_ms
        self.media = media
        self.codecs = normalise(codecs)  # ValueError on an unknown name, before any worker starts
        self.opus_rate = opus_rate
        self._calls: dict[str, SoftphoneCall] = {}
        self._seq = 0
        self._pool: WorkerPool | None = None

    @property
    def pool(self) -> WorkerPool:
        if self._pool is None:
            raise SoftphoneError("softphone not started (use 'async with Softphone(...)')")
        return self._pool

    async def __aenter__(self) -> Softphone:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the workers; :class:`sipworker.SipUnavailable` (one line) when pjsua2 is not installed."""
        require_sip()  # else each worker would die at start with an ImportError deep in its pipe
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        template = WorkerConfig(
            name="softphone",
            tls_port=0,
            tcp_port=0,
            udp_port=0,
            ca_file=self.ca,
            verify_server=not self.insecure,
            srtp=self.srtp,
            user=self.user,
            user_agent="rtsip-softphone",
            log_level=self.log_level,
            frame_ms=self.frame_ms,
            media=self.media,
            codecs=list(self.codecs),
            opus=wants_opus(self.codecs),
            opus_rate=self.opus_rate,
        )
        configs = pool_configs(self.n_workers, template, rtp_base=self.rtp_base)
        self.rtp_base = configs[0].rtp_port
        self._pool = WorkerPool(configs, on_event=self._on_event, stderr=self.stderr)
        await self._pool.start()

    async def close(self) -> None:
        """Hang up everything (the workers do it on shutdown) and stop the workers."""
        if self._pool is not None:
            await self._pool.stop()
            self._pool = None
        for call in self._calls.values():
            if not call.is_ended:
                call.ended_by = call.ended_by or "local"
                if call.final_status is None:
                    call.final_status = 0
                call._finish()
        if self._own_state and not self.record:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _recording_path(self, rec_flag: bool | str | os.PathLike[str], ref: str) -> str | None:
        """Where call ``ref`` records: a given path (made absolute, so it does not depend on the worker's working
        directory), the phone's recording directory when True, nowhere when False."""
        if isinstance(rec_flag, str | os.PathLike):
            return os.path.abspath(rec_flag)
        return str(self.rec_dir / f"{ref}.wav") if rec_flag else None

    async def call(
        self,
        uri: str,
        *,
        headers: dict[str, str] | None = None,
        audio: list[str | os.PathLike[str]] | None = None,
        record: bool | str | os.PathLike[str] | None = None,
        vad: dict[str, Any] | None = None,
        refer_status: int = 603,
        hangup_on_refer: bool = True,
        on_progress: ProgressCallback | None = None,
        prefer_worker: int | None = None,
        from_uri: str | None = None,
        display_name: str | None = None,
        to_uri: str | None = None,
        codecs: Sequence[str] | None = None,
        contact_params: str | None = None,
    ) -> SoftphoneCall:
        """Send an INVITE to ``uri``; returns at once (await ``call.answered()``).

        ``audio`` files are queued and start playing when media is up.  ``record``: True (default
        from the phone) records what the caller hears to ``state_dir/recordings``, a path records
        there, False disables.  On a REFER the phone answers ``refer_status`` (603: it only
        reports the target; 2xx would make pjsua dial it) and hangs up if ``hangup_on_refer``.
        ``prefer_worker``: place it from that worker process if it has a free slot, else from the
        least loaded.  Keeping the calls between two processes together lets one RTP wake-up serve
        them all.

        The caller's identity, as a carrier would send it: ``from_uri`` and ``display_name`` make the
        From (``"Alice Smith" <sip:+14155550123@carrier.example>;tag=...``; default the phone's own
        ``sip:<user>@127.0.0.1``), ``to_uri`` the To (default ``uri``); the Request-URI stays ``uri``.
        ``tel:`` URIs become SIP ones (:func:`sip_form`).  A bad one raises ValueError.

        ``codecs``: this call's offer, most preferred first (default the phone's ``codecs``), e.g.
        ``["opus", "PCMU"]``; Opus needs a phone made with it in its ``codecs`` (its workers load the codec).
        Opus that cannot load (not built) leaves the call G.711: ``call.opus_unavailable`` says why.

        ``contact_params``: URI parameters added after ``;transport=tls`` in this call's Contact, e.g. ``";ob;ob"``
        for a Contact that repeats a parameter (failure mode 29; pjsip's parser keeps one ``transport``, so that
        one cannot be the repeated one).
        """
        if contact_params is not None:
            check_contact_params(contact_params)  # before any INVITE
        identity = caller_identity(uri, from_uri, display_name, to_uri)
        order = normalise(codecs) if codecs is not None else None
        if order is not None and wants_opus(order) and not wants_opus(self.codecs):
            raise SoftphoneError("this call asks for Opus: make the Softphone with codecs=[\"opus\", ...]")
        self._seq += 1
        ref = f"sp{os.getpid()}-{self._seq}"
        plays = [prepare_audio(p, self.cache_dir) for p in (audio or [])]
        rec_path = self._recording_path(self.record if record is None else record, ref)
        call = SoftphoneCall(ref=ref, uri=uri, phone=self, on_progress=on_progress, recording=rec_path)
        self._calls[ref] = call  # before the INVITE: events can precede the reply
        args: dict[str, Any] = {
            "headers": headers or {},
            "play": plays,
            "record": rec_path,
            "refer_status": refer_status,
            "hangup_on_refer": hangup_on_refer,
        }
        if vad is not None:
            args["vad"] = VadParams.from_dict(vad).to_dict()
        args.update(identity)
        if order is not None:
            args["codecs"] = order
        if contact_params is not None:
            args["contact_params"] = contact_params
        try:
            _, reply = await self.pool.make_call(uri, ref=ref, prefer=prefer_worker, **args)
        except Exception:
            self._calls.pop(ref, None)
            raise
        call.sip_call_id = reply.get("sip_call_id") or call.sip_call_id
        call.t0 = reply.get("t0")
        call.offered = list(reply.get("codecs") or [])
        call.opus_unavailable = reply.get("opus_unavailable")
        return call

    @property
    def calls(self) -> list[SoftphoneCall]:
        return list(self._calls.values())

    def _on_event(self, ev: Event) -> None:
        ref = ev.ref
        if ref is not None and ref in self._calls:
            self._calls[ref]._on_event(ev)
