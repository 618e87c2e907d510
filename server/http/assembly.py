"""Puts the HTTP port together from the server's parts: every protocol's routes over the one `InferenceService`,
the same token checking, limits and observation as gRPC."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..security.bearer_tokens import TokenAuthenticator
from ..service import InferenceService
from ..settings import ServerSettings
from .asgi_app import HttpApp
from .listener import HttpListener
from .request_observing import HttpObserver
from .routes_docs import docs_routes
from .routes_mlflow import mlflow_routes
from .routes_native import native_routes
from .routes_v2 import v2_routes

if TYPE_CHECKING:
    from ..observability.metrics import ServerMetrics
    from ..observability.tracing import ServerTracer


def http_listener(
    settings: ServerSettings,
    service: InferenceService,
    accepting: Callable[[], bool],
    authenticator: TokenAuthenticator | None,
    metrics: ServerMetrics | None = None,
    tracer: ServerTracer | None = None,
) -> HttpListener:
    """The HTTP listener of `settings.http_port` (not started)."""
    assert settings.http_port is not None
    example_model = settings.models[0].name if settings.models else "topic"
    routes = [
        *v2_routes(service, accepting),
        *mlflow_routes(service, accepting, settings.http_default_model, _mlflow_version()),
        *native_routes(service, example_model),
    ]
    routes += docs_routes(routes, example_model)
    app = HttpApp(
        routes,
        authenticator,
        protect_health=settings.auth_health,
        max_body_bytes=settings.http_max_body_bytes,
        observer=HttpObserver(service.table, metrics, tracer),
    )
    return HttpListener(
        app,
        settings.host,
        settings.http_port,
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
    )


def _mlflow_version() -> str:
    """The MLflow version `/version` reports, as `mlflow models serve` reports its own."""
    for distribution in ("mlflow", "mlflow-skinny"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"
