"""The one interceptor chain every RPC of the server passes, whatever service it belongs to.

`build_interceptors` makes the chain from the settings; `OrtServer` hands it to `grpc.aio.server(interceptors=...)`,
so a service added later (the V2 inference service, anything else) runs inside it without opting in. Outermost first:

1. `RequestIdInterceptor`: the call's id, from `x-request-id` metadata when it is sane, else a new one; returned
   in the trailing metadata and available to everything inside as `current_request_id()`.
2. the `extra` interceptors given to `build_interceptors` (the place for metrics: they see every call, including
   the ones refused below, and can read its final status after it returns or raises).
3. `ErrorStatusInterceptor`: undecodable request bytes become INVALID_ARGUMENT; domain errors become their status
   code through `STATUS_FOR_ERROR` (the only place that happens); anything else becomes INTERNAL. The caller gets a
   short message and the request id; the log gets the detail under the same id, rate-limited.
4. `TokenAuthInterceptor` (when tokens are configured): UNAUTHENTICATED before the request is even decoded, and
   PERMISSION_DENIED when a token limited to some models names another one.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ortserve.contract.errors import first_line

from .auth import TokenAuthenticator, TokenGrant
from .errors import (
    ArtifactError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OrtServeError,
    OverloadedError,
    PermissionDeniedError,
    UnauthenticatedError,
    caller_message,
)
from .settings import ServerSettings

log = logging.getLogger(__name__)

#: Metadata key of the request id, read from the call and sent back in its trailing metadata.
REQUEST_ID_KEY = "x-request-id"
#: A caller's request id is kept only if it looks like an id: 1-64 letters, digits, '_' or '-'.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Services every caller may use without a token, so that load balancers and probes can check health.
HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"

#: The one place where domain errors become status codes. Order matters only for subclasses (none overlap).
STATUS_FOR_ERROR: dict[type[OrtServeError], grpc.StatusCode] = {
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    ModelNotReadyError: grpc.StatusCode.UNAVAILABLE,
    ArtifactError: grpc.StatusCode.UNAVAILABLE,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
}

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("ortserve_request_id", default="")


def current_request_id() -> str:
    """The id of the call being handled (empty outside a call); for log lines of code inside the chain."""
    return _request_id.get()


def build_interceptors(
    settings: ServerSettings, extra: Sequence[grpc.aio.ServerInterceptor] = ()
) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptor chain, outermost first (see the module docstring).

    `extra` is the extension point for cross-cutting concerns that need to see every call, metrics first among them:
    they run inside the request id (use `current_request_id()`) and outside the error mapping and authentication,
    so a refused or failed call reaches them as a raised `grpc.aio.AbortError` with `context.code()` set.
    """
    chain: list[grpc.aio.ServerInterceptor] = [RequestIdInterceptor(), *extra, ErrorStatusInterceptor()]
    authenticator = TokenAuthenticator.from_sources(settings.auth_token_file, settings.auth_token_env)
    if authenticator is not None:
        chain.append(TokenAuthInterceptor(authenticator, protect_health=settings.auth_health))
    return chain


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


