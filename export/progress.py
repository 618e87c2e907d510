"""Timing of the export's long steps: each is logged with its duration, and the durations go into the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("ortserve.export.pipeline")


class StepTimer:
    """Logs each long step with its duration and keeps the durations (`seconds`) for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        log.info("%s…", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = round(elapsed, 3)
        log.info("%s done in %.1fs", name, elapsed)
