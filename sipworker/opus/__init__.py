"""Opus for the SIP workers: load ``_rtopus.so`` (built by ``build.sh`` from ``rtopus.c``) and register it
with the pjsua2 wheel's own codec manager, so pjsip negotiates ``opus/48000/2`` and carries Opus audio.

Rules:
  1. Nothing happens on import; :func:`unavailable_reason` says, without loading the wheel, why Opus cannot
     be offered (no built library, another pjproject than the one ``rtopus.c`` declares the structs of).
  2. :func:`register` runs on the thread that owns the endpoint, after ``libInit`` and before ``libStart``
     (the codec list is read when accounts and calls make SDP), at most once per process, like the endpoint.
  3. Registering makes the codec known with priority 128; the caller still chooses with
     ``ep.codecSetPriority(CODEC_ID, …)`` like for every other codec.
"""

from __future__ import annotations

import ctypes
import importlib.util
from dataclasses import dataclass
from pathlib import Path

CODEC_ID = "opus/48000/2"
PJPROJECT = "2.15.1"  # the pjproject whose structs rtopus.c declares (its _Static_asserts)
_RATES = (8000, 12000, 16000, 24000, 48000)

_loaded: list[ctypes.CDLL] = []  # keeps the factory's code mapped for the life of the process


class OpusUnavailable(RuntimeError):
    """Opus cannot be registered in this process (the reason is the message)."""


@dataclass(frozen=True)
class OpusSettings:
    """What the factory offers.  ``rate`` below 48000 adds ``maxplaybackrate``/``sprop-maxcapturerate``
    to the fmtp, which makes pjmedia run the stream (and libopus) at that rate."""

    payload_type: int = 119
    rate: int = 48000
    bitrate: int = 32000
    complexity: int = 5
    fec: bool = True

    def problems(self) -> list[str]:
        out = []
        if not 96 <= self.payload_type <= 127:
            out.append(f"payload_type {self.payload_type} is not a dynamic RTP payload type (96-127)")
        if self.rate not in _RATES:
            out.append(f"rate {self.rate} is not an Opus rate {_RATES}")
        if not 6000 <= self.bitrate <= 510000:
            out.append(f"bitrate {self.bitrate} is outside Opus's 6000-510000 bit/s")
        if not 0 <= self.complexity <= 10:
            out.append(f"complexity {self.complexity} is outside 0-10")
        return out


def library_path() -> Path:
    return Path(__file__).with_name("_rtopus.so")


def _wheel_dir() -> Path | None:
    spec = importlib.util.find_spec("pjsua2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def unavailable_reason(library: Path | None = None) -> str | None:
    """Why :func:`register` would refuse, or None when it can run (rule 1). ``library``: another build of
    ``_rtopus.so`` than the one beside this file."""
    library = library or library_path()
    if not library.exists():
        return f"{library} is not built (run sipworker/opus/build.sh; it needs libopus-dev and gcc)"
    wheel = _wheel_dir()
    if wheel is None:
        return "pjsua2 is not installed"
    ref_file = wheel / "_pjproject_ref"
    ref = ref_file.read_text().strip() if ref_file.exists() else "unknown"
    if ref != PJPROJECT:
        return f"pjsua2 is built from pjproject {ref}; rtopus.c declares the structs of {PJPROJECT}"
    return None


def libopus_version() -> str:
    lib = ctypes.CDLL(str(library_path()))
    lib.rtopus_libopus_version.restype = ctypes.c_char_p
    return str(lib.rtopus_libopus_version().decode())


def register(settings: OpusSettings | None = None, library: Path | None = None) -> str:
    """Register the Opus factory with the running endpoint's codec manager (rule 2); returns the codec id."""
    settings = settings or OpusSettings()
    library = library or library_path()
    if _loaded:
        raise OpusUnavailable("the Opus factory is already registered in this process")
    reason = unavailable_reason(library)
    if reason is None and settings.problems():
        reason = "; ".join(settings.problems())
    if reason is not None:
        raise OpusUnavailable(reason)
    import pjsua2._pjsua2 as ext  # loaded by the worker already; here only for its file name

    lib = ctypes.CDLL(str(library))
    lib.rtopus_configure.argtypes = [ctypes.c_uint] * 4 + [ctypes.c_int]
    lib.rtopus_factory.restype = ctypes.c_void_p
    status = lib.rtopus_configure(settings.payload_type, settings.rate, settings.bitrate, settings.complexity,
                                  int(settings.fec))
    if status != 0:
        raise OpusUnavailable(f"rtopus_configure refused {settings} (status {status})")
    wheel = ctypes.CDLL(ext.__file__)  # the already-loaded wheel: same handle, its exported C API
    wheel.pjsua_get_pjmedia_endpt.restype = ctypes.c_void_p
    wheel.pjmedia_endpt_get_codec_mgr.restype = ctypes.c_void_p
    wheel.pjmedia_endpt_get_codec_mgr.argtypes = [ctypes.c_void_p]
    wheel.pjmedia_codec_mgr_register_factory.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    endpt = wheel.pjsua_get_pjmedia_endpt()
    if not endpt:
        raise OpusUnavailable("no pjmedia endpoint yet: call register() after Endpoint.libInit()")
    status = wheel.pjmedia_codec_mgr_register_factory(wheel.pjmedia_endpt_get_codec_mgr(endpt),
                                                      lib.rtopus_factory())
    if status != 0:
        raise OpusUnavailable(f"pjmedia_codec_mgr_register_factory failed (status {status})")
    _loaded.append(lib)
    return CODEC_ID
