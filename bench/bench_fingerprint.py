"""Fingerprint benchmark: hit rate through the telephone line, false matches, and CPU per second of audio.

    .venv/bin/python -m bench.bench_fingerprint [--seeds 3] [--loss 0.01] [--no-peer]

Every fixture with speech goes through :func:`mock_api.fingerprint.telephone_line`: G.711
µ-law or A-law both ways, 1 % of its 20 ms frames lost (played as silence), silence before
and after, then 8 or 24 kHz; once more with jitter-buffer shifts (``--shifts`` per second of
audio: one to three frames dropped or inserted). It is looked up whole, and cut into the turns the session's
default server_vad (200 ms of silence) commits, each looked up on its own: a hit is the right
clip, accepted, and (whole clips) the sidecar text exactly. Unknown speech (espeak-ng saying
sentences no fixture says, in the fixtures' voices; skipped without espeak-ng) measures false
matches. CPU is process time per second of query audio.

The peer is plain normalised cross-correlation of the query against every fixture (FFT, at
8 kHz): what a fingerprint avoids paying. The existing transcription path (the scripted text
through :func:`mock_api.realtime.transcription.transcribe`) is timed too, for scale.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from audio_fixtures import Fixture, list_fixtures
from mock_api import audio
from mock_api.fingerprint import RATE, FingerprintIndex, library_index, telephone_line
from mock_api.realtime.transcription import transcribe
from mock_api.realtime.vad import committed_turns

UNKNOWN = [
    "I would like to change the address on my policy please.",
    "Can you tell me when my next payment is due?",
    "My car was damaged in a storm last night.",
    "Hello, I am calling about my claim number.",
    "Thank you so much for your help today.",
    "No, I do not have it with me right now.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en-029", "en-gb-scotland", "en-us+f2", "es"]
PEER_THRESHOLD = 0.5  # normalised correlation peak that counts as a match


class Tally:
    """Hits, tries and CPU of one kind of lookup."""

    def __init__(self) -> None:
        self.hits = self.tries = 0
        self.cpu_s = self.audio_s = 0.0

    def run(self, lookup: Callable[[bytes, int], bool], pcm: bytes, rate: int) -> None:
        t0 = time.process_time()
        ok = lookup(pcm, rate)
        self.cpu_s += time.process_time() - t0
        self.audio_s += audio.duration_ms(pcm, rate) / 1000.0
        self.tries += 1
        self.hits += ok

    def rate(self) -> str:
        return f"{self.hits}/{self.tries} ({100.0 * self.hits / max(1, self.tries):.1f} %)"

    def cpu_ms_per_s(self) -> str:
        return f"{1000.0 * self.cpu_s / max(1e-9, self.audio_s):.2f}"


def fingerprint_lookup(index: FingerprintIndex, fx: Fixture, whole: bool) -> Callable[[bytes, int], bool]:
    def lookup(pcm: bytes, rate: int) -> bool:
        m = index.match(pcm, rate)
        return m is not None and m.clip == fx.name and (not whole or m.text == fx.text)
    return lookup


class Correlator:
    """The peer: normalised cross-correlation against every fixture, by FFT at 8 kHz."""

    def __init__(self, fixtures: list[Fixture]) -> None:
        self.refs = [(f.name, audio.to_array(f.pcm(RATE)).astype(np.float64)) for f in fixtures]

    def best(self, pcm: bytes, rate: int) -> tuple[str | None, float]:
        q = audio.to_array(audio.resample(pcm, rate, RATE)).astype(np.float64)
        q_energy = float(np.sqrt(np.sum(q * q))) or 1.0
        best: tuple[str | None, float] = (None, 0.0)
        for name, ref in self.refs:
            n = 1 << int(np.ceil(np.log2(len(ref) + len(q))))
            corr = np.fft.irfft(np.fft.rfft(ref, n) * np.conj(np.fft.rfft(q, n)), n)[:len(ref)]
            energy = np.concatenate([[0.0], np.cumsum(ref * ref)])
            lag = np.arange(len(ref))
            window = np.sqrt(energy[np.minimum(lag + len(q), len(ref))] - energy[lag])  # ref's energy under q
            score = float(np.max(corr / (q_energy * np.maximum(window, 1e-9))))
            if score > best[1]:
                best = (name, score)
        return best

    def lookup(self, fx: Fixture) -> Callable[[bytes, int], bool]:
        def run(pcm: bytes, rate: int) -> bool:
            name, score = self.best(pcm, rate)
            return name == fx.name and score >= PEER_THRESHOLD
        return run


def scripted_lookup(text: str) -> Callable[[bytes, int], bool]:
    """The existing path: the script's text through the transcription rules (the audio is not looked at)."""
    def run(pcm: bytes, rate: int) -> bool:
        return bool(transcribe(text, "en", {"model": "whisper-1"}).text)
    return run


