"""Certificates for the security tests, made in the test with trustme: a CA, server and client certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Issued:
    """A certificate chain and its key, as PEM files."""

    cert: Path
    key: Path


class TestPki:
    """One certificate authority writing PEM files into `folder`."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, folder: Path, name: str = "ca"):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.authority = trustme.CA(organization_name=f"ortserve test {name}")
        self.ca = folder / f"{name}.pem"
        self.authority.cert_pem.write_to_path(str(self.ca))

    def issue(self, name: str, *identities: str) -> Issued:
        """A certificate for `identities` (default: localhost and 127.0.0.1), valid as server and as client."""
        issued = self.authority.issue_cert(*(identities or ("localhost", "127.0.0.1")))
        cert, key = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return Issued(cert, key)
