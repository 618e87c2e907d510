"""Open Inference Protocol (KServe V2) gRPC transport: V2 tensors ⇄ domain types over the same `InferenceService`.

Validation, limits, batching and error statuses are the service's, exactly as for `ortserve.v1.Inference/Classify`;
the tensors and their checks are `open_inference`'s, shared with the REST routes. A request that sends
`raw_input_contents` (as tritonclient does) gets `raw_output_contents` back; a request with typed `contents` gets
typed contents.

Besides, three of Triton's extensions that tritonclient calls: RepositoryIndex (every model, its version and state),
ModelStatistics (counts and cumulative times of each model's calls and runs since start) and ModelConfig (how a model
is served, read-only: its tensors, limits, batching and labels), built by `open_inference_extensions` as the REST
routes send them and parsed here into their proto messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from ortserve.v2 import grpc_predict_v2_pb2 as pb
from ortserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

from .errors import InvalidInputError
from .open_inference import (
    EXTENSIONS,
    OUTPUTS,
    PLATFORM,
    SERVER_NAME,
    TOP_K_PARAMETER,
    check_input_count,
    check_output_count,
    check_outputs,
    check_request_id,
    check_text_input,
    decode_raw_bytes,
    described,
    encode_raw,
    infer,
    long_text_parameters,
    model_parameters,
    model_ready,
    model_tensors,
    server_version,
)
from .open_inference_extensions import model_config, model_statistics, repository_index
from .service import InferenceService
from .transport import canary_key
from .types import ModelDescription

__all__ = ["InferenceV2Servicer", "OUTPUTS", "REQUEST_SCREENS", "decode_raw_bytes", "encode_raw"]


def _outputs_only_message() -> type[Message]:
    """`ModelInferRequest` seen through its `outputs` field alone, each output as bytes: parsing bytes with it skips
    every other field and builds no output message, so counting 100,000 outputs of an amplification probe (1.7 MB)
    costs about half of a full parse, and the full parse is never made (refused on the count)."""
    outputs = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["outputs"]
    file = descriptor_pb2.FileDescriptorProto(
        name="ortserve/screens/model_infer_outputs.proto", package="ortserve.screens", syntax="proto3"
    )
    message = file.message_type.add(name="ModelInferOutputs")
    message.field.add(
        name="outputs",
        number=outputs.number,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()  # a pool of its own: nothing else sees or clashes with this view
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("ortserve.screens.ModelInferOutputs"))


_MODEL_INFER_OUTPUTS = _outputs_only_message()


def screen_model_infer(data: bytes) -> None:
    """Refuse ModelInfer bytes that name more outputs than there are (`check_output_count`) before they are parsed as
    a request. Bytes that do not parse are left to the request's own parser, which says so."""
    try:
        count = len(_MODEL_INFER_OUTPUTS.FromString(data).outputs)
    except Exception:  # DecodeError: not this screen's to report
        return
    check_output_count(count)


#: Checks of a method's raw request bytes, made before they are parsed (see `ErrorStatusInterceptor`): by full method.
REQUEST_SCREENS: dict[str, Callable[[bytes], None]] = {
    f"/{pb.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer": screen_model_infer,
}


class InferenceV2Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` (the Open Inference Protocol) over `InferenceService`."""

    def __init__(self, service: InferenceService, accepting: Callable[[], bool] = lambda: True):
        """`accepting()` says whether the server takes new work; while it is false (the SIGTERM drain) ServerReady
        and ModelReady answer false, as gRPC health answers NOT_SERVING, so that KServe and load balancers that
        probe V2 readiness stop sending too. Calls are still answered."""
        self._service = service
        self._accepting = accepting
        self._server_version = server_version()

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
        return pb.ModelReadyResponse(ready=model_ready(self._service, request.name, request.version, self._accepting()))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._server_version, extensions=list(EXTENSIONS))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return model_metadata(described(self._service, request.name, request.version))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        described(self._service, request.model_name, request.model_version)  # NOT_FOUND before input errors
        request_id = check_request_id(request.id)
        check_output_count(len(request.outputs))
        texts = input_texts(request)
        top_k = top_k_parameter(request)
        long_text = long_text_parameters(parameter_values(request))
        wanted = check_outputs([output.name for output in request.outputs])
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        key = canary_key(context)
        answer = await infer(
            self._service,
            request.model_name,
            request.model_version,
            texts,
            top_k,
            deadline,
            wanted,
            canary_key=key,
            long_text=long_text,
        )
        result = answer.result
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.model_version, id=request_id)
        raw = len(request.raw_input_contents) > 0
        for name in wanted:
            datatype, shape, values = answer.tensors[name]
            output = response.outputs.add(name=name, datatype=datatype, shape=shape)
            if raw:
                response.raw_output_contents.append(encode_raw(datatype, values))
            elif datatype == "BYTES":
                output.contents.bytes_contents.extend(values)
            elif datatype == "BOOL":
                output.contents.bool_contents.extend(values)
            elif datatype == "INT32":
                output.contents.int_contents.extend(values)
            else:
                output.contents.fp32_contents.extend(values)
        return response

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        models = repository_index(self._service, request.ready)
        return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        statistics = model_statistics(self._service, request.name, request.version)
        return json_format.ParseDict(statistics, pb.ModelStatisticsResponse())

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        config = model_config(self._service, request.name, request.version)
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())


def model_metadata(description: ModelDescription) -> pb.ModelMetadataResponse:
    inputs, outputs = model_tensors(description)
    tensor = pb.ModelMetadataResponse.TensorMetadata
    response = pb.ModelMetadataResponse(
        name=description.name,
        versions=[description.version] if description.version else [],
        platform=PLATFORM,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in outputs],
    )
    for key, value in model_parameters(description).items():
        parameter = response.parameters[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        else:
            parameter.string_param = value
    return response


def input_texts(request: pb.ModelInferRequest) -> list[str]:
    """The texts of the request's one BYTES input, from typed contents or raw_input_contents."""
    check_input_count(len(request.inputs))
    tensor = request.inputs[0]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
            raise InvalidInputError("send the texts either as raw_input_contents (one entry) or as typed contents")
        elements = decode_raw_bytes(request.raw_input_contents[0]) if tensor.datatype == "BYTES" else []
    else:
        elements = list(tensor.contents.bytes_contents)
    return check_text_input(tensor.name, tensor.datatype, tensor.shape, elements)


def parameter_values(request: pb.ModelInferRequest) -> dict[str, object]:
    """The request's parameters as plain values (bool, int, str, float), by name."""
    values: dict[str, object] = {}
    for key, parameter in request.parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def top_k_parameter(request: pb.ModelInferRequest) -> int:
    if TOP_K_PARAMETER not in request.parameters:
        return 0
    parameter = request.parameters[TOP_K_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "int64_param":
        raise InvalidInputError(f"parameter {TOP_K_PARAMETER!r} must be an int64 (0 = every label)")
    return parameter.int64_param
