"""The Open Inference Protocol (KServe V2) over `InferenceService`, for both doors: the gRPC servicer
(`transport_v2`) and the REST routes (`http.routes_v2`) turn their wire format into these calls and back.

- input  `text`          BYTES `[N]` or `[N, 1]`: the texts (UTF-8)
- output `probabilities` FP32  `[N, L]`: every label's probability, columns in the model's label order
- output `labels`        BYTES `[L]`: that label order (the label of each `probabilities` column)
- output `top_labels`    BYTES `[N, k]` and `top_scores` FP32 `[N, k]`: the k best labels per text, highest first;
  k is the request parameter `top_k` (int64; absent or 0 = every label, as in Classify)
- output `truncated`     BOOL  `[N]`: true where only a text's beginning was classified (longer than the model's
  max_length tokens or the server's max_text_chars)
- output `errors`        BYTES `[N]`: why a text was not classified (e.g. no visible character), empty where it was;
  such a text's row of `probabilities` and `top_scores` is zeros and its `top_labels` are empty, and the other texts
  are classified as usual
"""

from __future__ import annotations

import importlib.metadata
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError, ModelNotFoundError, ModelNotReadyError
from .service import InferenceService
from .types import ChallengerDescription, ClassifyResult, ModelDescription, ModelState

INPUT_TEXT = "text"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABELS = "labels"
OUTPUT_TOP_LABELS = "top_labels"
OUTPUT_TOP_SCORES = "top_scores"
OUTPUT_TRUNCATED = "truncated"
OUTPUT_ERRORS = "errors"
OUTPUTS = (
    OUTPUT_PROBABILITIES,
    OUTPUT_LABELS,
    OUTPUT_TOP_LABELS,
    OUTPUT_TOP_SCORES,
    OUTPUT_TRUNCATED,
    OUTPUT_ERRORS,
)
#: Request parameter: how many labels `top_labels`/`top_scores` keep per text.
TOP_K_PARAMETER = "top_k"
#: Triton's platform name for an ONNX Runtime model.
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "ortserve"
#: Triton's protocol extensions served here (ServerMetadata lists them): ModelConfig (read-only) and ModelStatistics.
#: RepositoryIndex is served too, but not the rest of "model_repository" (load and unload), so it is not claimed.
EXTENSIONS = ("model_configuration", "statistics")

_LENGTH = struct.Struct("<I")

#: name → (datatype, shape, flattened elements)
Tensors = dict[str, tuple[str, list[int], list[float] | list[bytes] | list[bool]]]


def server_version() -> str:
    """The installed ortserve version (what ServerMetadata reports)."""
    try:
        return importlib.metadata.version("ortserve")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]


def model_tensors(description: ModelDescription) -> tuple[list[TensorMetadata], list[TensorMetadata]]:
    """The model's inputs and outputs as ModelMetadata reports them."""
    labels = len(description.labels) or -1  # -1 (unknown) until a version is loaded
    inputs = [TensorMetadata(INPUT_TEXT, "BYTES", [-1])]
    outputs = [
        TensorMetadata(OUTPUT_PROBABILITIES, "FP32", [-1, labels]),
        TensorMetadata(OUTPUT_LABELS, "BYTES", [labels]),
        TensorMetadata(OUTPUT_TOP_LABELS, "BYTES", [-1, -1]),
        TensorMetadata(OUTPUT_TOP_SCORES, "FP32", [-1, -1]),
        TensorMetadata(OUTPUT_TRUNCATED, "BOOL", [-1]),
        TensorMetadata(OUTPUT_ERRORS, "BYTES", [-1]),
    ]
    return inputs, outputs


def model_parameters(description: ModelDescription) -> dict[str, bool | int | str]:
    """ModelMetadata's `parameters` (both doors): a model with a challenger reports its comparison there."""
    return {} if description.challenger is None else challenger_parameters(description.challenger)


def challenger_parameters(challenger: ChallengerDescription) -> dict[str, bool | int | str]:
    """The comparison as metadata parameters (`challenger_*`): counts as int64, shares and figures as strings
    (this protocol's parameters have no double), the label flips and drops as JSON objects."""
    report = challenger.comparison
    return {
        "challenger_version": challenger.version,
        "challenger_champion_version": report.champion_version,
        "challenger_comparing": challenger.comparing,
        "challenger_stopped_reason": challenger.stopped_reason,
        "challenger_texts_compared": report.texts_compared,
        "challenger_agreements": report.agreements,
        "challenger_agreement": f"{report.agreement:.6f}",
        "challenger_label_flips": json.dumps(report.flips_by_name()),
        "challenger_score_delta_mean": f"{report.score_delta_mean:.6f}",
        "challenger_score_delta_p99": f"{report.score_delta_p99:.6f}",
        "challenger_canary_calls": challenger.canary_calls,
        "challenger_shadow_dropped": json.dumps(challenger.shadow_dropped, sort_keys=True),
    }


def described(service: InferenceService, name: str, version: str) -> ModelDescription:
    """The model's description; a version other than the one served is NOT_FOUND (one version is served)."""
    description = service.get_model(name)
    if version and description.version and version != description.version:
        raise ModelNotFoundError(
            f"model {name!r} has no version {version!r} here (serving {description.version!r}); "
            "leave the version empty for the served one"
        )
    return description


