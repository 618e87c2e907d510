"""The child side of `ortserve.server.sources.registry_worker`: registry jobs done with the MLflow client, in a process that
exits when they are done (`python -m ortserve.contract.registry_jobs`, one JSON request on stdin, one JSON answer as
the last line of stdout). Here, in the contract, so that the child imports neither gRPC nor ONNX Runtime."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ContractError
from .redact import redact_text

#: Error classes the parent rebuilds by name (`ortserve.contract.errors`); anything else is reported as RegistryError.
REPORTED_ERRORS = (
    "IntegrityError",
    "ArtifactInvalidError",
    "ModelUriError",
    "RegistryNotFoundError",
    "RegistryUnavailableError",
    "RegistryError",
)


def error_dict(exc: BaseException) -> dict[str, Any]:
    """A job's error as JSON: the class, the caller-safe message and the (redacted) detail for the log."""
    if isinstance(exc, ContractError):
        kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in REPORTED_ERRORS), "RegistryError")
        return {"error": {"kind": kind, "message": str(exc), "detail": exc.detail}}
    if isinstance(exc, OSError):
        return {"error": {"kind": "OSError", "message": redact_text(str(exc)), "detail": ""}}
    return {"error": {"kind": "RegistryError", "message": "registry worker error", "detail": redact_text(repr(exc))}}


def _run_jobs(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Do every job of `request` with one MLflow client; one result (or error) per job, in order."""
    from .cache import fetch_registered_artifact
    from .registry import mlflow_error, resolve_version
    from .uri import RegistryUri

    tracking_uri = request.get("tracking_uri")
    jobs: list[dict[str, Any]] = request["jobs"]
    client: Any = None
    results: list[dict[str, Any]] = []
    for job in jobs:
        what = job.get("uri") or f"models:/{job.get('name')}/{job.get('version')}"
        try:
            if client is None:
                from mlflow import MlflowClient

                try:
                    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
                except Exception as exc:  # e.g. an unsupported scheme; its text holds the URI, credentials too
                    raise mlflow_error(what, exc) from None
            if job["op"] == "resolve":
                version = resolve_version(client, RegistryUri.parse(job["uri"])).version
                results.append({"version": str(version)})
            elif job["op"] == "download":
                fetch_registered_artifact(client, job["name"], job["version"], Path(job["destination"]), tracking_uri)
                results.append({})
            elif job["op"] == "set_tags":  # the challenger write-back of the server
                for key, value in json.loads(job["tags"]).items():
                    client.set_model_version_tag(job["name"], job["version"], key, value)
                results.append({})
            else:
                raise ValueError(f"unknown job {job['op']!r}")
        except (ContractError, OSError) as exc:
            results.append(error_dict(exc))
        except Exception as exc:  # any surprise of one job must not lose the answers to the others
            results.append(error_dict(mlflow_error(what, exc)))
    return results


def main() -> None:
    """Child entry point: one JSON request on stdin, one JSON answer on stdout (the last line)."""
    from .redact import RedactingFilter
    from .settings import huggingface_offline

    huggingface_offline()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    request = json.loads(sys.stdin.read())
    results = _run_jobs(request)
    sys.stdout.write("\n" + json.dumps({"results": results}) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of MLflow's modules: the answer is written, nothing else is pending


if __name__ == "__main__":
    main()
