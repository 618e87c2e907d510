"""The export job's MLflow connection: which tracking URI, and failing fast when it cannot be reached."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ortserve.contract.redact import redact_text, redact_uri
from ortserve.contract.settings import EXPORT_HTTP, configure_mlflow_client

from .errors import ExportError

#: Seconds to wait for the tracking server's /health endpoint before giving up.
HEALTH_TIMEOUT = 5.0


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """`explicit` (the `--tracking-uri` flag), else `MLFLOW_TRACKING_URI`, else MLflow's own default.

    MLflow's default is the SQLite store `sqlite:///<cwd>/mlflow.db`, the embedded store the demo uses.
    """
    if explicit:
        return explicit
    import mlflow

    return str(mlflow.get_tracking_uri())


@contextmanager
def tracking(explicit: str | None, source: str) -> Iterator[Any]:
    """Point MLflow at the tracking URI for the duration of an export and yield an `MlflowClient`.

    Checks first that the store is there: an HTTP server must answer `/health`, a SQLite file must exist (MLflow
    would otherwise create an empty store and report the model as unknown). The previous global tracking URI is
    restored afterwards, so an Airflow worker that runs several tasks is left as it was.
    """
    configure_mlflow_client(EXPORT_HTTP)  # fail within seconds when the server is down; the scheduler retries
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(explicit)
    check_reachable(uri, source)
    with use_tracking_uri(uri):
        yield MlflowClient(tracking_uri=uri)


@contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Set MLflow's global tracking URI (the fluent API's `log_model` and `download_artifacts` read it) for the
    duration of the block, then restore what was there, environment variable included."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_global, saved_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = saved_global
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def check_reachable(uri: str, source: str) -> None:
    """Raise `ExportError` if the tracking store behind `uri` is clearly absent (HTTP server down, no SQLite file)."""
    parsed = urlparse(uri)
    hint = "pass --tracking-uri or set MLFLOW_TRACKING_URI to the store that holds the model"
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: a proxy or an auth layer may refuse /health while the API works
        except (OSError, ValueError) as exc:
            reason = redact_text(str(getattr(exc, "reason", exc)))
            raise ExportError(
                f"{source}: cannot reach the MLflow tracking server at {redact_uri(uri)} ({reason}); start it, "
                f"or {hint}"
            ) from None
    elif parsed.scheme == "sqlite":
        path = _sqlite_path(uri)
        if path is not None and not path.is_file():
            raise ExportError(
                f"{source}: there is no MLflow store at {redact_uri(uri)} (file {path} does not exist); {hint}"
            )


def _sqlite_path(uri: str) -> Path | None:
    # sqlite:///relative.db, sqlite:////absolute.db; in-memory stores have no file to check.
    rest = uri[len("sqlite://") :]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(unquote(rest[1:].split("?", 1)[0]) or ".").resolve()


def local_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """For a SQLite store, an artifact location beside the database file for a new experiment; else None.

    MLflow's default for SQLite stores is `./mlruns` relative to the working directory of whichever process creates
    the experiment, which scatters artifacts wherever a job happened to run.
    """
    if not tracking_uri.startswith("sqlite:"):
        return None
    path = _sqlite_path(tracking_uri)
    return (path.parent / "mlruns" / experiment).as_uri() if path is not None else None


def experiment_id_for(client: Any, name: str) -> str:
    """Id of the experiment `name`, created (with artifacts beside a SQLite store) if it does not exist yet."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=local_artifact_location(client.tracking_uri, name)))
