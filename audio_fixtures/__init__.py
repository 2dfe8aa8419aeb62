"""Committed audio clips for calls and tests: 8 kHz mono 16-bit WAV plus a JSON sidecar each.

The clips are synthesized speech (espeak-ng) of seeded faker text, rebuilt with
``python -m audio_fixtures.generate``; tests and scenarios only read them, so espeak-ng
is needed only to regenerate. Each sidecar records the text, language, voice,
duration and the speech segments webrtcvad measured on the clip (with the VAD settings
used), so VAD and transcription checks have a known truth to compare against.

    from audio_fixtures import fixture, list_fixtures
    fx = fixture("caller_policy_number")   # fx.text, fx.speech_segments, fx.pcm(24000)
    names = [f.name for f in list_fixtures("assistant")]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

__all__ = ["FIXTURE_DIR", "Fixture", "FixtureNotFound", "Role", "fixture", "fixture_names", "list_fixtures"]

FIXTURE_DIR = Path(__file__).resolve().parent
"""Directory holding the committed ``<name>.wav`` / ``<name>.json`` pairs."""

Role = Literal["caller", "assistant", "noise", "silence"]


class FixtureNotFound(KeyError):
    """Raised by :func:`fixture` for an unknown name; the message lists the known ones."""


class CommittedTurn(NamedTuple):
    """One turn the session commits from a clip: its audio ms and the words in it."""

    ms: tuple[int, int]
    text: str


@dataclass(frozen=True)
class Fixture:
    """One clip and what is known about it (from its sidecar).

    ``speech_segments`` were measured with webrtcvad (settings in ``vad``) on the clip
    itself; ``placed_ms`` is where the generator put each utterance's audio (one per
    entry of ``utterances``). The VAD ends run ~50-120 ms past the placed ends.
    """

    name: str
    path: Path
    text: str
    language: str
    voice: str
    duration_ms: float
    rate: int
    speech_segments: tuple[tuple[int, int], ...]
    role: Role
    utterances: tuple[str, ...] = ()
    placed_ms: tuple[tuple[int, int], ...] = ()
    vad: dict[str, Any] = field(default_factory=dict)
    # how the mock's default server_vad / semantic_vad commit the clip followed by silence
    committed_turns: dict[str, tuple[CommittedTurn, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def has_speech(self) -> bool:
        return bool(self.speech_segments)

    def vad_settings(self) -> dict[str, int]:
        """The webrtcvad settings the segments were measured with (``VadSettings(**...)``)."""
        return {k: v for k, v in self.vad.items() if k != "engine"}

    def pcm(self, rate: int | None = None) -> bytes:
        """The clip as mono PCM16 at ``rate`` (default: the clip's own 8 kHz)."""
        from mock_api.audio import load_audio  # lazy: listing fixtures needs no numpy

        return load_audio(self.path, rate or self.rate)

    @classmethod
    def from_sidecar(cls, sidecar: Path) -> Fixture:
        data: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
        known = {
            "text",
            "language",
            "voice",
            "duration_ms",
            "rate",
            "speech_segments",
            "role",
            "utterances",
            "placed_ms",
            "vad",
            "committed_turns",
        }
        return cls(
            name=sidecar.stem,
            path=sidecar.with_suffix(".wav"),
            text=data["text"],
            language=data["language"],
            voice=data["voice"],
            duration_ms=float(data["duration_ms"]),
            rate=int(data["rate"]),
            speech_segments=tuple((int(a), int(b)) for a, b in data["speech_segments"]),
            role=data["role"],
            utterances=tuple(data.get("utterances", ())),
            placed_ms=tuple((int(a), int(b)) for a, b in data.get("placed_ms", ())),
            vad=dict(data.get("vad", {})),
            committed_turns={k: tuple(CommittedTurn((int(t["ms"][0]), int(t["ms"][1])), str(t["text"])) for t in v)
                             for k, v in data.get("committed_turns", {}).items()},
            extra={k: v for k, v in data.items() if k not in known},
        )


@cache
def _load_all(directory: Path) -> dict[str, Fixture]:
    out: dict[str, Fixture] = {}
    for sidecar in sorted(directory.glob("*.json")):
        if sidecar.with_suffix(".wav").exists():
            out[sidecar.stem] = Fixture.from_sidecar(sidecar)
    return out


def list_fixtures(role: Role | None = None) -> list[Fixture]:
    """All committed fixtures, sorted by name; optionally only one ``role``."""
    return [f for f in _load_all(FIXTURE_DIR).values() if role is None or f.role == role]


def fixture_names() -> list[str]:
    """Names accepted by :func:`fixture`."""
    return sorted(_load_all(FIXTURE_DIR))


def fixture(name: str) -> Fixture:
    """The fixture called ``name`` (``"caller_greeting"``; a ``.wav`` suffix is tolerated)."""
    key = name.removesuffix(".wav").removesuffix(".json")
    try:
        return _load_all(FIXTURE_DIR)[key]
    except KeyError:
        raise FixtureNotFound(f"unknown audio fixture {name!r}; known: {', '.join(fixture_names())}") from None
