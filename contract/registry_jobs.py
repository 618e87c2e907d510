"""The child side of `ortserve.server.sources.registry_worker`: registry jobs done with the MLflow client, in a process
that exits when they are done (`python -m ortserve.contract.registry_jobs`).

On stdin: a first JSON line `{"tracking_uri": ...}`, on which the child creates its MLflow client (the import takes
seconds), then a second, `{"jobs": [...]}`, so that a child started ahead of its jobs (`RegistryWorker.prepare`) is
ready when they come. On stdout: one JSON line `{"job": INDEX, "result": {...}}` as soon as each job is done. Here,
in the contract, so that the child imports neither gRPC nor ONNX Runtime.

Jobs: `resolve` (uri) → version; `download` (name, version, destination) → a verified, marked artifact directory;
`fetch` (uri, model_dir) → both: the version, downloaded into model_dir/VERSION unless a marked entry is there;
`set_tags` (name, version, tags as a JSON object) → the tags set on that model version (the challenger write-back).

The child dies with its parent (`--parent-pid PID`): a server killed with SIGKILL must not leave a child writing
into its cache, where the next server would find a download it did not start."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
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
#: A child whose jobs never come (a server that stopped before asking) exits after this many seconds.
IDLE_EXIT_S = 600.0
#: Linux's prctl option that sends the child a signal when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: How often the fallback checks that the parent is still there (where PR_SET_PDEATHSIG is missing).
PARENT_CHECK_S = 1.0


def error_dict(exc: BaseException) -> dict[str, Any]:
    """A job's error as JSON: the class, the caller-safe message and the (redacted) detail for the log."""
    if isinstance(exc, ContractError):
        kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in REPORTED_ERRORS), "RegistryError")
        return {"error": {"kind": kind, "message": str(exc), "detail": exc.detail}}
    if isinstance(exc, OSError):
        return {"error": {"kind": "OSError", "message": redact_text(str(exc)), "detail": ""}}
    return {"error": {"kind": "RegistryError", "message": "registry worker error", "detail": redact_text(repr(exc))}}


def _mlflow_client(tracking_uri: str | None) -> Any:
    """The MLflow client of `tracking_uri`, or the exception creating it raised (reported by every job)."""
    try:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except Exception as exc:  # e.g. an unsupported scheme; its text holds the URI, credentials too
        return exc


def _run_jobs(
    client: Any, tracking_uri: str | None, jobs: list[dict[str, Any]], report: Callable[[int, dict[str, Any]], None]
) -> None:
    """Do every job with `client` (or its creation's exception), in order; `report` each one's result (or error)."""
    from .cache import COMPLETE_MARKER, fetch_registered_artifact
    from .registry import mlflow_error, resolve_version
    from .uri import RegistryUri

    for index, job in enumerate(jobs):
        what = job.get("uri") or f"models:/{job.get('name')}/{job.get('version')}"
        try:
            if isinstance(client, BaseException):
                raise mlflow_error(what, client)
            if job["op"] == "resolve":
                version = resolve_version(client, RegistryUri.parse(job["uri"])).version
                report(index, {"version": str(version)})
            elif job["op"] == "download":
                fetch_registered_artifact(client, job["name"], job["version"], Path(job["destination"]), tracking_uri)
                report(index, {})
            elif job["op"] == "fetch":
                parsed = RegistryUri.parse(job["uri"])
                version = str(resolve_version(client, parsed).version)
                destination = Path(job["model_dir"]) / version
                downloaded = not (destination / COMPLETE_MARKER).is_file()
                if downloaded:
                    fetch_registered_artifact(client, parsed.name, version, destination, tracking_uri)
                report(index, {"version": version, "downloaded": downloaded})
            elif job["op"] == "set_tags":  # the challenger write-back of the server
                for key, value in json.loads(job["tags"]).items():
                    client.set_model_version_tag(job["name"], job["version"], key, value)
                report(index, {})
            else:
                raise ValueError(f"unknown job {job['op']!r}")
        except (ContractError, OSError) as exc:
            report(index, error_dict(exc))
        except Exception as exc:  # any surprise of one job must not lose the answers to the others
            report(index, error_dict(mlflow_error(what, exc)))


def die_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid` (its parent) dies, even by SIGKILL: on Linux the kernel sends SIGKILL
    (PR_SET_PDEATHSIG); everywhere a daemon thread also checks the parent pid every PARENT_CHECK_S. Exits at once if
    the parent is already gone (it died before this ran)."""
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: the thread below still works
            pass
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    """Child entry point: the tracking URI, then the jobs, on stdin; one JSON line per job's result on stdout."""
    import threading

    from .redact import RedactingFilter, register_secret_uri
    from .settings import huggingface_offline

    if len(sys.argv) == 3 and sys.argv[1] == "--parent-pid":
        die_with_parent(int(sys.argv[2]))
    huggingface_offline()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    header = sys.stdin.readline()
    if not header.strip():
        os._exit(0)  # the parent went away before sending anything
    tracking_uri = json.loads(header).get("tracking_uri")
    register_secret_uri(tracking_uri)
    client = _mlflow_client(tracking_uri)  # before the jobs arrive: a prepared child pays its import meanwhile
    idle = threading.Timer(IDLE_EXIT_S, os._exit, (0,))
    idle.daemon = True
    idle.start()
    line = sys.stdin.readline()
    idle.cancel()
    jobs: list[dict[str, Any]] = json.loads(line)["jobs"] if line.strip() else []

    def report(index: int, result: dict[str, Any]) -> None:
        sys.stdout.write("\n" + json.dumps({"job": index, "result": result}) + "\n")
        sys.stdout.flush()  # the parent hands it to its caller now, not when every job is done

    _run_jobs(client, tracking_uri, jobs, report)
    os._exit(0)  # skip interpreter teardown of MLflow's modules: the answers are written, nothing else is pending


if __name__ == "__main__":
    main()
