"""Credential redaction: user-info (`user:password@`) never leaves the process in a message or a log line.

MLflow puts the tracking URI, credentials included, into its error texts (`API request to
http://alice:secret@host/... failed`). Everything that can carry a tracking URI or an MLflow error text goes through
`redact_uri` (one URI) or `redact_text` (free text) before it is logged or raised.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

#: `scheme://user-info@` anywhere in a text; user-info ends at the last '@' before the host part.
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s@'\"]+)@")
#: Query parameters that commonly carry secrets (pre-signed URLs, tokens).
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>[?&](?:token|access_token|password|passwd|secret|sig|signature|x-amz-signature|x-amz-credential)=)"
    r"(?P<value>[^&#\s'\"]+)"
)


def redact_uri(uri: str) -> str:
    """`uri` without its user-info: `http://alice:pw@host:5000/x` -> `http://***@host:5000/x`.

    A URI without user-info comes back unchanged; so does text that is not a URI.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    if "@" not in parts.netloc:
        return _SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, uri)
    host = parts.netloc.rsplit("@", 1)[1]
    cleaned = urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, parts.fragment))
    return _SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, cleaned)


def redact_text(text: str) -> str:
    """`text` with the user-info of every URI in it (and secret-looking query parameters) replaced by `***`."""
    text = _USERINFO_IN_TEXT.sub(lambda m: m["scheme"] + REDACTED + "@", text)
    return _SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts user-info from a record's message and arguments, for handlers that also
    receive third-party records (MLflow, urllib3). Attach it to a handler: `handler.addFilter(RedactingFilter())`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
