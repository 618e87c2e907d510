"""Stage timings of one model run (tokenization, ONNX Runtime), returned by the run with its rows: read by metrics,
trace spans and the batcher's cost model. A leaf module (standard library only), so the runtime can fill it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class BatchStages:
    """Timings of one model run over a batch, taken in the executor thread (times are `time.monotonic()`)."""

    started: float = field(default_factory=time.monotonic)
    """When the batch left the queue and started running."""
    texts: int = 0
    tokenize_start: float = 0.0
    tokenize_end: float = 0.0
    inference_start: float = 0.0
    inference_end: float = 0.0
    inference_s: float = 0.0
    """Time in ONNX Runtime, summed over the length-grouped runs of the batch."""
    padded_tokens: int = 0
    """Tokens computed on, padding included, summed over the runs of the batch."""

    @property
    def tokenize_s(self) -> float:
        return self.tokenize_end - self.tokenize_start


@dataclass(frozen=True)
class MeasuredRun:
    """One run timed by a model's warm-up: `rows` texts padded to `width` tokens took `seconds`."""

    rows: int
    width: int
    seconds: float


#: Width bands of the per-width correction factors and of the estimate-error metric: upper bounds in tokens.
WIDTH_BANDS = (8, 16, 32, 64, 128, 256, 512, 1024)


def width_band(width: int) -> int:
    """The band of a run `width` tokens wide: the first of `WIDTH_BANDS` at least as wide (0 past the last)."""
    for band in WIDTH_BANDS:
        if width <= band:
            return band
    return 0
