"""A registered version's files over MLflow's REST artifact routes, for http(s) registries, without the MLflow client.

MLflow's client downloads a version from `get_model_version_download_uri`: a `mlflow-artifacts:/...` URI (a server run
with `--serve-artifacts`, the default) is read through the server's artifact proxy; anything else is read where it
lies. The server answers for the files it can read itself, so a version is read here, over HTTP:

- `mlflow-artifacts:/PATH` → the proxy: `GET /api/2.0/mlflow-artifacts/artifacts?path=PATH` lists a directory,
  `GET /api/2.0/mlflow-artifacts/artifacts/PATH` streams a file (what MLflow's `MlflowArtifactsRepository` does);
- a path on the server's side (`--no-serve-artifacts` with a local artifact root) under the version's run → the
  run-relative routes `GET /api/2.0/mlflow/artifacts/list` and `GET /get-artifact`;
- the same, for an MLflow 3 logged model (source `models:/m-<id>`) → the logged model's routes
  `GET /api/2.0/mlflow/logged-models/<id>/artifacts/directories` and `.../artifacts/files`.

Any other location (`s3://`, `gs://`, ...) raises `RestArtifactsUnsupported`: the MLflow client reads those with the
client's own credentials, in a child (`registry_worker`). Only the files an ortserve artifact is made of are fetched
(the contract's `assemble_artifact` ignores the rest: MLmodel, conda.yaml, ...), laid out as in the registry, so the
contract verifies them, marks them complete and maps their errors exactly as it does for the MLflow client's download.
"""

from __future__ import annotations

import abc
import fnmatch
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ortserve.contract.artifact import ARTIFACT_FILES, EXTRA_FILES_DIR, ArtifactManifest
from ortserve.contract.cache import fetch_registered_artifact
from ortserve.contract.registry import mlflow_error

from .registry_rest import RestRegistryClient

#: Files of the logged model's root that an ortserve artifact may need besides ARTIFACT_FILES (external tensor data).
EXTERNAL_DATA = "*.onnx*data"
PROXY = "/api/2.0/mlflow-artifacts/artifacts"
LOGGED_MODEL_SOURCE = "models:/m-"


class RestArtifactsUnsupported(Exception):
    """The version's files are where the tracking server does not serve them (e.g. `s3://`): use the MLflow client."""


@dataclass(frozen=True)
class ArtifactEntry:
    """One listed entry, its path relative to the version's root."""

    path: str
    is_dir: bool


class ArtifactRoutes(abc.ABC):
    """How one version's files are listed and fetched; paths are relative to the version's root."""

    def __init__(self, client: RestRegistryClient):
        self.client = client

    @abc.abstractmethod
    def list(self, path: str) -> list[ArtifactEntry]:
        """The entries of directory `path` ('' for the root)."""

    @abc.abstractmethod
    def file_url(self, path: str) -> str:
        """The URL that streams file `path`."""


class ProxyRoutes(ArtifactRoutes):
    """`mlflow-artifacts:` URIs through the server's artifact proxy (`--serve-artifacts`)."""

    def __init__(self, client: RestRegistryClient, root: str):
        super().__init__(client)
        self.root = root.strip("/")

    def list(self, path: str) -> list[ArtifactEntry]:
        answer = self.client.get_json(PROXY, {"path": posixpath.join(self.root, path).rstrip("/")})
        return [_entry(posixpath.join(path, f["path"]), f) for f in answer.get("files", [])]

    def file_url(self, path: str) -> str:
        return f"{self.client.base_url}{PROXY}/{quote(posixpath.join(self.root, path))}"


class RunRoutes(ArtifactRoutes):
    """Files under a run's artifact root, read by the server (`--no-serve-artifacts`)."""

    def __init__(self, client: RestRegistryClient, run_id: str, prefix: str):
        super().__init__(client)
        self.run_id, self.prefix = run_id, prefix.strip("/")

    def list(self, path: str) -> list[ArtifactEntry]:
        full = posixpath.join(self.prefix, path).rstrip("/")
        params = {"run_id": self.run_id, "path": full}
        entries: list[ArtifactEntry] = []
        while True:
            answer = self.client.get_json("/api/2.0/mlflow/artifacts/list", params)
            entries += [_entry(_relative(f["path"], self.prefix), f) for f in answer.get("files", [])]
            token = answer.get("next_page_token")
            if not token:
                return entries
            params = {**params, "page_token": token}

    def file_url(self, path: str) -> str:
        query = urlencode({"run_id": self.run_id, "path": posixpath.join(self.prefix, path)})
        return f"{self.client.base_url}/get-artifact?{query}"