def model_ready(service: InferenceService, name: str, version: str, accepting: bool) -> bool:
    """ModelReady: serving, at that version (or any), and the server takes new work (not draining)."""
    description = service.get_model(name)
    return description.state is ModelState.SERVING and version in ("", description.version) and accepting


def check_text_input(name: str, datatype: str, shape: Sequence[int], elements: Sequence[bytes]) -> list[str]:
    """The texts of the request's one input tensor, checked against the model's one input (`text`, BYTES)."""
    if name != INPUT_TEXT:
        raise InvalidInputError(f"unknown input {name!r}: the model's one input is {INPUT_TEXT!r}")
    if datatype != "BYTES":
        raise InvalidInputError(f"input {INPUT_TEXT!r} has datatype {datatype!r}; send BYTES (UTF-8 texts)")
    shape = list(shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise InvalidInputError(f"input {INPUT_TEXT!r} has shape {shape}; send shape [N] or [N, 1] for N texts")
    if len(elements) != shape[0]:
        raise InvalidInputError(f"input {INPUT_TEXT!r} has shape {shape} but carries {len(elements)} elements")
    texts = []
    for index, element in enumerate(elements):
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"{INPUT_TEXT}[{index}] is not valid UTF-8") from None
    return texts


def check_input_count(count: int) -> None:
    if count != 1:
        raise InvalidInputError(f"expected one input tensor {INPUT_TEXT!r} (BYTES, shape [N] or [N, 1]), got {count}")


def check_outputs(names: Sequence[str]) -> list[str]:
    """The outputs to answer with: those asked for (every output when none is)."""
    wanted = list(names) or list(OUTPUTS)
    unknown = [name for name in wanted if name not in OUTPUTS]
    if unknown:
        raise InvalidInputError(f"unknown output {unknown[0]!r}: the outputs are {', '.join(OUTPUTS)}")
    return wanted


@dataclass(frozen=True)
class InferAnswer:
    """The answer to one ModelInfer call: who answered and every output tensor."""

    result: ClassifyResult
    tensors: Tensors


async def infer(
    service: InferenceService,
    name: str,
    version: str,
    texts: list[str],
    top_k: int,
    deadline: float | None,
    canary_key: str | None = None,
) -> InferAnswer:
    """ModelInfer over the service's Classify: same validation, limits, batching, cache, canary and errors."""
    description = described(service, name, version)
    result = await service.classify(name, texts, top_k, deadline, canary_key)
    if result.model_version != description.version:  # a new version was swapped in during the call
        description = service.get_model(name)
    return InferAnswer(result, output_tensors(description.labels, result))


def output_tensors(labels: Sequence[str], result: ClassifyResult) -> Tensors:
    """The outputs from the ranked answer: `result.ranked` (every label, highest first) reordered to `labels`, the
    top k of `result.results`, and the per-text marks. A text that was not classified has zeros and empty labels."""
    ranked, top, texts = result.ranked, result.results, len(result.ranked)
    column = {label: index for index, label in enumerate(labels)}
    probabilities = np.zeros((texts, len(labels)), dtype=np.float32)
    for row, classification in enumerate(ranked):
        if not classification and result.error_at(row):
            continue
        if len(classification) != len(labels) or any(score.label not in column for score in classification):
            # The version that answered has other labels than the one described (swapped in during the call).
            raise ModelNotReadyError("the model's labels changed during the call; retry")
        for score in classification:
            probabilities[row, column[score.label]] = score.score
    k = max((len(row) for row in top), default=0)
    top_labels = [row[i].label.encode() if i < len(row) else b"" for row in top for i in range(k)]
    top_scores = [row[i].score if i < len(row) else 0.0 for row in top for i in range(k)]
    return {
        OUTPUT_PROBABILITIES: ("FP32", [texts, len(labels)], probabilities.ravel().tolist()),
        OUTPUT_LABELS: ("BYTES", [len(labels)], [label.encode() for label in labels]),
        OUTPUT_TOP_LABELS: ("BYTES", [len(top), k], top_labels),
        OUTPUT_TOP_SCORES: ("FP32", [len(top), k], top_scores),
        OUTPUT_TRUNCATED: ("BOOL", [texts], [result.truncated_at(row) for row in range(texts)]),
        OUTPUT_ERRORS: ("BYTES", [texts], [result.error_at(row).encode() for row in range(texts)]),
    }


def decode_raw_bytes(raw: bytes) -> list[bytes]:
    """Split a raw BYTES tensor (each element: little-endian uint32 length, then the bytes) into its elements."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInputError("the raw BYTES tensor is truncated (a length prefix runs past the end)")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInputError("the raw BYTES tensor is truncated (an element runs past the end)")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def encode_raw(datatype: str, values: list[float] | list[bytes] | list[bool]) -> bytes:
    """Raw contents of a tensor: FP32 as little-endian floats, BOOL as one byte each, BYTES as length-prefixed
    elements."""
    if datatype == "FP32":
        return np.asarray(values, dtype="<f4").tobytes()
    if datatype == "BOOL":
        return np.asarray(values, dtype=np.bool_).tobytes()
    return b"".join(_LENGTH.pack(len(element)) + element for element in values if isinstance(element, bytes))
