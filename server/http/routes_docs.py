"""`/openapi.json` (an OpenAPI 3 document made from the routes themselves, so it cannot drift from them) and `/docs`,
a Swagger UI page served entirely from the installed `swagger-ui-bundle` package: no CDN, as neither air-gapped
clusters nor this project's CI reach one."""

from __future__ import annotations

import logging
import mimetypes
from typing import Any

from ..errors import ErrorStatus, ModelNotFoundError
from ..open_inference import server_version
from .messages import HttpRequest, HttpResponse, Route, RouteDocs, dump_json

log = logging.getLogger(__name__)

TAG = "Documentation"
#: The Swagger UI files the page loads, served under /docs/ from the installed package.
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")
#: Descriptions of the statuses every route may answer (besides its own 200).
ERROR_STATUSES = {
    "400": "Bad request: the body or a parameter is wrong (the message says which)",
    "401": "Missing or unknown bearer token",
    "403": "The token may not use this model",
    "404": "No such model (or route)",
    "413": "Body over the size limit",
    "429": "Overloaded: retry after Retry-After seconds",
    "503": "Not ready (loading, failed, or draining)",
    "504": "The x-timeout-ms deadline passed",
}

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ortserve HTTP API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
      validatorUrl: null
    });
  </script>
</body>
</html>
"""


def render_error(status: ErrorStatus, message: str, request_id: str) -> HttpResponse:
    return HttpResponse.json({"error": message}, status.http_status)


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of `routes`: one operation per route, with its schemas and examples."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.template, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ortserve HTTP API",
            "version": server_version(),
            "description": (
                "The models of this server over HTTP: the Open Inference Protocol (V2), MLflow's scoring protocol "
                "and ortserve.v1 as JSON, all over the same data plane as gRPC. Send `x-request-id` to choose the "
                "request id and `x-timeout-ms` to set a deadline."
            ),
        },
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        # Tokens are optional: a server without them ignores the header.
        "security": [{}, {"bearer": []}],
    }


def operation(route: Route) -> dict[str, Any]:
    docs = route.docs
    operation_id = (route.method.lower() + route.template).replace("/", "_").replace("{", "").replace("}", "")
    result: dict[str, Any] = {"tags": [docs.tag], "summary": docs.summary, "operationId": operation_id}
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            **({"example": "1"} if name == "version" else {}),
        }
        for name in route.parameters
    ]
    if parameters:
        result["parameters"] = parameters
    if route.reads_body and docs.request_schema is not None:
        content: dict[str, Any] = {}
        for media_type in docs.request_content_types:
            if media_type == "text/csv":
                example = "text\nThe central bank raised rates.\n"
                content[media_type] = {"schema": {"type": "string"}, "example": example}
            else:
                content[media_type] = {"schema": docs.request_schema, "example": docs.request_example}
        result["requestBody"] = {"required": True, "content": content}
    ok: dict[str, Any] = {"description": "OK"}
    if docs.response_schema is not None:
        ok["content"] = {"application/json": {"schema": docs.response_schema}}
    responses: dict[str, Any] = {"200": ok}
    error_content = {"application/json": {"schema": docs.error_schema}} if docs.error_schema else None
    for status, description in ERROR_STATUSES.items():
        responses[status] = {"description": description, **({"content": error_content} if error_content else {})}
    result["responses"] = responses
    return result


def docs_routes(routes: list[Route], example_model: str) -> list[Route]:
    """`/openapi.json`, `/docs` and its assets; open like health checks (they hold no model's data)."""
    assets = _load_assets()
    document = b""

    async def openapi(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, document)

    async def page(request: HttpRequest) -> HttpResponse:
        if not assets:
            raise ModelNotFoundError("the /docs page needs the swagger-ui-bundle package, which is not installed")
        return HttpResponse(200, DOCS_PAGE.encode(), "text/html; charset=utf-8")

    async def asset(request: HttpRequest) -> HttpResponse:
        found = assets.get(request.path_params["asset"])
        if found is None:
            raise ModelNotFoundError("no such file under /docs/")
        return HttpResponse(200, found[1], found[0], [("cache-control", "public, max-age=3600")])

    documented = [
        Route("GET", "/openapi.json", openapi, render_error, RouteDocs("This document", TAG), open=True),
        Route("GET", "/docs", page, render_error, RouteDocs("This API in Swagger UI", TAG), open=True),
    ]
    document = dump_json(openapi_document([*routes, *documented]))
    files = Route("GET", "/docs/{asset}", asset, render_error, RouteDocs("Files of the /docs page", TAG), open=True)
    return [*documented, files]


def _load_assets() -> dict[str, tuple[str, bytes]]:
    """The page's files from the installed swagger-ui-bundle, read once (a few MB): name → (type, bytes)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        log.warning("swagger-ui-bundle is not installed: /docs is off (/openapi.json is served)")
        return {}
    assets = {}
    for name in ASSETS:
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type.endswith("javascript"):
            media_type += "; charset=utf-8"
        assets[name] = (media_type, (swagger_ui_path / name).read_bytes())
    return assets
