"""Bearer-token authentication: which tokens exist, which models each may use; tokens kept only as SHA-256 hashes.

Token sources are a file (`auth_token_file`, re-read when it changes) and an environment variable (`auth_token_env`,
read once). One entry per line (the variable also accepts ';' between entries):

    s3cr3t-token                      # any model
    sha256:9f86d08...                 # the SHA-256 (hex) of a token, so the file need not hold the token itself
    other-token models=topic,sentiment  # only these models (PERMISSION_DENIED for others)

Tokens are compared by hash with `hmac.compare_digest`, against every known hash, so the time taken tells a caller
nothing about which token or how much of it matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PermissionDeniedError, ServerStartError, UnauthenticatedError

log = logging.getLogger(__name__)

_HASH_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_BEARER = re.compile(r"^Bearer[ \t]+(\S+)[ \t]*$", re.IGNORECASE)


def token_hash(token: str) -> bytes:
    """The SHA-256 digest of a token: the only form in which the server keeps it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class TokenGrant:
    """What one token may do: every model (`models` is None) or only the named ones."""

    digest: bytes
    models: frozenset[str] | None = None

    def check_model(self, model: str) -> None:
        """Raise `PermissionDeniedError` unless this token may use `model`."""
        if self.models is not None and model not in self.models:
            # The name is the caller's own; it is not echoed, so a long or odd name cannot bloat the status.
            raise PermissionDeniedError("this token may not use the requested model")


def parse_tokens(text: str, where: str, separators: str = "\n") -> list[TokenGrant]:
    """Parse token entries (see the module docstring); `where` names the source in error messages."""
    grants = []
    for number, raw in enumerate(re.split(f"[{re.escape(separators)}]", text), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token, *options = line.split()
        models: frozenset[str] | None = None
        for option in options:
            key, sep, value = option.partition("=")
            if key != "models" or not sep:
                raise ValueError(f"{where}, entry {number}: unknown option {key!r} (only models=NAME,NAME)")
            models = frozenset(name for name in value.split(",") if name)
        if token.startswith(_HASH_PREFIX):
            hex_digest = token[len(_HASH_PREFIX) :].lower()
            if not _HEX_DIGEST.match(hex_digest):
                raise ValueError(f"{where}, entry {number}: sha256: must be followed by 64 hex digits")
            digest = bytes.fromhex(hex_digest)
        else:
            digest = token_hash(token)
        grants.append(TokenGrant(digest, models))
    return grants


class TokenFile:
    """A token file, re-read when its size, modification time or inode changes (one `stat` per call)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._failed_stamp: tuple[int, int, int] | None = None
        self.grants: list[TokenGrant] = []
        self.refresh(initial=True)

    def refresh(self, initial: bool = False) -> list[TokenGrant]:
        """The file's grants, re-read if it changed. A file that became unreadable or invalid keeps the last good
        grants (logged once per change), so a half-written file never locks everyone out or lets everyone in."""
        try:
            info = os.stat(self.path)
        except OSError as exc:
            if initial:
                raise ServerStartError(f"auth token file {self.path} cannot be read: {exc.strerror}") from None
            return self.grants
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp or stamp == self._failed_stamp:
            return self.grants
        with self._lock:
            if stamp == self._stamp:
                return self.grants
            try:
                grants = parse_tokens(self.path.read_text(encoding="utf-8"), "auth token file")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                if initial:
                    raise ServerStartError(f"auth token file {self.path} is invalid: {exc}") from None
                self._failed_stamp = stamp
                log.warning("auth token file %s not reloaded, keeping %d tokens: %s", self.path, len(self.grants), exc)
                return self.grants
            if not initial:
                log.info("auth token file %s reloaded: %d tokens", self.path, len(grants))
            self.grants, self._stamp = grants, stamp
            return grants


class TokenAuthenticator:
    """Checks the `authorization: Bearer TOKEN` metadata of a call against the configured tokens."""

    def __init__(self, static: Sequence[TokenGrant] = (), file: TokenFile | None = None):
        self._static = list(static)
        self._file = file

    @classmethod
    def from_sources(cls, token_file: Path | None, token_env: str | None) -> TokenAuthenticator | None:
        """An authenticator for the configured sources, or None when no source is configured (no authentication)."""
        if token_file is None and not token_env:
            return None
        static: list[TokenGrant] = []
        if token_env:
            value = os.environ.get(token_env)
            if value is None:
                raise ServerStartError(f"auth_token_env names the environment variable {token_env}, which is not set")
            try:
                static = parse_tokens(value, f"environment variable {token_env}", separators="\n;")
            except ValueError as exc:
                raise ServerStartError(str(exc)) from None
        authenticator = cls(static, TokenFile(token_file) if token_file is not None else None)
        if not authenticator.grants():
            log.warning("token authentication is on but no token is configured: every call will be refused")
        return authenticator

    def grants(self) -> list[TokenGrant]:
        return self._static + (self._file.refresh() if self._file is not None else [])

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> TokenGrant:
        """The grant of the call's bearer token; `UnauthenticatedError` if it has none or an unknown one."""
        values = [value for key, value in metadata or () if key == "authorization"]
        if not values:
            raise UnauthenticatedError("missing bearer token: send the metadata 'authorization: Bearer TOKEN'")
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        match = _BEARER.match(value)
        if len(values) > 1 or match is None:
            raise UnauthenticatedError("malformed authorization metadata: expected 'Bearer TOKEN'")
        digest = token_hash(match.group(1))
        found: TokenGrant | None = None
        for grant in self.grants():  # no early exit: compare against every hash
            if hmac.compare_digest(grant.digest, digest) and found is None:
                found = grant
        if found is None:
            raise UnauthenticatedError("invalid bearer token")
        return found
