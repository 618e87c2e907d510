"""Typed results of the client, free of protobuf types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One label with its probability for one text."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The result for one text: its labels, highest score first, and the model version that answered."""

    labels: tuple[LabelScore, ...]
    model_version: str

    @property
    def top(self) -> LabelScore:
        """The highest-scoring label."""
        return self.labels[0]

    def as_dict(self) -> dict[str, float]:
        """`{label: score}` in score order."""
        return {s.label: s.score for s in self.labels}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the server reports about one model (ListModels, GetModel)."""

    name: str
    version: str
    source_uri: str
    labels: tuple[str, ...]
    max_length: int
    state: str
    """One of `loading`, `serving`, `failed`."""
    last_error: str
    multi_label: bool
    loaded_at: str
    note: str = ""
    """How the serving version was obtained when that matters (e.g. from the cache while the registry was down)."""
    failed_updates: int = 0
    """New versions that failed to load since the server started (the previous version kept serving)."""
