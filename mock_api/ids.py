"""Identifier formats the real service uses, so apps that parse ids keep working."""

from __future__ import annotations

import secrets
import string

_BASE62 = string.ascii_letters + string.digits
# Map random bytes onto base62 without bias: 248 = 4 * 62, bytes >= 248 are dropped.
_TABLE = bytes(ord(_BASE62[i % 62]) for i in range(256))
_DROP = bytes(range(248, 256))


def _b62(n: int) -> str:
    """Ids are made for every server event, so this is on the hot path: one random read per id."""
    out = b""
    while len(out) < n:
        out += secrets.token_bytes(n + 8).translate(None, _DROP)
    return out[:n].translate(_TABLE).decode()


def call_id() -> str:
    """`rtc_` + 32 hex, the spec's form."""
    return "rtc_" + secrets.token_hex(16)


def webhook_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def webhook_id() -> str:
    return "wh_" + secrets.token_hex(16)


def server_id(prefix: str) -> str:
    """`event_`, `item_`, `resp_`, `sess_`, `conv_`: prefix + 21 base62 chars."""
    return f"{prefix}_{_b62(21)}"


def function_call_id() -> str:
    return "call_" + _b62(16)


def ephemeral_key() -> str:
    return "ek_" + _b62(32)


def request_id() -> str:
    return "req_" + secrets.token_hex(16)
