"""The server's memory: one ONNX Runtime CPU arena shared by every model session, and glibc's mmap threshold.

One ONNX Runtime CPU memory arena shared by every model session of the server, instead of one arena per session.

The server registers it at start (`--shared-arena`, on by default); `SessionConfig.session_options` then lets every
session with the arena enabled use it. ONNX Runtime's environment, and so this arena, is process-wide.

Each arena keeps its high-water mark for the life of its session (shrinking it was measured and not adopted, see
BENCHMARKS.md), so with one arena per session the server holds the sum of every model's peak. Sessions created with
`session.use_env_allocators` take their memory from one arena registered with ONNX Runtime's environment, where a
block freed by one model is reused by the next: measured 517–519 vs 624–647 MB for the two benchmark models after
20 batches of 32 texts of 120 tokens each, in one process (issue 15).
"""

from __future__ import annotations

import ctypes
import logging
import threading

import onnxruntime as ort

log = logging.getLogger(__name__)

_registered = False
_lock = threading.Lock()

#: glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def register_shared_cpu_arena() -> None:
    """Register the process-wide CPU arena (once; later calls do nothing). ONNX Runtime's defaults: no size limit,
    chunks grown by powers of two."""
    global _registered
    with _lock:
        if _registered:
            return
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 0, -1, -1))
        _registered = True


def shared_cpu_arena_registered() -> bool:
    """True once `register_shared_cpu_arena` ran: sessions created from then on take their memory from it."""
    return _registered


def set_malloc_mmap_threshold(threshold_bytes: int) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes` and its trim threshold at twice that
    (`ServerSettings.malloc_mmap_threshold_bytes`); True if set.

    Allocations at least this large are then mapped from the system and unmapped when freed, and free memory at the
    top of the heap beyond twice it goes back to the system. glibc's adaptive default instead raises the mmap threshold
    to the size of the largest block freed so far (up to 32 MiB): after a model loads, later blocks of up to its
    file's size come from the heap, where they stay resident once freed. Twice the threshold for trimming is glibc's
    own rule: the heap keeps what the next large request will need instead of faulting it in again. Without glibc (musl,
    macOS) it does nothing and returns False."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it: musl has a mallopt that ignores everything
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if mallopt(_M_MMAP_THRESHOLD, threshold_bytes) != 1 or mallopt(_M_TRIM_THRESHOLD, 2 * threshold_bytes) != 1:
        log.warning("glibc refused the mmap threshold %d bytes; its adaptive threshold stays", threshold_bytes)
        return False
    return True
