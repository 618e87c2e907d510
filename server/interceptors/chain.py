"""Builds the interceptor chain from the settings (see the package docstring for its order)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import grpc

from ..security.bearer_tokens import TokenAuthenticator
from ..settings import ServerSettings
from .error_status import ErrorStatusInterceptor, RequestScreen
from .request_id import RequestIdInterceptor
from .token_auth import TokenAuthInterceptor

log = logging.getLogger(__name__)


def build_interceptors(
    settings: ServerSettings,
    authenticator: TokenAuthenticator | None,
    extra: Sequence[grpc.aio.ServerInterceptor] = (),
    open_health: frozenset[str] = frozenset({""}),
    screens: Mapping[str, RequestScreen] | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptor chain, outermost first (see the module docstring).

    `extra` is the extension point for cross-cutting concerns that need to see every call, metrics first among them:
    they run inside the request id (use `current_request_id()`) and outside the error mapping and authentication,
    so a refused or failed call reaches them as a raised `grpc.aio.AbortError` with `context.code()` set.
    `authenticator` checks bearer tokens (None: no tokens configured, every call is let in); the server builds one
    from `settings` and shares it with the HTTP door, so both read the token file once and agree on every reload.
    `open_health` are the health service names that need no token (the server's own, not a model's).
    `screens` check a method's raw request bytes before they are parsed (by full method name; see
    `ErrorStatusInterceptor`), for the transports to refuse what is costly to parse and can be judged on less.
    """
    chain: list[grpc.aio.ServerInterceptor] = [RequestIdInterceptor(), *extra, ErrorStatusInterceptor(screens=screens)]
    if authenticator is not None:
        chain.append(TokenAuthInterceptor(authenticator, settings.auth_health, open_health))
    return chain
