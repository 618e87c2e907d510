"""gRPC transport: converts protobuf ⇄ domain types, calls the service, maps domain errors to status codes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .errors import (
    ArtifactError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OrtServeError,
    OverloadedError,
)
from .service import InferenceService
from .types import ClassifyResult, ModelDescription, ModelState

log = logging.getLogger(__name__)

#: The one place where domain errors become status codes. Order matters only for subclasses (none overlap).
STATUS_FOR_ERROR: dict[type[OrtServeError], grpc.StatusCode] = {
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    ModelNotReadyError: grpc.StatusCode.UNAVAILABLE,
    ArtifactError: grpc.StatusCode.UNAVAILABLE,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_STATE_TO_PROTO = {
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.SERVING: pb.MODEL_STATE_SERVING,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["InferenceServicer", Request, grpc.aio.ServicerContext], Awaitable[Response]]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and caller-safe message for an exception raised while handling a call."""
    for error_type, code in STATUS_FOR_ERROR.items():
        if isinstance(exc, error_type):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error; the server log has the details"


def _maps_domain_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    @functools.wraps(handler)
    async def wrapper(self: InferenceServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except OrtServeError as exc:
            code, message = status_for(exc)
            await context.abort(code, message)
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            code, message = status_for(Exception())
            await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class InferenceServicer(pb_grpc.InferenceServicer):
    """The `ortserve.v1.Inference` service over `InferenceService`."""

    def __init__(self, service: InferenceService):
        self._service = service

    @_maps_domain_errors
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        result = await self._service.classify(request.model, list(request.texts), request.top_k, deadline)
        return classify_response(result)

    @_maps_domain_errors
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_info(d) for d in self._service.list_models()])

    @_maps_domain_errors
    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return model_info(self._service.get_model(request.name))


def classify_response(result: ClassifyResult) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        model=result.model,
        model_version=result.model_version,
        results=[
            pb.Classification(labels=[pb.LabelScore(label=s.label, score=s.score) for s in ranked])
            for ranked in result.results
        ],
    )


def model_info(description: ModelDescription) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=description.name,
        version=description.version,
        source_uri=description.source_uri,
        labels=description.labels,
        max_length=description.max_length,
        state=_STATE_TO_PROTO[description.state],
        last_error=description.last_error,
        multi_label=description.multi_label,
        loaded_at=description.loaded_at,
        note=description.note,
        failed_updates=description.failed_updates,
    )
