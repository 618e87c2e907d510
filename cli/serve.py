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
from ortserve.server.logs import configure_logging
from ortserve.server.settings import ServerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve serve",
        description="Serve exported text classifiers over gRPC. Each flag falls back to its ORTSERVE_* "
        "environment variable, then to its default.",
    )
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"ORTSERVE_{name.upper()}"
        help_text = f"{field.description or ''} [env {env}]"
        if name == "models":
            parser.add_argument(
                "--model", dest="models", action="append", metavar="NAME=URI",
                help="serve the model at URI (models:/name@alias, models:/name/<version>, models:/name/<Stage> or "
                "an artifact directory) under NAME; repeat for several [env ORTSERVE_MODELS, ';'-separated]",
            )
        elif field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            described = f"{help_text} (default {field.default})"
            parser.add_argument(flag, dest=name, metavar=name.upper(), default=None, help=described)
    return parser


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
