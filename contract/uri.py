"""`models:/` URIs: the one parser both the server (`--model`) and export (SOURCE) use."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ModelUriError

REGISTRY_SCHEME = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<ref>[^/@]+))$")
URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/STAGE or models:/NAME/latest"


@dataclass(frozen=True)
class RegistryUri:
    """A parsed `models:/` URI: exactly one of alias, version or stage is set, or `latest` (`models:/NAME/latest`,
    the highest version) is True."""

    name: str
    alias: str | None = None
    version: str | None = None
    stage: str | None = None
    latest: bool = False

    @classmethod
    def parse(cls, uri: str) -> RegistryUri:
        match = _URI.match(uri)
        if not match:
            raise ModelUriError(f"{uri!r} is not a registry model URI; use {URI_FORMS}")
        name, alias, ref = match["name"], match["alias"], match["ref"]
        if alias:
            return cls(name, alias=alias)
        if ref.isdigit():
            return cls(name, version=ref)
        if ref.lower() == "latest":
            return cls(name, latest=True)
        return cls(name, stage=ref)

    @property
    def follows_updates(self) -> bool:
        """True if the URI can point at another version over time (alias, stage, latest)."""
        return self.version is None

    @property
    def reference(self) -> str:
        """What the URI names besides the model: `@alias`, a version number, a stage or `latest`."""
        return f"@{self.alias}" if self.alias else (self.version or self.stage or "latest")

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.reference}"
