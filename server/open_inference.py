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

from .errors import InvalidInputError, ModelNotFoundError, ModelNotReadyError
from .service import EMPTY_TEXT_ERROR, INVALID_UNICODE_ERROR, InferenceService
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

#: Longest request `id` accepted; a longer one is INVALID_ARGUMENT and never echoed back (an id names a call, and a
#: request must not make the server send its own bytes back at any length).
MAX_REQUEST_ID_CHARS = 256
#: Largest answer built, in bytes of its encoding, computed from the request before the model runs (`answer_bytes`):
#: gRPC clients (tritonclient included) refuse messages over 4 MiB by default, and an answer no client can read is
#: CPU and memory spent for nothing.
MAX_ANSWER_BYTES = 4 * 1024 * 1024

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
    """The outputs to answer with: those asked for (every output when none is), each at most once. An output asked
    for twice is INVALID_ARGUMENT: answering it once per mention let one small request build an answer of any size."""
    wanted = list(names) or list(OUTPUTS)
    unknown = [name for name in wanted if name not in OUTPUTS]
    if unknown:
        raise InvalidInputError(f"unknown output {unknown[0][:40]!r}: the outputs are {', '.join(OUTPUTS)}")
    if len(set(wanted)) != len(wanted):
        twice = next(name for index, name in enumerate(wanted) if name in wanted[:index])
        raise InvalidInputError(f"output {twice!r} is asked for more than once: name each output once")
    return wanted


def check_output_count(count: int) -> None:
    """Refuse a request that names more outputs than there are before reading their names: some would be named twice
    (an amplification probe names one output 100,000 times, and merely listing the names costs milliseconds)."""
    if count > len(OUTPUTS):
        raise InvalidInputError(
            f"the request asks for {count} outputs; there are {len(OUTPUTS)} ({', '.join(OUTPUTS)}): name each once"
        )


