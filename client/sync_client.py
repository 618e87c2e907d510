"""`InferenceClient`: a blocking Python client of the ortserve gRPC API."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .base import DEFAULT_TIMEOUT_S, ClientBase
from .channel import create_channel
from .convert import (
    checked_classifications,
    checked_texts,
    chunk_error,
    chunk_requests,
    classifications_from_proto,
    classify_request,
    model_info_from_proto,
)
from .diagnosis import explained
from .errors import InferenceError
from .types import Classification, ModelInfo

# Kept importable from here, where they lived first.
__all__ = ["DEFAULT_TIMEOUT_S", "InferenceClient", "classifications_from_proto", "model_info_from_proto"]

log = logging.getLogger(__name__)

#: Channels inherited from a parent process. A child must neither use nor close them (their sockets and gRPC's
#: threads belong to the parent), and must not let the garbage collector close them either: they are parked here.
_INHERITED_CHANNELS: list[grpc.Channel] = []
_LIVE_CLIENTS: weakref.WeakSet[InferenceClient] = weakref.WeakSet()


class InferenceClient(ClientBase):
    """Blocking, thread-safe client of one ortserve server or a set of replicas.

    >>> with InferenceClient("localhost:50051") as client:
    ...     client.classify("sentiment", ["great quarter for the company"], top_k=1)

    One client holds one channel (one HTTP/2 connection per replica) for its lifetime: create it once per process and
    share it between threads. The channel is made on first use, and made again in a child process after `fork()`
    (Spark, gunicorn and multiprocessing fork their workers), so a client created before the fork works in the child.

    Settings: see `ClientBase`.
    """

    def _init_transport(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.InferenceStub | None = None
        _LIVE_CLIENTS.add(self)

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; later calls raise `ValueError`. A child process leaves its parent's channel alone."""
        if self._pid != os.getpid():
            self._forget_inherited_channel()
        with self._lock:
            self._closed = True
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def classify(
        self, model: str, texts: Sequence[str], top_k: int = 0, timeout: float | None = None
    ) -> list[Classification]:
        """Classify `texts` with `model`: one `Classification` per text, in input order. `top_k` 0 returns all labels.

        Any number of texts: they go out as requests of at most `chunk_size` texts, at most `max_concurrency` in
        flight. `timeout` (default: the client's) bounds each request, not the whole call. If a request fails, the
        others are cancelled and `InferenceError` names the slice of `texts` the failed request carried.
        """
        texts = checked_texts(texts)
        if not texts:
            return []
        if len(texts) <= self.chunk_size:  # the common case of web APIs and consumers: one request, no bookkeeping
            request = classify_request(model, texts, top_k)
            stub, seconds = self._inference_stub(), self.timeout if timeout is None else timeout
            try:
                response = stub.Classify(request, timeout=seconds, metadata=self._metadata)
            except grpc.RpcError as error:
                raise explained(InferenceError.from_rpc_error(error), self.config) from None
            return checked_classifications(response, len(texts))
        requests = chunk_requests(model, texts, top_k, self.chunk_size)
        stub, seconds = self._inference_stub(), self.timeout if timeout is None else timeout
        results: list[Classification] = []
        in_flight: deque[tuple[int, pb.ClassifyRequest, grpc.Future]] = deque()
        try:
            for start, request in requests:
                if len(in_flight) == self.max_concurrency:
                    results.extend(self._collect(*in_flight.popleft(), len(texts)))
                future = stub.Classify.future(request, timeout=seconds, metadata=self._metadata)
                in_flight.append((start, request, future))
            while in_flight:
                results.extend(self._collect(*in_flight.popleft(), len(texts)))
        finally:
            for _, _, future in in_flight:  # non-empty only when a request failed or the caller was interrupted
                future.cancel()
        return results

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """Every model the server is configured with."""
        response = self._call(self._inference_stub().ListModels, pb.ListModelsRequest(), timeout)
        return [model_info_from_proto(m) for m in response.models]

    def get_model(self, name: str, timeout: float | None = None) -> ModelInfo:
        """One model by name; raises `InferenceError` with NOT_FOUND if the server has none by that name."""
        request = pb.GetModelRequest(name=name)
        return model_info_from_proto(self._call(self._inference_stub().GetModel, request, timeout))

    def _collect(
        self, start: int, request: pb.ClassifyRequest, future: grpc.Future, total: int
    ) -> list[Classification]:
        try:
            response = future.result()
        except grpc.RpcError as error:
            raise explained(chunk_error(error, start, len(request.texts), total), self.config) from None
        return checked_classifications(response, len(request.texts))

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise explained(InferenceError.from_rpc_error(error), self.config) from None

    def _inference_stub(self) -> pb_grpc.InferenceStub:
        if self._pid != os.getpid():  # a fork the at-fork hook did not see (a fork from C code)
            self._forget_inherited_channel()
        stub = self._stub
        if stub is not None:
            return stub
        with self._lock:
            if self._closed:
                raise ValueError(f"InferenceClient({self.target!r}) is closed")
            if self._stub is None:
                self._channel = create_channel(self.config)
                self._stub = pb_grpc.InferenceStub(self._channel)
            return self._stub

    def _forget_inherited_channel(self) -> None:
        """In a forked child: drop the parent's channel (parked, never closed) so the next call makes a new one."""
        # The parent's lock may have been held by a thread that does not exist in the child: replace it unlocked.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        if self._channel is not None:
            _INHERITED_CHANNELS.append(self._channel)
        self._channel, self._stub = None, None


def _after_fork_in_child() -> None:
    inherited = False
    for client in list(_LIVE_CLIENTS):
        inherited |= client._channel is not None
        client._forget_inherited_channel()
    if inherited and not _fork_support_enabled():
        log.warning(
            "fork() after gRPC calls without GRPC_ENABLE_FORK_SUPPORT=1: calls in this child may hang. Set it in the "
            "environment, or import ortserve.client before grpc (which sets it)"
        )


def _fork_support_enabled() -> bool:
    try:
        from grpc._cython import cygrpc  # private, hence the guard: only used to word a warning

        return bool(cygrpc.is_fork_support_enabled())
    except (ImportError, AttributeError):
        return True


os.register_at_fork(after_in_child=_after_fork_in_child)
