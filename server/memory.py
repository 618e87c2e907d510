"""The server's memory: one ONNX Runtime CPU arena for every model session, shrunk once a burst of wide runs is
over, and glibc's mmap threshold.

The server registers the shared arena at start (`--shared-arena`, on by default); `SessionConfig.session_options`
then lets every session with the arena enabled use it. ONNX Runtime's environment, and so this arena, is
process-wide. With one arena per session the server would hold the sum of every model's peak; sessions created with
`session.use_env_allocators` take their memory from one arena registered with ONNX Runtime's environment, where a
block freed by one model is reused by the next: measured 517–519 vs 624–647 MB for the two benchmark models after
20 batches of 32 texts of 120 tokens each, in one process (issue 15).

An arena keeps its high-water mark unless asked to shrink: a burst of wide runs grows it by hundreds of MB.
`ArenaShrinkAfterBursts` gives that back once the model has been idle for a moment after such runs (see
`SessionConfig.arena_shrink_width`).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable

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


#: How long a model must have had no wide run before the arena those runs grew is shrunk: longer than the gap between
#: the requests of a caller that sends long texts back to back, so that a burst keeps its memory while it lasts and
#: gives it back once it is over.
ARENA_SHRINK_IDLE_S = 0.5


class ArenaShrinkAfterBursts:
    """Shrinks a session's memory arena once a burst of wide runs is over, not after each of them.

    ONNX Runtime returns the arena's free memory to the system at the end of a run made with its shrinkage run option.
    Asking for it on every wide run made the next wide run fault hundreds of MB in again: bulk callers lost 15-25 % of
    their throughput (BENCHMARKS.md). The runtime reports each wide run here (`wide_run_started`, `wide_run_ended`);
    once no wide run has been in progress for `idle_s`, `shrink` is called once, on a timer thread (a small run with
    the shrinkage option). Narrow runs do not count: they need none of that memory, and steady short traffic must not
    keep it for good. Thread-safe.
    """

    def __init__(self, shrink: Callable[[], None], idle_s: float = ARENA_SHRINK_IDLE_S):
        self._shrink = shrink
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._wide_runs = 0
        self._last_end = 0.0
        self._timer: threading.Timer | None = None

    def wide_run_started(self) -> None:
        with self._lock:
            self._wide_runs += 1

    def wide_run_ended(self) -> None:
        """A wide run ended: the shrink is due once no other has run for `idle_s`."""
        with self._lock:
            self._wide_runs -= 1
            self._last_end = time.monotonic()
            if self._timer is None:
                self._arm(self._idle_s)

    def _arm(self, seconds: float) -> None:
        # A thread started from a model thread inherits its lowered priority (thread_priority.py).
        self._timer = threading.Timer(seconds, self._shrink_if_idle)
        self._timer.daemon = True  # never holds up the interpreter's exit
        self._timer.start()

    def _shrink_if_idle(self) -> None:
        with self._lock:
            if self._wide_runs:  # a wide run is in progress: its end arms the timer again
                self._timer = None
                return
            idle_for = time.monotonic() - self._last_end
            if idle_for < self._idle_s:  # another wide run ended meanwhile: look again once the burst may be over
                self._arm(self._idle_s - idle_for)
                return
            self._timer = None
        try:
            self._shrink()
        except Exception:  # the memory stays with the arena; the next wide run asks again
            log.warning("shrinking the memory arena failed", exc_info=True)