class LoggedModelRoutes(ArtifactRoutes):
    """Files of an MLflow 3 logged model, read by the server (`--no-serve-artifacts`)."""

    def __init__(self, client: RestRegistryClient, model_id: str, prefix: str):
        super().__init__(client)
        self.model_id, self.prefix = model_id, prefix.strip("/")

    def list(self, path: str) -> list[ArtifactEntry]:
        full = posixpath.join(self.prefix, path).rstrip("/")
        route = f"/api/2.0/mlflow/logged-models/{quote(self.model_id)}/artifacts/directories"
        answer = self.client.get_json(route, {"artifact_directory_path": full} if full else {})
        return [_entry(_relative(f["path"], self.prefix), f) for f in answer.get("files", [])]

    def file_url(self, path: str) -> str:
        query = urlencode({"artifact_file_path": posixpath.join(self.prefix, path)})
        return (
            f"{self.client.base_url}/ajax-api/2.0/mlflow/logged-models/{quote(self.model_id)}/artifacts/files?{query}"
        )


def artifact_routes(client: RestRegistryClient, name: str, version: str) -> ArtifactRoutes:
    """The routes that serve registered `name`/`version`'s files (one to three GETs to find out).

    Raises `RestArtifactsUnsupported` for locations the server does not serve, `RestRegistryError` (MLflow's error
    code) when the registry refuses or cannot be reached."""
    location = client.get_model_version_download_uri(name, version)
    parts = urlsplit(location)
    if parts.scheme == "mlflow-artifacts":
        if parts.netloc and parts.netloc != urlsplit(client.base_url).netloc:
            raise RestArtifactsUnsupported("artifacts proxied by another server")
        return ProxyRoutes(client, parts.path)
    if parts.scheme not in ("", "file"):
        raise RestArtifactsUnsupported(f"artifacts in a {parts.scheme}: store")
    registered = client.get_model_version(name, version)
    if registered.source.startswith(LOGGED_MODEL_SOURCE):
        model_id = registered.source[len("models:/") :].strip("/")
        route = f"/api/2.0/mlflow/logged-models/{quote(model_id)}"
        root = client.get_json(route, {})["model"]["info"].get("artifact_uri", "")
        prefix = _under(location, root)
        if prefix is not None:
            return LoggedModelRoutes(client, model_id, prefix)
    if registered.run_id:
        run = client.get_json("/api/2.0/mlflow/runs/get", {"run_id": registered.run_id})
        prefix = _under(location, run["run"]["info"].get("artifact_uri", ""))
        if prefix is not None:
            return RunRoutes(client, registered.run_id, prefix)
    raise RestArtifactsUnsupported("artifacts outside the version's run and logged model")


def fetch_version_over_rest(client: RestRegistryClient, name: str, version: str, destination: Path) -> ArtifactManifest:
    """The REST twin of the MLflow client's download: `fetch_registered_artifact` (scratch directory, the digests
    export recorded, the marker, the rename into place) with the files from `download_version_files`.

    Raises the contract's errors, mapped from MLflow's error codes as for the MLflow client; `RestArtifactsUnsupported`
    when the server does not serve the version's files (nothing was written then)."""
    what = f"models:/{name}/{version}"

    def download(target: Path) -> Path:
        try:
            return download_version_files(client, name, version, target)
        except RestArtifactsUnsupported:
            raise
        except Exception as exc:  # RestRegistryError (MLflow's code, or none when unreachable), a bad listing, disk
            raise mlflow_error(what, exc) from None

    return fetch_registered_artifact(client, name, version, destination, None, download=download)


def download_version_files(client: RestRegistryClient, name: str, version: str, destination: Path) -> Path:
    """Fetch the files of registered `name`/`version` that make an ortserve artifact into the new directory
    `destination`, laid out as in the registry (model.onnx at the root, tokenizer and manifest at the root or in
    extra_files/, external tensor data beside model.onnx); return `destination`."""
    routes = artifact_routes(client, name, version)
    wanted: list[str] = []
    for entry in routes.list(""):
        base = posixpath.basename(entry.path)
        if entry.is_dir and base == EXTRA_FILES_DIR:
            wanted += [
                e.path for e in routes.list(entry.path) if not e.is_dir and posixpath.basename(e.path) in ARTIFACT_FILES
            ]
        elif not entry.is_dir and (base in ARTIFACT_FILES or fnmatch.fnmatch(base, EXTERNAL_DATA)):
            wanted.append(entry.path)
    for path in wanted:
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download(routes.file_url(path), target)
    destination.mkdir(parents=True, exist_ok=True)  # nothing listed: assembling reports what is missing
    return destination


def _entry(path: str, listed: dict[str, Any]) -> ArtifactEntry:
    if posixpath.isabs(path) or ".." in path.split("/"):  # the server names files; never write outside the scratch
        raise ValueError(f"unsafe artifact path {path!r}")
    return ArtifactEntry(path, bool(listed.get("is_dir")))


def _relative(path: str, prefix: str) -> str:
    return path[len(prefix) + 1 :] if prefix and path.startswith(prefix + "/") else path


def _under(location: str, root: str) -> str | None:
    """`location` relative to `root` ('' if equal), or None if it is not inside it (paths or file: URIs)."""
    location, root = _path_of(location), _path_of(root).rstrip("/")
    if not root:
        return None
    if location.rstrip("/") == root:
        return ""
    return location[len(root) + 1 :] if location.startswith(root + "/") else None


def _path_of(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.path if parts.scheme == "file" else uri
