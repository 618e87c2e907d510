"""`InferenceClient`: a blocking Python client of the ortserve gRPC API."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .errors import InferenceError
from .types import Classification, LabelScore, ModelInfo

DEFAULT_TIMEOUT_S = 10.0

_STATE_NAMES = {
    pb.MODEL_STATE_LOADING: "loading",
    pb.MODEL_STATE_SERVING: "serving",
    pb.MODEL_STATE_FAILED: "failed",
}


class InferenceClient:
    """Blocking client of one ortserve server (or a set of replicas behind one target).

    >>> with InferenceClient("localhost:50051") as client:
    ...     client.classify("sentiment", ["great quarter for the company"], top_k=1)

    `target` is a gRPC target such as `host:port` or `dns:///host:port`. Failed calls raise `InferenceError`
    with the gRPC status code.
    """

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT_S):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.InferenceStub(self._channel)

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def classify(
        self, model: str, texts: Sequence[str], top_k: int = 0, timeout: float | None = None
    ) -> list[Classification]:
        """Classify `texts` with `model`: one `Classification` per text, in order. `top_k` 0 returns all labels."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
        request = pb.ClassifyRequest(model=model, texts=list(texts), top_k=top_k)
        response = self._call(self._stub.Classify, request, timeout)
        return classifications_from_proto(response)

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """Every model the server is configured with."""
        response = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [model_info_from_proto(m) for m in response.models]

    def get_model(self, name: str, timeout: float | None = None) -> ModelInfo:
        """One model by name; raises `InferenceError` with NOT_FOUND if the server has none by that name."""
        return model_info_from_proto(self._call(self._stub.GetModel, pb.GetModelRequest(name=name), timeout))

    def _call(self, method, request, timeout: float | None):  # type: ignore[no-untyped-def]
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise InferenceError.from_rpc_error(error) from None


def classifications_from_proto(response: pb.ClassifyResponse) -> list[Classification]:
    return [
        Classification(tuple(LabelScore(s.label, s.score) for s in result.labels), response.model_version)
        for result in response.results
    ]


def model_info_from_proto(info: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=info.name,
        version=info.version,
        source_uri=info.source_uri,
        labels=tuple(info.labels),
        max_length=info.max_length,
        state=_STATE_NAMES.get(info.state, "unknown"),
        last_error=info.last_error,
        multi_label=info.multi_label,
        loaded_at=info.loaded_at,
    )
