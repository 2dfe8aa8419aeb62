"""Identifier formats the real service uses, so apps that parse ids keep working.

Every id draws its randomness from an :class:`IdSource`. The default one reads the OS (``secrets``);
a seeded one (``IdSource(seed)``) is a ``random.Random`` stream, so a session built with it emits
the same ids, in the same order, every time it is fed the same input. A session makes its source
current (:func:`using`) while it runs, so code that builds events with the module functions here
needs no source passed down to it.
"""

from __future__ import annotations

import random
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_BASE62 = string.ascii_letters + string.digits
# Map random bytes onto base62 without bias: 248 = 4 * 62, bytes >= 248 are dropped.
_TABLE = bytes(ord(_BASE62[i % 62]) for i in range(256))
_DROP = bytes(range(248, 256))


class IdSource:
    """Where ids come from: the OS by default, a ``random.Random(seed)`` stream when seeded (replays)."""

    def __init__(self, seed: int | str | None = None) -> None:
        self.seed = seed
        self._rng = None if seed is None else random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n) if self._rng is None else self._rng.randbytes(n)

    def token_hex(self, n: int) -> str:
        return self.token_bytes(n).hex()

    def b62(self, n: int) -> str:
        """Ids are made for every server event, so this is on the hot path: one random read per id."""
        out = b""
        while len(out) < n:
            out += self.token_bytes(n + 8).translate(None, _DROP)
        return out[:n].translate(_TABLE).decode()


SYSTEM = IdSource()
_current: ContextVar[IdSource] = ContextVar("mock_api_ids", default=SYSTEM)


def current() -> IdSource:
    """The source ids are drawn from here and now (the OS unless a session made its own current)."""
    return _current.get()


@contextmanager
def using(source: IdSource) -> Iterator[IdSource]:
    """Draw every id from ``source`` inside the block (per thread and asyncio task, as contextvars are)."""
    token = _current.set(source)
    try:
        yield source
    finally:
        _current.reset(token)


def _b62(n: int) -> str:
    return _current.get().b62(n)


def call_id() -> str:
    """`rtc_` + 32 hex, the spec's form."""
    return "rtc_" + _current.get().token_hex(16)


def live_id(call_id: str) -> str:
    """`live_` + 32 hex for the same call's GPT-Live session: opaque like the real one, but its first hex
    digit is the Realtime id's, so whatever routes a call by its id (mock shards) routes both alike."""
    return "live_" + call_id[4:5] + _current.get().token_hex(16)[1:]


def webhook_event_id() -> str:
    return "evt_" + _current.get().token_hex(16)


def webhook_id() -> str:
    return "wh_" + _current.get().token_hex(16)


def server_id(prefix: str) -> str:
    """`event_`, `item_`, `resp_`, `sess_`, `conv_`: prefix + 21 base62 chars."""
    return f"{prefix}_{_b62(21)}"


def function_call_id() -> str:
    return "call_" + _b62(16)


def ephemeral_key() -> str:
    """Always from the OS, even inside a seeded session: a key must not be guessable."""
    return "ek_" + SYSTEM.b62(32)


def request_id() -> str:
    return "req_" + _current.get().token_hex(16)


def obfuscation() -> str:
    """GA deltas carry random padding (4–15 alphanumerics) so payload sizes do not leak content lengths."""
    raw = _current.get().token_bytes(16)  # one read per delta, not one per character
    return raw[1:5 + raw[0] % 12].translate(_TABLE).decode()
