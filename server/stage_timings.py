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
