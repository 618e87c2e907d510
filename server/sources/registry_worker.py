"""Registry access in a short-lived child process, so the serving process never imports the MLflow client.

`import mlflow` costs about 3.4 s and 200 MB that stay resident for the life of a process (issue 15). The server
asks the registry rarely (at start, once per poll round, for a new version), so each such round runs in a child:
`python -m ortserve.contract.registry_jobs` reads one JSON request on stdin (the tracking URI and a list of jobs:
resolve a `models:/` URI; download a registered version into the cache; or both at once, `fetch`), does them with
the MLflow client and the contract's functions, writes one JSON line per job as soon as that job is done, and exits;
its memory goes with it.

`RegistryWorker` is the server's side: jobs submitted from several threads within a short window (every model of
one poll round, or of the start-up) share one child, and each caller gets its answer as soon as its own line arrives
(a model whose files are ready starts loading while the child downloads the next). Errors come back as the
contract's errors, with the caller-safe message and the (redacted) `detail` for the log; a child that crashes or
hangs becomes `RegistryUnavailableError`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
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
        self._prepared: _Child | None = None

    def prepare(self) -> None:
        """Start the child of the next round of jobs now (idempotent): it imports the MLflow client while the server
        starts, and the start-up's jobs, when they come, find it ready. Only for the start: between poll rounds no
        child waits (its memory is what the worker exists to give back)."""
        with self._lock:
            if self._prepared is None:
                try:
                    self._prepared = self._start_child()
                except OSError as exc:  # the round itself will try again, and report it
                    log.debug("registry worker: cannot prepare a child: %s", exc)

    def resolve(self, uri: str) -> str:
        """The version `uri` (a `models:/` URI) points at now. Raises the contract's errors."""
        return str(self._submit("resolve", {"uri": uri})["version"])

    def download(self, name: str, version: str, destination: Path) -> None:
        """Download registered `name`/`version` as a verified artifact directory with its completeness marker at
        `destination` (replacing what is there). Raises the contract's errors, or `OSError` for the cache."""
        self._submit("download", {"name": name, "version": version, "destination": str(destination)})

    def fetch(self, uri: str, model_dir: Path) -> tuple[str, bool]:
        """Resolve `uri`, and download the version into `model_dir`/VERSION unless a marked entry is already there
        (the caller verifies that one): one child for both. Returns (version, True if it was downloaded)."""
        result = self._submit("fetch", {"uri": uri, "model_dir": str(model_dir)})
        return str(result["version"]), bool(result.get("downloaded"))

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
        timeout = RESOLVE_TIMEOUT_S if all(j.op == "resolve" for j in jobs) else DOWNLOAD_TIMEOUT_S
        try:
            self._spawn(request, jobs, timeout)
        except Exception as exc:  # every waiter must get an answer, whatever happened
            detail = f"{exc}: {exc.detail}" if isinstance(exc, ContractError) else redact_text(repr(exc))
            for job in jobs:
                if not job.done.is_set():
                    job.result = error_dict(
                        RegistryUnavailableError(f"{job.what}: registry unreachable", detail=detail)
                    )
                    job.done.set()

    def _start_child(self) -> _Child:
        stderr_file = tempfile.TemporaryFile()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, "--parent-pid", str(os.getpid())],  # it dies with this process
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps({"tracking_uri": self.tracking_uri}) + "\n")
            process.stdin.flush()
        except OSError:
            stderr_file.close()
            raise
        self.children_started += 1
        return _Child(process, stderr_file)

    def _spawn(self, request: dict[str, Any], jobs: list[_Job], timeout: float) -> None:
        """Run one child for `jobs` (the prepared one if it is there), handing each job its result as soon as the
        child reports it."""
        started = time.monotonic()
        with self._lock:
            prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared.process.poll() is not None:
            prepared.stderr_file.close()
            prepared = None
        try:
            spawned = prepared or self._start_child()
        except OSError as exc:
            raise RegistryUnavailableError("registry worker cannot start", detail=str(exc)) from None
        child, stderr_file = spawned.process, spawned.stderr_file
        with stderr_file:
            killer = threading.Timer(timeout, child.kill)  # a hung child: its jobs fail below, as unreachable
            killer.start()
            try:
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(json.dumps({"jobs": request["jobs"]}) + "\n")
                child.stdin.close()
                for line in child.stdout:
                    _deliver(line, jobs)
                returncode = child.wait()
            finally:
                killer.cancel()
                if child.poll() is None:
                    child.kill()
                    child.wait()
            stderr_file.seek(0)
            stderr = redact_text(stderr_file.read().decode(errors="replace").strip())
        missing = [job for job in jobs if not job.done.is_set()]
        if missing:
            timed_out = time.monotonic() - started >= timeout
            log.warning(
                "registry worker failed (exit %s)%s; its output: %s",
                returncode,
                " after its time limit" if timed_out else "",
                stderr[-2000:],
            )
            if timed_out:
                raise RegistryUnavailableError(
                    "registry unreachable (no answer in time)", detail=f"registry worker killed after {timeout:.0f}s"
                )
            raise RegistryUnavailableError("registry worker failed", detail=f"exit {returncode}: {stderr[-500:]}")
        if stderr:
            log.debug("registry worker said: %s", stderr[-2000:])
        log.debug("registry worker: %d job(s) in %.2fs", len(jobs), time.monotonic() - started)


@dataclass
class _Child:
    """A started child and the file its stderr goes to (read for the log when it is done)."""

    process: subprocess.Popen[str]
    stderr_file: Any


def _deliver(line: str, jobs: list[_Job]) -> None:
    """Hand a child's result line (`{"job": INDEX, "result": {...}}`) to its job; other output is ignored."""
    try:
        message = json.loads(line)
        job, result = jobs[int(message["job"])], message["result"]
    except (ValueError, KeyError, TypeError, IndexError):
        return
    if isinstance(result, dict) and not job.done.is_set():
        job.result = result
        job.done.set()


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
