"""The HTTP endpoint Prometheus scrapes (`/metrics`; any path answers), with a bounded cost: a scrape flood must not
slow the calls the server exists for.

- The page is rendered at most once per RENDER_CACHE_S (every scrape within that time gets the same bytes), by one
  thread at a time.
- At most SCRAPE_THREADS connections are served at once, and at most SCRAPES_PER_S taken per second: the accept loop
  takes the next connection only when both allow it, so the rest of a flood waits in the kernel's backlog and costs
  the process nothing (serving even a cached page costs Python work, and the GIL, per connection: 1,400 scrapes a
  second tripled gRPC p50 before this bound).
- A connection that sends nothing is dropped after CONNECTION_TIMEOUT_S (slow clients cannot hold the threads).
- Optional TLS (the server's own certificate and key, re-read when they change) and HTTP basic auth (one
  `USER:PASSWORD` from an environment variable, compared in constant time as a SHA-256), so that the scrape can leave
  the pod's network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import ServerStartError

log = logging.getLogger(__name__)

#: Scrapes within this many seconds of a render get the same page (Prometheus scrapes every 10-60 s).
RENDER_CACHE_S = 1.0
#: Connections served at once; the others wait in the listen backlog.
SCRAPE_THREADS = 2
#: Connections taken per second at most (Prometheus scrapes a target every 10-60 s; a few replicas and a person with
#: curl stay far below it).
SCRAPES_PER_S = 10.0
#: Connections taken at once after a quiet spell (several Prometheus replicas scraping together).
SCRAPE_BURST = 5
#: Seconds a connection may take to send its request and read the answer.
CONNECTION_TIMEOUT_S = 5.0
#: How often the accept loop looks whether it should stop.
_ACCEPT_POLL_S = 0.5


class MetricsStartError(ServerStartError):
    """The metrics port cannot be bound, or its TLS files or credentials cannot be used."""


@dataclass(frozen=True)
class ScrapeSecurity:
    """What a scrape must get through: TLS with the server's certificate and key, basic auth, both or neither."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    basic_auth: str | None = None
    """`USER:PASSWORD` a scrape must send as HTTP basic auth; None asks for nothing."""

    @classmethod
    def chosen(cls, tls: bool, cert_file: Path | None, key_file: Path | None, auth_env: str | None) -> ScrapeSecurity:
        """From the settings: `tls` with the server's certificate and key; basic auth from variable `auth_env`."""
        credentials = os.environ.get(auth_env) if auth_env else None
        if auth_env and (not credentials or ":" not in credentials):
            raise MetricsStartError(f"metrics_auth_env: the variable {auth_env} must hold USER:PASSWORD")
        return cls(cert_file, key_file, credentials) if tls else cls(basic_auth=credentials)


