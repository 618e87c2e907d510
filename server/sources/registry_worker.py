"""Registry access in a short-lived child process, so the serving process never imports the MLflow client.

`import mlflow` costs about 3.4 s and 200 MB that stay resident for the life of a process (issue 15). The server
asks the registry rarely (at start, once per poll round, for a new version), so each such round runs in a child:
`python -m ortserve.contract.registry_jobs` reads one JSON request on stdin (the tracking URI and a list of jobs:
resolve a `models:/` URI, or download a registered version into the cache), does them with the MLflow client and
the contract's functions, writes one JSON answer on stdout and exits; its memory goes with it.

`RegistryWorker` is the server's side: jobs submitted from several threads within a short window (every model of
one poll round, or of the start-up) share one child. Errors come back as the contract's errors, with the caller-safe
message and the (redacted) `detail` for the log; a child that crashes or hangs becomes `RegistryUnavailableError`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ortserve.contract import errors as contract_errors
from ortserve.contract.errors import ContractError, RegistryUnavailableError
from ortserve.contract.redact import redact_text
from ortserve.contract.registry_jobs import error_dict

log = logging.getLogger(__name__)

#: What the child runs: a module of the contract, so that the child imports neither gRPC nor ONNX Runtime.
CHILD_MODULE = "ortserve.contract.registry_jobs"
#: Jobs submitted within this window share one child (every model of a poll round arrives together).
COALESCE_S = 0.05
#: How long a child may take to resolve (its start, `import mlflow`, and the requests with their retries).
RESOLVE_TIMEOUT_S = 120.0
#: How long a child may take when it downloads (models can be large and registries slow).
DOWNLOAD_TIMEOUT_S = 3600.0
#: Error classes a child may report; anything else becomes `RegistryUnavailableError`.
_ERROR_CLASSES: dict[str, type[ContractError]] = {
    cls.__name__: cls
    for cls in (
        contract_errors.ArtifactInvalidError,
        contract_errors.IntegrityError,
        contract_errors.ModelUriError,
        contract_errors.RegistryError,
        contract_errors.RegistryNotFoundError,
        contract_errors.RegistryUnavailableError,
    )
}


@dataclass
class _Job:
    op: str
    args: dict[str, str]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def what(self) -> str:
        """The model URI the job is about, as errors name it."""
        return self.args.get("uri") or f"models:/{self.args.get('name')}/{self.args.get('version')}"


class RegistryWorker:
    """Runs registry jobs for one tracking URI in short-lived child processes, several jobs per child.

    Thread-safe; `resolve` and `download` block the calling thread (call them off the event loop). The child
    inherits the environment, so MLflow's credentials and HTTP settings (`MLFLOW_TRACKING_*`) apply there.
    """

    def __init__(self, tracking_uri: str | None):
        self.tracking_uri = tracking_uri
        self.children_started = 0
        """How many children this worker has started (for tests and benchmarks)."""
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leader_waiting = False

    def resolve(self, uri: str) -> str:
        """The version `uri` (a `models:/` URI) points at now. Raises the contract's errors."""
        return str(self._submit("resolve", {"uri": uri})["version"])

    def download(self, name: str, version: str, destination: Path) -> None:
        """Download registered `name`/`version` as a verified artifact directory with its completeness marker at
        `destination` (replacing what is there). Raises the contract's errors, or `OSError` for the cache."""
        self._submit("download", {"name": name, "version": version, "destination": str(destination)})

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set `tags` on registered `name`/`version` (the challenger write-back). Raises the contract's errors."""
        self._submit("set_tags", {"name": name, "version": version, "tags": json.dumps(tags)})

    def _submit(self, op: str, args: dict[str, str]) -> dict[str, Any]:
        job = _Job(op, args)
        with self._lock:
            self._pending.append(job)
            lead = not self._leader_waiting
            self._leader_waiting = True
        if lead:
            time.sleep(COALESCE_S)  # let the other models of this round join
            with self._lock:
                batch, self._pending = self._pending, []
                self._leader_waiting = False
            self._run(batch)
        job.done.wait()
        return _unpack(job.result)

    def _run(self, jobs: list[_Job]) -> None:
        request = {"tracking_uri": self.tracking_uri, "jobs": [{"op": j.op, **j.args} for j in jobs]}
        timeout = DOWNLOAD_TIMEOUT_S if any(j.op == "download" for j in jobs) else RESOLVE_TIMEOUT_S
        try:
            results = self._spawn(request, timeout)
        except Exception as exc:  # every waiter must get an answer, whatever happened
            detail = f"{exc}: {exc.detail}" if isinstance(exc, ContractError) else redact_text(repr(exc))
            results = [
                error_dict(RegistryUnavailableError(f"{j.what}: registry unreachable", detail=detail)) for j in jobs
            ]
        for job, result in zip(jobs, results, strict=True):
            job.result = result
            job.done.set()

    def _spawn(self, request: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        self.children_started += 1
        started = time.monotonic()
        try:
            completed = subprocess.run(
                [sys.executable, "-m", CHILD_MODULE],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RegistryUnavailableError(
                "registry unreachable (no answer in time)", detail=f"registry worker killed after {timeout:.0f}s"
            ) from None
        except OSError as exc:
            raise RegistryUnavailableError("registry worker cannot start", detail=str(exc)) from None
        stderr = redact_text(completed.stderr.strip())
        try:
            answer = json.loads(completed.stdout.strip().splitlines()[-1])
            results: list[dict[str, Any]] = answer["results"]
            if len(results) != len(request["jobs"]):
                raise ValueError(f"{len(results)} results for {len(request['jobs'])} jobs")
        except (IndexError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "registry worker failed (exit %s): %s; its output: %s", completed.returncode, exc, stderr[-2000:]
            )
            raise RegistryUnavailableError(
                "registry worker failed", detail=f"exit {completed.returncode}: {stderr[-500:]}"
            ) from None
        if stderr:
            log.debug("registry worker said: %s", stderr[-2000:])
        log.debug("registry worker: %d job(s) in %.2fs", len(results), time.monotonic() - started)
        return results


def _unpack(result: dict[str, Any]) -> dict[str, Any]:
    error = result.get("error")
    if not error:
        return result
    if error.get("kind") == "OSError":
        raise OSError(error.get("message", ""))
    cls = _ERROR_CLASSES.get(str(error.get("kind")), RegistryUnavailableError)
    raise cls(str(error.get("message", "registry error")), detail=str(error.get("detail", "")))


_WORKERS: dict[str | None, RegistryWorker] = {}
_WORKERS_GUARD = threading.Lock()


def registry_worker(tracking_uri: str | None) -> RegistryWorker:
    """The worker of `tracking_uri`, shared by every registry source of this process (so one poll round of all
    models is one child)."""
    with _WORKERS_GUARD:
        return _WORKERS.setdefault(tracking_uri, RegistryWorker(tracking_uri))
