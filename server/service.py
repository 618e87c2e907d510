"""The transport-neutral data plane: validates requests and answers them from the model table."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import InvalidInputError, ModelNotReadyError
from .model_statistics import StatisticsSnapshot
from .model_table import ModelTable, ServedModel
from .observability.call_context import current_call
from .result_cache import ResultCache
from .runtime import cut_text
from .types import (
    Classification,
    ClassifyResult,
    ModelDescription,
    ModelState,
    ServingConfig,
    TruncatedClassification,
)

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
    """Characters of one text that are read: a longer text is cut there (and its result marked truncated)."""
    max_request_chars: int = 4_000_000
    """Most characters of all texts of one call together; more refuses the call."""


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
        """Classify `texts` with `model`; `deadline` is an absolute `time.monotonic()` value or None.

        A text is never a reason to refuse the call: one longer than `max_text_chars` is cut there, and its result
        says it was truncated, as the result of any text longer than the model reads does; one with nothing to
        classify gets an empty result with its error, while the others are classified.

        With a challenger, the call may be answered by it (canary, sticky by `canary_key`), or its texts shadowed
        through it after the champion answered (`Challenger.after_answer`: queued, never awaited here).
        """
        check_model_name(model)
        self._validate(texts, top_k)
        served = self.table.get(model)
        if served.current is None:
            detail = f": {served.last_error}" if served.last_error else ""
            raise ModelNotReadyError(f"model {model!r} is not ready ({served.state.value}){detail}")
        errors = [empty_text_error(text) for text in texts]
        limit = self.limits.max_text_chars
        runnable = [cut_text(text, limit) for text, error in zip(texts, errors, strict=True) if not error]
        challenger = self.challengers.get(model)
        rows: Sequence[Classification]
        started = time.monotonic()
        try:
            if not runnable:  # nothing to run: answer with the version that would have
                version, rows = served.current.version, []
            elif challenger is not None and challenger.answers(canary_key):
                output = await challenger.model.batcher.submit(runnable, deadline, current_call())
                challenger.canary_calls += 1
                version, rows = output.version, output.rows
            else:
                version, rows = await self._ranked_rows(served, runnable, deadline)
                if challenger is not None:
                    challenger.after_answer(runnable, rows, version, time.monotonic() - started)
        except BaseException:
            served.statistics.record_call(len(runnable), time.monotonic() - started, ok=False)
            raise
        served.statistics.record_call(len(runnable), time.monotonic() - started, ok=True)
        ranked_rows = iter(rows)
        ranked: list[Classification] = []
        truncated: list[bool] = []
        for text, error in zip(texts, errors, strict=True):
            row = [] if error else next(ranked_rows)
            ranked.append(list(row))
            truncated.append(not error and (len(text) > limit or isinstance(row, TruncatedClassification)))
        results = [row[:top_k] if top_k else row for row in ranked]
        return ClassifyResult(
            model,
            version,
            results,
            ranked=ranked,
            truncated=truncated if any(truncated) else [],
            errors=errors if any(errors) else [],
        )

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

    def model_statistics(self, name: str = "") -> list[tuple[ModelDescription, StatisticsSnapshot]]:
        """Each model's description and statistics since start: the model `name`, or every model if it is ""."""
        if name:
            check_model_name(name)
        models = [self.table.get(name)] if name else list(self.table)
        return [(model.describe(), model.statistics.snapshot()) for model in models]

    def model_config(self, name: str) -> ServingConfig:
        """How the model `name` is served: its description and the limits that apply to its calls and runs."""
        check_model_name(name)
        served = self.table.get(name)
        limits = served.batcher.limits
        return ServingConfig(
            served.describe(), self.limits.max_texts_per_request, limits.max_batch_size, limits.max_batch_delay_ms
        )

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
        size = sum(map(len, texts))
        if size > limits.max_request_chars:
            raise InvalidInputError(
                f"the texts of this request have {size} characters together, over max_request_chars="
                f"{limits.max_request_chars}; split them over several requests"
            )
        if top_k < 0:
            raise InvalidInputError(f"top_k must be 0 (all labels) or positive, got {top_k}")


#: The error of a text with nothing to classify, in its own result (no index: the result is the text's).
EMPTY_TEXT_ERROR = (
    "the text is empty: it has no visible character (only whitespace, control or format characters such as "
    "zero-width spaces)"
)


#: The error of a text that no tokenizer can read: a lone surrogate (JSON's "\\ud800") is not Unicode text.
INVALID_UNICODE_ERROR = "the text is not valid Unicode (it holds a lone surrogate code point); send UTF-8 text"


def empty_text_error(text: str) -> str:
    """Why `text` cannot be classified, "" if it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return INVALID_UNICODE_ERROR
    return "" if any(is_visible(char) for char in text) else EMPTY_TEXT_ERROR
