"""The registry worker's child dies with its server: a server killed with SIGKILL while the child waits on the
registry leaves no process behind that goes on writing into the cache (issue 25)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .helpers import free_port, serve_command

#: How long the child may outlive its parent: the kernel signals it at once; the fallback checks every second.
DIES_WITHIN_S = 15.0


def children_running(parent_pid: int, marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose parent is `parent_pid` and whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent_and_state(int(entry.name))[0] == parent_pid:
            if marker in _command_line(int(entry.name)) and is_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def is_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, waiting for its new parent to reap it, has ended)."""
    parent, state = _parent_and_state(pid)
    return parent is not None and state != "Z"


def _parent_and_state(pid: int) -> tuple[int | None, str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, ""
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid, ...
    return int(fields[1]), fields[0]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class HungRegistry(ThreadingHTTPServer):
    """A loopback MLflow server that hangs: it answers MLflow's capability probe (`server-info`) and holds every other
    request until `release` is set, so the client waits in the middle of a job."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HungHandler)
        self.reached = threading.Event()
        self.release = threading.Event()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HungHandler(BaseHTTPRequestHandler):
    server: HungRegistry

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if "server-info" not in self.path:
            self.server.reached.set()
            self.server.release.wait(120)
        body = b'{"workspaces_enabled": true}'  # so that the client, in a workspace, goes on
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hung_registry() -> Iterator[HungRegistry]:
    registry = HungRegistry()
    thread = threading.Thread(target=registry.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        registry.release.set()
        registry.shutdown()
        registry.server_close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the child")
def test_sigkill_of_the_server_ends_the_registry_child(hung_registry: HungRegistry, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MLFLOW_WORKSPACE": "lifetime-test",  # a setting only the MLflow client implements: the child asks, not REST
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "600",  # the child would wait this long for the silent registry
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    command = serve_command(
        free_port(), "--model", "m=models:/topic-onnx@production", "--tracking-uri", hung_registry.uri
    )
    command += ["--cache-dir", str(tmp_path / "cache"), "--poll-interval", "0"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The child's request reaches the hung registry: the child is mid-job, not waiting on its stdin.
        assert hung_registry.reached.wait(120), "the registry child never reached the registry"
        children = children_running(server.pid, "ortserve.contract.registry_jobs")
        assert children, "no registry child under the server"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        deadline = time.monotonic() + DIES_WITHIN_S
        while any(is_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in children if is_alive(pid)]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    for pid in survivors:  # clean up before failing: the test must leave no process behind
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"registry child(ren) {survivors} outlived the SIGKILLed server"


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    """The parent-pid check: a child told that its parent is a process that is not its parent (the parent died
    before the child could ask the kernel for a signal) exits instead of waiting for jobs."""
    child = subprocess.Popen(
        [sys.executable, "-m", "ortserve.contract.registry_jobs", "--parent-pid", str(os.getpid() + 999_999)],
        stdin=subprocess.PIPE,  # held open: a child that waits for its jobs would wait here
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdin is not None
        child.stdin.close()
