"""Open Inference Protocol (KServe V2) gRPC transport: V2 tensors ⇄ domain types over the same `InferenceService`.

Validation, limits, batching and error statuses are the service's, exactly as for `ortserve.v1.Inference/Classify`;
this module only turns a BYTES tensor of texts into a list of strings and the ranked answer into tensors:

- input  `text`          BYTES `[N]` or `[N, 1]`: the texts (UTF-8)
- output `probabilities` FP32  `[N, L]`: every label's probability, columns in the model's label order
- output `labels`        BYTES `[L]`: that label order (the label of each `probabilities` column)
- output `top_labels`    BYTES `[N, k]` and `top_scores` FP32 `[N, k]`: the k best labels per text, highest first;
  k is the request parameter `top_k` (int64; absent or 0 = every label, as in Classify)

A request that sends `raw_input_contents` (as tritonclient does) gets `raw_output_contents` back; a request with typed
`contents` gets typed contents.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import struct
import time
from collections.abc import Callable, Sequence

import grpc
import numpy as np

from ortserve.v2 import grpc_predict_v2_pb2 as pb
from ortserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

from .comparison import ChallengerDescription
from .errors import InvalidInputError, ModelNotFoundError, ModelNotReadyError
from .service import InferenceService
from .transport import canary_key
from .types import Classification, ModelDescription, ModelState

log = logging.getLogger(__name__)

INPUT_TEXT = "text"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABELS = "labels"
OUTPUT_TOP_LABELS = "top_labels"
OUTPUT_TOP_SCORES = "top_scores"
OUTPUTS = (OUTPUT_PROBABILITIES, OUTPUT_LABELS, OUTPUT_TOP_LABELS, OUTPUT_TOP_SCORES)
#: Request parameter: how many labels `top_labels`/`top_scores` keep per text.
TOP_K_PARAMETER = "top_k"
#: Triton's platform name for an ONNX Runtime model.
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "ortserve"

_LENGTH = struct.Struct("<I")


class InferenceV2Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` (the Open Inference Protocol) over `InferenceService`."""

    def __init__(self, service: InferenceService, accepting: Callable[[], bool] = lambda: True):
        """`accepting()` says whether the server takes new work; while it is false (the SIGTERM drain) ServerReady
        and ModelReady answer false, as gRPC health answers NOT_SERVING, so that KServe and load balancers that
        probe V2 readiness stop sending too. Calls are still answered."""
        self._service = service
        self._accepting = accepting
        try:
            self._server_version = importlib.metadata.version("ortserve")
        except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
            self._server_version = "unknown"

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._accepting() and self._service.all_serving())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        description = self._service.get_model(request.name)
        ready = description.state is ModelState.SERVING and request.version in ("", description.version)
        return pb.ModelReadyResponse(ready=ready and self._accepting())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._server_version, extensions=[])

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        description = self._described(request.name, request.version)
        return model_metadata(description)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        description = self._described(request.model_name, request.model_version)
        texts = input_texts(request)
        top_k = top_k_parameter(request)
        wanted = requested_outputs(request)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        key = canary_key(context)
        result = await self._service.classify(request.model_name, texts, top_k, deadline, key)
        if result.model_version != description.version:  # a new version was swapped in during the call
            description = self._service.get_model(request.model_name)
        tensors = output_tensors(description.labels, result.ranked, result.results)
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.model_version, id=request.id)
        raw = len(request.raw_input_contents) > 0
        for name in wanted:
            datatype, shape, values = tensors[name]
            output = response.outputs.add(name=name, datatype=datatype, shape=shape)
            if raw:
                response.raw_output_contents.append(encode_raw(datatype, values))
            elif datatype == "BYTES":
                output.contents.bytes_contents.extend(values)
            else:
                output.contents.fp32_contents.extend(values)
        return response

    def _described(self, name: str, version: str) -> ModelDescription:
        """The model's description; a version other than the one served is NOT_FOUND (one version is served)."""
        description = self._service.get_model(name)
        if version and description.version and version != description.version:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r} here (serving {description.version!r}); "
                "leave the version empty for the served one"
            )
        return description


def model_metadata(description: ModelDescription) -> pb.ModelMetadataResponse:
    labels = len(description.labels) or -1  # -1 (unknown) until a version is loaded
    tensor = pb.ModelMetadataResponse.TensorMetadata
    response = pb.ModelMetadataResponse(
        name=description.name,
        versions=[description.version] if description.version else [],
        platform=PLATFORM,
        inputs=[tensor(name=INPUT_TEXT, datatype="BYTES", shape=[-1])],
        outputs=[
            tensor(name=OUTPUT_PROBABILITIES, datatype="FP32", shape=[-1, labels]),
            tensor(name=OUTPUT_LABELS, datatype="BYTES", shape=[labels]),
            tensor(name=OUTPUT_TOP_LABELS, datatype="BYTES", shape=[-1, -1]),
            tensor(name=OUTPUT_TOP_SCORES, datatype="FP32", shape=[-1, -1]),
        ],
    )
    if description.challenger is not None:
        for key, value in challenger_parameters(description.challenger).items():
            parameter = response.parameters[key]
            if isinstance(value, bool):
                parameter.bool_param = value
            elif isinstance(value, int):
                parameter.int64_param = value
            else:
                parameter.string_param = value
    return response


