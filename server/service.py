"""The transport-neutral data plane: validates requests and answers them from the model table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidInputError, ModelNotReadyError
from .model_table import ModelTable
from .types import ClassifyResult, ModelDescription, ModelState


@dataclass(frozen=True)
class RequestLimits:
    """What one Classify call may carry."""

    max_texts_per_request: int = 256
    """Most texts in one call."""
    max_text_chars: int = 10_000
    """Longest text, in characters."""


class InferenceService:
    """Classify, ListModels and GetModel, independent of gRPC."""

    def __init__(self, table: ModelTable, limits: RequestLimits | None = None):
        self.table = table
        self.limits = limits or RequestLimits()

    async def classify(
        self, model: str, texts: Sequence[str], top_k: int = 0, deadline: float | None = None
    ) -> ClassifyResult:
        """Classify `texts` with `model`; `deadline` is an absolute `time.monotonic()` value or None."""
        self._validate(texts, top_k)
        served = self.table.get(model)
        if served.current is None:
            detail = f": {served.last_error}" if served.last_error else ""
            raise ModelNotReadyError(f"model {model!r} is not ready ({served.state.value}){detail}")
        output = await served.batcher.submit(texts, deadline)
        results = [list(ranked[:top_k]) if top_k else list(ranked) for ranked in output.rows]
        return ClassifyResult(model, output.version, results)

    def list_models(self) -> list[ModelDescription]:
        return [model.describe() for model in self.table]

    def get_model(self, name: str) -> ModelDescription:
        return self.table.get(name).describe()

    def all_serving(self) -> bool:
        return all(model.state is ModelState.SERVING for model in self.table)

    def _validate(self, texts: Sequence[str], top_k: int) -> None:
        limits = self.limits
        if not texts:
            raise InvalidInputError("texts is empty: send at least one text to classify")
        if len(texts) > limits.max_texts_per_request:
            raise InvalidInputError(
                f"{len(texts)} texts in one request exceeds max_texts_per_request={limits.max_texts_per_request}; "
                "split the texts over several requests"
            )
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidInputError(f"texts[{index}] is empty or only whitespace")
            if len(text) > limits.max_text_chars:
                raise InvalidInputError(
                    f"texts[{index}] has {len(text)} characters, over max_text_chars={limits.max_text_chars}"
                )
        if top_k < 0:
            raise InvalidInputError(f"top_k must be 0 (all labels) or positive, got {top_k}")
