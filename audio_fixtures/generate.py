"""Rebuild the committed audio fixtures: ``python -m audio_fixtures.generate``.

Text comes from faker seeded per clip (same seed, same text), speech from the
``espeak-ng`` command (Debian package ``espeak-ng``; nothing else is needed: its WAV
output is read and resampled by :mod:`mock_api.audio`). Every clip is laid out the same
way so its speech segments are predictable:

    300 ms silence | utterance | [gap | utterance ...] | >= 400 ms silence, padded to 20 ms frames

Each utterance is trimmed of espeak's own leading/trailing silence and the clip is
peak-normalized to -3 dBFS. The sidecar's ``speech_segments`` are then *measured* on
the final 8 kHz audio with webrtcvad by the turn detector's rules (``sipworker.turns``,
settings stored under ``vad``), and the generator checks there is exactly one segment per
utterance.  Nothing here needs ``harness``: fixtures sit below it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faker import Faker

from audio_fixtures import FIXTURE_DIR, Role
from mock_api.audio import (
    duration_ms,
    from_array,
    line_noise,
    load_audio,
    samples_for_ms,
    silence,
    to_array,
    write_wav,
)
from mock_api.fingerprint import describe_clip
from mock_api.realtime.vad import committed_spans
from sipworker.turns import VadSettings, speech_segments

RATE = 8000
DEFAULT_SEED = 4242
LEAD_MS = 300
TAIL_MS = 400
PEAK_DBFS = -3.0
VAD = VadSettings()  # aggressiveness 2, 10 ms frames, 500 ms hangover
COMMIT_TAIL_MS = 2000  # silence after a clip for committed_turns: past semantic_vad's 700 ms


@dataclass(frozen=True)
class Utterance:
    text: str  # what a transcriber should return
    say: str | None = None  # what espeak is given, when it differs (digits spelled out, letters)

    @property
    def tts(self) -> str:
        return self.say or self.text


@dataclass(frozen=True)
class Clip:
    name: str
    role: Role
    language: str
    voice: str
    utterances: list[Utterance] = field(default_factory=list)
    gap_ms: int = 1500  # silence between utterances
    speed: int = 160  # espeak words per minute
    synth: Callable[[int], bytes] | None = None  # non-speech clips: seed -> PCM16 at RATE


@dataclass(frozen=True)
class Story:
    """Facts shared across clips, so the caller and assistant talk about the same claim."""

    first: str
    last: str
    company: str
    policy: str
    street: str
    color: str
    make: str
    es_name: str


MAKES = ["Toyota", "Honda", "Ford", "Subaru", "Mazda", "Nissan", "Hyundai", "Volkswagen"]


def make_story(seed: int) -> Story:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    first = fake.first_name()
    last = fake.last_name()
    while not (4 <= len(last) <= 7 and last.isalpha()):  # short, plain name to spell out
        last = fake.last_name()
    company = fake.last_name()
    policy = f"{fake.numerify('%###')}-{fake.numerify('####')}"
    street = f"{fake.last_name()} {fake.random_element(['Street', 'Avenue', 'Road'])}"
    color = fake.random_element(["red", "blue", "white", "black", "silver", "green"])
    make = fake.random_element(MAKES)
    es = Faker("es_ES")
    es.seed_instance(seed)
    es_name = f"{es.first_name()} {es.last_name()}"
    return Story(first, last, company, policy, street, color, make, es_name)


def _digits(s: str) -> str:
    return " ".join(ch for ch in s if ch.isdigit())


def clips(story: Story) -> list[Clip]:
    s = story
    left, right = s.policy.split("-")
    spelled = ", ".join(s.last.upper())
    return [
        Clip(
            "caller_greeting",
            "caller",
            "en",
            "en-us",
            [Utterance(f"Hi, this is {s.first}. I'm calling about my car insurance.")],
        ),
        Clip(
            "caller_accident_claim",
            "caller",
            "en",
            "en-gb",
            [
                Utterance(
                    f"I need to file a claim. I had a car accident this morning on {s.street}. "
                    f"Someone hit my {s.color} {s.make}."
                )
            ],
            speed=175,
        ),
        Clip(
            "caller_policy_number",
            "caller",
            "en",
            "en-us+m3",
            [
                Utterance(
                    f"My policy number is {s.policy}.", f"My policy number is {_digits(left)}, dash, {_digits(right)}."
                )
            ],
            speed=150,
        ),
        Clip(
            "caller_spell_name",
            "caller",
            "en",
            "en-gb-scotland",
            [
                Utterance(
                    f"My name is {s.first} {s.last}. That's {'-'.join(s.last.upper())}.",
                    f"My name is {s.first} {s.last}. That's {spelled}.",
                )
            ],
            speed=150,
        ),
        Clip(
            "caller_spanish",
            "caller",
            "es",
            "es",
            [Utterance(f"Hola, buenos días. Quiero reportar un accidente de coche. Me llamo {s.es_name}.")],
        ),
        Clip(
            "caller_ask_human",
            "caller",
            "en",
            "en-us+f2",
            [Utterance("This is not helping. Can I please speak to a human agent?")],
        ),
        Clip(
            "caller_two_utterances",
            "caller",
            "en",
            "en-029",
            [Utterance("I have a question about my bill."), Utterance("Actually, can you also check my payment date?")],
            gap_ms=1500,
        ),
        Clip("caller_confirm", "caller", "en", "en-us", [Utterance("Yes, that's correct. Thank you.")]),
        Clip(
            "assistant_greeting",
            "assistant",
            "en",
            "en-us+f3",
            [Utterance(f"Thank you for calling {s.company} Insurance. How can I help you today?")],
        ),
        Clip(
            "assistant_ask_policy",
            "assistant",
            "en",
            "en-us+f3",
            [
                Utterance(
                    "I'm sorry to hear about the accident. Is everyone safe? Can I have your policy number, please?"
                )
            ],
        ),
        Clip(
            "assistant_confirm_policy",
            "assistant",
            "en",
            "en-us+f3",
            [
                Utterance(
                    f"Thank you. I found policy {s.policy} for {s.first} {s.last}.",
                    f"Thank you. I found policy {_digits(left)}, dash, {_digits(right)}, for {s.first} {s.last}.",
                )
            ],
        ),
        Clip(
            "assistant_transfer",
            "assistant",
            "en",
            "en-us+f3",
            [Utterance("Of course. I'm transferring you to a human agent now. Please hold.")],
        ),
        Clip(
            "assistant_spanish",
            "assistant",
            "es",
            "es-419+f3",
            [Utterance("Claro que sí. ¿Me puede dar su número de póliza, por favor?")],
        ),
        Clip("silence_3s", "silence", "none", "none", synth=lambda seed: silence(3000, RATE)),
        Clip(
            "line_noise_3s",
            "noise",
            "none",
            "none",
            synth=lambda seed: line_noise(3000, RATE, dbfs=-45.0, seed=seed),
        ),
    ]


def espeak(text: str, voice: str, speed: int) -> bytes:
    """Synthesize ``text`` with espeak-ng; returns PCM16 at :data:`RATE`."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found: apt-get install espeak-ng (needed only to regenerate fixtures)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tts.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(out), text], check=True, capture_output=True)
        return load_audio(out, RATE)


