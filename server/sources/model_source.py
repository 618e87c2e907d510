"""The extension point of where model artifacts come from: a `ModelSource` turns the URI of `--model NAME=URI` into
a complete local artifact directory. Implementations: `sources.LocalDirectorySource`, `registry.RegistrySource`."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FetchedArtifact:
    """A complete artifact directory on local disk and the version it holds."""

    version: str
    directory: Path
    note: str = ""
    """Anything the operator should know about how it was fetched (e.g. served from cache, registry down)."""


class ModelSource(abc.ABC):
    """Resolves a model URI to a version and fetches that version's artifact directory.

    Implementations are called from worker threads, never from the event loop, so they may block. `uri` is what
    callers see (GetModel, errors): it must not hold a path, a host or a credential.
    """

    def __init__(self, uri: str):
        self.uri = uri

    @property
    def follows_updates(self) -> bool:
        """True if the URI can point at a new version over time (an alias or a stage) and should be polled."""
        return False

    def latest_version(self) -> str:
        """The version the URI points at now (cheap; used by polling). Defaults to a full fetch."""
        return self.fetch().version

    def probable_version(self) -> str | None:
        """A version the URI probably still points at, known without asking anyone (e.g. the one it last resolved to,
        with its files in the local cache), or None. Only a hint: the first load starts loading it while the source
        resolves the URI, and keeps it only if the resolution names the same version."""
        return None

    @abc.abstractmethod
    def fetch(self, version: str | None = None) -> FetchedArtifact:
        """Return a complete local artifact directory of `version`, or of what the URI points at now if None.

        Downloads it if needed. Raises `ArtifactError` with a message naming the URI when it cannot.
        """
