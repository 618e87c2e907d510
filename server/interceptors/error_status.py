"""Errors become status codes here: domain errors through the shared table `errors.ERROR_STATUS` (which the HTTP
port maps through too), anything else INTERNAL."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from ortserve.contract.errors import first_line

from ..errors import ERROR_STATUS, InvalidInputError, OrtServeError, caller_message, retry_after_s
from ..observability.logs import RateLimitedLog
from .repeat_offenders import RepeatOffenders
from .request_id import REQUEST_ID_KEY, current_request_id
from .wrapping import HandlerWrappingInterceptor, Wrappers, awaiting, never_decoded, responses, wrap_handler

log = logging.getLogger(__name__)

#: `errors.ERROR_STATUS`, the one error → status table of both doors, with its gRPC codes as `grpc.StatusCode`.
STATUS_FOR_ERROR: dict[type[OrtServeError], grpc.StatusCode] = {
    error_type: grpc.StatusCode[status.grpc_code] for error_type, status in ERROR_STATUS.items()
}


#: The trailer of gRPC's retry pushback: a client whose retry policy covers the status waits this many milliseconds
#: before its next attempt (gRFC A6), instead of its own back-off.
PUSHBACK_TRAILER = "grpc-retry-pushback-ms"
#: Pushback of an overloaded model's RESOURCE_EXHAUSTED that says nothing of its own (`OrtServeError.retry_after_s`),
#: drawn at random between these bounds so that the callers refused together do not come back together.
PUSHBACK_MS = (100, 300)


def retry_pushback_ms() -> str:
    return str(random.randint(*PUSHBACK_MS))


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


@dataclass(frozen=True)
class ScreenedOut:
    """Stands in for a request that a screen refused from its raw bytes, before they were parsed."""

    refusal: OrtServeError

    def error(self) -> OrtServeError:
        return self.refusal


#: What a tolerant deserializer returns instead of a request: the behavior raises its `error()` first thing.
_NOT_A_REQUEST = (UndecodableRequest, ScreenedOut)

#: A check of a method's raw request bytes before they are parsed, raising a domain error to refuse them: for
#: requests whose parse alone costs much (an amplification probe's 100,000 outputs) and can be judged on less.
RequestScreen = Callable[[bytes], None]


def tolerant_deserializer(
    deserialize: Callable[[bytes], Any] | None, screen: RequestScreen | None = None
) -> Callable[[bytes], Any] | None:
    """`deserialize`, returning an `UndecodableRequest` instead of raising, after `screen` (if any) passed the bytes
    (else a `ScreenedOut`)."""
    if deserialize is None:
        return None

    def deserialize_or_mark(data: bytes) -> Any:
        if screen is not None:
            try:
                screen(data)
            except OrtServeError as refusal:
                # Without its traceback: the traceback's frames hold `data` (megabytes for the requests screens are
                # for), and raised again by the call's behavior the refusal sits in a reference cycle that only the
                # cyclic garbage collector frees, so every refused request's bytes stayed in memory until it ran.
                return ScreenedOut(refusal.with_traceback(None))
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

    def __init__(
        self,
        rejected_log: RateLimitedLog | None = None,
        failed_log: RateLimitedLog | None = None,
        screens: Mapping[str, RequestScreen] | None = None,
    ):
        """`screens`: checks of raw request bytes by full method name (`/package.Service/Method`), made before the
        bytes are parsed; a call whose bytes are never parsed (refused by authentication) is not screened."""
        self.rejected_log = rejected_log or RateLimitedLog(log)
        self.failed_log = failed_log or RateLimitedLog(log)
        self.screens = dict(screens or {})
        self.repeat_offenders = RepeatOffenders()
        super().__init__()
        self._wrappers = Wrappers(self._unary_unary, self._unary_stream, self._stream_unary, self._stream_stream)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer
        screen = self.screens.get(method) if parse is not never_decoded else None
        return wrap_handler(handler, method, self._wrappers, tolerant_deserializer(parse, screen))

    def _unary_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        inner = awaiting(behavior)

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if type(request) in _NOT_A_REQUEST:
                    if type(request) is ScreenedOut:
                        await self._hold_repeat(context)
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
                if type(request) in _NOT_A_REQUEST:
                    raise request.error()
                async for response in responses(behavior(request, context)):
                    yield response
            except grpc.aio.AbortError:
                raise  # the servicer chose its own status (the health service's NOT_FOUND, for example)
            except Exception as exc:
                await self._abort(exc, method, context)

        return unary_stream

    def _stream_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        inner = awaiting(behavior)

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
                async for response in responses(behavior(_checked(requests), context)):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(exc, method, context)

        return stream_stream

    async def _hold_repeat(self, context: grpc.aio.ServicerContext) -> None:
        """Wait before refusing a screened request again to the same connection (`RepeatOffenders`): the wait costs
        the server nothing, and a caller that loops on such requests no longer takes the loop from the others."""
        delay = self.repeat_offenders.delay_s(context.peer())
        if delay:
            await asyncio.sleep(delay)

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
        await context.abort(code, f"{message} (request id {current_request_id()})", _trailers(code, exc))


def _trailers(code: grpc.StatusCode, exc: Exception) -> tuple[tuple[str, str], ...]:
    request_id = current_request_id()
    trailers: tuple[tuple[str, str], ...] = ((REQUEST_ID_KEY, request_id),) if request_id else ()
    pushback_s = retry_after_s(exc)
    if pushback_s is not None:  # the refusal says when to come back (admission's `ReturnSchedule`)
        trailers += ((PUSHBACK_TRAILER, str(max(1, round(pushback_s * 1000)))),)
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        trailers += ((PUSHBACK_TRAILER, retry_pushback_ms()),)
    return trailers


async def _checked(requests: Any) -> AsyncIterator[Any]:
    """A request stream in which an undecodable message raises `InvalidInputError` where it is read."""
    async for request in requests:
        if type(request) in _NOT_A_REQUEST:
            raise request.error()
        yield request
