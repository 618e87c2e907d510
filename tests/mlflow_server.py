"""A real `mlflow server` process on 127.0.0.1 (SQLite backend, local artifact store) for registry tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .helpers import free_port


class MlflowServer:
    """`mlflow server` with a SQLite backend and proxied artifacts under `root`; can be stopped and restarted on the
    same port and store (to test a registry that goes away and comes back). `args` replace the artifact flags (e.g.
    `--no-serve-artifacts --default-artifact-root DIR`) or add others (`--app-name basic-auth`); `env` is added to
    the server's environment."""

    def __init__(
        self, root: Path, port: int | None = None, args: Sequence[str] | None = None, env: Mapping[str, str] = {}
    ):
        self.root = root
        self.port = port or free_port()
        self.args = list(args) if args is not None else ["--artifacts-destination", str(root / "artifacts")]
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "mlflow-server.log"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        command = [
            mlflow_bin,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            *self.args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = self.log_path.open("ab")
        # Own process group, so that stop() also ends the web server workers it spawns.
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": "",
                # no background job workers (a dozen huey processes): registry only
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                **self.env,
            },
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
