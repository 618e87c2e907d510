"""The HTTP port: uvicorn serving the ASGI app in the server's own asyncio loop, beside grpc.aio (as MLServer does),
with uvicorn's signal handling off (`OrtServer`/`serve` own SIGTERM and SIGINT and stop both doors together)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from ..errors import ServerStartError
from .quiet_close import refuse_new_connections, wait_for_accept_queue
from .tls import ReloadingSslContext

log = logging.getLogger(__name__)

#: How often the listener checks that uvicorn has started (it flags `started`; there is no event to wait on).
_START_POLL_S = 0.01


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: signals reach the host process's handlers untouched."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29 names the hook so
        pass


class HttpListener:
    """Binds `host:port` (0 picks a free port), serves `app` on it, and stops gracefully."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        tls_client_ca_file: Path | None = None,
        keep_alive_s: float = 75.0,
    ):
        self.host = host
        self.requested_port = port
        self.port = 0
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,  # ortserve's own access log (`ortserve.access`) covers HTTP as it covers gRPC
            server_header=False,
            http="httptools" if _has_httptools() else "h11",
            loop="none",
            ws="none",
            # Longer than the load balancers' idle timeouts (60 s on most), so they close idle connections, not us.
            timeout_keep_alive=int(keep_alive_s),
        )
        # TLS from the gRPC port's files, re-read when they change (uvicorn's own TLS loads them once).
        self._tls = (
            ReloadingSslContext(tls_cert_file, tls_key_file, tls_client_ca_file)
            if tls_cert_file is not None and tls_key_file is not None
            else None
        )
        self._server = _EmbeddedServer(self._config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def tls(self) -> bool:
        return self._tls is not None

    def bind(self) -> None:
        """Bind the port, not serving yet: the server binds every port before it announces any, so that a port in
        use stops the start with one line (`ServerStartError`). `start` binds if this was not called."""
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP, and the
        # accepted sockets inherit it. With Nagle on, uvicorn's second write of a response (the body after the
        # headers) waits for the client's delayed ACK: 40 ms per request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise ServerStartError.cannot_bind(
                "listen for HTTP", self.host, self.requested_port, "--http-port", exc
            ) from None
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]

    async def start(self) -> int:
        """Bind (unless `bind` did) and start serving; return the bound port."""
        self.bind()
        sock = self._socket
        assert sock is not None
        self._config.load()
        if self._tls is not None:
            self._config.ssl = self._tls.context
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():  # uvicorn gave up (it logs why)
                self._task.result()
                raise ServerStartError(f"the HTTP server on {self.host}:{self.port} did not start")
            await asyncio.sleep(_START_POLL_S)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting connections, close idle ones, let requests in flight finish for up to `grace` seconds,
        then cancel what is left. Connections the kernel accepted before the port closes are served, not reset
        (`quiet_close`)."""
        if self._task is None:  # never served: release a port that `bind` took
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            return
        if self._socket is not None and refuse_new_connections(self._socket):
            await wait_for_accept_queue(self._socket)
        self._config.timeout_graceful_shutdown = math.ceil(grace)  # whole seconds in uvicorn's type
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self._task
        self._task = None


def _has_httptools() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True
