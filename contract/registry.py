"""The MLflow Model Registry as both sides see it: one mapping of MLflow errors, one way to resolve a `models:/`
URI to a version, one download of a registered version.

Every function takes an `MlflowClient` (created by the caller with its tracking URI) and raises the contract's
errors, whose messages carry no host or credential; the MLflow error text, redacted, goes into `detail`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import (
    ContractError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
    first_line,
)
from .redact import redact_text
from .uri import RegistryUri

#: MLflow error codes that mean "the registry answered: no such model, version or alias" (not an outage).
NOT_FOUND_ERROR_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
#: MLflow error codes of a registry that is there but cannot answer now: retried like an outage.
UNAVAILABLE_ERROR_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def filter_literal(value: str) -> str:
    """`value` quoted for an MLflow search filter (`name = '...'`)."""
    return "'" + value.replace("'", "\\'") + "'"


def is_not_found(exc: BaseException) -> bool:
    """True if `exc` is MLflow's answer "no such model, version, alias or run"."""
    return getattr(exc, "error_code", None) in NOT_FOUND_ERROR_CODES


def mlflow_error(what: str, exc: BaseException) -> ContractError:
    """The contract error for an exception raised by the MLflow client while working on `what` (a model URI).

    "The registry says no" (not found) is told apart from "the registry cannot be reached" (no error code: a
    connection error; or a server-side error code). The message names `what` only; the MLflow text, which can
    hold the tracking URI and its credentials, is redacted into `detail`.
    """
    if isinstance(exc, ContractError):
        return exc
    code = getattr(exc, "error_code", None)
    detail = redact_text(first_line(exc))
    if code in NOT_FOUND_ERROR_CODES:
        return RegistryNotFoundError(f"{what}: not found in the registry", detail=detail)
    if code is not None and code not in UNAVAILABLE_ERROR_CODES:
        return RegistryError(f"{what}: registry error {code}", detail=detail)
    return RegistryUnavailableError(f"{what}: registry unreachable", detail=detail)


class VersionNotFoundError(RegistryNotFoundError):
    """What a `models:/` URI names does not exist; `missing` says which part: `model`, `alias`, `version`,
    `stage` or `versions` (the model has none)."""

    def __init__(self, uri: RegistryUri, reason: str, missing: str, *, detail: str = ""):
        super().__init__(f"{uri}: not found in the registry: {reason}", detail=detail)
        self.reason = reason
        """What is missing, without the URI (e.g. "registered model 'x' has no alias 'y' (aliases: z)")."""
        self.missing = missing


def resolve_version(client: Any, uri: RegistryUri) -> Any:
    """The MLflow `ModelVersion` that `uri` points at now (alias, version, stage or latest).

    Costs one registry request when the URI resolves. Raises `VersionNotFoundError` naming what is missing (with
    the existing aliases or versions as a hint), `RegistryUnavailableError` when the registry cannot be asked.
    """
    what = str(uri)
    try:
        if uri.alias:
            return client.get_model_version_by_alias(uri.name, uri.alias)
        if uri.version:
            return client.get_model_version(uri.name, uri.version)
        versions = client.search_model_versions(f"name = {filter_literal(uri.name)}")
    except Exception as exc:  # MlflowException or a requests error
        error = mlflow_error(what, exc)
        if isinstance(error, RegistryNotFoundError):
            raise _explain_missing(client, uri, error.detail) from None
        raise error from None
    if uri.stage:
        versions = [v for v in versions if (v.current_stage or "").lower() == uri.stage.lower()]
    if not versions:
        raise _explain_missing(client, uri, "")
    return max(versions, key=lambda v: int(v.version))


def _explain_missing(client: Any, uri: RegistryUri, detail: str) -> ContractError:
    """Tell "no such registered model" from "no such alias/version/stage", with the existing ones as a hint."""
    name = uri.name
    try:
        model = client.get_registered_model(name)
        if uri.alias:
            aliases = sorted(getattr(model, "aliases", None) or {})
            return VersionNotFoundError(
                uri,
                f"registered model {name!r} has no alias {uri.alias!r} (aliases: {', '.join(aliases) or 'none'})",
                "alias",
                detail=detail,
            )
        numbers = sorted(int(v.version) for v in client.search_model_versions(f"name = {filter_literal(name)}"))
    except Exception as exc:
        error = mlflow_error(str(uri), exc)
        if isinstance(error, RegistryNotFoundError):
            return VersionNotFoundError(uri, f"no registered model {name!r}", "model", detail=error.detail)
        return error
    listed = f"versions: {', '.join(map(str, numbers))}" if numbers else "it has no versions yet"
    if uri.version:
        return VersionNotFoundError(
            uri, f"registered model {name!r} has no version {uri.version} ({listed})", "version", detail=detail
        )
    if uri.stage and numbers:
        return VersionNotFoundError(
            uri, f"registered model {name!r} has no version in stage {uri.stage!r}", "stage", detail=detail
        )
    return VersionNotFoundError(uri, f"registered model {name!r} has no versions yet", "versions", detail=detail)


def version_tags(client: Any, name: str, version: str) -> dict[str, str]:
    """Tags of one registered version ({} if the registry cannot say)."""
    try:
        return dict(client.get_model_version(name, version).tags or {})
    except Exception:  # tags only add a check; their absence must not fail a download
        return {}


def download_version(client: Any, name: str, version: str, destination: Path, tracking_uri: str | None) -> Path:
    """Download registered version `name`/`version` into the empty directory `destination`; return the local root
    of the logged model. Raises the contract error of whatever failed."""
    import mlflow.artifacts

    what = f"models:/{name}/{version}"
    try:
        # Ask the registry for the version's artifact location, then download from there: resolving models:/
        # inside download_artifacts ignores an explicit registry URI in some MLflow releases.
        location = client.get_model_version_download_uri(name, version)
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=str(destination), tracking_uri=tracking_uri
            )
        )
    except Exception as exc:
        raise mlflow_error(what, exc) from None
