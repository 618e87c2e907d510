"""The few MLflow REST calls that resolving a `models:/` URI needs, over the standard library, for http(s) registries.

Resolution happens at every start and every poll round; over HTTP it is one GET, so it runs in the server itself
(milliseconds, no child, no MLflow import). `RestRegistryClient` offers the subset of `MlflowClient` that
`ortserve.contract.registry.resolve_version` and `ortserve.contract.cache.fetch_registered_artifact` call, with
MLflow's own error codes, so resolution, verification and error mapping stay the contract's; its `get_json` and
`download` carry the artifact routes of `registry_rest_artifacts`. Registries this client does not speak for (other
schemes, MLflow auth plugins, SigV4, workspaces) go through the MLflow client in a child (`registry_worker`).

Authentication as MLflow does it: `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (or user-info in the URI)
as basic auth, else `MLFLOW_TRACKING_TOKEN` as a bearer token; TLS with `MLFLOW_TRACKING_INSECURE_TLS`,
`MLFLOW_TRACKING_SERVER_CERT_PATH` and `MLFLOW_TRACKING_CLIENT_CERT_PATH`. Retries and timeout follow
`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` and `MLFLOW_HTTP_REQUEST_TIMEOUT`.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

#: Settings whose behaviour only the MLflow client implements: with any of them set, resolution uses the child.
MLFLOW_ONLY_SETTINGS = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_WORKSPACE")
#: HTTP statuses retried like MLflow does (with backoff), besides connection errors.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
API = "/api/2.0/mlflow/"
#: Page size of a version search (MLflow's server caps what it returns per page).
SEARCH_PAGE = 1000
#: Bytes read at a time while a file streams to disk.
CHUNK = 1 << 20

_T = TypeVar("_T")


class RestRegistryError(Exception):
    """A failed registry request. `error_code` is MLflow's (None for a connection error, as the MLflow client's
    `requests` errors have none), so `contract.registry.mlflow_error` maps it the same way."""

    def __init__(self, message: str, error_code: str | None = None):
        super().__init__(message)
        self.error_code = error_code


@dataclass
class RestModelVersion:
    """The fields of MLflow's `ModelVersion` that resolution reads."""

    name: str
    version: str
    current_stage: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    """Where the version was registered from (`models:/m-<id>` for an MLflow 3 logged model, else a location)."""
    run_id: str = ""


@dataclass
class RestRegisteredModel:
    """The fields of MLflow's `RegisteredModel` that resolution reads."""

    name: str
    aliases: dict[str, str] = field(default_factory=dict)


