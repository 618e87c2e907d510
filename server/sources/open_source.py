"""`open_source` picks the model source of a `--model` URI: `registry_source` for `models:/`, else `local_source`.
The extension point both implement is `model_source.ModelSource`."""

from __future__ import annotations

from pathlib import Path

from .local_source import LocalDirectorySource
from .model_source import ModelSource


def open_source(uri: str, cache_dir: Path | None = None, tracking_uri: str | None = None) -> ModelSource:
    """The source for a `--model` URI: a registry source for `models:/`, else a local directory."""
    if uri.startswith("models:/"):
        from .registry_source import open_registry_source  # imported lazily: only registry URIs need the MLflow client

        return open_registry_source(uri, cache_dir, tracking_uri)
    return LocalDirectorySource(uri)