def unknown_clips() -> list[bytes]:
    """Sentences no fixture says, in the fixtures' voices (8 kHz); none without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(UNKNOWN):
            for voice in VOICES[i % 2::2]:
                path = Path(tmp) / f"u{i}_{voice}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True, timeout=30)
                out.append(audio.load_audio(path, RATE))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="frame-loss patterns per fixture, law and rate")
    ap.add_argument("--loss", type=float, default=0.01, help="share of 20 ms frames lost")
    ap.add_argument("--shifts", type=float, default=1.5, help="jitter-buffer shifts per second of audio")
    ap.add_argument("--no-peer", action="store_true", help="skip the cross-correlation peer (slow)")
    args = ap.parse_args()
    fixtures = [f for f in list_fixtures() if f.has_speech]
    t0 = time.perf_counter()
    index = library_index()
    build_s = time.perf_counter() - t0
    peer = None if args.no_peer else Correlator(fixtures)
    rows: dict[str, Tally] = {}
    for fx in fixtures:
        for law in ("ulaw", "alaw"):
            for rate in (8000, 24000):
                for seed in range(args.seeds):
                    line = telephone_line(fx.pcm(), fx.rate, law=law, out_rate=rate, loss=args.loss, seed=seed,
                                          lead_ms=97.0 * seed, tail_ms=800)
                    key = f"{law} {rate // 1000} kHz"
                    rows.setdefault(f"whole, {key}", Tally()).run(fingerprint_lookup(index, fx, True), line, rate)
                    for turn in committed_turns(line, rate):
                        rows.setdefault(f"VAD turn, {key}", Tally()).run(fingerprint_lookup(index, fx, False),
                                                                         turn, rate)
                        if peer is not None and seed == 0:
                            rows.setdefault(f"peer: cross-correlation, VAD turn, {key}", Tally()).run(
                                peer.lookup(fx), turn, rate)
                    if peer is not None and seed == 0:
                        rows.setdefault(f"peer: cross-correlation, whole, {key}", Tally()).run(peer.lookup(fx),
                                                                                               line, rate)
        shifts = round(args.shifts * audio.duration_ms(fx.pcm(), fx.rate) / 1000.0)
        key = f"whole, ulaw 8 kHz, {args.shifts:g} jitter-buffer shifts per s"
        for seed in range(4 * args.seeds):
            line = telephone_line(fx.pcm(), fx.rate, loss=args.loss, seed=seed, lead_ms=300, tail_ms=600,
                                  shifts=shifts)
            rows.setdefault(key, Tally()).run(fingerprint_lookup(index, fx, True), line, RATE)
            if peer is not None and seed == 0:
                rows.setdefault(f"peer: cross-correlation, {key}", Tally()).run(peer.lookup(fx), line, RATE)
    false = Tally()
    for i, clip in enumerate(unknown_clips()):
        line = telephone_line(clip, RATE, out_rate=24000, loss=args.loss, seed=i)
        for part in [line, *committed_turns(line, 24000)]:
            false.run(lambda pcm, rate: index.match(pcm, rate) is not None, part, 24000)
    scripted = Tally()
    for fx in fixtures:
        scripted.run(scripted_lookup(fx.text), fx.pcm(24000), 24000)

    table = Table(title=f"Fingerprint: {len(index)} clips, {index.landmark_count} landmarks, index built in "
                  f"{build_s * 1000:.0f} ms; {args.loss:.0%} frame loss, {args.seeds} seeds")
    for col in ("lookup", "hits", "CPU ms per s of audio"):
        table.add_column(col)
    for name, tally in rows.items():
        table.add_row(name, tally.rate(), tally.cpu_ms_per_s())
    table.add_row("false matches on unknown speech (whole + VAD turns)", false.rate() if false.tries else "skipped",
                  false.cpu_ms_per_s() if false.tries else "-")
    table.add_row("existing path: scripted text through transcribe()", "-", scripted.cpu_ms_per_s())
    Console().print(table)


if __name__ == "__main__":
    main()
