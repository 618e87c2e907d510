"""`ortserve serve`: flags are generated from `ServerSettings`, so every flag has its ORTSERVE_* variable."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from ortserve.contract.redact import PASSWORD_ON_COMMAND_LINE, register_secret_uri, uri_has_password
from ortserve.server.app import serve
from ortserve.server.errors import ModelConfigError, OrtServeError
from ortserve.server.observability.logs import NativeStderrRouter, configure_logging
from ortserve.server.settings import PER_MODEL_SETTINGS, ServerSettings

#: Flags whose shape differs from their field: `--model NAME=URI`, repeated, fills the `models` list.
_MODEL_FLAG_HELP = (
    "serve the model at URI (models:/name@alias, models:/name/<version>, models:/name/<Stage> or an artifact "
    "directory) under NAME; repeat for several. A model may override the server-wide "
    + ", ".join(f"--{key.replace('_', '-')}" for key in PER_MODEL_SETTINGS)
    + " for itself after a '?' (NAME=URI?max_batch_size=64&concurrent_runs=1) or in ORTSERVE_MODEL_<NAME>_<SETTING>"
    " (NAME upper-cased, other characters than letters and digits as '_'). Likewise, a model's challenger: "
    "challenger=URI, shadow=SHARE of texts also run through it, canary=SHARE of calls it answers "
    "(NAME=URI?challenger=models:/name@challenger&shadow=0.1; see README 'Rolling out a new version')"
)

#: `--help` sections, in order, and the settings each shows. A setting in none of them is listed under "other
#: settings" (tests/test_cli_serve_help.py fails until it is given a section).
HELP_GROUPS: dict[str, tuple[str, ...]] = {
    "models": ("models",),
    "network, TLS and authentication": (
        "host",
        "port",
        "reuse_port",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "auth_token_file",
        "auth_token_env",
        "auth_health",
        "reflection",
    ),
    "HTTP": ("http_port", "http_max_body_bytes", "http_default_model"),
    "request limits, batching and admission": (
        "max_texts_per_request",
        "max_text_chars",
        "max_request_chars",
        "max_batch_size",
        "max_batch_tokens",
        "max_batch_delay_ms",
        "max_run_ms",
        "max_queue_texts",
        "max_queue_tokens",
        "max_calls_in_flight",
        "max_concurrent_rpcs",
    ),
    "long texts": ("max_length", "long_text", "chunk_aggregate", "max_chunks", "chunk_stride"),
    "runtime": (
        "intra_op_threads",
        "allow_spinning",
        "spin_during_runs",
        "model_thread_nice",
        "concurrent_runs",
        "shared_arena",
        "arena_shrink_width",
        "malloc_mmap_threshold_bytes",
        "result_cache_bytes",
    ),
    "registry and cache": ("tracking_uri", "cache_dir", "poll_interval", "registry_timeout_s"),
    "champion and challenger (a model's challenger=URI, shadow=, canary=)": (
        "shadow_queue_texts",
        "shadow_nice",
        "challenger_report_interval_s",
    ),
    "observability": (
        "log_level",
        "log_format",
        "metrics_port",
        "metrics_host",
        "metrics_tls",
        "metrics_auth_env",
        "tracing",
        "otlp_endpoint",
    ),
    "shutdown": ("drain_period_s", "grace_period_s"),
}
OTHER_GROUP = "other settings"

#: A default stated in a setting's text, "(default: ...)": shown once, in the place of the field's own default (a
#: None that means "ask something else", e.g. an environment variable).
_STATED_DEFAULT = re.compile(r"\s*\(default: (?P<default>[^)]*)\)")


def build_parser() -> argparse.ArgumentParser:
    """One flag per `ServerSettings` field, its help taken from the field's docstring, with its env var and default,
    in sections by topic (`HELP_GROUPS`)."""
    parser = argparse.ArgumentParser(
        prog="ortserve serve",
        usage="ortserve serve --model NAME=URI [--model NAME=URI ...] [--port PORT] [options]",
        description="Serve exported text classifiers over gRPC. Each flag falls back to its ORTSERVE_* "
        "environment variable, then to its default.",
    )
    env_prefix = ServerSettings.model_config.get("env_prefix", "")
    groups = {title: parser.add_argument_group(title) for title in [*HELP_GROUPS, OTHER_GROUP]}
    group_of = {name: groups[title] for title, names in HELP_GROUPS.items() for name in names}
    for name, field in ServerSettings.model_fields.items():
        env = f"{env_prefix}{name}".upper()
        group = group_of.get(name, groups[OTHER_GROUP])
        if name == "models":
            group.add_argument(
                "--model",
                dest="models",
                action="append",
                metavar="NAME=URI[?SETTING=VALUE&...]",
                help=f"{_MODEL_FLAG_HELP} [env {env}, ';'-separated]",
            )
            continue
        flag = "--" + name.replace("_", "-")
        text, default = _text_and_default(field.description, field.get_default())
        help_text = f"{text} [env {env}; default {default}]"
        if field.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=name, metavar=_metavar(name, field.annotation), default=None, help=help_text)
    for title in [OTHER_GROUP, *HELP_GROUPS]:  # argparse prints an empty section's title: drop empty ones
        if not groups[title]._group_actions:
            parser._action_groups.remove(groups[title])
    return parser


def _metavar(name: str, annotation: Any) -> str:
    """What the value of a flag is, in one word: a path, a number of seconds, a count, or the choices."""
    if get_origin(annotation) is Literal:
        return "{" + ",".join(map(str, get_args(annotation))) + "}"
    kinds = set(get_args(annotation)) or {annotation}
    if Path in kinds:
        return "PATH"
    if name.endswith("_s") or name == "poll_interval":
        return "SECONDS"
    if kinds & {int, float}:
        return "N"
    return name.rsplit("_", 1)[-1].upper()


def _text_and_default(description: str | None, value: Any) -> tuple[str, str]:
    """The help text of a setting (one paragraph) and the one default to show with it."""
    # argparse re-wraps help anyway; '%' would be read as a format directive.
    text = " ".join((description or "").split()).replace("%", "%%")
    stated = _STATED_DEFAULT.search(text)
    if stated:
        return text[: stated.start()] + text[stated.end() :], stated["default"]
    if isinstance(value, bool):
        return text, "on" if value else "off"
    return text, "none" if value is None or value == "" else str(value)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    given: dict[str, Any] = {key: value for key, value in vars(args).items() if value is not None}
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"ortserve serve: invalid {where}: {error['msg']}", file=sys.stderr)
        return 2
    if not settings.models:
        print("ortserve serve: no models to serve; pass --model NAME=URI or set ORTSERVE_MODELS", file=sys.stderr)
        return 2
    # gRPC core's own lines (a failed TLS handshake writes one per connection) become rate-limited log records, so
    # route file descriptor 2; in JSON mode every other line becomes a record too, in text mode it passes as it is.
    router = NativeStderrRouter(passthrough=settings.log_format == "text")
    configure_logging(settings.log_level, settings.log_format, router.start())
    register_secret_uri(settings.tracking_uri)  # removed by value from every log line and message from now on
    if uri_has_password(args.tracking_uri):  # on the command line, not from ORTSERVE_TRACKING_URI
        logging.getLogger("ortserve.serve").warning("%s", PASSWORD_ON_COMMAND_LINE)
    json_log = settings.log_format == "json"
    try:
        asyncio.run(serve(settings))
    except ModelConfigError as exc:  # a usage error, like an invalid flag: nothing to retry
        _report_failure(str(exc), json_log)
        return 2
    except OrtServeError as exc:
        _report_failure(str(exc), json_log)
        return 1
    except Exception:
        if not json_log:
            raise
        # A JSON log stays JSON to the end: the traceback goes into the record's `exception` field.
        logging.getLogger("ortserve.serve").exception("ortserve serve: stopped by an unexpected error")
        return 1
    finally:
        router.stop()
    return 0


def _report_failure(message: str, json_log: bool) -> None:
    """The one line that says why the server did not start or run: a log record in JSON mode, else plain text."""
    if json_log:
        logging.getLogger("ortserve.serve").error("ortserve serve: %s", message)
    else:
        print(f"ortserve serve: {message}", file=sys.stderr)
