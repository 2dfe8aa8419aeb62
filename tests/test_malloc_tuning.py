"""A serving mock's glibc malloc gives big blocks back: ``tune_malloc`` pins the mmap threshold glibc
would otherwise raise after the first big block freed (then every later body up to that size came from the
arenas, and the holes it left stayed in the mock's RSS: the fuzz campaign's steps of 20 MB)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# In a process of its own: mallopt settings are the whole process's. Prints how much of a 1 MiB block,
# allocated after a 4 MiB block was freed, is glibc's own mapping (mallinfo2's hblkhd grows by it).
PROBE = """
import ctypes, sys
from mock_api.running import tune_malloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    tune_malloc()
big = bytearray(4 << 20)  # mapped (past the default 128 KiB threshold); freed, glibc raises it to 4 MiB
del big
before = libc.mallinfo2().hblkhd
block = bytearray(1 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


def _glibc_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


def mapped_after_big_block(tuned: bool) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}  # glibc defaults
    done = subprocess.run([sys.executable, "-c", PROBE, "tuned" if tuned else "default"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="glibc (2.33 or later: mallinfo2) only")
def test_big_blocks_stay_mapped_after_a_bigger_one_was_freed() -> None:
    assert mapped_after_big_block(tuned=False) == 0  # glibc's moving threshold: from the arena, kept there
    assert mapped_after_big_block(tuned=True) >= 1 << 20  # pinned: its own mapping, unmapped when freed

