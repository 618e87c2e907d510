"""The one place for process-wide client settings: MLflow's HTTP retries, timeouts and progress bars, and the
Hugging Face offline switches.

MLflow and Hugging Face read these from the environment (some only once, at import), so they are applied with
`os.environ.setdefault` before first use: explicit settings of the operator always win.

Credentials: MLflow reads `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (basic auth) and
`MLFLOW_TRACKING_TOKEN` (bearer) itself; use them instead of putting a password into the tracking URI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class MlflowHttpSettings:
    """How hard the MLflow client tries before an HTTP request fails."""

    max_retries: int
    """`MLFLOW_HTTP_REQUEST_MAX_RETRIES` (MLflow's default is 7, with exponential backoff: minutes when down)."""
    backoff_factor: float
    """`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`."""
    timeout_s: float | None = None
    """`MLFLOW_HTTP_REQUEST_TIMEOUT` in seconds (rounded up to at least 1); None keeps MLflow's default."""
    progress_bar: bool | None = None
    """`MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`; None keeps MLflow's default."""


#: The server: a registry outage must be noticed in seconds (start-up and polling go on from the cache), and a
#: progress bar has no place in a server log.
SERVER_HTTP = MlflowHttpSettings(max_retries=1, backoff_factor=1, progress_bar=False)
#: A batch export run by a scheduler: fail within seconds and let the scheduler retry.
EXPORT_HTTP = MlflowHttpSettings(max_retries=2, backoff_factor=1)


def configure_mlflow_client(settings: MlflowHttpSettings, timeout_s: float | None = None) -> None:
    """Apply `settings` (with `timeout_s` overriding its timeout) to MLflow's client, unless the environment
    already sets them."""
    timeout = timeout_s if timeout_s is not None else settings.timeout_s
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", f"{settings.backoff_factor:g}")
    if timeout is not None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout))))
    if settings.progress_bar is not None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true" if settings.progress_bar else "false")


def huggingface_offline() -> None:
    """Never reach the Hugging Face Hub: transformers and huggingface_hub read these when first imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
