"""ortserve contract: what server and export share, importing neither.

- `artifact`: the artifact directory (file names, the versioned `ortserve.json` manifest, sha256 digests).
- `uri`: `models:/` URI parsing.
- `registry`: one mapping of MLflow errors, one version resolution (alias / version / stage / latest), one download.
- `cache`: the verified download with its completeness/integrity marker; scratch and quarantine handling.
- `settings`: MLflow client settings (HTTP retries, timeouts, progress bar) and the Hugging Face offline switches.
- `redact`: credential redaction for every message and log line that can carry a URI or an MLflow error.
- `errors`: the contract's exceptions (safe message + `detail` for the log).

Light dependencies only (pydantic; the MLflow client is imported lazily by the functions that need it).
"""

from .artifact import ArtifactManifest
from .errors import (
    ArtifactInvalidError,
    ContractError,
    IntegrityError,
    ModelUriError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
)
from .redact import redact_text, redact_uri
from .uri import RegistryUri

__all__ = [
    "ArtifactInvalidError",
    "ArtifactManifest",
    "ContractError",
    "IntegrityError",
    "ModelUriError",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryUnavailableError",
    "RegistryUri",
    "redact_text",
    "redact_uri",
]
