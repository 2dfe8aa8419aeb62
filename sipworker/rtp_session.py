"""A call's RTP sessions, reached through the pjsua2 wheel's C API: the SSRC it sends and the SSRC it hears.

Why: pjsua keeps a call's SSRC for the call's life (even a re-INVITE with new media keeps it) and pjsua2
exposes neither a stream nor its SSRCs, so neither a carrier's SSRC change (failure mode 28) nor a mock that
notices one can be built on pjsua2 alone.  pjmedia can do both: a stream sends from ``out_hdr`` of its encoding
``pjmedia_rtp_session``, and its decoding session keeps the SSRC it hears in ``peer_ssrc``.

How the stream is found, with no pjproject headers in the wheel: pjsua2's ``onStreamCreated`` hands each
stream's address over (``OnStreamCreatedParam.stream``), valid until ``onStreamDestroyed``; the worker keeps it in
``CallCtx.streams``.  :meth:`RtpSessions.of_stream` checks the address: pjmedia names a stream's own port
``strm%p``, the stream's address (stream.c), so the port pjmedia gives for it must carry that name.
``pjmedia_stream_get_rtp_session_info`` (exported) then gives both sessions.  The session layout is pjproject
2.15.1's (``pjmedia/rtp.h``); :meth:`RtpSessions.of_stream` refuses a session whose header is not RTP version 2
or whose header sequence number is not the session's ``out_extseq``.

An SDP with ``a=ssrc`` (pjsua sends one) pins the decoding session's ``peer_ssrc``: packets under another SSRC
still play, but ``peer_ssrc`` stays.  :meth:`Sessions.follow_peer` clears ``has_peer_ssrc``, so pjmedia's own
code (rtp.c) moves ``peer_ssrc`` to each new SSRC heard.  The stream reads that flag too, in its NAT latching
(stream.c, whether to switch to a new source address): with it cleared a source is judged by the SSRC it sent
last rather than the SDP's, which changes nothing for two ends that keep their addresses, as on the loopback.

What a new source does not change: the stream's RTCP reports keep the old SSRC (its RTCP session is left
alone), and a later re-INVITE makes a new stream, which pjsua starts again under the call's first SSRC.

Everything here runs on the pj thread, the thread that creates and destroys streams (``mainThreadOnly``): a
stream's address is kept only between its two callbacks, and a session found from it is used only within the
call that found it.
"""

from __future__ import annotations

import ctypes
import re
import socket
from dataclasses import dataclass
from typing import Protocol

_STREAM_NAME = re.compile(r"^strm(?:0x)?([0-9a-fA-F]+)$")


class _RtpSession(ctypes.Structure):
    """``pjmedia_rtp_session`` of pjproject 2.15.1; ``out_hdr`` is the wire header (network byte order)."""

    _fields_ = [
        ("vpxcc", ctypes.c_uint8), ("mpt", ctypes.c_uint8), ("seq", ctypes.c_uint16), ("ts", ctypes.c_uint32),
        ("ssrc", ctypes.c_uint32),
        ("max_seq", ctypes.c_uint16), ("cycles", ctypes.c_uint32), ("base_seq", ctypes.c_uint32),
        ("bad_seq", ctypes.c_uint32), ("probation", ctypes.c_uint32),
        ("out_pt", ctypes.c_uint16), ("out_extseq", ctypes.c_uint32),
        ("has_peer_ssrc", ctypes.c_int), ("peer_ssrc", ctypes.c_uint32), ("received", ctypes.c_uint32),
    ]


class _SessInfo(ctypes.Structure):
    """``pjmedia_stream_rtp_sess_info``: decoding session, encoding session, RTCP session."""

    _fields_ = [("rx_rtp", ctypes.c_void_p), ("tx_rtp", ctypes.c_void_p), ("rtcp", ctypes.c_void_p)]


class RtpSessionError(RuntimeError):
    """A stream's sessions cannot be reached."""


def stream_address(port_name: str) -> int | None:
    """The address in a stream's port name (``strm0x55d0…``, pjmedia's own), or None for another port."""
    found = _STREAM_NAME.match(port_name)
    return int(found.group(1), 16) if found else None


