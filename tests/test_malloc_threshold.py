"""Issue 25: blocks of at least `--malloc-mmap-threshold-bytes` go back to the system when freed.

glibc raises its mmap threshold after the first large block is freed and then serves large blocks from its heap,
where they stay resident once freed; `set_malloc_mmap_threshold` fixes the threshold. Each case runs in a process of
its own (the threshold is process-wide) and counts glibc's mapped blocks (`mallinfo2().hblks`) around a 1 MB
allocation made after an 8 MB block was freed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

MAPPED_BLOCKS_OF_A_1MB_ALLOCATION = """
import ctypes, sys
from ortserve.server.memory import set_malloc_mmap_threshold

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if int(sys.argv[1]):
    assert set_malloc_mmap_threshold(int(sys.argv[1]))
freed = bytearray(8 << 20)
del freed  # glibc's adaptive threshold rises to 8 MB here
before = libc.mallinfo2().hblks
block = bytearray(1 << 20)
print(libc.mallinfo2().hblks - before)
"""


def _mapped_blocks(threshold_bytes: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", MAPPED_BLOCKS_OF_A_1MB_ALLOCATION, str(threshold_bytes)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_large_block_is_mapped_from_the_system_with_the_threshold_fixed() -> None:
    assert _mapped_blocks(0) == 0  # glibc's own threshold: served from the heap, kept there when freed
    assert _mapped_blocks(128 * 1024) == 1  # mapped, and unmapped when freed
    assert _mapped_blocks(4 * 1024 * 1024) == 0  # the server's default: 1 MB stays a heap block