def _awaiting(behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`behavior` as a coroutine function (gRPC also accepts plain functions as unary behaviors)."""
    if inspect.iscoroutinefunction(behavior):
        return behavior

    async def resolved(request: Any, context: grpc.aio.ServicerContext) -> Any:
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return resolved


async def _responses(result: Any) -> AsyncIterator[Any]:
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


async def _checked(requests: Any) -> AsyncIterator[Any]:
    """A request stream in which an undecodable message raises `InvalidInputError` where it is read."""
    async for request in requests:
        if isinstance(request, UndecodableRequest):
            raise request.error()
        yield request


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
    inner = _awaiting(behavior)

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
            async for response in _responses(behavior(request_or_requests, context)):
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


# --- 3. errors → status --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request whose bytes did not parse, so that the call fails with INVALID_ARGUMENT in the
    chain instead of with UNKNOWN and a traceback inside gRPC (which calls the deserializer before any behavior)."""

    size: int
    reason: str

    def error(self) -> InvalidInputError:
        return InvalidInputError(
            "the request is not a valid protobuf message of this method (undecodable bytes, or a string field "
            "that is not UTF-8)",
            detail=f"{self.size} bytes: {self.reason}",
        )


def tolerant_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserialize`, returning an `UndecodableRequest` instead of raising."""
    if deserialize is None:
        return None

    def deserialize_or_mark(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, UnicodeDecodeError, ...: all mean "these bytes are not a request"
            return UndecodableRequest(len(data), first_line(exc))

    return deserialize_or_mark


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and caller-safe message for an exception raised while handling a call."""
    for error_type, code in STATUS_FOR_ERROR.items():
        if isinstance(exc, error_type):
            return code, caller_message(str(exc))
    return grpc.StatusCode.INTERNAL, "internal error"


class RateLimitedLog:
    """At most `max_lines` lines per `interval_s`; the rest are counted and reported in one line afterwards, so a
    caller who sends garbage in a loop cannot flood the log."""

    def __init__(self, logger: logging.Logger, max_lines: int = 20, interval_s: float = 10.0):
        self.logger = logger
        self.max_lines = max_lines
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._lines = 0
        self._suppressed = 0

    def log(self, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.interval_s:
                if self._suppressed:
                    self.logger.warning(
                        "suppressed %d similar log lines in the last %.0fs", self._suppressed, self.interval_s
                    )
                self._window_start, self._lines, self._suppressed = now, 0, 0
            if self._lines >= self.max_lines:
                self._suppressed += 1
                return
            self._lines += 1
        self.logger.log(level, message, *args, exc_info=exc_info)


#: Refusals caused by the caller (bad input, no token, unknown model): INFO, they are not the server's fault.
_CALLER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


class ErrorStatusInterceptor(HandlerWrappingInterceptor):
    """Maps every exception of a call to a status with a caller-safe message; logs the detail, rate-limited."""

    def __init__(self, rejected_log: RateLimitedLog | None = None, failed_log: RateLimitedLog | None = None):
        self.rejected_log = rejected_log or RateLimitedLog(log)
        self.failed_log = failed_log or RateLimitedLog(log)
        super().__init__()
        self._wrappers = Wrappers(self._unary_unary, self._unary_stream, self._stream_unary, self._stream_stream)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        deserializer = tolerant_deserializer(handler.request_deserializer)
        return wrap_handler(handler, method, self._wrappers, deserializer)

    def _unary_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        inner = _awaiting(behavior)

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if type(request) is UndecodableRequest:
                    raise request.error()
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise  # the servicer chose its own status
            except Exception as exc:
                await self._abort(exc, method, context)

        return unary_unary

    def _unary_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                if type(request) is UndecodableRequest:
                    raise request.error()
                async for response in _responses(behavior(request, context)):
                    yield response
            except grpc.aio.AbortError:
                raise  # the servicer chose its own status (the health service's NOT_FOUND, for example)
            except Exception as exc:
                await self._abort(exc, method, context)

        return unary_stream

    def _stream_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        inner = _awaiting(behavior)

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(_checked(requests), context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(exc, method, context)

        return stream_unary

    def _stream_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in _responses(behavior(_checked(requests), context)):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(exc, method, context)

        return stream_stream

    async def _abort(self, exc: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
        """End the call with the status of `exc` (raises `grpc.aio.AbortError`); log what the caller is not told."""
        if isinstance(exc, OrtServeError):
            code, message = status_for(exc)
            detail = f" [{exc.detail}]" if exc.detail else ""
            level = logging.INFO if code in _CALLER_CODES else logging.WARNING
            self.rejected_log.log(
                level, "request %s %s: %s %s%s", current_request_id(), method, code.name, first_line(exc), detail
            )
        else:
            self.failed_log.log(
                logging.ERROR, "request %s %s: unexpected error", current_request_id(), method, exc_info=True
            )
            code, message = status_for(Exception())
        await context.abort(code, f"{message} (request id {current_request_id()})", _trailers(context))


def _trailers(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    request_id = current_request_id()
    return ((REQUEST_ID_KEY, request_id),) if request_id else ()


# --- 4. authentication ---------------------------------------------------------------------------------------------

#: Request fields that name the model a call is about, in every service (ortserve.v1, Open Inference Protocol V2).
MODEL_FIELDS = ("model", "model_name", "name")


def requested_model(request: Any) -> str | None:
    """The model a request names (its first string field called one of `MODEL_FIELDS`), or None."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return None
    for name in MODEL_FIELDS:
        field = descriptor.fields_by_name.get(name)
        if field is not None and field.type == field.TYPE_STRING and not _is_repeated(field):
            value: str = getattr(request, name)
            return value
    return None


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; `label` is deprecated there
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known bearer token (UNAUTHENTICATED), before their bytes are decoded, and calls that
    name a model their token is not for (PERMISSION_DENIED). Health is open unless `protect_health`."""

    def __init__(self, authenticator: TokenAuthenticator, protect_health: bool = False):
        self.authenticator = authenticator
        self.protect_health = protect_health

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or (method.startswith(HEALTH_SERVICE_PREFIX) and not self.protect_health):
            return handler
        try:
            grant = self.authenticator.authenticate(handler_call_details.invocation_metadata)
        except UnauthenticatedError as refusal:
            return wrap_handler(handler, method, _refusing(refusal), deserializer=_raw_bytes)
        if grant.models is None:
            return handler
        return wrap_handler(handler, method, _limited_to_models(grant))


def _raw_bytes(data: bytes) -> bytes:
    """The deserializer of a refused call: its bytes are never parsed."""
    return data


def _refusing(refusal: UnauthenticatedError) -> Wrappers:
    """Behaviors that fail with `refusal` before anything else runs (made per refused call: refusals differ)."""

    def unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise refusal

        return refuse

    def streaming(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            raise refusal
            yield  # unreachable; makes this an async generator, as the arity requires

        return refuse

    return Wrappers(unary, streaming, unary, streaming)


def _limited_to_models(grant: TokenGrant) -> Wrappers:
    """Behaviors that check the model a request names against `grant` (streamed requests are not checked)."""

    def unary_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        inner = _awaiting(behavior)

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _check_model(grant, request)
            return await inner(request, context)

        return checked

    def unary_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _check_model(grant, request)
            async for response in _responses(behavior(request, context)):
                yield response

        return checked

    return Wrappers(unary_unary=unary_unary, unary_stream=unary_stream)


def _check_model(grant: TokenGrant, request: Any) -> None:
    model = requested_model(request)
    if model is not None:
        grant.check_model(model)