def _trim(pcm: bytes, threshold: int = 64) -> bytes:
    x = to_array(pcm)
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > threshold)
    return b"" if loud.size == 0 else from_array(x[loud[0] : loud[-1] + 1])


def _normalize_peak(pcm: bytes, dbfs: float) -> bytes:
    x = to_array(pcm).astype(np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return pcm if peak == 0 else from_array(x * (32767.0 * 10 ** (dbfs / 20.0) / peak))


def _pad_to_frame(pcm: bytes, ms: int = 20) -> bytes:
    n = samples_for_ms(ms, RATE) * 2
    return pcm + b"\x00" * (-len(pcm) % n)


def _ms(n_bytes: int) -> int:
    return round(n_bytes / 2 * 1000 / RATE)


def _dumps(meta: dict[str, object]) -> str:
    """One key per line, values compact: readable sidecars with short diffs."""
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in meta.items())
    return "{\n" + body + "\n}\n"


def render(clip: Clip, seed: int) -> tuple[bytes, list[list[int]]]:
    """The clip's PCM16 at :data:`RATE`, and where each utterance was placed ``[[start_ms, end_ms], ...]``."""
    if clip.synth is not None:
        return clip.synth(seed), []
    parts: list[bytes] = [silence(LEAD_MS, RATE)]
    placed: list[list[int]] = []
    pos = len(parts[0])
    for i, utt in enumerate(clip.utterances):
        if i:
            parts.append(silence(clip.gap_ms, RATE))
            pos += len(parts[-1])
        speech = _trim(espeak(utt.tts, clip.voice, clip.speed))
        parts.append(speech)
        placed.append([_ms(pos), _ms(pos + len(speech))])
        pos += len(speech)
    parts.append(silence(TAIL_MS, RATE))
    return _pad_to_frame(_normalize_peak(b"".join(parts), PEAK_DBFS)), placed


