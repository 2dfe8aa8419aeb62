"""The one audio conversion helper of rtsip.

Inside the project audio is mono 16-bit little-endian PCM (``bytes``) with a sample
rate carried next to it. Conversions happen at the edges, and all of them live here:

* G.711 µ-law / A-law <-> PCM16 (RTP leg, ``audio/pcmu`` / ``audio/pcma`` sessions);
* resampling between 8, 16 and 24 kHz (RTP is 8 kHz, webrtcvad likes 8/16 kHz,
  ``audio/pcm`` WebSocket sessions are 24 kHz);
* loading fixture / user audio files and writing WAV recordings;
* base64 for ``input_audio_buffer.append`` / ``response.output_audio.delta``;
* framing, durations, seeded silence and noise.

Everything is a pure function of its arguments except :func:`load_audio` and
:func:`write_wav`, and :class:`Resampler`, which keeps filter history so that
streamed chunks resample exactly like the whole buffer would. Resampling is libsoxr's
(``soxr``): a well-tested filter instead of a hand-written one.

G.711 is implemented with numpy lookup tables built from the reference (Sun / ITU)
algorithm rather than the stdlib ``audioop``: ``audioop`` warns on import on 3.11/3.12
and is gone in 3.13. The tables are bit-identical to ``audioop`` and to pjmedia's
``g711.c`` (the tests compare all 65536 inputs against ``audioop``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "RESAMPLE_QUALITY",
    "SAMPLE_WIDTH",
    "SUPPORTED_RATES",
    "Resampler",
    "ToRate",
    "WireFormat",
    "alaw_to_pcm",
    "b64_to_pcm",
    "b64decode",
    "b64encode",
    "decode_wire",
    "duration_ms",
    "encode_wire",
    "frame_bytes",
    "frames",
    "from_array",
    "line_noise",
    "load_audio",
    "mix",
    "pcm_to_alaw",
    "pcm_to_b64",
    "pcm_to_ulaw",
    "resample",
    "samples_for_ms",
    "scale_to_dbfs",
    "silence",
    "to_array",
    "tone",
    "ulaw_to_pcm",
    "white_noise",
    "write_wav",
]

SAMPLE_WIDTH = 2
"""Bytes per sample of project-internal PCM (16-bit signed, little endian)."""

SUPPORTED_RATES = (8000, 16000, 24000)
"""Rates used in the project: RTP/G.711, webrtcvad, Realtime ``audio/pcm``."""

WireFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma", "pcm16", "g711_ulaw", "g711_alaw"]
"""Realtime API audio format names, GA (``audio/*``) and beta spellings."""

Int16Array = npt.NDArray[np.int16]


# --------------------------------------------------------------------------- PCM <-> numpy


def to_array(pcm: bytes) -> Int16Array:
    """View PCM16 bytes as an int16 array (copy-free; a trailing odd byte is dropped)."""
    usable = len(pcm) - (len(pcm) % SAMPLE_WIDTH)
    return np.frombuffer(pcm[:usable], dtype="<i2").astype(np.int16, copy=False)


def from_array(samples: npt.ArrayLike) -> bytes:
    """Turn samples (int or float in the int16 scale) into PCM16 bytes, rounding and clipping."""
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        # np.clip's steps as bare ufuncs, in place: this runs for every resampled 20 ms frame
        rounded = np.array(arr, dtype=np.float64)
        np.rint(rounded, out=rounded)
        np.maximum(rounded, -32768.0, out=rounded)
        np.minimum(rounded, 32767.0, out=rounded)
        arr = rounded.astype(np.int16)
    return arr.astype("<i2", copy=False).tobytes()


def samples_for_ms(ms: float, rate: int) -> int:
    """Number of samples in ``ms`` milliseconds at ``rate`` (rounded to nearest)."""
    return round(ms * rate / 1000)


def duration_ms(pcm: bytes, rate: int) -> float:
    """Duration of PCM16 mono audio in milliseconds."""
    return (len(pcm) // SAMPLE_WIDTH) * 1000.0 / rate


def frame_bytes(rate: int, ms: int = 20) -> int:
    """Bytes in one PCM16 frame of ``ms`` at ``rate`` (20 ms at 8 kHz = 320 bytes)."""
    return samples_for_ms(ms, rate) * SAMPLE_WIDTH


def frames(pcm: bytes, rate: int, ms: int = 20, *, pad: bool = True) -> Iterator[bytes]:
    """Split PCM16 into consecutive frames of ``ms`` (RTP ptime / VAD frame size).

    The last partial frame is zero-padded when ``pad`` (media paths want whole
    frames), otherwise dropped (webrtcvad rejects short frames).
    """
    size = frame_bytes(rate, ms)
    if size <= 0:
        raise ValueError(f"frame of {ms} ms at {rate} Hz is empty")
    for start in range(0, len(pcm), size):
        chunk = pcm[start : start + size]
        if len(chunk) < size:
            if not pad:
                return
            chunk = chunk + b"\x00" * (size - len(chunk))
        yield chunk


# --------------------------------------------------------------------------- G.711

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    # Sun g711.c linear2ulaw on the 14-bit value (sample >> 2), as audioop and pjmedia do.
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + (0x84 >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    out = np.where(seg >= 8, 0x7F ^ mask, uval ^ mask)
    return out.astype(np.uint8)


def _build_ulaw_decode() -> Int16Array:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    # Sun g711.c linear2alaw on the 13-bit value (sample >> 3).
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    quant = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    aval = (seg << 4) | quant
    out = np.where(seg >= 8, 0x7F ^ mask, aval ^ mask)
    return out.astype(np.uint8)


def _build_alaw_decode() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_ENC = _build_alaw_encode()
_ALAW_DEC = _build_alaw_decode()


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """PCM16 -> G.711 µ-law, one byte per sample (RTP payload type 0)."""
    return _ULAW_ENC[to_array(pcm).astype(np.int32) + 32768].tobytes()


def ulaw_to_pcm(data: bytes) -> bytes:
    """G.711 µ-law -> PCM16."""
    return from_array(_ULAW_DEC[np.frombuffer(data, dtype=np.uint8)])


def pcm_to_alaw(pcm: bytes) -> bytes:
    """PCM16 -> G.711 A-law, one byte per sample (RTP payload type 8)."""
    return _ALAW_ENC[to_array(pcm).astype(np.int32) + 32768].tobytes()


def alaw_to_pcm(data: bytes) -> bytes:
    """G.711 A-law -> PCM16."""
    return from_array(_ALAW_DEC[np.frombuffer(data, dtype=np.uint8)])


# --------------------------------------------------------------------------- resampling

RESAMPLE_QUALITY = "HQ"
"""libsoxr's recipe: 20-bit precision, passband to 91% of the lower Nyquist, about 21 ms of
streaming latency at these rates; telephone speech loses nothing audible and nothing aliases."""


class Resampler:
    """Streaming resampler for one stream of PCM16 (libsoxr through ``soxr.ResampleStream``).

    ``Resampler(src, dst).process(chunk)`` may be called with chunks of any size; the
    concatenated output equals :func:`resample` on the concatenated input once :meth:`flush`
    has been called. Output sample ``k`` sits at input time ``k * src / dst`` (libsoxr removes
    its filter delay); the price is lookahead, so :meth:`process` holds back the newest ~21 ms
    until more input or :meth:`flush` releases them.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        # float64 in and out: rounding stays ours (from_array), so no dither and chunking never changes a byte
        self._stream = soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float64", quality=RESAMPLE_QUALITY)
        self._n_in = 0  # input samples seen
        self._n_out = 0  # output samples returned
        self._leftover = b""  # odd byte between chunks

    def _out(self, samples: npt.NDArray[np.float64]) -> bytes:
        self._n_out += len(samples)
        return from_array(samples)

    def process(self, pcm: bytes) -> bytes:
        """Feed a chunk; returns the output that is complete so far."""
        data = self._leftover + pcm
        usable = len(data) - (len(data) % SAMPLE_WIDTH)
        self._leftover = data[usable:]
        if self.src_rate == self.dst_rate:
            return data[:usable]
        if usable == 0:
            return b""
        x = to_array(data[:usable]).astype(np.float64)
        self._n_in += len(x)
        return self._out(self._stream.resample_chunk(x))

    def flush(self) -> bytes:
        """Finish the stream: the total output is ``ceil(n_in * dst / src)`` samples (duration kept).

        libsoxr rounds the length its own way; zeros past the end (``ceil(src / dst)`` input samples,
        enough for one more output) let it reach the ceiling, and what lies beyond is cut.
        """
        if self.src_rate == self.dst_rate:
            return b""
        total = -(-self._n_in * self.dst_rate // self.src_rate)
        pad = np.zeros(-(-self.src_rate // self.dst_rate), dtype=np.float64)
        tail = self._stream.resample_chunk(pad, last=True)
        return self._out(tail[: max(total - self._n_out, 0)])


class ToRate:
    """One stream's audio brought to ``dst_rate`` from whatever rate each chunk comes at: a :class:`Resampler`
    per source rate, made once and kept, so filter history carries across chunks (a new soxr stream per
    chunk would restart the filter at every edge and cost its setup each time)."""

    def __init__(self, dst_rate: int) -> None:
        self.dst_rate = dst_rate
        self._by_rate: dict[int, Resampler] = {}

    def convert(self, pcm: bytes, rate: int) -> bytes:
        if rate == self.dst_rate:
            return pcm
        found = self._by_rate.get(rate)
        if found is None:
            found = self._by_rate[rate] = Resampler(rate, self.dst_rate)
        return found.process(pcm)


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole PCM16 buffer; output has ``ceil(n * dst / src)`` samples (duration kept)."""
    if src_rate == dst_rate:
        return pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH]
    r = Resampler(src_rate, dst_rate)
    return r.process(pcm) + r.flush()


# --------------------------------------------------------------------------- wire formats


def encode_wire(pcm: bytes, rate: int, fmt: WireFormat) -> bytes:
    """PCM16 at ``rate`` -> bytes in a Realtime audio format (pcm: 24 kHz, G.711: 8 kHz)."""
    if fmt in ("audio/pcm", "pcm16"):
        return resample(pcm, rate, 24000)
    pcm8 = resample(pcm, rate, 8000)
    if fmt in ("audio/pcmu", "g711_ulaw"):
        return pcm_to_ulaw(pcm8)
    if fmt in ("audio/pcma", "g711_alaw"):
        return pcm_to_alaw(pcm8)
    raise ValueError(f"unknown audio format {fmt!r}")


def decode_wire(data: bytes, fmt: WireFormat) -> tuple[bytes, int]:
    """Bytes in a Realtime audio format -> (PCM16, rate)."""
    if fmt in ("audio/pcm", "pcm16"):
        return data[: len(data) - len(data) % SAMPLE_WIDTH], 24000
    if fmt in ("audio/pcmu", "g711_ulaw"):
        return ulaw_to_pcm(data), 8000
    if fmt in ("audio/pcma", "g711_alaw"):
        return alaw_to_pcm(data), 8000
    raise ValueError(f"unknown audio format {fmt!r}")


# --------------------------------------------------------------------------- base64


def b64encode(data: bytes) -> str:
    """Standard base64 text, as the Realtime API carries audio in JSON events."""
    return base64.b64encode(data).decode("ascii")


B64_PIECE = 1 << 18
"""Base64 characters decoded per call (a multiple of 4): one call over a long append would hold the GIL
for tens of milliseconds, and with it the server's event loop while a worker thread decodes."""


def b64decode(text: str) -> bytes:
    """Strict base64 decode (raises ``binascii.Error`` on garbage, as a validator wants).

    Long input is decoded a piece at a time, accepting and refusing exactly what one call would:
    padding is only allowed at the very end.
    """
    tail = text[-8:] if isinstance(text, str) else ""
    padding = len(tail) - len(tail.rstrip("="))
    body = len(text) - padding  # the last piece keeps all the padding
    if body <= B64_PIECE or padding == len(tail):
        return base64.b64decode(text, validate=True)
    pieces = []
    for start in range(0, body, B64_PIECE):
        last = start + B64_PIECE >= body
        piece = text[start:] if last else text[start:start + B64_PIECE]
        if not last and piece.endswith("="):
            raise binascii.Error("Non-base64 digit found")  # padding before the end
        pieces.append(base64.b64decode(piece, validate=True))
    return b"".join(pieces)


pcm_to_b64 = b64encode
b64_to_pcm = b64decode


# --------------------------------------------------------------------------- files


def _wav_params(data: bytes | Path) -> tuple[int, int, int, bytes] | None:
    """(channels, width, rate, frames) of a PCM WAV, or None if ``wave`` cannot read it."""
    try:
        src: io.BytesIO | str = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        with wave.open(src, "rb") as w:
            return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return None


def _to_mono16(raw: bytes, channels: int, width: int) -> bytes:
    if width == 1:  # WAV 8-bit is unsigned
        arr = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    elif width == 2:
        arr = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        arr = (np.where(v & 0x800000, v - (1 << 24), v) / 256.0).astype(np.float64)
    elif width == 4:
        arr = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
    else:
        raise ValueError(f"unsupported sample width {width}")
    if channels > 1:
        arr = arr[: len(arr) - len(arr) % channels].reshape(-1, channels).mean(axis=1)
    return from_array(arr)


def load_audio(path: str | Path, rate: int = 8000) -> bytes:
    """Load any audio file as mono PCM16 at ``rate``.

    PCM WAV files are read with the stdlib ``wave`` module (downmixed / resampled here),
    so fixtures and recordings never need ffmpeg. Anything else (mp3, ogg, flac, ...)
    goes through pydub, which needs ffmpeg on PATH.
    """
    p = Path(path)
    st = p.stat()
    return _load_audio(str(p.resolve()), st.st_mtime_ns, st.st_size, rate)


@functools.lru_cache(maxsize=64)
def _load_audio(path: str, mtime_ns: int, size: int, rate: int) -> bytes:
    """Decoded audio, cached while the file is unchanged: virtual callers say the same fixtures
    thousands of times in a load test, and decoding was a tenth of the mock's CPU there."""
    p = Path(path)
    params = _wav_params(p)
    if params is not None:
        channels, width, src_rate, raw = params
        pcm = raw if (channels == 1 and width == 2) else _to_mono16(raw, channels, width)
        return resample(pcm, src_rate, rate)
    from pydub import AudioSegment  # imported lazily: only non-WAV input needs it

    seg = AudioSegment.from_file(str(p)).set_channels(1).set_sample_width(SAMPLE_WIDTH)
    return resample(seg.raw_data, seg.frame_rate, rate)


def write_wav(path: str | Path, pcm: bytes, rate: int) -> Path:
    """Write mono PCM16 as a WAV file (parents created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH])
    return p


# --------------------------------------------------------------------------- generators


def _dbfs_to_amplitude(dbfs: float) -> float:
    """RMS amplitude in int16 units for a level in dBFS (0 dBFS = RMS of 32768, the convention of rms_dbfs)."""
    return 32768.0 * 10 ** (dbfs / 20.0)


def silence(ms: float, rate: int = 8000) -> bytes:
    """Digital silence."""
    return b"\x00\x00" * samples_for_ms(ms, rate)


def white_noise(ms: float, rate: int = 8000, *, dbfs: float = -40.0, seed: int = 0) -> bytes:
    """Gaussian white noise at an RMS level of ``dbfs``; same seed, same bytes."""
    rng = np.random.default_rng(seed)
    n = samples_for_ms(ms, rate)
    return from_array(rng.standard_normal(n) * _dbfs_to_amplitude(dbfs))


def tone(ms: float, rate: int = 8000, *, freq: float = 440.0, dbfs: float = -20.0) -> bytes:
    """A sine tone with RMS ``dbfs`` (handy for correlation and codec tests)."""
    n = samples_for_ms(ms, rate)
    t = np.arange(n) / rate
    return from_array(np.sin(2 * np.pi * freq * t) * _dbfs_to_amplitude(dbfs) * math.sqrt(2))


def line_noise(ms: float, rate: int = 8000, *, dbfs: float = -45.0, hum_hz: float = 60.0, seed: int = 0) -> bytes:
    """Telephone line noise: band-limited hiss plus mains hum and its harmonics; seeded.

    The hiss is white noise through a 300-3400 Hz FFT mask (the telephone band), so it
    sounds like an open line rather than digital silence; overall RMS is ``dbfs``.
    """
    rng = np.random.default_rng(seed)
    n = samples_for_ms(ms, rate)
    if n == 0:
        return b""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[(f < 300) | (f > 3400)] *= 0.1
    hiss = np.fft.irfft(spec, n)
    t = np.arange(n) / rate
    phase = rng.uniform(0, 2 * np.pi)
    hum = sum(np.sin(2 * np.pi * hum_hz * h * t + phase * h) / h for h in (1, 2, 3))
    hiss /= max(float(np.sqrt(np.mean(hiss**2))), 1e-9)
    hum_arr = np.asarray(hum, dtype=np.float64)
    hum_arr /= max(float(np.sqrt(np.mean(hum_arr**2))), 1e-9)
    sig = hiss + 0.5 * hum_arr
    sig /= float(np.sqrt(np.mean(sig**2)))
    return from_array(sig * _dbfs_to_amplitude(dbfs))


def scale_to_dbfs(pcm: bytes, dbfs: float, *, peak_dbfs: float = -1.0) -> bytes:
    """Scale to an RMS of ``dbfs`` without letting peaks exceed ``peak_dbfs``."""
    arr = to_array(pcm).astype(np.float64)
    if arr.size == 0:
        return b""
    rms = float(np.sqrt(np.mean(arr**2)))
    peak = float(np.max(np.abs(arr)))
    if rms == 0.0:
        return pcm
    gain = min(_dbfs_to_amplitude(dbfs) / rms, _dbfs_to_amplitude(peak_dbfs) / peak)
    return from_array(arr * gain)


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two PCM16 signals (the shorter is zero-extended), clipping at full scale."""
    x, y = to_array(a).astype(np.int32), to_array(b).astype(np.int32)
    n = max(len(x), len(y))
    out = np.zeros(n, dtype=np.int32)
    out[: len(x)] += x
    out[: len(y)] += y
    return from_array(np.clip(out, -32768, 32767))
