"""`ortserve predict`: classify texts from arguments or stdin with a running server; one JSON line per text.

Runs on the client-only install (grpcio and protobuf). Output lines come in input order, each
`{"text", "model", "model_version", "labels": [{"label", "score"}, ...]}` with labels best first, plus
`"truncated": true` when only the text's beginning was classified (it is longer than the model reads). A text that
cannot be classified gets `{"text", "model", "error"}` instead and the run goes on; the exit code is then 1. Reading
stdin, blank lines are skipped and answers are written as each block of texts returns, so
`tail -f log | ortserve predict ...` and `head -n 5` behave.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence

import grpc

from ortserve.client import DEFAULT_TARGET, Classification, InferenceClient, InferenceError, default_target
from ortserve.client.convert import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve predict",
        description="Classify texts with a running ortserve server and print one JSON object per text.",
    )
    parser.add_argument("texts", nargs="*", help="texts to classify; none reads one text per line from stdin")
    env_model = os.environ.get("ORTSERVE_MODEL")
    parser.add_argument(
        "--model",
        required=env_model is None,
        default=env_model,
        help="name the model is served under [env ORTSERVE_MODEL]",
    )
    parser.add_argument(
        "--target",
        default=default_target(),
        help=f"server address: HOST:PORT, dns:///HOST:PORT or ipv4:IP:PORT,IP:PORT for replicas "
        f"[env ORTSERVE_TARGET] (default {DEFAULT_TARGET})",
    )
    parser.add_argument("--top-k", type=int, default=0, help="labels per text, highest first; 0 for all (default)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"texts per request, at most the server's max_texts_per_request (default {DEFAULT_CHUNK_SIZE})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("ORTSERVE_TOKEN"),
        help="bearer token sent as the authorization header [env ORTSERVE_TOKEN]",
    )
    parser.add_argument(
        "--root-certificates",
        default=os.environ.get("ORTSERVE_ROOT_CERTIFICATES"),
        help="PEM file of root certificates; given, the connection uses TLS [env ORTSERVE_ROOT_CERTIFICATES]",
    )
    parser.add_argument(
        "--client-certificate",
        default=os.environ.get("ORTSERVE_CLIENT_CERTIFICATE"),
        help="PEM client certificate, for a server that requires one (mutual TLS); with --client-key "
        "[env ORTSERVE_CLIENT_CERTIFICATE]",
    )
    parser.add_argument(
        "--client-key",
        default=os.environ.get("ORTSERVE_CLIENT_KEY"),
        help="PEM private key of --client-certificate [env ORTSERVE_CLIENT_KEY]",
    )
    return parser


def blocks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """`texts` in lists of `size`, read lazily so stdin is answered as it arrives."""
    iterator = iter(texts)
    while block := list(itertools.islice(iterator, size)):
        yield block


def stdin_texts() -> Iterator[str]:
    for line in sys.stdin:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def record(text: str, model: str, result: Classification) -> str:
    """One output line (without its newline)."""
    if not result.ok:
        return error_record(text, model, result.error)
    labels = [{"label": s.label, "score": round(s.score, 6)} for s in result.labels]
    line: dict[str, object] = {"text": text, "model": model, "model_version": result.model_version, "labels": labels}
    if result.truncated:
        line["truncated"] = True
    return json.dumps(line, ensure_ascii=False)


def error_record(text: str, model: str, error: str) -> str:
    """The output line of a text that was not classified."""
    return json.dumps({"text": text, "model": model, "error": error}, ensure_ascii=False)


def classify_block(client: InferenceClient, model: str, block: list[str], top_k: int) -> list[tuple[str, bool]]:
    """The output line of each text of `block`, and whether the text was classified.

    A block the server refuses as a whole for its input (INVALID_ARGUMENT, e.g. too large together) is classified
    text by text, so that one bad line costs only its own answer. Other failures (server down) end the run.
    """
    try:
        results = client.classify(model, block, top_k=top_k)
    except InferenceError as exc:
        if exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
            raise
        if len(block) == 1:
            return [(error_record(block[0], model, exc.details), False)]
        return [line for text in block for line in classify_block(client, model, [text], top_k)]
    return [(record(t, model, r), r.ok) for t, r in zip(block, results, strict=True)]


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 0:
        parser.error("--top-k must be 0 or positive")
    if args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")
    texts: Iterable[str] = args.texts or stdin_texts()
    failed = 0
    try:
        client = InferenceClient(
            args.target,
            timeout=args.timeout,
            chunk_size=args.chunk_size,
            token=args.token,
            root_certificates=args.root_certificates,
            client_certificate=args.client_certificate,
            client_key=args.client_key,
        )
        with client:
            # One block keeps every request of the client's bounded concurrency busy, then prints in order.
            for block in blocks(texts, args.chunk_size * DEFAULT_MAX_CONCURRENCY):
                lines = classify_block(client, args.model, block, args.top_k)
                failed += sum(not ok for _, ok in lines)
                sys.stdout.write("".join(line + "\n" for line, _ in lines))
                sys.stdout.flush()
    except (InferenceError, ValueError) as exc:
        print(f"ortserve predict: {args.target} model {args.model!r}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): not an error, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    if failed:
        print(f'ortserve predict: {failed} text(s) not classified (see their "error" lines)', file=sys.stderr)
        return 1
    return 0
