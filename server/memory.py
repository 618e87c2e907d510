"""One ONNX Runtime CPU memory arena shared by every model session of the server, instead of one arena per session.

The server registers it at start (`--shared-arena`, on by default); `SessionConfig.session_options` then lets every
session with the arena enabled use it. ONNX Runtime's environment, and so this arena, is process-wide.

Each arena keeps its high-water mark for the life of its session (shrinking it was measured and not adopted, see
BENCHMARKS.md), so with one arena per session the server holds the sum of every model's peak. Sessions created with
`session.use_env_allocators` take their memory from one arena registered with ONNX Runtime's environment, where a
block freed by one model is reused by the next: measured 517–519 vs 624–647 MB for the two benchmark models after
20 batches of 32 texts of 120 tokens each, in one process (issue 15).
"""

from __future__ import annotations

import threading

import onnxruntime as ort

_registered = False
_lock = threading.Lock()


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
