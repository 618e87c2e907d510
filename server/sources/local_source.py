"""The local-directory source: an artifact directory on disk, served as it is."""

from __future__ import annotations

from pathlib import Path

from ..artifact import MODEL_FILE, ArtifactManifest, artifact_digest, check_artifact_dir
from ..errors import ArtifactError
from .model_source import FetchedArtifact, ModelSource

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
