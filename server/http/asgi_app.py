"""The ASGI app: matches a route, then does for every request what gRPC's interceptor chain does for every call
(request id, authentication, model scopes, error → status through the shared table, observation), plus what only
HTTP needs (body-size limit, the deadline header), and hands the checked request to the route's handler."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ortserve.contract.errors import first_line

from ..errors import (
    ERROR_STATUS,
    ErrorStatus,
    InvalidInputError,
    OrtServeError,
    PayloadTooLargeError,
    error_status,
    retry_after_s,
)
from ..interceptors.error_status import RateLimitedLog
from ..security.bearer_tokens import TokenAuthenticator
from .messages import HttpRequest, HttpResponse, Route, dump_json
from .request_observing import HttpObserver

log = logging.getLogger(__name__)

#: Header of the request id, read from the request and always sent back.
REQUEST_ID_HEADER = "x-request-id"
#: The model version that answered, on every answer that ran a model: what a canary caller of `/invocations` (whose
#: MLflow body has no place for it) reads to know which side answered; the V2 and native bodies carry it too.
MODEL_VERSION_HEADER = "x-ortserve-model-version"
#: Header of the caller's time budget in milliseconds, mapped to the batcher's deadline (as gRPC's own deadline is).
TIMEOUT_HEADER = "x-timeout-ms"
#: Longest budget accepted: a day (anything longer is a mistake, not a deadline).
MAX_TIMEOUT_MS = 86_400_000.0
#: Seconds a refused caller is told to wait (429) before retrying.
RETRY_AFTER_S = 1

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: gRPC codes that are the caller's doing: logged at INFO, the rest at WARNING (as the gRPC chain does).
_CALLER_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED", "DEADLINE_EXCEEDED"}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


def _generic_error(status: ErrorStatus, message: str, request_id: str) -> HttpResponse:
    return HttpResponse.json({"error": message}, status.http_status)


_NO_ROUTE = ErrorStatus("NOT_FOUND", 404)
#: The gRPC code name of an HTTP status a route answers itself (the first row of the shared table with it).
_CODE_OF_STATUS = {status.http_status: status.grpc_code for status in reversed(ERROR_STATUS.values())}
_NO_METHOD = ErrorStatus("UNIMPLEMENTED", 405)


class HttpApp:
    """The ASGI application of the HTTP port (uvicorn calls it; any ASGI server could)."""

    def __init__(
        self,
        routes: Sequence[Route],
        authenticator: TokenAuthenticator | None = None,
        protect_health: bool = False,
        max_body_bytes: int = 4 * 1024 * 1024,
        observer: HttpObserver | None = None,
    ):
        self.routes = list(routes)
        self._static = {(route.method, route.template): route for route in self.routes if not route.parameters}
        self._static_paths = {route.template for route in self.routes if not route.parameters}
        self._dynamic = [route for route in self.routes if route.parameters]
        self._authenticator = authenticator
        self._protect_health = protect_health
        self._max_body_bytes = max_body_bytes
        self._observer = observer or HttpObserver()
        self._rejected_log = RateLimitedLog(log)
        self._failed_log = RateLimitedLog(log)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The route of `method` on `path` with its path parameters, and whether `path` exists for another method."""
        route = self._static.get((method, path))
        if route is not None:
            return route, {}, True
        path_exists = path in self._static_paths
        for candidate in self._dynamic:
            found = candidate.pattern.match(path)
            if found is None:
                continue
            if candidate.method == method:
                return candidate, found.groupdict(), True
            path_exists = True
        return None, {}, path_exists

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets; lifespan is off (the server's start and stop are OrtServer's)
        headers = _headers(scope.get("headers", ()))
        request_id = _request_id(headers.get(REQUEST_ID_HEADER))
        method: str = scope["method"]
        route, params, path_exists = self.match(method, scope["path"])
        if route is None:
            refusal = _NO_METHOD if path_exists else _NO_ROUTE
            message = "this path does not take that method" if path_exists else "no such route (see /openapi.json)"
            self._observer.unrouted(refusal)
            await _send(send, _generic_error(refusal, message, request_id), request_id)
            return
        call = self._observer.begin(route, params.get("name", ""), headers, request_id)
        status: ErrorStatus | None = None
        try:
            request = HttpRequest(method, scope["path"], params, headers)
            if self._authenticator is not None and not (route.open and not self._protect_health):
                request.grant = self._authenticator.authenticate(
                    [(key, value) for key, value in _all_headers(scope) if key == "authorization"]
                )
                if "name" in params:
                    request.grant.check_model(params["name"])
            request.deadline = _deadline(headers.get(TIMEOUT_HEADER))
            if route.reads_body:
                request.body = await _read_body(receive, headers, self._max_body_bytes)
            response = await route.handler(request)
        except (ClientGone, asyncio.CancelledError) as gone:
            self._observer.end(call, "CANCELLED", 499)  # nobody to answer (or the server stopped waiting)
            if isinstance(gone, asyncio.CancelledError):
                raise
            return
        except Exception as exc:
            status, message = self._failed(exc, route, request_id)
            response = route.errors(status, message, request_id)
            pushback_s = retry_after_s(exc)
            if pushback_s is not None:  # as gRPC's pushback trailer, in the whole seconds HTTP allows (rounded up)
                response.headers.append(("retry-after", str(max(1, math.ceil(pushback_s)))))
            elif status.http_status == 429:
                response.headers.append(("retry-after", str(RETRY_AFTER_S)))
        try:
            await _send(send, response, request_id)
        finally:
            if status is not None:
                code = status.grpc_code
            else:  # a route's own answer, e.g. a ready route's 503 while draining
                code = "OK" if response.status < 400 else _CODE_OF_STATUS.get(response.status, "UNKNOWN")
            self._observer.end(call, code, response.status, response.model_version)

    def _failed(self, exc: Exception, route: Route, request_id: str) -> tuple[ErrorStatus, str]:
        """The status and caller-safe message of `exc`; what the caller is not told goes to the log, rate-limited."""
        status, message = error_status(exc)
        where = f"{route.method} {route.template}"
        if isinstance(exc, OrtServeError):
            detail = f" [{exc.detail}]" if exc.detail else ""
            level = logging.INFO if status.grpc_code in _CALLER_CODES else logging.WARNING
            self._rejected_log.log(
                level, "request %s %s: %d %s%s", request_id, where, status.http_status, first_line(exc), detail
            )
        else:
            self._failed_log.log(logging.ERROR, "request %s %s: unexpected error", request_id, where, exc_info=True)
        return status, message


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names lower case (ASGI servers send them so), values decoded as Latin-1; the first of a repeat wins."""
    headers: dict[str, str] = {}
    for key, value in raw:
        headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


def _all_headers(scope: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key.decode("latin-1").lower(), value.decode("latin-1")) for key, value in scope.get("headers", ())]


def _request_id(value: str | None) -> str:
    if value is not None and _SANE_REQUEST_ID.match(value):
        return value
    return f"{random.getrandbits(128):032x}"  # for correlation, not a secret (see the gRPC request id)


def _deadline(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = math.nan
    if not (0 < milliseconds <= MAX_TIMEOUT_MS):  # also false for nan
        raise InvalidInputError(
            f"header {TIMEOUT_HEADER} must be a number of milliseconds between 0 and {MAX_TIMEOUT_MS:.0f}"
        )
    return time.monotonic() + milliseconds / 1000


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"the request body has {int(length)} bytes, over the limit of {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, response: HttpResponse, request_id: str) -> None:
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("latin-1")),
        (REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")),
        *((key.encode("latin-1"), value.encode("latin-1")) for key, value in response.headers),
    ]
    if response.model_version:
        headers.append((MODEL_VERSION_HEADER.encode(), response.model_version.encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


__all__ = ["HttpApp", "MODEL_VERSION_HEADER", "REQUEST_ID_HEADER", "TIMEOUT_HEADER", "dump_json"]
