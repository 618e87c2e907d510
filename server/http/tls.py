"""TLS for the HTTP port from the gRPC port's files (`--tls-*`), re-read when they change, as gRPC re-reads them
(`security.tls_credentials`): a renewed certificate needs no restart on either port.

Python's `ssl` has no hook to fetch a configuration per handshake, but it calls `sni_callback` on each one before the
certificate is sent, and the callback may switch the connection to another context. One `stat` per file per
handshake; a changed set is loaded and checked first, so a half-written renewal keeps the previous certificate.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

from ..errors import ServerStartError

log = logging.getLogger(__name__)


class ReloadingSslContext:
    """`context` is the listener's SSL context; each new connection gets the certificate files' current contents."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None):
        self.files = [Path(cert_file), Path(key_file)] + ([Path(client_ca_file)] if client_ca_file else [])
        self._lock = threading.Lock()
        self._failed_stamp: tuple[tuple[int, int, int], ...] | None = None
        try:
            self._stamp = self._stamps()
            self.context = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise ServerStartError(f"TLS files cannot be used for HTTP: {exc.strerror or exc}") from None
        self.context.sni_callback = self._on_handshake
        self._current = self.context

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in (os.stat(path) for path in self.files))

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.files[0], self.files[1])
        if len(self.files) == 3:
            context.load_verify_locations(cafile=self.files[2])
            context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no certificate, no connection
        return context

    def _on_handshake(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        try:
            stamp = self._stamps()
        except OSError:
            stamp = self._stamp  # a file is being replaced: keep serving with what we have
        if stamp != self._stamp and stamp != self._failed_stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._current = self._load()
                        self._stamp = stamp
                        log.info("TLS certificate files changed: new HTTP connections use the new certificate")
                    except (OSError, ssl.SSLError) as exc:
                        self._failed_stamp = stamp
                        log.warning("TLS files changed but cannot be used for HTTP, keeping the previous ones: %s", exc)
        if self._current is not self.context:
            connection.context = self._current
