"""Server logging: plain text (the default) or one JSON object per line, with the request id, model and version
of the call a line is about (from `ortserve.server.observability.call_context`)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

from ortserve.contract.redact import RedactingFilter

from .call_context import current_call


class RateLimitedLog:
    """At most `max_lines` lines per `interval_s`; the rest are counted and reported in one line afterwards
    ("suppressed N similar log lines"), so a caller who sends garbage in a loop cannot flood the log. Used for
    refusals, failures, the access log and gRPC core's lines (failed TLS handshakes)."""

    def __init__(self, logger: logging.Logger, max_lines: int = 20, interval_s: float = 10.0):
        self.logger = logger
        self.max_lines = max_lines
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._lines = 0
        self._suppressed = 0

    def log(self, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.interval_s:
                if self._suppressed:
                    self.logger.warning(
                        "suppressed %d similar log lines in the last %.0fs", self._suppressed, self.interval_s
                    )
                self._window_start, self._lines, self._suppressed = now, 0, 0
            if self._lines >= self.max_lines:
                self._suppressed += 1
                return
            self._lines += 1
        self.logger.log(level, message, *args, exc_info=exc_info)


#: Failed calls logged by the access log (`ortserve.access`) per ACCESS_LOG_INTERVAL_S, gRPC and HTTP together; the
#: rest are counted in one "suppressed N" line, so that a client looping on a wrong token cannot flood the log.
ACCESS_LOG_LINES = 50
ACCESS_LOG_INTERVAL_S = 10.0
#: The access log's failure lines, shared by both protocols (every call's line at DEBUG is not limited: asked for).
access_failures = RateLimitedLog(logging.getLogger("ortserve.access"), ACCESS_LOG_LINES, ACCESS_LOG_INTERVAL_S)


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
        if record.exc_text:  # the traceback as `RedactingFilter` left it
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: LogFormat = "text", stream: Any = None) -> logging.Handler:
    """Send the process's logs to `stream` (stderr) in `log_format`, replacing handlers set up earlier."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallContextFilter())
    handler.addFilter(RedactingFilter())  # the configured credentials, by value, whichever logger a line comes from
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if log_format == "json":
        logging.captureWarnings(True)  # Python warnings as log records too, so every line stays one JSON object
    return handler


#: A line of gRPC core's own log (absl format): severity letter, date, time, thread, source file:line, message.
_GRPC_CORE_LINE = re.compile(r"^(?P<severity>[IWEF])\d{4} [\d:.]+\s+\d+ (?P<source>[^\]]+)\] (?P<message>.*)$")
_SEVERITIES = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}


#: gRPC core lines kept per source line (`ssl_transport_security.cc:2563`) per interval: a client that opens
#: connections in a loop and fails each TLS handshake would otherwise write one line per connection.
CORE_LINES_PER_SOURCE = 20
CORE_LINES_INTERVAL_S = 10.0


class NativeStderrRouter:
    """Routes what is written to file descriptor 2 behind Python's back into log records: gRPC core's own lines
    (`I1204 ... ssl_transport_security.cc:2563] Handshake failed ...`, logger `grpc.core`, their severity kept,
    at most CORE_LINES_PER_SOURCE per source line and CORE_LINES_INTERVAL_S, then one "suppressed N" line) and
    anything else native code or a crash writes there (logger `stderr`, WARNING; with `passthrough`, written
    to the original stderr as it came, for the text log). File descriptor 2 becomes a pipe read by a thread; the
    log handler writes to a copy of the original.

    Use `start()` before the server starts and `stop()` when the process is about to exit, which also lets the
    thread turn the last lines into records.
    """

    def __init__(self, passthrough: bool = False) -> None:
        self.passthrough = passthrough
        self._saved_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._raw: TextIO | None = None
        self._core_logs: dict[str, RateLimitedLog] = {}

    def start(self) -> TextIO:
        """Start routing; return a stream to the original stderr for the log handler to write to."""
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._raw = os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._forward, args=(read_fd,), name="ortserve-stderr", daemon=True)
        self._thread.start()
        return os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        """Give file descriptor 2 back; the thread logs what is left in the pipe, then ends."""
        if self._saved_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)  # the pipe's last writer closes: the thread reads to its end
        os.close(self._saved_fd)
        self._saved_fd = None
        if self._thread is not None:
            self._thread.join(timeout)
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _forward(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                text = line.rstrip("\r\n")
                if not text.strip():
                    continue
                core = _GRPC_CORE_LINE.match(text)
                if core is not None:
                    self._core_log(core["source"]).log(
                        _SEVERITIES[core["severity"]], "%s: %s", core["source"], core["message"]
                    )
                elif self.passthrough and self._raw is not None:
                    self._raw.write(line if line.endswith("\n") else line + "\n")
                else:
                    logging.getLogger("stderr").warning("%s", text)

    def _core_log(self, source: str) -> RateLimitedLog:
        """The rate-limited log of one source line of gRPC core (a bounded set: the lines of its code)."""
        limited = self._core_logs.get(source)
        if limited is None:
            logger = logging.getLogger("grpc.core")
            limited = self._core_logs[source] = RateLimitedLog(logger, CORE_LINES_PER_SOURCE, CORE_LINES_INTERVAL_S)
        return limited


class NativeStderrCapture:
    """Holds back what is written to file descriptor 2 inside a `with` block (gRPC core's own lines about a failed
    bind, say), so that the caller decides: `release()` writes it out as it came, or the caller keeps `text` for
    its log. Used around one short call, so other threads' lines are at most delayed, never lost."""

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> NativeStderrCapture:
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()

    def release(self) -> None:
        """Write what was held back to file descriptor 2 (after the block)."""
        if self.text:
            os.write(2, self.text.encode("utf-8", "replace"))