def check_request_id(request_id: str) -> str:
    """The request's `id`, to echo in the answer; over `MAX_REQUEST_ID_CHARS` it is INVALID_ARGUMENT (not echoed)."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidInputError(
            f"the request id has {len(request_id)} characters, over the limit of {MAX_REQUEST_ID_CHARS}"
        )
    return request_id


#: Bytes of one element of each datatype in the answer, beyond a BYTES element's own bytes: (binary, JSON). Binary
#: is the protobuf or raw encoding (a float 4 bytes, a BYTES element its length prefix or tag); JSON is the longest
#: text of one element with its separator (`-1.2345678901234567e-05,`, `false,`, quotes and comma).
_ELEMENT_BYTES = {"FP32": (4, 25), "BOOL": (1, 6), "BYTES": (5, 3)}
#: Bytes of one output's own fields (name, datatype, shape) in either encoding, rounded up.
_OUTPUT_OVERHEAD_BYTES = 128


def answer_bytes(labels: Sequence[str], texts: int, top_k: int, wanted: Sequence[str], text_format: bool) -> int:
    """An upper bound of the size of the answer's outputs, known before anything runs: `texts` texts classified by a
    model with `labels`, the `top_k` best of each (0: every label), the outputs `wanted`, in binary (protobuf, raw
    tensors) or text (JSON) form. Per-text errors are bounded by the longest error message."""
    column = 1 if text_format else 0
    longest_label = max((len(label.encode()) for label in labels), default=0)
    k = min(top_k, len(labels)) if top_k else len(labels)
    longest_error = max(len(EMPTY_TEXT_ERROR), len(INVALID_UNICODE_ERROR))
    elements = {
        OUTPUT_PROBABILITIES: ("FP32", texts * len(labels), 0),
        OUTPUT_LABELS: ("BYTES", len(labels), sum(len(label.encode()) for label in labels)),
        OUTPUT_TOP_LABELS: ("BYTES", texts * k, texts * k * longest_label),
        OUTPUT_TOP_SCORES: ("FP32", texts * k, 0),
        OUTPUT_TRUNCATED: ("BOOL", texts, 0),
        OUTPUT_ERRORS: ("BYTES", texts, texts * longest_error),
    }
    total = 0
    for name in wanted:
        datatype, count, payload = elements[name]
        total += _OUTPUT_OVERHEAD_BYTES + count * _ELEMENT_BYTES[datatype][column] + payload
    return total


def check_answer_size(labels: Sequence[str], texts: int, top_k: int, wanted: Sequence[str], text_format: bool) -> None:
    """Refuse (INVALID_ARGUMENT) a request whose answer would be over `MAX_ANSWER_BYTES`, before the model runs."""
    size = answer_bytes(labels, texts, top_k, wanted, text_format)
    if size > MAX_ANSWER_BYTES:
        raise InvalidInputError(
            f"the answer would take about {size // 1024} KiB, over the limit of {MAX_ANSWER_BYTES // 1024} KiB; "
            "send fewer texts per request, ask for fewer outputs, or set top_k"
        )


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
    wanted: Sequence[str],
    text_format: bool = False,
    canary_key: str | None = None,
) -> InferAnswer:
    """ModelInfer over the service's Classify: same validation, limits, batching, cache, canary and errors. The
    outputs `wanted` (from `check_outputs`) are the ones built; their size is checked first (`check_answer_size`)."""
    description = described(service, name, version)
    check_answer_size(description.labels, len(texts), top_k, wanted, text_format)
    result = await service.classify(name, texts, top_k, deadline, canary_key)
    if result.model_version != description.version:  # a new version was swapped in during the call
        description = service.get_model(name)
    return InferAnswer(result, output_tensors(description.labels, result, wanted))


def output_tensors(labels: Sequence[str], result: ClassifyResult, wanted: Sequence[str] = OUTPUTS) -> Tensors:
    """The outputs `wanted` from the ranked answer: `result.ranked` (every label, highest first) reordered to `labels`,
    the top k of `result.results`, and the per-text marks. A text that was not classified has zeros and empty labels.
    Only the outputs asked for are built."""
    top, texts = result.results, len(result.ranked)
    tensors: Tensors = {}
    if OUTPUT_PROBABILITIES in wanted:
        tensors[OUTPUT_PROBABILITIES] = ("FP32", [texts, len(labels)], probability_rows(labels, result))
    if OUTPUT_LABELS in wanted:
        tensors[OUTPUT_LABELS] = ("BYTES", [len(labels)], [label.encode() for label in labels])
    k = max((len(row) for row in top), default=0)
    if OUTPUT_TOP_LABELS in wanted:
        top_labels = [row[i].label.encode() if i < len(row) else b"" for row in top for i in range(k)]
        tensors[OUTPUT_TOP_LABELS] = ("BYTES", [len(top), k], top_labels)
    if OUTPUT_TOP_SCORES in wanted:
        top_scores = [row[i].score if i < len(row) else 0.0 for row in top for i in range(k)]
        tensors[OUTPUT_TOP_SCORES] = ("FP32", [len(top), k], top_scores)
    if OUTPUT_TRUNCATED in wanted:
        tensors[OUTPUT_TRUNCATED] = ("BOOL", [texts], [result.truncated_at(row) for row in range(texts)])
    if OUTPUT_ERRORS in wanted:
        tensors[OUTPUT_ERRORS] = ("BYTES", [texts], [result.error_at(row).encode() for row in range(texts)])
    return tensors


def probability_rows(labels: Sequence[str], result: ClassifyResult) -> list[float]:
    """Every text's probability of each label, flattened row by row, columns in the order of `labels` (zeros for a
    text that was not classified). Plain lists: for the few values of a call, numpy costs more than it saves."""
    column = {label: index for index, label in enumerate(labels)}
    width = len(labels)
    flat = [0.0] * (len(result.ranked) * width)
    for row, classification in enumerate(result.ranked):
        if not classification and result.error_at(row):
            continue
        if len(classification) != width or any(score.label not in column for score in classification):
            # The version that answered has other labels than the one described (swapped in during the call).
            raise ModelNotReadyError("the model's labels changed during the call; retry")
        offset = row * width
        for score in classification:
            flat[offset + column[score.label]] = score.score
    return flat


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
        return struct.pack(f"<{len(values)}f", *values)
    if datatype == "BOOL":
        return bytes(bool(value) for value in values)
    return b"".join(_LENGTH.pack(len(element)) + element for element in values if isinstance(element, bytes))
