"""The worker IPC protocol: JSON lines, commands on the worker's stdin, events on its stdout.

Why JSON lines over pipes: the parent starts each worker as a plain subprocess (never a fork of a
threaded process), pipes come for free, die with the process (EOF tells the parent at once that a
worker is gone) and need no port allocation.  Audio frames never cross this boundary; only
commands, events and file paths, plus the parent's streamed playback audio and, once per caller
turn, that turn's received audio (``speech_stopped``).

Wire format (one JSON object per line, UTF-8):

* command: ``{"v": 2, "op": "<op>", "req": <int>, ...args}``.  Arguments that are bytes (streamed
  PCM) are not put in the JSON: ``"bin": [["<arg>", <length>], ...]`` names them, and their raw
  bytes follow the line's newline in that order.  Base64 inside JSON cost the parent and the
  worker more CPU than the rest of a reply's commands.
* event:   ``{"v": 2, "ev": "<kind>", ...fields}``; every command gets exactly one
  ``{"ev": "reply", "req": <same int>, "ok": true, "result": {...}}`` or ``"ok": false, "error": "..."``.
  Events stay single JSON lines (the parent reads them with ``readline``): the one that carries
  audio, ``speech_stopped``, has it base64 in ``pcm``; that is one string per turn, not per frame.

The op and event names, with their fields, are listed in :class:`Op` and :class:`Ev`.  A peer that
sees a different ``v`` must refuse to talk (the worker answers ``ready`` with its version first).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, BinaryIO, TypeVar

from .codecs import G711, normalise
from .opus import OpusSettings
from .turns import NO_FLOOR_DBFS, vad_mode

PROTOCOL_VERSION = 2
# pj status of a make_call beyond PJSUA_MAX_CALLS: the worker's last call has not given its slot back yet
PJ_ETOOMANY = 70010
_T = TypeVar("_T")


class Op(StrEnum):
    """Commands a parent may send.  Fields after the dash are the command's arguments."""

    PING = "ping"  # - → result {pid, calls, cpu_s}
    # - ref, uri (Request-URI), headers{}, play[], record?, vad?, refer_status?, hangup_on_refer?, from_uri?,
    #   display_name?, to_uri? (SIP URIs; the From is name_addr(from_uri or the worker's own, display_name),
    #   the To is to_uri, else uri), auth? {username, password, realm="*"} (digest answers to 401/407),
    #   srtp? (disabled|optional|mandatory: this call's offer, else the worker's),
    #   codecs? (names, most preferred first: this call's offer, else the worker's codecs)
    #   → result {ref, sip_call_id, t0, codecs (offered), dropped (asked for, not available), opus_unavailable?}
    MAKE_CALL = "make_call"
    RINGING = "ringing"  # - ref, code=180
    ANSWER = "answer"  # - ref, code=200, play[], record?, vad?, headers{}
    REJECT = "reject"  # - ref, code=603, reason?, headers{}
    REDIRECT = "redirect"  # - ref, contact, code=302
    REFER = "refer"  # - ref, target
    HANGUP = "hangup"  # - ref, code?, reason?
    PLAY = "play"  # - ref, path (8 kHz mono 16-bit WAV), clear=False
    PLAY_PCM = "play_pcm"  # - ref, pcm (bytes: 8 kHz mono L16, sent after the line), clear=False
    CLEAR_PLAYBACK = "clear_playback"  # - ref
    RECORD = "record"  # - ref, path
    SET_VAD = "set_vad"  # - ref, **VadParams fields
    SEND_DTMF = "send_dtmf"  # - ref, digits, method="rfc2833"|"info"
    STATS = "stats"  # - ref? → result {calls: {ref: {...}}}
    # Media faults (the parent decides when; the worker only does it):
    HOLD = "hold"  # - ref (re-INVITE a=sendonly; while held the call is sent nothing)
    UNHOLD = "unhold"  # - ref (re-INVITE a=sendrecv)
    # - ref, to_caller?, to_model?, silent? (each given one is set: audio passes that way, or the caller gets
    #   digital silence) → result {to_caller, to_model, silent}
    MEDIA_GATE = "media_gate"
    # - ref: the call's RTP goes on as a new source, a new SSRC and sequence (a carrier's SBC failing over)
    #   → result {old, new} (the SSRCs)
    NEW_SSRC = "new_ssrc"
    SHUTDOWN = "shutdown"  # - (worker hangs up everything and exits)


