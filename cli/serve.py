"""`ortserve serve`: flags are generated from `ServerSettings`, so every flag has its ORTSERVE_* variable."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ortserve.server.app import serve
from ortserve.server.errors import OrtServeError
from ortserve.server.observability.logs import configure_logging
from ortserve.server.settings import PER_MODEL_SETTINGS, ServerSettings

#: Flags whose shape differs from their field: `--model NAME=URI`, repeated, fills the `models` list.
_MODEL_FLAG_HELP = (
    "serve the model at URI (models:/name@alias, models:/name/<version>, models:/name/<Stage> or an artifact "
    "directory) under NAME; repeat for several. A model may override the server-wide "
    + ", ".join(f"--{key.replace('_', '-')}" for key in PER_MODEL_SETTINGS)
    + " for itself after a '?' (NAME=URI?max_batch_size=64&concurrent_runs=1) or in ORTSERVE_MODEL_<NAME>_<SETTING>"
    " (NAME upper-cased, other characters than letters and digits as '_')"
)


def build_parser() -> argparse.ArgumentParser:
    """One flag per `ServerSettings` field, its help taken from the field's docstring, with its env var and default."""
    parser = argparse.ArgumentParser(
        prog="ortserve serve",
        description="Serve exported text classifiers over gRPC. Each flag falls back to its ORTSERVE_* "
        "environment variable, then to its default.",
    )
    env_prefix = ServerSettings.model_config.get("env_prefix", "")
    for name, field in ServerSettings.model_fields.items():
        env = f"{env_prefix}{name}".upper()
        if name == "models":
            parser.add_argument(
                "--model",
                dest="models",
                action="append",
                metavar="NAME=URI[?SETTING=VALUE&...]",
                help=f"{_MODEL_FLAG_HELP} [env {env}, ';'-separated]",
            )
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{_one_paragraph(field.description)} [env {env}; default {_show_default(field.get_default())}]"
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), default=None, help=help_text)
    return parser


def _one_paragraph(text: str | None) -> str:
    # argparse re-wraps help anyway; '%' would be read as a format directive.
    return " ".join((text or "").split()).replace("%", "%%")


def _show_default(value: Any) -> str:
    return "none" if value is None or value == "" else str(value)


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
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except OrtServeError as exc:
        print(f"ortserve serve: {exc}", file=sys.stderr)
        return 1
    return 0
