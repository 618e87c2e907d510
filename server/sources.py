"""Where model artifacts come from: the local-directory source, and `open_source`, which picks the source for a
`--model` URI (`ortserve.server.registry` holds the MLflow Model Registry source; the extension point itself is
`ortserve.server.model_source`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ortserve.contract.errors import ContractError
from ortserve.contract.uri import REGISTRY_SCHEME, URI_FORMS, RegistryUri

from .artifact import MODEL_FILE, ArtifactManifest, artifact_digest, check_artifact_dir
from .errors import ArtifactError, ModelConfigError
from .model_source import FetchedArtifact, ModelSource

__all__ = ["FetchedArtifact", "LocalDirectorySource", "ModelSource", "open_source"]

#: What callers see instead of a local directory's path: `local:<directory name>`.
LOCAL_SCHEME = "local:"

#: A URI scheme (`s3:`, `runs:`, `modles:`); one letter is a Windows drive, not a scheme.
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):")


class LocalDirectorySource(ModelSource):
    """An artifact directory on local disk, served as it is. Its version is the manifest's `version`, or a short
    hash of `model.onnx` when the manifest has none. Callers see it as `local:<directory name>`, never its path."""

    def __init__(self, uri: str):
        self.directory = Path(uri).expanduser()
        super().__init__(LOCAL_SCHEME + (self.directory.resolve().name or "artifact"))

    def fetch(self, version: str | None = None) -> FetchedArtifact:
        try:
            check_artifact_dir(self.directory)
            manifest = ArtifactManifest.read(self.directory)
        except ArtifactError as exc:
            raise ArtifactError(f"{self.uri}: {exc}", detail=f"{self.directory}: {exc.detail}") from None
        return FetchedArtifact(manifest.version or artifact_digest(self.directory / MODEL_FILE), self.directory)


def open_source(uri: str, cache_dir: Path | None = None, tracking_uri: str | None = None) -> ModelSource:
    """The source for a `--model` URI: a registry source for `models:/`, else a local directory.

    Raises `ModelConfigError` for what no wait can heal: a malformed `models:/` URI, another scheme, a directory that
    does not exist, or a `models:/` URI with no registry configured (MLflow would otherwise fall back to a new
    `./mlflow.db` in the working directory and report every model as not found). A registry that does not answer
    is not such an error: its models load when it comes back.
    """
    if uri.startswith(REGISTRY_SCHEME.rstrip("/")):
        try:
            RegistryUri.parse(uri)
        except ContractError:
            raise ModelConfigError(f"model URI {uri!r} is malformed; use {URI_FORMS}") from None
        if not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
            raise ModelConfigError(
                f"{uri} needs an MLflow registry: pass --tracking-uri URI (or set ORTSERVE_TRACKING_URI), "
                "or set MLFLOW_TRACKING_URI"
            )
        from .registry import open_registry_source  # imported lazily: only registry URIs need the MLflow client

        return open_registry_source(uri, cache_dir, tracking_uri)
    scheme = _SCHEME.match(uri)
    if scheme:
        raise ModelConfigError(
            f"model URI {uri!r} has the scheme {scheme['scheme']!r}, which ortserve does not serve; use "
            f"{URI_FORMS}, or the path of an artifact directory"
        )
    directory = Path(uri).expanduser()
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise ModelConfigError(
            f"model directory {uri} {what}; give the directory that `ortserve export --output` wrote "
            "(model.onnx, tokenizer.json, ortserve.json), or a models:/ URI"
        )
    return LocalDirectorySource(uri)
