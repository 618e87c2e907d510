"""The transport-neutral data plane: validates requests and answers them from the model table."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import InvalidInputError, ModelNotReadyError
from .model_table import ModelTable, ServedModel
from .observability.call_context import current_call
from .result_cache import ResultCache
from .types import Classification, ClassifyResult, ModelDescription, ModelState

if TYPE_CHECKING:
    from .challenger import Challenger

#: gRPC metadata key (and V2 request parameter) of a call's canary key: calls with one key are always answered by
#: one side, champion or challenger (`Challenger.answers`).
CANARY_KEY = "x-ortserve-canary-key"

#: Longest model name a request may carry, the same bound as a served model's name (`ModelSpec`): a longer name
#: cannot exist here, so it is INVALID_ARGUMENT, and it is never echoed back.
MAX_MODEL_NAME_CHARS = 128

#: Letters that render as nothing (Hangul fillers, the braille blank), besides the separator and "other" categories.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_visible(char: str) -> bool:
    """Whether a character shows as something: a letter, mark, number, punctuation or symbol. Spaces, line and
    paragraph separators, controls, format characters (zero-width space, BOM, bidi marks) and the like do not."""
    return unicodedata.category(char)[0] in "LMNPS" and char not in _BLANK_LETTERS


def check_model_name(name: str) -> None:
    """Raise `InvalidInputError` for a model name over `MAX_MODEL_NAME_CHARS` (without echoing it)."""
    if len(name) > MAX_MODEL_NAME_CHARS:
        raise InvalidInputError(f"the model name has {len(name)} characters, over the limit of {MAX_MODEL_NAME_CHARS}")


@dataclass(frozen=True)
class RequestLimits:
    """What one Classify call may carry."""

    max_texts_per_request: int = 256
    """Most texts in one call."""
    max_text_chars: int = 10_000
    """Longest text, in characters."""


class InferenceService:
    """Classify, ListModels and GetModel, independent of gRPC."""

    def __init__(
        self,
        table: ModelTable,
        limits: RequestLimits | None = None,
        cache: ResultCache | None = None,
        challengers: Mapping[str, Challenger] | None = None,
    ):
        self.table = table
        self.limits = limits or RequestLimits()
        self.cache = cache if cache is not None else ResultCache(0)
        self.challengers: Mapping[str, Challenger] = challengers or {}
        """The challenger of each model that has one, by the model's name."""

    async def classify(
        self,
        model: str,
        texts: Sequence[str],
        top_k: int = 0,
        deadline: float | None = None,
        canary_key: str | None = None,
    ) -> ClassifyResult:
        """Classify `texts` with `model`; `deadline` is an absolute `time.monotonic()` value or None. With a
        challenger, the call may be answered by it (canary, sticky by `canary_key`) or shadowed through it after
        the champion answered."""
        check_model_name(model)
        self._validate(texts, top_k)
        served = self.table.get(model)
        if served.current is None:
            detail = f": {served.last_error}" if served.last_error else ""
            raise ModelNotReadyError(f"model {model!r} is not ready ({served.state.value}){detail}")
        challenger = self.challengers.get(model)
        if challenger is not None and challenger.answers(canary_key):
            output = await challenger.model.batcher.submit(texts, deadline, current_call())
            challenger.canary_calls += 1
            version, rows = output.version, output.rows
        else:
            started = time.monotonic()
            version, rows = await self._ranked_rows(served, texts, deadline)
            if challenger is not None:
                challenger.after_answer(texts, rows, version, time.monotonic() - started)
        results = [list(ranked[:top_k]) if top_k else list(ranked) for ranked in rows]
        return ClassifyResult(model, version, results, ranked=list(rows))

    async def _ranked_rows(
        self, served: ServedModel, texts: Sequence[str], deadline: float | None
    ) -> tuple[str, Sequence[Classification]]:
        """Every label of each text, ranked, and the one version that produced them: from the result cache where it
        holds the serving version's answer, from the model for the rest (each distinct text once)."""
        if not self.cache.enabled or served.current is None:
            output = await served.batcher.submit(texts, deadline, current_call())
            return output.version, output.rows
        version = served.current.version
        cached = self.cache.lookup(served.name, version, texts)
        missing = list(dict.fromkeys(text for text, row in zip(texts, cached, strict=True) if row is None))
        if not missing:
            return version, [row for row in cached if row is not None]  # all of them
        output = await served.batcher.submit(missing, deadline, current_call())
        self.cache.store(served.name, output.version, missing, output.rows)
        if output.version != version and len(missing) < len(texts):
            # A new version was swapped in between the lookup and the run: the cached rows are the old version's,
            # and one answer is given by one version, so run the whole call on the new one.
            output = await served.batcher.submit(texts, deadline, current_call())
            return output.version, output.rows
        computed = dict(zip(missing, output.rows, strict=True))
        rows = [row if row is not None else computed[text] for text, row in zip(texts, cached, strict=True)]
        return output.version, rows

    def list_models(self) -> list[ModelDescription]:
        return [self.get_model(model.name) for model in self.table]

    def get_model(self, name: str) -> ModelDescription:
        check_model_name(name)
        description = self.table.get(name).describe()
        challenger = self.challengers.get(name)
        return description if challenger is None else replace(description, challenger=challenger.describe())

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
            if not any(is_visible(char) for char in text):
                raise InvalidInputError(
                    f"texts[{index}] is empty: it has no visible character (only whitespace, control or format "
                    "characters such as zero-width spaces)"
                )
            if len(text) > limits.max_text_chars:
                raise InvalidInputError(
                    f"texts[{index}] has {len(text)} characters, over max_text_chars={limits.max_text_chars}"
                )
        if top_k < 0:
            raise InvalidInputError(f"top_k must be 0 (all labels) or positive, got {top_k}")
