"""Wrapping a gRPC method handler of any arity once per method: the base of every interceptor of the chain."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

# --- wrapping a method handler of any arity ------------------------------------------------------------------------
#
# grpc.aio runs every interceptor's `intercept_service` on every call and caches nothing, so each interceptor keeps the
# handler it wrapped per method (`WrappedHandlers`) and does its per-call work inside the wrapped behavior, as plain
# try/except around one await: no closure, context manager or handler object is made per call.

#: Makes the behavior of one arity around the inner behavior, from the method name and the inner behavior.
BehaviorWrapper = Callable[[str, Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class Wrappers:
    """How an interceptor wraps a behavior of each of the four arities (`None`: that arity passes unchanged)."""

    unary_unary: BehaviorWrapper | None = None
    unary_stream: BehaviorWrapper | None = None
    stream_unary: BehaviorWrapper | None = None
    stream_stream: BehaviorWrapper | None = None


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    method: str,
    wrappers: Wrappers,
    deserializer: Callable[[Any], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behavior wrapped by `wrappers`, whichever of the four arities it has.

    `deserializer`, if given, replaces the handler's request deserializer (gRPC calls it before any behavior).
    """
    request_deserializer = deserializer if deserializer is not None else handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        behavior = _wrapped(wrappers.unary_unary, method, handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer, serializer)
    if handler.unary_stream is not None:
        behavior = _wrapped(wrappers.unary_stream, method, handler.unary_stream)
        return grpc.unary_stream_rpc_method_handler(behavior, request_deserializer, serializer)
    if handler.stream_unary is not None:
        behavior = _wrapped(wrappers.stream_unary, method, handler.stream_unary)
        return grpc.stream_unary_rpc_method_handler(behavior, request_deserializer, serializer)
    behavior = _wrapped(wrappers.stream_stream, method, handler.stream_stream)
    return grpc.stream_stream_rpc_method_handler(behavior, request_deserializer, serializer)


def never_decoded(data: bytes) -> bytes:
    """The deserializer of a call refused before its request is read (authentication): its bytes are never parsed."""
    return data


def _wrapped(wrapper: BehaviorWrapper | None, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    return wrapper(method, behavior) if wrapper is not None else behavior


class WrappedHandlers:
    """The wrapped handler of each method, made on its first call and reused while gRPC hands over the same handler
    (generic handlers return one object per method, so in practice it is made once per method)."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        """The wrapped `handler` of `method`, or None if it was not wrapped yet (or gRPC now hands over another)."""
        cached = self._by_method.get(method)
        return cached[1] if cached is not None and cached[0] is handler else None

    def put(self, method: str, handler: grpc.RpcMethodHandler, wrapped: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self._by_method[method] = (handler, wrapped)
        return wrapped


def awaiting(behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`behavior` as a coroutine function (gRPC also accepts plain functions as unary behaviors)."""
    if inspect.iscoroutinefunction(behavior):
        return behavior

    async def resolved(request: Any, context: grpc.aio.ServicerContext) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return resolved


async def responses(result: Any) -> AsyncIterator[Any]:
    """The responses of a streaming behavior: an async generator, a plain iterator, or a coroutine that writes them
    itself with `context.write` (then there is nothing to yield)."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    elif result is not None:
        for item in result:
            yield item


class HandlerWrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base of an interceptor that wraps each method's handler once and reuses that wrapper for every later call.

    gRPC asks every interceptor for every call and caches nothing, so building the wrapper per call would cost each
    RPC. Subclasses implement `wrap`; returning `handler` itself leaves a method untouched.
    """

    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler to use for `method` from now on (called once per method, and again if gRPC hands over a new
        handler)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        wrapped = self._wrapped.get(method, handler)
        if wrapped is None:
            wrapped = self._wrapped.put(method, handler, self.wrap(handler, method))
        return wrapped