def sidecar(clip: Clip, pcm: bytes, seed: int, placed: list[list[int]]) -> dict[str, object]:
    segs = speech_segments(pcm, RATE, VAD)
    data: dict[str, object] = {
        "text": " ".join(u.text for u in clip.utterances),
        "language": clip.language,
        "voice": clip.voice,
        "duration_ms": round(duration_ms(pcm, RATE)),
        "rate": RATE,
        "speech_segments": [list(s) for s in segs],
        "role": clip.role,
        "utterances": [u.text for u in clip.utterances],
        "placed_ms": placed,
        "vad": {"engine": "webrtcvad", **VAD.as_dict()},
        "seed": seed,
    }
    data["committed_turns"] = committed_turns(clip.name, pcm, RATE, data)
    if any(u.say for u in clip.utterances):
        data["tts_text"] = " ".join(u.tts for u in clip.utterances)
    return data


def committed_turns(name: str, pcm: bytes, rate: int, data: dict[str, object]) -> dict[str, list[dict[str, object]]]:
    """How the session's default turn detection commits the clip (followed by silence), and the words
    of each committed turn: a script author writes one turn per utterance, the 200 ms server_vad
    default may commit an utterance as several turns (see ``match_clip`` in the script)."""
    padded = pcm + silence(COMMIT_TAIL_MS, rate)
    clip = describe_clip(name, Path(name), data, pcm, rate)
    out: dict[str, list[dict[str, object]]] = {}
    for vad_type in ("server_vad", "semantic_vad"):
        turns: list[dict[str, object]] = []
        for a, b in committed_spans(padded, rate, vad_type=vad_type):
            words = [p for p in clip.pieces if a <= p.middle_ms <= b]
            turns.append({"ms": [a, b], "text": clip.words(words)})
        out[vad_type] = turns
    return out


def refresh_committed_turns(out_dir: Path = FIXTURE_DIR) -> list[str]:
    """Rewrite every sidecar's ``committed_turns`` from its committed audio (after a VAD change),
    without re-synthesising anything; returns the clips whose field changed."""
    changed = []
    for sidecar_path in sorted(out_dir.glob("*.json")):
        data = json.loads(sidecar_path.read_text(encoding="utf-8"))
        pcm = load_audio(sidecar_path.with_suffix(".wav"), RATE)
        turns = committed_turns(sidecar_path.stem, pcm, RATE, data)
        if data.get("committed_turns") != turns:
            data["committed_turns"] = turns
            sidecar_path.write_text(_dumps(data), encoding="utf-8")
            changed.append(sidecar_path.stem)
    return changed


def _clip_seed(seed: int, name: str) -> int:
    return zlib.crc32(f"{seed}:{name}".encode())


def generate(out_dir: Path = FIXTURE_DIR, seed: int = DEFAULT_SEED, only: list[str] | None = None) -> list[str]:
    """Write ``<name>.wav`` + ``<name>.json`` for every clip; returns problems found (empty = fine)."""
    story = make_story(seed)
    problems: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for clip in clips(story):
        if only and clip.name not in only:
            continue
        cseed = _clip_seed(seed, clip.name)
        pcm, placed = render(clip, cseed)
        meta = sidecar(clip, pcm, cseed, placed)
        write_wav(out_dir / f"{clip.name}.wav", pcm, RATE)
        (out_dir / f"{clip.name}.json").write_text(_dumps(meta), encoding="utf-8")
        dur = float(meta["duration_ms"])  # type: ignore[arg-type]
        segs = meta["speech_segments"]
        assert isinstance(segs, list)
        expected = len(clip.utterances)
        if len(segs) != expected:
            problems.append(f"{clip.name}: {len(segs)} speech segments measured, {expected} utterances")
        if clip.synth is None and not 2000 <= dur <= 8000:
            problems.append(f"{clip.name}: duration {dur:.0f} ms outside 2-8 s")
        print(f"{clip.name:28s} {dur / 1000:5.2f} s  {segs}  {meta['text']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audio_fixtures.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=FIXTURE_DIR, help="output directory (default: the package)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--only", nargs="*", help="clip names to rebuild")
    ap.add_argument("--committed-turns", action="store_true",
                    help="only rewrite each sidecar's committed_turns from its audio (no synthesis)")
    args = ap.parse_args(argv)
    if args.committed_turns:
        for name in refresh_committed_turns(args.out):
            print(f"{name}: committed_turns rewritten")
        return 0
    problems = generate(args.out, args.seed, args.only)
    for p in problems:
        print(f"WARNING: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
