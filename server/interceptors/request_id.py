"""The request id of every call: the caller's `x-request-id` when sane, else a new one, sent back in the trailers."""

from __future__ import annotations

import contextvars
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from .wrapping import HandlerWrappingInterceptor, Wrappers, awaiting, responses, wrap_handler

log = logging.getLogger(__name__)

#: Metadata key of the request id, read from the call and sent back in its trailing metadata.
REQUEST_ID_KEY = "x-request-id"
#: A caller's request id is kept only if it looks like an id: 1-64 letters, digits, '_' or '-'.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("ortserve_request_id", default="")


def current_request_id() -> str:
    """The id of the call being handled (empty outside a call); for log lines of code inside the chain."""
    return _request_id.get()


# --- 1. request id -------------------------------------------------------------------------------------------------


class RequestIdInterceptor(HandlerWrappingInterceptor):
    """Gives every call an id (the caller's `x-request-id` if sane) and returns it in the trailing metadata."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, method, _REQUEST_ID_WRAPPERS)


def _enter_request_id(context: grpc.aio.ServicerContext) -> contextvars.Token[str]:
    """Take the call's request id from its metadata (the same the handler call details carry), make it current and
    put it in the trailing metadata."""
    request_id = _request_id_of(context.invocation_metadata())
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    return _request_id.set(request_id)


def _request_id_one_response(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Unary-unary and stream-unary alike: the behavior takes a request (or a request stream) and returns one answer."""
    inner = awaiting(behavior)

    async def one_response(request_or_requests: Any, context: grpc.aio.ServicerContext) -> Any:
        token = _enter_request_id(context)
        try:
            return await inner(request_or_requests, context)
        finally:
            _request_id.reset(token)

    return one_response


def _request_id_streamed_responses(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Unary-stream and stream-stream alike: the behavior yields its answers."""

    async def streamed_responses(request_or_requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = _enter_request_id(context)
        try:
            async for response in responses(behavior(request_or_requests, context)):
                yield response
        finally:
            _request_id.reset(token)

    return streamed_responses


_REQUEST_ID_WRAPPERS = Wrappers(
    _request_id_one_response, _request_id_streamed_responses, _request_id_one_response, _request_id_streamed_responses
)


def _request_id_of(metadata: Sequence[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SANE_REQUEST_ID.match(value):
            return value
    # An id to correlate a caller's error with the log, not a secret: the Mersenne Twister is several times cheaper
    # than uuid4's read of the OS's random source, and gives the same 32 hex digits.
    return f"{random.getrandbits(128):032x}"
