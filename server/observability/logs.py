"""Server logging: plain text (the default) or one JSON object per line, with the request id, model and version
of the call a line is about (from `ortserve.server.observability.call_context`)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Literal

from .call_context import current_call

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CallContextFilter(logging.Filter):
    """Adds `request_id`, `model` and `model_version` of the current call to each record ("" outside a call), so
    that any formatter can use them. Attached to the handler: records of every logger pass through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call()
        if call is None:
            record.request_id = record.model = record.model_version = ""
        else:
            record.request_id, record.model, record.model_version = call.request_id, call.model, call.version
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the call's request_id, model
    and model_version when the line is about a call, and `exception` (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "model", "model_version"):
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: LogFormat = "text", stream: Any = None) -> logging.Handler:
    """Send the process's logs to `stream` (stderr) in `log_format`, replacing handlers set up earlier."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if log_format == "json":
        logging.captureWarnings(True)  # Python warnings as log records too, so every line stays one JSON object
    return handler
