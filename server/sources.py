"""Where model artifacts come from: the local-directory source, and `open_source`, which picks the source for a
`--model` URI (`ortserve.server.registry` holds the MLflow Model Registry source; the extension point itself is
`ortserve.server.model_source`)."""

from __future__ import annotations

from pathlib import Path

from .artifact import MODEL_FILE, ArtifactManifest, artifact_digest, check_artifact_dir
from .errors import ArtifactError
from .model_source import FetchedArtifact, ModelSource

__all__ = ["FetchedArtifact", "LocalDirectorySource", "ModelSource", "open_source"]

#: What callers see instead of a local directory's path: `local:<directory name>`.
LOCAL_SCHEME = "local:"


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
    """The source for a `--model` URI: a registry source for `models:/`, else a local directory."""
    if uri.startswith("models:/"):
        from .registry import open_registry_source  # imported lazily: only registry URIs need the MLflow client

        return open_registry_source(uri, cache_dir, tracking_uri)
    return LocalDirectorySource(uri)
