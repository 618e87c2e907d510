"""`ortserve export`: a source model in, a validated ONNX artifact out, registered in MLflow."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from ortserve.contract.redact import PASSWORD_ON_COMMAND_LINE, register_secret_uri, uri_has_password
from ortserve.export.errors import AliasNotMovedError, ExportError
from ortserve.export.optimize import DEFAULT_INT8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve export",
        description="Export a Hugging Face text classifier to ONNX, optimize and quantize it, check it against the "
        "source model, write an ortserve artifact directory (model.onnx, tokenizer.json, ortserve.json) and register "
        "it in the MLflow Model Registry. Exit codes: 0 done, 2 cannot export, 3 accuracy gate failed (nothing "
        "registered), 4 int8 missed the gate so the export is fp32: registered, but --alias not moved (see "
        "--allow-fp32).",
    )
    parser.add_argument(
        "source",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/STAGE, runs:/RUN_ID/PATH or a local Hugging "
        "Face model directory",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the artifact directory here; given without --register-as, only the directory is written and "
        "nothing is registered (default: ./<source name>-onnx for local directories; a temporary directory, removed "
        "after upload, for registry and run sources)",
    )
    parser.add_argument(
        "--register-as",
        help="registered model name for the ONNX model (default <source name>-onnx for models:/ sources without "
        "--output; needed for runs:/ sources; local directories are registered only with it)",
    )
    parser.add_argument(
        "--alias",
        help="alias to point at the registered version (e.g. production); moved only if the export is what was asked "
        "for: when int8 misses the gate, the fp32 version is registered but the alias is not moved (exit code 4) "
        "unless --allow-fp32",
    )
    parser.add_argument(
        "--allow-fp32",
        action="store_true",
        help="move --alias to the export even when int8 missed the accuracy gate and it is fp32 (slower)",
    )
    parser.add_argument(
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="try int8 quantization (method: --int8) and keep it where it passes the accuracy gate (default: on)",
    )
    parser.add_argument(
        "--int8",
        choices=["auto", "dynamic", "static"],
        default=DEFAULT_INT8,
        help="int8 method: dynamic (activations quantized per call), static (QDQ graph, activation scales calibrated "
        "on the validation texts) or auto (make both, keep the fastest that passes the gate; the figures are "
        f"recorded in the manifest and the registered version's tags) (default: {DEFAULT_INT8})",
    )
    parser.add_argument(
        "--optimize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fuse attention, GELU and LayerNorm with ONNX Runtime's transformer optimizer where the architecture "
        "allows (default: on)",
    )
    parser.add_argument("--validation-texts", type=Path, help="file of texts for the accuracy gate, one per line")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: optimum's choice for the architecture)")
    parser.add_argument(
        "--max-length",
        type=int,
        help="tokens of one text the served model reads, recorded in the manifest (a server may still set its own "
        "per model); e.g. the length it was trained on (default: the model's limit)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's default sqlite:///<cwd>/mlflow.db)",
    )
    parser.add_argument("--log-level", default="INFO", help="level of ortserve's own log lines (default INFO)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show what transformers, optimum, torch, ONNX Runtime and MLflow print (warnings, progress bars); "
        "silenced by default",
    )
    return parser


#: Loggers of the libraries the export drives; below ERROR they only narrate (deprecations, tracer warnings, "please
#: install accelerate", quantizer advice, MLflow's migrations). "" is the root logger, which onnxruntime's quantizer
#: uses.
THIRD_PARTY_LOGGERS = ("", "transformers", "optimum", "torch", "onnxruntime", "onnx", "mlflow", "alembic", "urllib3")


@contextlib.contextmanager
def third_party_quieted() -> Iterator[TextIO]:
    """Keep stderr to ortserve's own lines for the block; yields the stream they go to (the real stderr).

    What the libraries print goes to a discarded temporary file instead: file descriptor 2 is pointed there, since
    MLflow prints ("Created version '2' of model ...") and ONNX Runtime's C++ code writes to it directly, and their
    warnings and log lines under ERROR are dropped. `--verbose` skips all of this. Levels and filters are restored
    afterwards (the CLI also runs in-process, in tests and Airflow tasks)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read once, when transformers is first imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    sys.stderr.flush()
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    with tempfile.TemporaryFile() as discarded, warnings.catch_warnings():
        os.dup2(discarded.fileno(), 2)
        try:
            warnings.simplefilter("ignore")  # TracerWarning, FutureWarning, DeprecationWarning... of the libraries
            for name in THIRD_PARTY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield real
        finally:
            sys.stderr.flush()
            os.dup2(real.fileno(), 2)
            real.close()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _read_texts(path: Path) -> list[str]:
    try:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ExportError(f"cannot read --validation-texts {path}: {exc.strerror}") from None
    if not texts:
        raise ExportError(f"--validation-texts {path} holds no texts")
    return texts


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    # Before transformers is imported (it reads them once): the export never reaches the Hugging Face Hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with contextlib.ExitStack() as stack:
        stream = sys.stderr if args.verbose else stack.enter_context(third_party_quieted())
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        ortserve = logging.getLogger("ortserve")
        ortserve.setLevel(args.log_level.upper())
        ortserve.addHandler(handler)
        ortserve.propagate = False  # its lines go to `stream` only, also where the root logger is quieted
        try:
            code, message = _export(args)
        finally:
            ortserve.removeHandler(handler)
            ortserve.propagate = True
    if message:
        print(f"ortserve export: {message}", file=sys.stderr)
    return code


def _export(args: argparse.Namespace) -> tuple[int, str | None]:
    """Run the export the arguments describe; print its summary; return the exit code and the error line, if any."""
    try:
        from ortserve.export.job import export_model

        output = args.output
        is_uri = args.source.startswith(("models:", "runs:"))
        if output is None and not is_uri and not args.register_as:
            output = Path.cwd() / f"{Path(args.source).resolve().name}-onnx"
        register_secret_uri(args.tracking_uri)  # removed by value from every message from now on
        if uri_has_password(args.tracking_uri):
            print(f"ortserve export: warning: {PASSWORD_ON_COMMAND_LINE}", file=sys.stderr)
        report = export_model(
            args.source,
            register_as=args.register_as,
            alias=args.alias,
            output=output,
            quantize=args.quantize,
            optimize=args.optimize,
            validation_texts=_read_texts(args.validation_texts) if args.validation_texts else None,
            opset=args.opset,
            tracking_uri=args.tracking_uri,
            int8=args.int8,
            allow_fp32=args.allow_fp32,
            max_length=args.max_length,
        )
    except AliasNotMovedError as exc:  # registered, but not promoted: the summary still says what was registered
        print(json.dumps(exc.report.to_dict(), indent=2))
        return exc.exit_code, str(exc)
    except ExportError as exc:
        return exc.exit_code, str(exc)
    except KeyboardInterrupt:
        return 130, f"{args.source}: interrupted"
    except Exception as exc:  # a bug or an error no step anticipated: still one line, with the trace at DEBUG
        logging.getLogger("ortserve.export").debug("unexpected failure", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        return 1, (
            f"{args.source}: unexpected {type(exc).__name__}: {first}; run again with --verbose --log-level DEBUG for "
            "the trace and report it"
        )
    print(json.dumps(report.to_dict(), indent=2))
    return 0, None