@dataclass(frozen=True)
class Sessions:
    """One stream's two RTP sessions, as found now (valid until the pj thread runs pjsua again)."""

    stream: int
    rx: _RtpSession
    tx: _RtpSession

    @property
    def sending_ssrc(self) -> int:
        return socket.ntohl(self.tx.ssrc)

    @property
    def heard_ssrc(self) -> int:
        """What pjmedia last took as the peer's SSRC (0 before any packet, or the SDP's ``a=ssrc``)."""
        return int(self.rx.peer_ssrc)

    @property
    def received(self) -> int:
        return int(self.rx.received)

    @property
    def pinned(self) -> bool:
        """``peer_ssrc`` is the SDP's and stays so (until :meth:`follow_peer`)."""
        return bool(self.rx.has_peer_ssrc)

    def new_source(self, ssrc: int, seq: int) -> None:
        """Send from now on as a new source: this SSRC and a sequence restarting at ``seq`` (as a new
        sender, e.g. the session border controller that took over, would; the timestamp goes on).
        pjmedia numbers each packet from ``out_extseq`` (rtp.c, ``pjmedia_rtp_encode_rtp``) on the clock
        thread; a packet sent at this very instant may keep the old numbering (the SSRC, which pjmedia never
        writes, changes regardless)."""
        self.tx.ssrc = socket.htonl(ssrc & 0xFFFFFFFF)
        self.tx.out_extseq = (seq - 1) & 0xFFFF
        self.tx.seq = socket.htons((seq - 1) & 0xFFFF)  # as pjmedia leaves them after a packet

    def follow_peer(self) -> None:
        """Let ``peer_ssrc`` follow the SSRC of the packets heard, whatever the SDP said."""
        self.rx.has_peer_ssrc = 0


class RtpSessions:
    """Reaches a stream's RTP sessions (pj thread only)."""

    def __init__(self) -> None:
        import pjsua2._pjsua2 as ext

        lib = ctypes.CDLL(str(ext.__file__))  # the already-loaded wheel: same handle, its C symbols
        self._get_port = lib.pjmedia_stream_get_port
        self._get_port.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        self._get_sessions = lib.pjmedia_stream_get_rtp_session_info
        self._get_sessions.argtypes = [ctypes.c_void_p, ctypes.POINTER(_SessInfo)]

    def of_stream(self, stream: int) -> Sessions:
        """The sessions of the ``pjmedia_stream`` at ``stream`` (an address from ``onStreamCreated``)."""
        port = ctypes.c_void_p()
        if self._get_port(stream, ctypes.byref(port)) != 0 or not port.value:
            raise RtpLayoutError("pjmedia_stream_get_port failed")
        # pjmedia_port starts with its info, which starts with the name (a pj_str_t: pointer, length)
        ptr, length = (ctypes.c_void_p * 2).from_address(port.value)
        name = ctypes.string_at(ptr, min(int(length or 0), 64)).decode("latin-1") if ptr else ""
        if stream_address(name) != stream:
            raise RtpLayoutError(f"the stream's port is named {name!r}, not after its address: not a stream")
        info = _SessInfo()
        if self._get_sessions(stream, ctypes.byref(info)) != 0 or not info.rx_rtp or not info.tx_rtp:
            raise RtpSessionError("pjmedia_stream_get_rtp_session_info failed")
        found = Sessions(stream, _RtpSession.from_address(info.rx_rtp), _RtpSession.from_address(info.tx_rtp))
        tx = found.tx
        # pjmedia writes the header's sequence from out_extseq: equal, or one apart while the clock thread sends
        seq_lag = (tx.out_extseq - socket.ntohs(tx.seq)) & 0xFFFF
        pin = found.rx.has_peer_ssrc
        if tx.vpxcc >> 6 != 2 or tx.out_pt > 127 or seq_lag not in (0, 1, 0xFFFF) or pin not in (0, 1):
            raise RtpLayoutError("unexpected pjmedia_rtp_session layout in this pjsua2 build")
        return found


class RtpLayoutError(RtpSessionError):
    """This build's stream or session layout is not the one this module reads: stop using it."""


class StreamLook(Protocol):
    """What :class:`SsrcWatch` reads of a stream's sessions (:class:`Sessions` in a worker)."""

    @property
    def stream(self) -> int: ...
    @property
    def received(self) -> int: ...
    @property
    def heard_ssrc(self) -> int: ...
    @property
    def pinned(self) -> bool: ...
    def follow_peer(self) -> None: ...


@dataclass
class SsrcWatch:
    """The SSRC one call's audio is heard under: fed a fresh look at the call's sessions every tick, it says when
    that SSRC is first learnt and when it changes (sans-I/O: the worker finds the sessions and emits the answer)."""

    stream: int = 0
    heard: int | None = None  # the SSRC last heard
    failed: bool = False  # the sessions could not be read (said once)
    mark: int | None = None  # packets the current stream had received when taken; None once its SSRC is learnt

    def look(self, found: StreamLook) -> tuple[int | None, int] | None:
        """``(old, new)`` when the SSRC heard is not the one heard before (``old`` None: the call's first).

        A new stream (the call's first, or a re-INVITE's: pjsua makes a new one and the SDP pins its
        ``peer_ssrc`` again) is followed, and its SSRC learnt from packets that come after that, so a change
        in the first tick of a stream goes unnoticed."""
        if found.stream != self.stream or found.pinned:
            self.stream, self.mark = found.stream, found.received
            found.follow_peer()
            return None
        now = found.heard_ssrc
        if self.mark is not None:
            if found.received <= self.mark or not now:
                return None
            self.mark = None
        if now and now != self.heard:
            old, self.heard = self.heard, now
            return old, now
        return None
