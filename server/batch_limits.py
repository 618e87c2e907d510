"""The bounds of one model's batcher: how runs are formed and what its queue admits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """Bounds of the batcher of one model. Each field means the `ServerSettings` field of the same name (documented
    there, and in `ortserve serve --help`); a model's spec may override them one by one (see `ModelSpec`)."""

    max_batch_size: int = 32
    max_batch_tokens: int = 8192
    max_batch_delay_ms: float = 0.0
    max_queue_texts: int = 2048
    max_queue_tokens: int = 262_144
    max_calls_in_flight: int = 512
    concurrent_runs: int = 1
    max_run_ms: float = 100.0

    def __post_init__(self) -> None:
        if self.concurrent_runs < 1:
            raise ValueError(f"concurrent_runs must be at least 1, got {self.concurrent_runs}")
