"""Transport-neutral domain types that the service layer returns and the gRPC servicer converts to protobuf."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .comparison import ChallengerDescription


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One label with its probability for one text."""

    label: str
    score: float


#: Labels of one text, highest score first.
Classification = list[LabelScore]


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    """The answer to one Classify call: which version answered, and one Classification per text."""

    model: str
    model_version: str
    results: list[Classification]
    ranked: list[Classification] = field(default_factory=list)
    """Every label of every text, highest first, whatever `top_k` kept in `results` (the Open Inference Protocol
    transport reports all probabilities next to the top k)."""


class ModelState(enum.Enum):
    """Lifecycle of a served model (mirrors `ortserve.v1.ModelState`)."""

    LOADING = "loading"
    SERVING = "serving"
    FAILED = "failed"


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
