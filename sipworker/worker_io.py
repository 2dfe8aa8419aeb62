"""Low-level plumbing of a SIP worker process that holds no pj objects of its own.

* :func:`name_os_thread`: OS thread names for top -H, perf and /proc;
* ByteVector <-> bytes: reading and writing SWIG ``std::vector<unsigned char>`` frames without
  SWIG's per-byte conversions (pjsua2 wheel item 6), checked once at start-up (:func:`_pick_io`);
* :class:`EventWriter`: the single writer thread of the IPC event stream;
* the clock thread's Python thread state (:func:`_hold_thread_state`), kept between frame callbacks.

Moved out of :mod:`sipworker.worker`, which re-exports these names.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from .ipc import Event


def name_os_thread() -> None:
    """Give the OS thread the Python thread's name, so top -H, perf and /proc tell them apart."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(15, threading.current_thread().name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


# ---- ByteVector <-> bytes ---------------------------------------------------------------


_VEC_PTRS = ctypes.POINTER(ctypes.c_void_p * 2)  # libstdc++ vector: begin, end, capacity end
_FRAME_AUDIO = pj.PJMEDIA_FRAME_TYPE_AUDIO
_memmove = ctypes.memmove


def _slow_bytes(vec: Any) -> bytes:
    return bytes(vec)


def _fast_bytes(vec: Any) -> bytes:
    """Read a SWIG ``std::vector<unsigned char>`` directly: ~2 µs instead of ~170 µs (pjsua2 wheel item 6).

    Relies on libstdc++'s vector layout (begin, end pointers first), which :func:`_pick_io`
    verifies against the slow path once at start-up before trusting it.
    """
    start, finish = ctypes.cast(int(vec.this), _VEC_PTRS).contents
    if not start or not finish:
        return b""
    return ctypes.string_at(start, finish - start)


def _vector_data(vec: Any) -> int:
    """Address of a ByteVector's storage; stable for as long as the vector is not resized."""
    return int(ctypes.cast(int(vec.this), _VEC_PTRS).contents[0] or 0)


def _pick_io() -> tuple[Callable[[Any], bytes], bool]:
    """(vector reader, whether ports may write into their own vectors in place).

    Both rely on the libstdc++ layout, checked here against SWIG's own conversions; if anything
    disagrees the slow paths are used.
    """
    probe = bytes(range(256)) * 12 + bytes(range(64))
    reader: Callable[[Any], bytes] = _slow_bytes
    try:
        if _fast_bytes(pj.ByteVector(probe)) == probe and _fast_bytes(pj.ByteVector(b"")) == b"":
            reader = _fast_bytes
    except Exception:
        pass
    in_place = False
    try:
        vec = pj.ByteVector(bytes(len(probe)))
        ptr = _vector_data(vec)
        ctypes.memmove(ptr, probe, len(probe))
        frame = pj.MediaFrame()
        frame.buf = vec
        in_place = bool(ptr) and bytes(vec) == probe and bytes(frame.buf) == probe and _vector_data(vec) == ptr
    except Exception:
        pass
    return reader, in_place


# ---- IPC output --------------------------------------------------------------------------


class EventWriter:
    """Single writer thread for the event stream; ``emit`` is safe from any thread."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "wb", buffering=0)
        self._q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._t = threading.Thread(target=self._run, name="ipc-out", daemon=True)
        self._t.start()

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self._q.put(Event(kind, data).to_line())

    def _run(self) -> None:
        """Write whatever is queued in one syscall per wake-up: a burst of replies (the mock
        streams reply audio as many small play_pcm commands) costs one write, not one each."""
        name_os_thread()
        q = self._q
        while True:
            batch = [q.get()]
            while not q.empty():
                batch.append(q.get_nowait())
            last = None in batch
            data = b"".join(line for line in batch if line is not None)
            try:
                view = memoryview(data)
                while view:
                    view = view[self._out.write(view) or 0 :]
            except (BrokenPipeError, OSError):
                return  # parent gone; the stdin reader will see EOF and shut us down
            if last:
                return

    def close(self, timeout: float = 1.0) -> None:
        self._q.put(None)
        self._t.join(timeout)


# ---- the clock thread's Python thread state ---------------------------------------------


class _ThreadStateHold(threading.local):
    held = False


_HOLD = _ThreadStateHold()
_HOLD_ENABLED = os.environ.get("RTSIP_HOLD_TSTATE", "1") == "1"


def _hold_thread_state() -> None:
    """Keep this (pjmedia clock) thread's Python thread state alive between frame callbacks.

    SWIG's director wraps every callback in PyGILState_Ensure/Release.  For a thread Python did
    not create, a Release that drops the count to zero destroys the thread state, so each frame
    callback built and freed a fresh one (allocations and a 16 kB frame stack): about a quarter
    of the clock thread's Python cost.  One extra Ensure, taken here with the GIL held, keeps the
    count above zero; the director's Release then only releases the GIL.  ``RTSIP_HOLD_TSTATE=0``
    in the worker's environment turns this off (a switch for diagnosis, not a tuning knob).
    """
    if _HOLD_ENABLED:
        ctypes.pythonapi.PyGILState_Ensure()
        _HOLD.held = True


def _drop_thread_state() -> None:
    """Undo :func:`_hold_thread_state` (GIL held, same thread): the callback's own Release then
    frees the thread state, so a clock thread that pjmedia stops (sound device auto-close after
    the last call) leaves nothing behind."""
    ctypes.pythonapi.PyGILState_Release(0)  # PyGILState_LOCKED: we hold the GIL and keep it
    _HOLD.held = False
