"""Credential redaction: user-info (`user:password@`) never leaves the process in a message or a log line.

MLflow puts the tracking URI, credentials included, into its error texts (`API request to
http://alice:secret@host/... failed`). Everything that can carry a tracking URI or an MLflow error text goes through
`redact_uri` (one URI) or `redact_text` (free text) before it is logged or raised.

Two layers. By value: the secrets this process knows (the user-info and password of the configured tracking URI,
given to `register_secret_uri`, and of `MLFLOW_TRACKING_URI`; the values of the `CREDENTIAL_VARIABLES`) are removed
wherever they appear, whatever characters they hold, as they are and in the forms a message may show them in
(percent-encoded, quoted by `repr` or JSON). By pattern: the user-info of any other URI and secret-looking query
parameters (a pattern cannot know where a password with quotes or spaces ends: the values cover that).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from urllib.parse import quote, unquote, urlsplit, urlunsplit

REDACTED = "***"

#: `scheme://user-info@` anywhere in a text; user-info ends at the last '@' before the host part.
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s@'\"]+)@")
#: Query parameters that commonly carry secrets (pre-signed URLs, tokens).
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>[?&](?:token|access_token|password|passwd|secret|sig|signature|x-amz-signature|x-amz-credential)=)"
    r"(?P<value>[^&#\s'\"]+)"
)


#: Environment variables whose values are credentials: removed by value from every message and log line.
CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "HF_TOKEN",
)
#: Variables that hold a URI whose user-info is a credential.
CREDENTIAL_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
#: Shorter values are not removed by value: a 1-3 character "secret" would blank out ordinary words of every message
#: (it is no secret either: it falls to a guess). The patterns still remove them from URIs.
MIN_SECRET_CHARS = 4

_registered: set[str] = set()
_lock = threading.Lock()
_compiled: tuple[tuple[str, ...], re.Pattern[str] | None] = ((), None)


def register_secret_uri(uri: str | None) -> None:
    """Remember the user-info and password of `uri` (the configured tracking URI) as secrets to remove by value."""
    values = _uri_secrets(uri)
    if values:
        with _lock:
            _registered.update(values)


def secret_values() -> tuple[str, ...]:
    """The secrets removed by value, longest first, each in every form a message may show it in."""
    return _forms(_raw_secrets())


def _raw_secrets() -> tuple[str, ...]:
    raw = set(_registered)
    for name in CREDENTIAL_VARIABLES:
        raw.add(os.environ.get(name, ""))
    for name in CREDENTIAL_URI_VARIABLES:
        raw.update(_uri_secrets(os.environ.get(name)))
    return tuple(sorted(value for value in raw if len(value) >= MIN_SECRET_CHARS))


def _forms(raw: tuple[str, ...]) -> tuple[str, ...]:
    forms: set[str] = set()
    for value in raw:
        forms.update((value, quote(value, safe=""), quote(value), repr(value)[1:-1], json.dumps(value)[1:-1]))
        forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=lambda f: (-len(f), f)))


#: What a CLI says when a URI on its command line holds a password (which the process list shows to every user).
PASSWORD_ON_COMMAND_LINE = (
    "--tracking-uri holds a password, which every user of this machine can read in the process list (ps); pass the "
    "URI without it and put the credentials in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or a token "
    "in MLFLOW_TRACKING_TOKEN)"
)


def uri_has_password(uri: str | None) -> bool:
    """True if `uri` carries credentials in its user-info (`scheme://user:password@host`, `scheme://token@host`)."""
    return bool(_uri_secrets(uri))


def _uri_secrets(uri: str | None) -> set[str]:
    """The user-info of `uri` and its password, as written and percent-decoded. Parsed by hand: `urlsplit` refuses
    a user-info holding '[' or ']', which a password may."""
    scheme, separator, rest = (uri or "").partition("://")
    if not separator or not scheme:
        return set()
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" not in authority:
        return set()
    userinfo = authority.rsplit("@", 1)[0]
    password = userinfo.partition(":")[2]
    return {value for value in (userinfo, unquote(userinfo), password, unquote(password)) if value}


def _redact_values(text: str) -> str:
    global _compiled
    raw = _raw_secrets()  # a few environment reads: a credential set or changed later is still caught
    if not raw:
        return text
    cached_raw, pattern = _compiled
    if raw != cached_raw or pattern is None:
        pattern = re.compile("|".join(re.escape(value) for value in _forms(raw)))
        _compiled = (raw, pattern)
    return pattern.sub(REDACTED, text)


def redact_uri(uri: str) -> str:
    """`uri` without its user-info: `http://alice:pw@host:5000/x` -> `http://***@host:5000/x`.

    A URI without user-info comes back unchanged; so does text that is not a URI.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    if "@" not in parts.netloc:
        return _redact_values(_SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, uri))
    host = parts.netloc.rsplit("@", 1)[1]
    cleaned = urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, parts.fragment))
    return _redact_values(_SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, cleaned))


def redact_text(text: str) -> str:
    """`text` without the known secrets (by value) and with the user-info of every URI in it (and secret-looking
    query parameters) replaced by `***`."""
    text = _redact_values(text)
    text = _USERINFO_IN_TEXT.sub(lambda m: m["scheme"] + REDACTED + "@", text)
    return _SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message, arguments and traceback (see `redact_text`), for handlers
    that also receive third-party records (MLflow, urllib3, gRPC core). Attach it to a handler:
    `handler.addFilter(RedactingFilter())`. The traceback is formatted into `record.exc_text`, redacted, which
    formatters print instead of formatting `exc_info` again."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