class Ev(StrEnum):
    """Events a worker (or the supervisor, last block) emits.  Fields after the dash."""

    # - protocol, pid, name, tls_port, tcp_port, udp_port, max_calls, codecs (the worker's order, as set),
    #   opus (its codec id when registered, else None), opus_unavailable (why not, when cfg.opus asked for it)
    READY = "ready"
    REPLY = "reply"  # - req, ok, result | error
    INCOMING_CALL = "incoming_call"  # - ref, sip_call_id, request_uri, user, from, to, headers[[k,v]], src, raw, t
    REJECTED_INCOMING = "rejected_incoming"  # - code, reason, sip_call_id, request_uri, src (pjsua refused it)
    CALL_STATE = "call_state"  # - ref, state, code, reason, t_ms
    # - ref, status (active|local_hold|remote_hold|none|error), dir (pjmedia_dir: 1 send, 2 receive, 3 both), t_ms,
    #   local_rtp (host:port)
    MEDIA_STATE = "media_state"
    MEDIA_ACTIVE = "media_active"  # - ref, codec, clock_rate, srtp, local_rtp (host:port), t_ms
    # - ref, ssrc, old, t_ms: the SSRC the call's RTP is heard under, once learnt (old None) and at each change
    #   (sipworker.rtp_session; a change in the first ssrc_watch_s after a stream (re)starts goes unnoticed)
    SSRC = "ssrc"
    FIRST_AUDIO = "first_audio"  # - ref, audio_ms, t_ms (first received frame above the energy gate)
    SPEECH_STARTED = "speech_started"  # - ref, audio_ms
    # - ref, audio_ms (end of speech), detected_ms (decision time), pcm (base64 8 kHz mono L16: the turn's
    #   received audio, prefix_padding_ms before speech_started's audio_ms up to detected_ms, at most
    #   media.TURN_AUDIO_MAX_MS, the newest kept), pcm_start_ms (audio time of its first sample)
    SPEECH_STOPPED = "speech_stopped"
    PLAYBACK_DONE = "playback_done"  # - ref, audio_ms
    DTMF = "dtmf"  # - ref, digit, method
    REFER_RECEIVED = "refer_received"  # - ref, target, status
    REFER_STATUS = "refer_status"  # - ref, code, reason, final
    RECORDING = "recording"  # - ref, path, duration_ms
    CALL_ENDED = "call_ended"  # - ref, code, reason, end_code, end_reason, by, cause, answered, marks{}, ...
    TRANSPORT = "transport"  # - state, error?, tls_verify_status?, tls_verify_msgs[]
    LOG = "log"  # - level, msg
    EXIT = "exit"  # - failed (last line a worker writes before it exits)
    # emitted by the supervisor, never by a worker:
    WORKER_STARTED = "worker_started"  # - worker, pid, tls_port, tcp_port, udp_port, restarts
    WORKER_EXITED = "worker_exited"  # - worker, pid, returncode, restarting
    CALL_FAILED = "call_failed"  # - ref, reason, worker, returncode (a worker died with this call live)
    CALL_REDIRECTED = "call_redirected"  # - ref, sip_call_id, to_worker, contact (front-door 302)


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol version."""


def _load(line: bytes | str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("message is not an object")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {obj.get('v')!r} != {PROTOCOL_VERSION}")
    return obj


@dataclass
class Command:
    """One request to a worker; ``req`` pairs it with its ``reply`` event."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)
    req: int = 0

    def encode(self) -> bytes:
        """The JSON line, then the raw bytes of every bytes-valued argument."""
        plain = {k: v for k, v in self.args.items() if not isinstance(v, bytes | bytearray)}
        blobs = [(k, bytes(v)) for k, v in self.args.items() if isinstance(v, bytes | bytearray)]
        head = {"v": PROTOCOL_VERSION, "op": self.op, "req": self.req, **plain}
        if blobs:
            head["bin"] = [[k, len(v)] for k, v in blobs]
        return b"".join([(json.dumps(head) + "\n").encode(), *(v for _, v in blobs)])

    @classmethod
    def read(cls, stream: BinaryIO) -> Command | None:
        """The next command from a buffered stream, attachments included; None at EOF."""
        while True:
            line = stream.readline()
            if not line:
                return None
            if line.strip():
                break
        cmd = cls.from_line(line)
        for name, size in cmd.args.pop("bin", []):
            blob = stream.read(size)
            if len(blob) != size:
                raise ProtocolError(f"{name}: stream ended {size - len(blob)} bytes short")
            cmd.args[name] = blob
        return cmd

    @classmethod
    def from_line(cls, line: bytes | str) -> Command:
        """A command from its JSON line alone (attachments, if any, are still named in ``bin``)."""
        obj = _load(line)
        op = obj.pop("op", None)
        if op not in Op._value2member_map_:
            raise ProtocolError(f"unknown op {op!r}")
        obj.pop("v")
        req = obj.pop("req", 0)
        if not isinstance(req, int):
            raise ProtocolError("req must be an integer")
        return cls(op=str(op), args=obj, req=req)


