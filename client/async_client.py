"""`AsyncInferenceClient`: the asyncio client of the ortserve gRPC API (grpc.aio), for async web APIs and consumers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .base import ClientBase
from .channel import create_aio_channel
from .convert import (
    checked_classifications,
    checked_texts,
    chunk_error,
    chunk_requests,
    model_info_from_proto,
)
from .diagnosis import explained
from .errors import InferenceError
from .types import Classification, ModelInfo

#: Channels of a parent process or of a finished event loop: closing them here would act on sockets and loops that
#: are not ours, so they are kept referenced (the garbage collector would close them) and left alone.
_ABANDONED_CHANNELS: list[grpc.aio.Channel] = []


class AsyncInferenceClient(ClientBase):
    """Asyncio client of one ortserve server or a set of replicas; settings: see `ClientBase`.

    >>> async with AsyncInferenceClient("localhost:50051") as client:
    ...     await client.classify("sentiment", ["great quarter for the company"], top_k=1)

    A grpc.aio channel belongs to the event loop it was made in, so the channel is made on first use inside the
    running loop, and made again when the client is used from another loop or from a forked child process. Create
    one client per process (for example in a FastAPI lifespan) and share it between tasks.
    """

    def _init_transport(self) -> None:
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.InferenceStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; later calls raise `ValueError`."""
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None and self._pid == os.getpid() and self._loop is asyncio.get_running_loop():
            await channel.close()

    async def classify(
        self, model: str, texts: Sequence[str], top_k: int = 0, timeout: float | None = None
    ) -> list[Classification]:
        """Classify `texts` with `model`: one `Classification` per text, in input order. `top_k` 0 returns all labels.

        Requests of at most `chunk_size` texts, at most `max_concurrency` in flight; `timeout` bounds each request.
        If one fails the others are cancelled and `InferenceError` names the slice of `texts` it carried.
        """
        texts = checked_texts(texts)
        if not texts:
            return []
        requests = chunk_requests(model, texts, top_k, self.chunk_size)
        stub, seconds = self._inference_stub(), self.timeout if timeout is None else timeout
        slots = asyncio.Semaphore(self.max_concurrency)

        async def send(start: int, request: pb.ClassifyRequest) -> list[Classification]:
            async with slots:
                try:
                    response = await stub.Classify(request, timeout=seconds, metadata=self._metadata)
                except grpc.RpcError as error:
                    failure = chunk_error(error, start, len(request.texts), len(texts))
                    raise await self._explained(failure) from None
            return checked_classifications(response, len(request.texts))

        if len(requests) == 1:
            return await send(*requests[0])
        tasks = [asyncio.ensure_future(send(start, request)) for start, request in requests]
        try:
            chunks = await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # gather leaves the siblings of a failed task running: stop them
                task.cancel()
        return [result for chunk in chunks for result in chunk]

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """Every model the server is configured with."""
        response = await self._call(self._inference_stub().ListModels, pb.ListModelsRequest(), timeout)
        return [model_info_from_proto(m) for m in response.models]

    async def get_model(self, name: str, timeout: float | None = None) -> ModelInfo:
        """One model by name; raises `InferenceError` with NOT_FOUND if the server has none by that name."""
        response = await self._call(self._inference_stub().GetModel, pb.GetModelRequest(name=name), timeout)
        return model_info_from_proto(response)

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise await self._explained(InferenceError.from_rpc_error(error)) from None

    async def _explained(self, failure: InferenceError) -> InferenceError:
        """`failure` with a hint naming the fix of a failed connection (its look at the server runs off the loop)."""
        return await asyncio.to_thread(explained, failure, self.config)

    def _inference_stub(self) -> pb_grpc.InferenceStub:
        if self._closed:
            raise ValueError(f"AsyncInferenceClient({self.target!r}) is closed")
        loop = asyncio.get_running_loop()
        if self._stub is not None and self._loop is loop and self._pid == os.getpid():
            return self._stub
        old_channel, old_loop = self._channel, self._loop
        if old_channel is not None:
            if self._pid == os.getpid() and old_loop is not None and old_loop.is_running():
                # Another loop still runs (another thread): close the channel there, where it belongs.
                asyncio.run_coroutine_threadsafe(old_channel.close(), old_loop)
            else:  # a parent's channel, or one whose loop has ended: never touch it again, not even to close it
                _ABANDONED_CHANNELS.append(old_channel)
        # No event loop switches inside this block, so two tasks cannot both get here for the same loop.
        self._channel, self._loop, self._pid = create_aio_channel(self.config), loop, os.getpid()
        self._stub = pb_grpc.InferenceStub(self._channel)
        return self._stub
