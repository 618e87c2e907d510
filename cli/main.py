"""Entry point of the `ortserve` console script; each subcommand imports only what it needs.

`predict` runs on the client-only install; `serve` needs the `[server]` extra and `export` the `[export]` extra.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module under ortserve.cli, extra it needs, one-line help)
SUBCOMMANDS = {
    "serve": ("serve", "server", "serve exported models over gRPC"),
    "export": ("export", "export", "export a Hugging Face classifier to a validated ONNX artifact"),
    "predict": ("predict", None, "classify texts with a running server and print JSON lines"),
    "challenger": ("challenger", None, "report how a model's challenger version compares with its champion"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="ortserve",
        description="Serve text classifiers from an MLflow Model Registry over gRPC with ONNX Runtime.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        args = parser.parse_args(argv)
        if args.version:
            from importlib.metadata import version

            print(f"ortserve {version('ortserve')}")
            return 0
        parser.print_help(sys.stderr)
        return 2
    module_name, extra, _ = SUBCOMMANDS[argv[0]]
    try:
        module = importlib.import_module(f"ortserve.cli.{module_name}")
    except ImportError as exc:
        print(
            f"ortserve {argv[0]}: missing dependency ({exc.name or exc}); install it with "
            f"pip install 'ortserve[{extra}]'",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
