"""Bearer-token authentication of every RPC, before its request bytes are decoded."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..errors import (
    UnauthenticatedError,
)
from ..security.bearer_tokens import TokenAuthenticator, TokenGrant
from .requested_model import requested_model
from .wrapping import WrappedHandlers, Wrappers, awaiting, never_decoded, responses, wrap_handler

log = logging.getLogger(__name__)

#: The health service: its server-wide names stay open to callers without a token, so that load balancers and probes
#: can check health; its per-model names need a token (else they tell anyone which models are served).
HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known bearer token (UNAUTHENTICATED), before their bytes are decoded, and calls that
    name a model their token is not for (PERMISSION_DENIED). Health checks of the names in `open_health` (the whole
    server, liveness) need no token unless `protect_health`; a health check of any other name (a model's) needs one,
    as any call about that model does."""

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        protect_health: bool = False,
        open_health: frozenset[str] = frozenset({""}),
    ):
        self.authenticator = authenticator
        self.protect_health = protect_health
        self.open_health = open_health
        self._health_handlers = WrappedHandlers()
        self._health = _health_by_name(authenticator, open_health)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        if method.startswith(HEALTH_SERVICE_PREFIX) and not self.protect_health:
            wrapped = self._health_handlers.get(method, handler)
            if wrapped is None:
                wrapped = self._health_handlers.put(method, handler, wrap_handler(handler, method, self._health))
            return wrapped
        try:
            grant = self.authenticator.authenticate(handler_call_details.invocation_metadata)
        except UnauthenticatedError as refusal:
            return wrap_handler(handler, method, _refusing(refusal), deserializer=never_decoded)
        if grant.models is None:
            return handler
        return wrap_handler(handler, method, _limited_to_models(grant))


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


def _checking_first(check: Callable[[Any, grpc.aio.ServicerContext], None]) -> Wrappers:
    """Behaviors of unary requests that run `check(request, context)` (which raises to refuse) before the call."""

    def unary_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        inner = awaiting(behavior)

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            check(request, context)
            return await inner(request, context)

        return checked

    def unary_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            check(request, context)
            async for response in responses(behavior(request, context)):
                yield response

        return checked

    return Wrappers(unary_unary=unary_unary, unary_stream=unary_stream)


def _limited_to_models(grant: TokenGrant) -> Wrappers:
    """Behaviors that check the model a request names against `grant` (streamed requests are not checked)."""
    return _checking_first(lambda request, context: _check_model(grant, request))


def _health_by_name(authenticator: TokenAuthenticator, open_health: frozenset[str]) -> Wrappers:
    """Behaviors of the health service that ask for a token only when the checked name is not an open one."""

    def check(request: Any, context: grpc.aio.ServicerContext) -> None:
        service = getattr(request, "service", "")
        if service not in open_health:
            authenticator.authenticate(context.invocation_metadata() or ()).check_model(service)

    return _checking_first(check)


def _check_model(grant: TokenGrant, request: Any) -> None:
    model = requested_model(request)
    if model is not None:
        grant.check_model(model)
