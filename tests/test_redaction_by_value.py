"""Credentials are removed by value, whatever characters they hold (issue 25): the configured tracking URI's user-info
and the credential variables, in every form a message may show them in, from messages, log lines and tracebacks;
`ortserve serve` warns when a password is on its command line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from ortserve.contract import redact
from ortserve.contract.redact import CREDENTIAL_VARIABLES, RedactingFilter, redact_text, register_secret_uri
from ortserve.server.errors import caller_message
from ortserve.server.observability.logs import configure_logging

from .helpers import ORTSERVE, free_port

#: Every printable ASCII character, quotes, backslash, '@', '/', '%' and space included.
EVERY_PRINTABLE = "".join(chr(code) for code in range(0x20, 0x7F))
SECRET = f"pw{EVERY_PRINTABLE}end"


def forms(secret: str) -> list[str]:
    """The ways a message may show a secret: as it is, percent-encoded, quoted by repr or by JSON."""
    return [secret, quote(secret, safe=""), quote(secret), repr(secret), json.dumps(secret)]


def leaks(text: str, secret: str = SECRET) -> list[str]:
    """Pieces of `secret` (any 8 characters in a row, in any of its forms) found in `text`."""
    found = []
    for form in forms(secret):
        found += [form[i : i + 8] for i in range(len(form) - 7) if form[i : i + 8] in text]
    return found


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_registered", set())
    for name in (*CREDENTIAL_VARIABLES, *redact.CREDENTIAL_URI_VARIABLES):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY"])
def test_a_credential_variable_is_removed_whatever_it_holds(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, SECRET)
    for form in forms(SECRET):
        text = f"API request failed: {form} (retrying)"
        assert not leaks(redact_text(text)), form
        assert not leaks(caller_message(text)), form


def test_the_tracking_uris_user_info_is_removed_whatever_it_holds() -> None:
    # As a user writes it: only what would end the user-info ('/', '?', '#', '@', '%', ':') percent-encoded.
    password = quote(SECRET, safe="!$&'()*+,;=\"<>[]\\^`{|}~ ")
    uri = f"http://alice:{password}@127.0.0.1:5000"
    register_secret_uri(uri)
    for text in (
        f"API request to {uri}/api/2.0/mlflow/registered-models/alias failed",
        f"Invalid URL {uri!r}: no host",
        f'{{"tracking_uri": {json.dumps(uri)}}}',
        f"password {SECRET} in clear",
    ):
        redacted = redact_text(text)
        assert not leaks(redacted) and password not in redacted, redacted


def test_log_lines_and_tracebacks_of_any_logger_lose_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    for log_format in ("text", "json"):
        stream = io.StringIO()
        handler = configure_logging("INFO", log_format, stream)  # type: ignore[arg-type]
        try:
            logging.getLogger("urllib3.connectionpool").warning("retrying with %r", SECRET)
            try:
                raise ValueError(f"bad credentials {SECRET}")
            except ValueError:
                logging.getLogger("ortserve.test").exception("failed")
        finally:
            logging.getLogger().removeHandler(handler)
        assert "failed" in stream.getvalue() and "ValueError" in stream.getvalue()
        assert not leaks(stream.getvalue()), log_format


def test_the_filter_redacts_a_records_traceback() -> None:
    register_secret_uri(f"http://bob:{quote(SECRET, safe='')}@host")
    try:
        raise RuntimeError(SECRET)
    except RuntimeError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, (type(exc), exc, exc.__traceback__))
    assert RedactingFilter().filter(record)
    assert record.exc_text and "RuntimeError" in record.exc_text and not leaks(record.exc_text)


def test_serve_warns_when_a_password_is_on_the_command_line(tmp_path: Path) -> None:
    uri = f"http://alice:{quote(SECRET, safe='')}@127.0.0.1:{free_port()}"
    with_password = _serve_stderr(uri, tmp_path)
    without = _serve_stderr(uri.replace(f"alice:{quote(SECRET, safe='')}@", ""), tmp_path)
    assert "MLFLOW_TRACKING_PASSWORD" in with_password and "process list" in with_password
    assert "MLFLOW_TRACKING_PASSWORD" not in without
    assert not leaks(with_password)


def _serve_stderr(uri: str, tmp_path: Path) -> str:
    """What `ortserve serve` logs at start with `--tracking-uri uri` (a port that is taken: it stops at once)."""
    with __import__("socket").create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [ORTSERVE, "serve", "--host", "127.0.0.1", "--port", str(port), "--tracking-uri", uri]
        command += ["--model", "m=models:/x@prod", "--cache-dir", str(tmp_path / "cache"), "--poll-interval", "0"]
        ran = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return ran.stderr
