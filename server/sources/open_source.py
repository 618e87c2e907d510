"""`open_source` picks the model source of a `--model` URI: `registry_source` for `models:/`, else `local_source`.
The extension point both implement is `model_source.ModelSource`."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ortserve.contract.errors import ContractError
from ortserve.contract.redact import redact_uri
from ortserve.contract.uri import REGISTRY_SCHEME, URI_FORMS, RegistryUri

from ..errors import ModelConfigError
from .local_source import LocalDirectorySource
from .model_source import ModelSource

#: A URI scheme (`s3:`, `runs:`, `modles:`); one letter is a Windows drive, not a scheme.
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):")


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
        from .registry_source import open_registry_source  # imported lazily: only registry URIs need the MLflow client

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


def registry_named(uris: list[str], tracking_uri: str | None = None) -> str | None:
    """The MLflow registry the `models:/` URIs among `uris` resolve in, credentials redacted, for the start-up log
    (a model "not found in the registry" is then found or not in a registry the operator can see); None without
    any `models:/` URI."""
    if not any(uri.startswith(REGISTRY_SCHEME.rstrip("/")) for uri in uris):
        return None
    registry = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    source = "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI"
    return f"{redact_uri(registry)} ({source})" if registry else None