def rest_registry_client(tracking_uri: str | None) -> RestRegistryClient | None:
    """A REST client for `tracking_uri` (default `MLFLOW_TRACKING_URI`) if it is http(s) and nothing that only the
    MLflow client implements is configured; else None."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if urlsplit(uri).scheme not in ("http", "https"):
        return None
    if any(os.environ.get(name) for name in MLFLOW_ONLY_SETTINGS):
        return None
    return RestRegistryClient(uri)


class RestRegistryClient:
    """GET requests to an MLflow tracking server's model registry API (see the module docstring)."""

    def __init__(self, tracking_uri: str):
        parts = urlsplit(tracking_uri)
        host = parts.netloc.rsplit("@", 1)[-1]
        self._base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self._headers = {"Accept": "application/json", "User-Agent": "ortserve"}
        username = os.environ.get("MLFLOW_TRACKING_USERNAME") or unquote(parts.username or "")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or unquote(parts.password or "")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if username and password:
            basic = base64.standard_b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        elif token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl = _ssl_context() if parts.scheme == "https" else None
        self.max_retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
        self.backoff_factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
        self.timeout_s = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))

    # --- the MlflowClient subset ------------------------------------------------------------------------------------

    def get_model_version_by_alias(self, name: str, alias: str) -> RestModelVersion:
        return _version(self._get("registered-models/alias", {"name": name, "alias": alias})["model_version"])

    def get_model_version(self, name: str, version: str) -> RestModelVersion:
        return _version(self._get("model-versions/get", {"name": name, "version": version})["model_version"])

    def search_model_versions(self, filter_string: str) -> list[RestModelVersion]:
        versions: list[RestModelVersion] = []
        params = {"filter": filter_string, "max_results": str(SEARCH_PAGE)}
        while True:
            answer = self._get("model-versions/search", params)
            versions += [_version(v) for v in answer.get("model_versions", [])]
            token = answer.get("next_page_token")
            if not token:
                return versions
            params = {**params, "page_token": token}

    def get_registered_model(self, name: str) -> RestRegisteredModel:
        model = self._get("registered-models/get", {"name": name})["registered_model"]
        aliases = {a["alias"]: str(a["version"]) for a in model.get("aliases", [])}
        return RestRegisteredModel(model.get("name", name), aliases)

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        """Where the version's files are (`mlflow-artifacts:/...`, a path on the server's side, `s3://...`)."""
        return str(self._get("model-versions/get-download-uri", {"name": name, "version": version})["artifact_uri"])

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        """Set one tag on a model version (the challenger write-back, `server/challenger.py`)."""
        self._post("model-versions/set-tag", {"name": name, "version": version, "key": key, "value": value})

    # --- HTTP -------------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The tracking server's root URL (path prefix included, no credentials)."""
        return self._base

    def get_json(self, path: str, params: dict[str, str]) -> Any:
        """GET `base_url` + `path` (e.g. `/api/2.0/mlflow/runs/get`) with `params`; the JSON answer."""
        return self._with_retries(f"{self._base}{path}?{urlencode(params)}", lambda r: json.loads(r.read() or b"{}"))

    def download(self, url: str, destination: Path) -> int:
        """Stream `url` (on this tracking server) into the new file `destination`, retried from its start like any
        request; return its size. A body shorter than its Content-Length fails like a reset connection."""

        def save(response: http.client.HTTPResponse) -> int:
            with destination.open("wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
                return out.tell()

        return self._with_retries(url, save)

    def _get(self, endpoint: str, params: dict[str, str]) -> Any:
        return self.get_json(API + endpoint, params)

    def _post(self, endpoint: str, body: dict[str, str]) -> Any:
        """POST `body` as JSON to `endpoint`; the JSON answer."""
        return self._with_retries(f"{self._base}{API}{endpoint}", lambda r: json.loads(r.read() or b"{}"), body)

    def _with_retries(
        self, url: str, read: Callable[[http.client.HTTPResponse], _T], body: dict[str, str] | None = None
    ) -> _T:
        """Open `url` (GET, or POST of `body` as JSON when given) and `read` the response, retried with backoff like
        MLflow's client: connection errors and RETRY_STATUSES. Raises `RestRegistryError` with MLflow's error code
        when the server answered one."""
        if body is None:
            request = urllib.request.Request(url, headers=self._headers)
        else:
            headers = {**self._headers, "Content-Type": "application/json"}
            request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl) as response:
                    return read(response)
            except urllib.error.HTTPError as exc:
                error = _http_error(url, exc)
                if exc.code not in RETRY_STATUSES or last:
                    raise error from None
            # refused, reset, timed out, DNS, TLS, a body cut short; or a body that is not JSON
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if last:
                    raise RestRegistryError(f"API request to {url} failed: {exc}") from None
            time.sleep(self.backoff_factor * 2**attempt if attempt else 0)  # urllib3's schedule: 0, 2f, 4f, ...
        raise AssertionError("unreachable")


def _version(data: dict[str, Any]) -> RestModelVersion:
    tags = {t["key"]: t.get("value", "") for t in data.get("tags", [])}
    return RestModelVersion(
        data["name"],
        str(data["version"]),
        data.get("current_stage", ""),
        tags,
        data.get("source", ""),
        data.get("run_id", ""),
    )


def _http_error(url: str, exc: urllib.error.HTTPError) -> RestRegistryError:
    """MLflow answers errors as JSON `{"error_code": ..., "message": ...}`; anything else keeps no code."""
    try:
        body = json.loads(exc.read() or b"{}")
        code, message = body.get("error_code"), body.get("message", "")
    except (OSError, ValueError, AttributeError):
        code, message = None, ""
    if code is None and exc.code in (401, 403):
        code = "PERMISSION_DENIED" if exc.code == 403 else "UNAUTHENTICATED"
    return RestRegistryError(f"API request to {url} failed with {exc.code}: {message or exc.reason}", code)


def _ssl_context() -> ssl.SSLContext:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    client_cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if client_cert:
        context.load_cert_chain(client_cert)
    return context
