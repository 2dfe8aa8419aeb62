"""Which codecs a worker offers and answers with, and in what order: pure rules, no pjsua2.

Rules:
  1. Codecs are named the short way (``opus``, ``PCMU``, ``PCMA``, ``G722``; case does not matter) in configs and
     commands; :data:`CODEC_IDS` maps them to pjmedia's codec ids. An unknown name is refused at once.
  2. An order is a list of names, most preferred first. Every codec not in it gets priority 0 (pjsua never
     offers or answers with it); the listed ones get 255, 254, ... so pjsua's offer lists them in that order.
  3. A listed codec the worker lacks (Opus without its factory) is dropped from the priorities, never an error:
     the call still goes out with the rest. :func:`plan` says which were dropped, so the parent can warn.
  4. An order that ends up empty is refused: a call with no codec would fail in the SDP, far from the cause.
  5. Answers are pjsip's: with ``PJMEDIA_SDP_NEG_PREFER_REMOTE_CODEC_ORDER`` (on in the wheel) the answer takes
     the offerer's first codec that the worker has at a non-zero priority, whatever the worker's own order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CODEC_IDS: dict[str, str] = {
    "opus": "opus/48000/2",
    "pcmu": "PCMU/8000/1",
    "pcma": "PCMA/8000/1",
    "g722": "G722/16000/1",
}
G711: tuple[str, ...] = ("PCMU", "PCMA")  # the default order: what every SIP peer has
OPUS_FIRST: tuple[str, ...] = ("opus", "PCMU", "PCMA")  # GPT-Live's trunks: Opus, G.711 kept as fallback
_TOP = 255


def normalise(names: Iterable[str]) -> list[str]:
    """The names in canonical spelling (``opus``, ``PCMU``...), duplicates dropped; ValueError on an unknown one."""
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if key not in CODEC_IDS:
            raise ValueError(f"unknown codec {name!r}: use {', '.join(canonical(k) for k in CODEC_IDS)}")
        if canonical(key) not in out:
            out.append(canonical(key))
    return out


def canonical(key: str) -> str:
    return "opus" if key.lower() == "opus" else key.upper()


@dataclass(frozen=True)
class CodecPlan:
    """The priorities to set, and what had to be left out (rule 3)."""

    priorities: dict[str, int]  # pjmedia codec id → priority (255 first); every other codec gets 0
    offered: list[str]  # canonical names, in order
    dropped: list[str]  # canonical names the worker lacks


def plan(order: Sequence[str], available: Iterable[str]) -> CodecPlan:
    """The priorities for ``order`` given the codec ids the endpoint has (``codecEnum2``)."""
    have = set(available)
    offered: list[str] = []
    dropped: list[str] = []
    for name in normalise(order):
        (offered if CODEC_IDS[name.lower()] in have else dropped).append(name)
    if not offered:
        raise ValueError(f"none of the codecs {list(order)} is available (the endpoint has {sorted(have)})")
    return CodecPlan({CODEC_IDS[n.lower()]: _TOP - i for i, n in enumerate(offered)}, offered, dropped)


def wants_opus(order: Iterable[str]) -> bool:
    return any(str(n).strip().lower() == "opus" for n in order)
