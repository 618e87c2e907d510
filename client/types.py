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
    truncated: bool = False
    """True when only the beginning of the text was classified: it is longer than the model reads (`max_length`
    tokens of `ModelInfo`) or than the server's `max_text_chars`."""
    error: str = ""
    """Why the text was not classified (e.g. it has no visible character); `labels` is then empty. The other texts
    of the call are classified as usual, so check this (or `ok`) before reading `top`."""

    @property
    def ok(self) -> bool:
        """True when the text was classified (it has labels)."""
        return not self.error

    @property
    def top(self) -> LabelScore:
        """The highest-scoring label; `ValueError` with the reason if the text was not classified."""
        if self.error:
            raise ValueError(f"the text was not classified: {self.error}")
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
