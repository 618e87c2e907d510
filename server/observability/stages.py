"""Stage timings of a batch run: how long tokenization and ONNX Runtime took, for metrics and trace spans.

`BatchStages.begin()` is called at the start of a batch run (in the executor thread); `TimedOnnxClassifier` adds its
tokenization and inference times to the stages of the thread's current batch. Outside a batch it times nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding

from ..batcher import BatchOutput, Row
from ..runtime import OnnxClassifier, TokenizedBatch
from .call_context import BatchStages

_local = threading.local()


def begin_batch(texts: int) -> BatchStages:
    """Start timing the batch this thread is about to run (it replaces the thread's previous batch)."""
    stages = BatchStages(texts=texts)
    _local.stages = stages
    return stages


@dataclass(frozen=True)
class TimedBatchOutput(BatchOutput[Row]):
    """A batch's rows and version, plus how long its stages took (read by the batcher's metrics hook)."""

    stages: BatchStages | None = None


class TimedOnnxClassifier(OnnxClassifier):
    """`OnnxClassifier` that reports tokenization and inference times to the current batch of its thread."""

    def _encode(self, texts: Sequence[str]) -> list[Encoding]:
        stages: BatchStages | None = getattr(_local, "stages", None)
        if stages is None:
            return super()._encode(texts)
        stages.tokenize_start = time.monotonic()
        try:
            return super()._encode(texts)
        finally:
            stages.tokenize_end = time.monotonic()

    def run(self, batch: TokenizedBatch) -> np.ndarray:
        stages: BatchStages | None = getattr(_local, "stages", None)
        if stages is None:
            return super().run(batch)
        start = time.monotonic()
        try:
            return super().run(batch)
        finally:
            end = time.monotonic()
            if not stages.inference_start:
                stages.inference_start = start
            stages.inference_end = end
            stages.inference_s += end - start
            stages.padded_tokens += batch.padded_tokens
