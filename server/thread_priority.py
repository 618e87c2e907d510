"""Model threads below the event loop: the threads that run models (and the ONNX Runtime threads they start, which
inherit their creator's priority) get a lower scheduling priority, so that the loop, which takes, answers and refuses
every call, keeps its share of the CPU under overload (see `ServerSettings.model_thread_nice`)."""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

#: Linux schedules threads, not processes: there `setpriority(PRIO_PROCESS, 0, ...)` sets the calling thread's nice
#: value. Elsewhere it would lower the whole process, the event loop with it, so nothing is changed.
PER_THREAD_PRIORITY = sys.platform.startswith("linux")


def model_thread_pool(max_workers: int, name: str, increment: int) -> ThreadPoolExecutor:
    """A thread pool whose threads run `increment` nice steps below the thread that makes the pool (the loop's).

    The value is fixed when the pool is made: a new thread inherits its creator's priority, and a pool may start a
    thread from one of its own (or another pool's) lowered threads, which must not lower it twice."""
    nice = None
    if increment > 0 and PER_THREAD_PRIORITY:
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
    return thread_pool_at_nice(max_workers, name, nice)


def thread_pool_at_nice(max_workers: int, name: str, nice: int | None) -> ThreadPoolExecutor:
    """A thread pool whose threads run at nice value `nice` or lower in priority (a thread that starts lower, from a
    lowered creator, stays where it is: priorities are only ever lowered). None, or a platform without per-thread
    priorities (`PER_THREAD_PRIORITY`), leaves the threads at their creator's priority."""
    return ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix=name,
        initializer=_lower_this_thread,
        initargs=(nice if PER_THREAD_PRIORITY else None,),
    )


def _lower_this_thread(nice: int | None) -> None:
    if nice is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError as exc:  # a sandbox that forbids it: leave the thread as it is
        log.debug("could not set a thread's priority to nice %d: %s", nice, exc)
