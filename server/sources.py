"""Where model artifacts come from. A `ModelSource` turns the URI of `--model NAME=URI` into a local directory.

This module holds the extension point and the local-directory source; `ortserve.server.registry` adds the MLflow
Model Registry sources (`models:/...`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from .artifact import MODEL_FILE, ArtifactManifest, artifact_digest, check_artifact_dir


@dataclass(frozen=True)
class FetchedArtifact:
    """A complete artifact directory on local disk and the version it holds."""

    version: str
    directory: Path
    note: str = ""
    """Anything the operator should know about how it was fetched (e.g. served from cache, registry down)."""


class ModelSource(abc.ABC):
    """Resolves a model URI to a version and fetches that version's artifact directory.

    Implementations are called from worker threads, never from the event loop, so they may block.
    """

    def __init__(self, uri: str):
        self.uri = uri

    @property
    def follows_updates(self) -> bool:
        """True if the URI can point at a new version over time (an alias or a stage) and should be polled."""
        return False

    def latest_version(self) -> str:
        """The version the URI points at now (cheap; used by polling). Defaults to a full fetch."""
        return self.fetch().version

    @abc.abstractmethod
    def fetch(self, version: str | None = None) -> FetchedArtifact:
        """Return a complete local artifact directory of `version`, or of what the URI points at now if None.

        Downloads it if needed. Raises `ArtifactError` with a message naming the URI when it cannot.
        """


class LocalDirectorySource(ModelSource):
    """An artifact directory on local disk, served as it is. Its version is the manifest's `version`, or a short
    hash of `model.onnx` when the manifest has none."""

    def __init__(self, uri: str):
        super().__init__(uri)
        self.directory = Path(uri).expanduser()

    def fetch(self, version: str | None = None) -> FetchedArtifact:
        check_artifact_dir(self.directory)
        manifest = ArtifactManifest.read(self.directory)
        return FetchedArtifact(manifest.version or artifact_digest(self.directory / MODEL_FILE), self.directory)


def open_source(uri: str, cache_dir: Path | None = None, tracking_uri: str | None = None) -> ModelSource:
    """The source for a `--model` URI: a registry source for `models:/`, else a local directory."""
    if uri.startswith("models:/"):
        from .registry import open_registry_source  # imported lazily: only registry URIs need the MLflow client

        return open_registry_source(uri, cache_dir, tracking_uri)
    return LocalDirectorySource(uri)
