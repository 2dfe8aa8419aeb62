"""Which local ports rtsip may take: a probe that tells the truth, and free RTP ranges.

A port is *taken* only when a socket is bound to it.  The probe binds the way the port's real
user will: pjsip's TLS and TCP listeners and aiohttp set SO_REUSEADDR, so a connection of the last
run left in TIME_WAIT does not stop them, and does not count here either; pjsip's UDP transport and
its RTP/RTCP sockets bind plainly (no SO_REUSEADDR), and so does the UDP probe.

RTP: a SIP worker binds one RTP/RTCP pair per call, when the call starts, somewhere in its range
``[rtp_port, rtp_port + rtp_port_range)``; pjsua skips a pair it cannot bind.  A range is therefore
chosen once, at start, among ports free at that moment, from a random offset inside
:data:`RTP_PORTS` (below the kernel's ephemeral range when it fits, so the kernel does not hand
our ports to other programs' unbound UDP sockets).  Two rtsip processes starting together rarely
choose the same range, and an overlap costs skipped ports, not calls.  Ranges handed out in this
process are kept apart too (the mock's ingress and a test's softphone share a process).
"""

from __future__ import annotations

import collections
import errno
import random
import socket
from pathlib import Path

RTP_PORTS = range(20000, 60000)  # where RTP ranges are chosen (rtsip's other fixed ports are below)
RTP_SPAN = 40  # ports per SIP worker: 20 RTP/RTCP pairs for its 4 calls, room for pairs taken by others
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_RNG = random.SystemRandom()  # not the global RNG, which tests may seed
_recent: collections.deque[range] = collections.deque(maxlen=32)  # ranges this process handed out


class PortInUse(OSError):
    """A port rtsip was asked to listen on is bound by someone else.

    ``setting`` names the parameter that chose it (``port``, ``sip_port``), so a front end can
    say which flag to change.
    """

    def __init__(self, message: str, port: int, setting: str) -> None:
        super().__init__(message)
        self.port = port
        self.setting = setting


class NoFreePorts(OSError):
    """No range of the size asked for is free right now."""


def port_taken(port: int, kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> bool:
    """True when a socket is bound to ``port`` (TCP: a listener or a live connection; TIME_WAIT is not).

    A port nobody may bind here (below 1024 without the right, an address not on this host) is not
    "taken": that OSError propagates, with its own reason.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def ephemeral_ports() -> range:
    """The kernel's range for unbound sockets (Linux: /proc/sys/net/ipv4/ip_local_port_range)."""
    try:
        low, high = (int(v) for v in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return range(0)
    return range(low, high + 1)


def outside_ephemeral(bounds: range = RTP_PORTS) -> list[range]:
    """The parts of ``bounds`` outside the ephemeral range, largest first."""
    eph = ephemeral_ports()
    parts = [range(bounds.start, min(bounds.stop, eph.start)), range(max(bounds.start, eph.stop), bounds.stop)]
    return sorted((p for p in parts if len(p) > 0), key=len, reverse=True) if eph else [bounds]


def free_range(size: int, *, host: str = "127.0.0.1", bounds: range = RTP_PORTS,
               kinds: tuple[int, ...] = (socket.SOCK_DGRAM,)) -> int:
    """An even port ``base`` with every port of ``[base, base + size)`` free, inside ``bounds``.

    Free for each socket type in ``kinds`` (UDP for RTP; a SIP listener may need TCP too).
    Outside the ephemeral range if a window there is large enough, else anywhere in ``bounds``;
    apart from the ranges this process handed out lately if possible.  NoFreePorts if none is free.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    fitting = [w for w in outside_ephemeral(bounds) if len(w) >= size] or [bounds]
    for avoid in (tuple(_recent), ()):
        for window in fitting:
            base = _scan(window, size, host, kinds, avoid)
            if base is not None:
                _recent.append(range(base, base + size))
                return base
    raise NoFreePorts(f"no {size} consecutive free ports between {bounds.start} and {bounds.stop - 1} on {host}")


def rtp_base(workers: int, span: int = RTP_SPAN, host: str = "127.0.0.1") -> int:
    """The first port of a free RTP range for ``workers`` SIP workers of ``span`` ports each."""
    return free_range(max(1, workers) * span, host=host)


def _scan(window: range, size: int, host: str, kinds: tuple[int, ...], avoid: tuple[range, ...]) -> int | None:
    """Walk the even bases of ``window`` once, from a random one, wrapping at the end; past a taken
    port, go straight to the first base above it (every base in between contains it)."""
    first = window.start + window.start % 2
    count = (window.stop - size - first) // 2 + 1  # bases first, first + 2, ... that fit
    if count <= 0:
        return None
    index = _RNG.randrange(count)
    seen = 0
    while seen < count:
        base = first + 2 * index
        busy = _highest_busy(base, size, host, kinds, avoid)
        if busy is None:
            return base
        step = min((busy + 2 - base) // 2, count - index)  # to the first even base above `busy`, or the end
        seen += step
        index = (index + step) % count
    return None


def _highest_busy(base: int, size: int, host: str, kinds: tuple[int, ...], avoid: tuple[range, ...]) -> int | None:
    """The highest port of ``[base, base + size)`` that cannot be used, or None when all are free.

    The highest, so the caller can skip every base that would contain it.
    """
    end = base + size
    for r in avoid:
        if r.start < end and base < r.stop:
            return min(end, r.stop) - 1
    for port in range(end - 1, base - 1, -1):
        if any(port_taken(port, kind, host) for kind in kinds):
            return port
    return None
