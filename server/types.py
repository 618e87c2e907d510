"""Transport-neutral domain types that the service layer returns and the gRPC servicer converts to protobuf."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One label with its probability for one text."""

    label: str
    score: float


#: Labels of one text, highest score first.
Classification = list[LabelScore]


class TruncatedClassification(list[LabelScore]):
    """The labels of a text the model read only the beginning of (it is longer than `max_length` tokens). A
    `Classification` like any other, marked by its type so that batcher, result cache and service carry the mark
    along without a field of their own."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    """The answer to one Classify call: which version answered, and one Classification per text."""

    model: str
    model_version: str
    results: list[Classification]
    ranked: list[Classification] = field(default_factory=list)
    """Every label of every text, highest first, whatever `top_k` kept in `results` (the Open Inference Protocol
    transport reports all probabilities next to the top k)."""
    truncated: list[bool] = field(default_factory=list)
    """Per text: True when only its beginning was classified, as it is longer than the model reads (`max_length`
    tokens) or than `max_text_chars` (empty: none)."""
    errors: list[str] = field(default_factory=list)
    """Per text: why it has no labels (its Classification is empty), "" for a text that has them (empty: none)."""

    def truncated_at(self, index: int) -> bool:
        return bool(self.truncated) and self.truncated[index]

    def error_at(self, index: int) -> str:
        return self.errors[index] if self.errors else ""


class ModelState(enum.Enum):
    """Lifecycle of a served model (mirrors `ortserve.v1.ModelState`)."""

    LOADING = "loading"
    SERVING = "serving"
    FAILED = "failed"


@dataclass(frozen=True)
class ComparisonReport:
    """A snapshot of one comparison (what GetModel, the metrics, the CLI and the registry write-back show)."""

    champion_version: str = ""
    challenger_version: str = ""
    texts_compared: int = 0
    agreements: int = 0
    """Texts whose top-1 label is the same for both versions."""
    label_pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    """(champion's top label, challenger's top label) → texts; off the diagonal are the flips."""
    score_delta_mean: float = 0.0
    """Mean of |challenger score − champion score| on the champion's top label."""
    score_delta_p99: float = 0.0
    latency_s: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Role → (p50, p95) seconds of that version on the compared texts (submit to answer, per call)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Role → shadowed calls that failed on that version (a champion failure is never shadowed: 0 unless the
    champion's answer could not be compared)."""

    @property
    def agreement(self) -> float:
        """Top-1 agreement in [0, 1]; 0 before anything was compared."""
        return self.agreements / self.texts_compared if self.texts_compared else 0.0

    @property
    def flips(self) -> dict[tuple[str, str], int]:
        """The label pairs that differ: champion label → challenger label."""
        return {pair: count for pair, count in self.label_pairs.items() if pair[0] != pair[1]}

    def flips_by_name(self) -> dict[str, int]:
        """The flips keyed `"champion label->challenger label"` (for JSON: the registry tags, V2 metadata)."""
        return {f"{a}->{b}": n for (a, b), n in sorted(self.flips.items())}


@dataclass(frozen=True)
class ChallengerDescription:
    """What GetModel (and the CLI report) says about a model's challenger: where it comes from, whether it is
    compared now (and why not), how traffic reaches it, and the comparison so far."""

    source_uri: str
    version: str
    """The challenger version loaded, empty while none is."""
    comparing: bool
    stopped_reason: str
    """Why nothing is compared now (empty while comparing)."""
    shadow: float
    canary: float
    canary_calls: int
    """Calls answered by the challenger (canary)."""
    shadow_dropped: dict[str, int]
    """Texts not shadowed, by reason (queue, admission, deadline, inactive)."""
    comparison: ComparisonReport


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What ListModels/GetModel report about one model."""

    name: str
    version: str
    source_uri: str
    state: ModelState
    labels: list[str] = field(default_factory=list)
    max_length: int = 0
    multi_label: bool = False
    last_error: str = ""
    loaded_at: str = ""
    note: str = ""
    failed_updates: int = 0
    challenger: ChallengerDescription | None = None
    """The model's challenger and its comparison with the serving version, if it has one."""


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """How one model is served: its description and the limits of its calls and runs (V2 ModelConfig)."""

    description: ModelDescription
    max_texts_per_request: int
    """Most texts of one call."""
    max_batch_size: int
    """Most texts of one ONNX Runtime run, merged from concurrent calls."""
    max_batch_delay_ms: float
    """How long a run may wait for more calls."""


@dataclass
class PollStats:
    """Registry polls of one model by the version watcher, for the `ortserve_registry_*` metrics."""

    succeeded: int = 0
    failed: int = 0
    last_success_unix: float | None = None

    def record(self, ok: bool) -> None:
        if ok:
            self.succeeded += 1
            self.last_success_unix = time.time()
        else:
            self.failed += 1