class MetricsEndpoint:
    """Serves the metrics of `registry` (a prometheus_client registry) on `host`:`port` from a daemon thread."""

    def __init__(self, registry: Any, host: str, port: int, security: ScrapeSecurity | None = None):
        self._registry = registry
        security = security or ScrapeSecurity()
        self._auth_digest = _digest(security.basic_auth) if security.basic_auth else None
        self._tls = _ReloadingTls(security.tls_cert_file, security.tls_key_file) if security.tls_cert_file else None
        self.scheme = "https" if self._tls else "http"
        self._render_lock = threading.Lock()
        self._page = b""
        self._rendered_at = -float("inf")
        self._slots = threading.BoundedSemaphore(SCRAPE_THREADS)
        self._pool = ThreadPoolExecutor(SCRAPE_THREADS, thread_name_prefix="ortserve-metrics")
        self._stopping = threading.Event()
        try:
            self._socket = socket.create_server((host, port), backlog=64)
        except OSError as exc:
            raise MetricsStartError.cannot_bind("serve metrics", host, port, "--metrics-port", exc) from None
        self._socket.settimeout(_ACCEPT_POLL_S)
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="ortserve-metrics-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def page(self) -> bytes:
        """The rendered metrics, at most RENDER_CACHE_S old."""
        with self._render_lock:  # one render at a time; the scrapes that waited get its bytes
            if time.monotonic() - self._rendered_at >= RENDER_CACHE_S:
                self._page = generate_latest(self._registry)
                self._rendered_at = time.monotonic()
            return self._page

    def authorized(self, header: str | None) -> bool:
        """True if no credentials are asked for, or `header` (the Authorization header) carries the right ones."""
        if self._auth_digest is None:
            return True
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(_digest(given), self._auth_digest)

    def _accept_loop(self) -> None:
        next_accept = time.monotonic()
        while not self._stopping.is_set():
            pause = next_accept - time.monotonic()
            if pause > 0:  # paced: the next connection waits in the backlog
                self._stopping.wait(min(pause, _ACCEPT_POLL_S))
                continue
            if not self._slots.acquire(timeout=_ACCEPT_POLL_S):
                continue  # every slot busy: the next connection waits in the backlog
            try:
                connection, address = self._socket.accept()
            except (TimeoutError, OSError):
                self._slots.release()
                continue
            # A token bucket: SCRAPES_PER_S on average, SCRAPE_BURST at once after a quiet spell.
            next_accept = max(next_accept, time.monotonic() - SCRAPE_BURST / SCRAPES_PER_S) + 1 / SCRAPES_PER_S
            try:
                self._pool.submit(self._serve, connection, address)
            except RuntimeError:  # the pool is shut down: the server stops
                connection.close()
                self._slots.release()

    def _serve(self, connection: socket.socket, address: Any) -> None:
        try:
            connection.settimeout(CONNECTION_TIMEOUT_S)
            if self._tls is not None:
                connection = self._tls.context().wrap_socket(connection, server_side=True)
            _ScrapeHandler(connection, address, self)  # type: ignore[arg-type]  # the handler needs no socketserver
        except (OSError, ssl.SSLError) as exc:  # a client that went away, sent garbage or failed its handshake
            log.debug("metrics connection from %s: %s", address, exc)
        finally:
            try:
                connection.close()
            finally:
                self._slots.release()


class _ScrapeHandler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0): any path GETs the page."""

    server: MetricsEndpoint  # type: ignore[assignment]  # our endpoint, not a socketserver
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self.server.authorized(self.headers.get("Authorization")):
            self._answer(
                401, b"unauthorized\n", "text/plain", (("WWW-Authenticate", 'Basic realm="ortserve metrics"'),)
            )
            return
        self._answer(200, self.server.page(), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes are not logged: a flood would flood the log


class _ReloadingTls:
    """A server TLS context from a certificate and key, loaded again when either file changes."""

    def __init__(self, cert_file: Path | None, key_file: Path | None):
        if cert_file is None or key_file is None:
            raise MetricsStartError("TLS on the metrics port needs --tls-cert-file and --tls-key-file")
        self._files = (cert_file, key_file)
        self._lock = threading.Lock()
        self._stamp: tuple[float, float] | None = None
        self._context = self._load()

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = tuple(os.stat(path).st_mtime for path in self._files)
            except OSError:
                return self._context
            if stamp != self._stamp:
                try:
                    self._context = self._load()
                except MetricsStartError as exc:  # a half-written renewal: keep the pair that worked
                    log.warning("metrics TLS: %s; serving the previous certificate", exc)
            return self._context

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            stamp = tuple(os.stat(path).st_mtime for path in self._files)
            context.load_cert_chain(str(self._files[0]), str(self._files[1]))
        except (OSError, ssl.SSLError) as exc:
            raise MetricsStartError(f"cannot use the TLS certificate and key for metrics: {exc}") from None
        self._stamp = stamp  # type: ignore[assignment]
        return context


def _digest(credentials: str) -> bytes:
    return hashlib.sha256(credentials.encode("utf-8")).digest()
