"""The native API (`ortserve.v1.Inference`) as JSON: the request and response bodies of the README's grpcurl lines
in the proto3 JSON mapping, posted to `/ortserve.v1.Inference/METHOD` (the gRPC method path, as the Connect
protocol does), which collides with neither the V2 (`/v2/...`) nor the KServe V1 (`/v1/models/...`) paths.
The messages are converted exactly as the gRPC servicer converts them (`transport.classify_response`, `model_info`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from ortserve.contract.errors import first_line
from ortserve.v1 import inference_pb2 as pb

from ..errors import ErrorStatus, InvalidInputError
from ..service import InferenceService
from ..transport import classify_response, model_info
from .messages import HttpRequest, HttpResponse, Route, RouteDocs, dump_json

TAG = "ortserve.v1 (native, JSON)"
PREFIX = "/ortserve.v1.Inference"

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "the gRPC status name"}, "message": {"type": "string"}},
    "required": ["code", "message"],
}
CLASSIFY_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "texts": {"type": "array", "items": {"type": "string"}},
        "topK": {"type": "integer", "minimum": 0, "description": "labels per text; 0 = all"},
    },
    "required": ["model", "texts"],
}
CLASSIFY_RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "modelVersion": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "labels": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
                        },
                    }
                },
            },
        },
    },
}
MODEL_INFO_SCHEMA = {"type": "object", "description": "ortserve.v1.ModelInfo in the proto3 JSON mapping"}

M = TypeVar("M", bound=Message)


def render_error(status: ErrorStatus, message: str, request_id: str) -> HttpResponse:
    """Errors with the gRPC status name the same call gets over gRPC."""
    return HttpResponse.json({"code": status.grpc_code, "message": message}, status.http_status)


def native_routes(service: InferenceService, example_model: str = "topic") -> list[Route]:
    async def classify(request: HttpRequest) -> HttpResponse:
        message = parse(request, pb.ClassifyRequest())
        request.use_model(message.model)
        texts = list(message.texts)
        result = await service.classify(message.model, texts, message.top_k, request.deadline, request.canary_key)
        response = json_response(classify_response(result))
        response.model_version = result.model_version
        return response

    async def list_models(request: HttpRequest) -> HttpResponse:
        if request.body.strip():
            parse(request, pb.ListModelsRequest())
        return json_response(pb.ListModelsResponse(models=[model_info(d) for d in service.list_models()]))

    async def get_model(request: HttpRequest) -> HttpResponse:
        message = parse(request, pb.GetModelRequest())
        request.use_model(message.name)
        return json_response(model_info(service.get_model(message.name)))

    def docs(summary: str, schema: dict[str, Any] | None, example: Any, response: dict[str, Any]) -> RouteDocs:
        return RouteDocs(
            summary,
            TAG,
            request_schema=schema,
            request_example=example,
            response_schema=response,
            error_schema=ERROR_SCHEMA,
        )

    classify_example = {"model": example_model, "texts": ["The central bank raised rates."], "topK": 2}
    return [
        Route(
            "POST",
            f"{PREFIX}/Classify",
            classify,
            render_error,
            docs("Classify texts", CLASSIFY_SCHEMA, classify_example, CLASSIFY_RESPONSE_SCHEMA),
            reads_body=True,
        ),
        Route(
            "POST",
            f"{PREFIX}/ListModels",
            list_models,
            render_error,
            docs("List the served models", {"type": "object"}, {}, MODEL_INFO_SCHEMA),
            reads_body=True,
        ),
        Route(
            "POST",
            f"{PREFIX}/GetModel",
            get_model,
            render_error,
            docs("Describe one model", {"type": "object"}, {"name": example_model}, MODEL_INFO_SCHEMA),
            reads_body=True,
        ),
    ]


def parse(request: HttpRequest, message: M) -> M:
    """The body as `message` in the proto3 JSON mapping (field names in lowerCamelCase or as in the .proto)."""
    request.json_object()  # the same messages as every other route for a body that is not a JSON object
    try:
        json_format.Parse(request.body, message)
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"the body is not a {message.DESCRIPTOR.name} in JSON: {first_line(exc)}") from None
    return message


def json_response(message: Message) -> HttpResponse:
    return HttpResponse(200, dump_json(json_format.MessageToDict(message)))