@dataclass
class Event:
    """One event from a worker (``worker`` is filled in by the supervisor: the pool index)."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    worker: int | None = None

    def to_line(self) -> bytes:
        return (json.dumps({"v": PROTOCOL_VERSION, "ev": self.kind, **self.data}) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes | str) -> Event:
        obj = _load(line)
        kind = obj.pop("ev", None)
        if not isinstance(kind, str):
            raise ProtocolError("event without 'ev'")
        obj.pop("v")
        return cls(kind=kind, data=obj)

    @property
    def ref(self) -> str | None:
        ref = self.data.get("ref")
        return ref if isinstance(ref, str) else None


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


def name_addr(uri: str, display_name: str | None = None) -> str:
    """The From or To header value for ``uri`` shown as ``display_name``: ``"Alice Smith" <sip:...>``.

    Shared by the SIP workers and the virtual caller, so a name reaches an app spelled the same
    way either way.  The name is a quoted string (RFC 3261 §25.1): ``"`` and ``\\`` are escaped;
    a line break could end the header, so it is refused.  A URI with parameters is bracketed even
    without a name (RFC 3261 §20.10): pjsip writes a bare one as given, and ``sip:+1...@host;user=phone;tag=x``
    would hand ``user=phone`` to the header instead of the URI.
    """
    if not display_name:
        return f"<{uri}>" if any(c in uri for c in ";,?") else uri
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in display_name):
        raise ValueError(f"display name {display_name!r}: control characters (line breaks, tabs) cannot be sent")
    quoted = display_name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{uri}>'


@dataclass
class VadParams:
    """Speech detection on received audio, per call.

    Mirrors the Realtime API's ``server_vad`` turn detection: ``threshold`` (0..1) picks the
    webrtcvad aggressiveness (0.5 → mode 2), ``silence_duration_ms`` is the end-of-speech hangover.
    ``min_speech_ms`` voiced audio is needed before ``speech_started`` fires (its ``audio_ms`` is the
    first voiced frame, so the reported boundary does not move). The threshold also sets the energy
    floor (:func:`sipworker.turns.floor_dbfs`), as on a WebSocket session; ``energy_floor_dbfs`` can
    only raise it (a hissing line), and by default adds nothing. The worker reports raw boundaries;
    ``prefix_padding_ms`` is how much audio before a turn's first voiced frame goes with its
    ``speech_stopped`` (``pcm``).
    """

    enabled: bool = True
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    min_speech_ms: int = 60
    energy_floor_dbfs: float = NO_FLOOR_DBFS

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VadParams:
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mode(self) -> int:
        return vad_mode(self.threshold)


@dataclass
class WorkerConfig:
    """Everything a worker needs at start; passed as one JSON argument (``--config``).

    Ports: 0 binds an ephemeral port (reported in ``ready``), ``None`` disables that transport.
    ``rtp_port`` is the first RTP port pjsua tries; give each worker its own range so processes
    do not race for the same ports.
    """

    name: str = "sipworker"
    bind: str = "127.0.0.1"
    tls_port: int | None = 0
    tcp_port: int | None = None
    udp_port: int | None = None
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    verify_server: bool = True
    verify_client: bool = False
    srtp: str = "disabled"  # disabled | optional | mandatory
    rtp_port: int = 4000
    rtp_port_range: int = 200
    user: str = "rtsip"
    user_agent: str = "rtsip-sipworker"
    log_level: int = 1
    no_delay: bool = True
    max_calls: int = 4
    first_audio_peak: int = 300
    rtp_timeout_s: float = 15.0  # hang up a call that received no RTP for this long (0: never)
    ssrc_watch_s: float = 0.1  # how often each call's heard SSRC is read (0: never; Ev.SSRC)
    rec_dir: str | None = None
    # How call audio reaches Python.
    # "native" (default): a C port per call (sipworker/native.py).  pjmedia's clock thread never
    # enters Python and queued audio starts within one 20 ms frame; a pump thread takes received
    # audio (recording, first_audio, VAD) every vad_frame_ms while a call has VAD on, else every
    # frame_ms.  Falls back to "python" (with a log event) if the C module was not built or the
    # pjsua2 build does not fit.
    # "python": pjsua2 AudioMediaPorts whose callbacks run on the clock thread, two per frame per
    # port (pjmedia's conference also hands a port with nothing to receive a "heartbeat" frame);
    # that was most of a worker's CPU.  A port carries frame_ms of audio per callback (the bridge
    # buffers the difference, pjmedia conf.c rx_buf/tx_buf): queued audio starts up to one frame
    # later.  A call with VAD hears through a second port of vad_frame_ms when that is smaller;
    # equal to frame_ms, one port does both (half the callbacks, VAD events up to frame_ms - 20 ms
    # later).  Measured with Python ports: 60 ms takes worker CPU about as low as 100 ms and adds
    # ~20 ms to the median turn (speech end -> reply heard), 100 ms ~40 ms.
    # Either way boundaries are exact in audio time (computed per 20 ms sub-frame) and RTP on the
    # wire stays 20 ms packets.
    frame_ms: int = 60
    vad_frame_ms: int = 20
    media: str = "native"
    # Codecs (sipworker.codecs): the order this worker offers in, and what its answers may pick (the answer
    # follows the offerer's order).  ``opus`` registers the Opus factory (sipworker/opus) after libInit; if it
    # is not built or does not fit the wheel, the worker says why in ``ready`` (``opus_unavailable``) and runs
    # without it.  ``opus_rate`` below 48000 makes pjmedia run Opus streams at that rate (cheaper CPU).
    codecs: list[str] = field(default_factory=lambda: list(G711))
    opus: bool = False
    opus_rate: int = 48000
    opus_bitrate: int = 32000
    opus_complexity: int = 5
    opus_library: str | None = None  # another _rtopus.so than sipworker/opus's own

    def __post_init__(self) -> None:
        self.codecs = normalise(self.codecs)
        if not self.codecs:
            raise ValueError("codecs must name at least one codec")
        problems = self.opus_settings().problems()
        if self.opus and problems:
            raise ValueError(f"opus settings: {'; '.join(problems)}")
        if self.media not in ("python", "native"):
            raise ValueError(f"media must be 'python' or 'native', got {self.media!r}")
        if self.frame_ms % 20 or not 20 <= self.frame_ms <= 200:
            raise ValueError(f"frame_ms must be a multiple of 20 in 20..200, got {self.frame_ms}")
        if self.vad_frame_ms % 20 or not 20 <= self.vad_frame_ms <= self.frame_ms:
            raise ValueError(
                f"vad_frame_ms must be a multiple of 20 in 20..frame_ms ({self.frame_ms}), got {self.vad_frame_ms}"
            )

    def opus_settings(self) -> OpusSettings:
        return OpusSettings(rate=self.opus_rate, bitrate=self.opus_bitrate, complexity=self.opus_complexity)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        return _from_dict(cls, json.loads(text))