def challenger_parameters(challenger: ChallengerDescription) -> dict[str, bool | int | str]:
    """The comparison as V2 metadata parameters (`challenger_*`): counts as int64, shares and figures as strings
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


def input_texts(request: pb.ModelInferRequest) -> list[str]:
    """The texts of the request's one BYTES input, from typed contents or raw_input_contents."""
    if len(request.inputs) != 1:
        raise InvalidInputError(
            f"expected one input tensor {INPUT_TEXT!r} (BYTES, shape [N] or [N, 1]), got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    if tensor.name != INPUT_TEXT:
        raise InvalidInputError(f"unknown input {tensor.name!r}: the model's one input is {INPUT_TEXT!r}")
    if tensor.datatype != "BYTES":
        raise InvalidInputError(f"input {INPUT_TEXT!r} has datatype {tensor.datatype!r}; send BYTES (UTF-8 texts)")
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise InvalidInputError(f"input {INPUT_TEXT!r} has shape {shape}; send shape [N] or [N, 1] for N texts")
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
            raise InvalidInputError("send the texts either as raw_input_contents (one entry) or as typed contents")
        elements = decode_raw_bytes(request.raw_input_contents[0])
    else:
        elements = list(tensor.contents.bytes_contents)
    if len(elements) != shape[0]:
        raise InvalidInputError(f"input {INPUT_TEXT!r} has shape {shape} but carries {len(elements)} elements")
    texts = []
    for index, element in enumerate(elements):
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"{INPUT_TEXT}[{index}] is not valid UTF-8") from None
    return texts


def top_k_parameter(request: pb.ModelInferRequest) -> int:
    if TOP_K_PARAMETER not in request.parameters:
        return 0
    parameter = request.parameters[TOP_K_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "int64_param":
        raise InvalidInputError(f"parameter {TOP_K_PARAMETER!r} must be an int64 (0 = every label)")
    return parameter.int64_param


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    names = [output.name for output in request.outputs] or list(OUTPUTS)
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InvalidInputError(f"unknown output {unknown[0]!r}: the outputs are {', '.join(OUTPUTS)}")
    return names


#: name → (datatype, shape, flattened elements)
Tensors = dict[str, tuple[str, list[int], list[float] | list[bytes]]]


def output_tensors(labels: Sequence[str], ranked: Sequence[Classification], top: Sequence[Classification]) -> Tensors:
    """The four outputs from the ranked answer: `ranked` (every label, highest first) reordered to `labels`."""
    column = {label: index for index, label in enumerate(labels)}
    probabilities = np.zeros((len(ranked), len(labels)), dtype=np.float32)
    for row, classification in enumerate(ranked):
        if len(classification) != len(labels) or any(score.label not in column for score in classification):
            # The version that answered has other labels than the one described (swapped in during the call).
            raise ModelNotReadyError("the model's labels changed during the call; retry")
        for score in classification:
            probabilities[row, column[score.label]] = score.score
    k = len(top[0]) if top else 0
    return {
        OUTPUT_PROBABILITIES: ("FP32", [len(ranked), len(labels)], probabilities.ravel().tolist()),
        OUTPUT_LABELS: ("BYTES", [len(labels)], [label.encode() for label in labels]),
        OUTPUT_TOP_LABELS: ("BYTES", [len(top), k], [s.label.encode() for row in top for s in row]),
        OUTPUT_TOP_SCORES: ("FP32", [len(top), k], [s.score for row in top for s in row]),
    }


def decode_raw_bytes(raw: bytes) -> list[bytes]:
    """Split a raw BYTES tensor (each element: little-endian uint32 length, then the bytes) into its elements."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInputError("raw_input_contents is not a BYTES tensor (truncated length prefix)")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInputError("raw_input_contents is not a BYTES tensor (an element runs past the end)")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def encode_raw(datatype: str, values: list[float] | list[bytes]) -> bytes:
    """Raw contents of a tensor: FP32 as little-endian floats, BYTES as length-prefixed elements."""
    if datatype == "FP32":
        return np.asarray(values, dtype="<f4").tobytes()
    return b"".join(_LENGTH.pack(len(element)) + element for element in values if isinstance(element, bytes))
