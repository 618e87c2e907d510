"""TLS and mutual TLS for the server's port, with certificate files re-read when they change (no restart).

gRPC asks `ReloadingCertificates.fetch` for the certificate configuration at each new TLS handshake
(`grpc.dynamic_ssl_server_credentials`); it answers None while the files are unchanged, which costs one `stat` per
file. A changed set is checked (the key matches the certificate, the PEM parses) before it is used: while a
renewal is half-written the previous certificate keeps serving, and the failure is logged once per change.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

import grpc

from ..errors import ServerStartError

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int], ...]


class ReloadingCertificates:
    """The server's certificate, key and optional client CA, re-read from disk whenever one of them changes."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None):
        self.files = [Path(cert_file), Path(key_file)] + ([Path(client_ca_file)] if client_ca_file else [])
        self.require_client_certificate = client_ca_file is not None
        self._lock = threading.Lock()
        try:
            self._stamp = self._stamps()
            self.initial = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ServerStartError(f"TLS files cannot be used: {_reason(exc)}") from None
        self._failed_stamp: _Stamp | None = None

    def _stamps(self) -> _Stamp:
        stats = [os.stat(path) for path in self.files]
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        contents = [path.read_bytes() for path in self.files]
        # ssl checks what gRPC would only find out at the next handshake: PEM syntax, and that the key fits.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.files[0], self.files[1])
        if self.require_client_certificate:
            context.load_verify_locations(cafile=self.files[2])
        if [path.read_bytes() for path in self.files] != contents:
            raise ValueError("the files changed while they were read")
        cert, key = contents[0], contents[1]
        client_ca = contents[2] if self.require_client_certificate else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration if the files changed, else None."""
        try:
            stamp = self._stamps()
        except OSError:
            return None  # a file is being replaced (or gone): keep serving with what we have
        if stamp == self._stamp or stamp == self._failed_stamp:
            return None
        with self._lock:
            if stamp == self._stamp:
                return None
            try:
                config = self._load()
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._failed_stamp = stamp
                log.warning("TLS files changed but cannot be used, keeping the previous certificate: %s", _reason(exc))
                return None
            self._stamp = stamp
            log.info("TLS certificate files changed: new connections use the new certificate")
            return config


def server_credentials(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> tuple[grpc.ServerCredentials, ReloadingCertificates] | None:
    """Credentials for `add_secure_port` (and the reloader behind them), or None for plaintext."""
    if cert_file is None or key_file is None:
        return None
    certificates = ReloadingCertificates(cert_file, key_file, client_ca_file)
    credentials = grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,
        require_client_authentication=certificates.require_client_certificate,
    )
    return credentials, certificates


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__
