"""`ortserve predict`: classify texts from arguments or stdin with a running server; one JSON line per text."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence

from ortserve.client import InferenceClient, InferenceError

DEFAULT_TARGET = "localhost:50051"
#: Texts per request when reading many lines from stdin (under the server's default max_texts_per_request).
CHUNK = 128


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve predict",
        description="Classify texts with a running ortserve server and print one JSON object per text.",
    )
    parser.add_argument("texts", nargs="*", help="texts to classify; none reads one text per line from stdin")
    parser.add_argument(
        "--target", default=os.environ.get("ORTSERVE_TARGET", DEFAULT_TARGET),
        help=f"server address HOST:PORT [env ORTSERVE_TARGET] (default {DEFAULT_TARGET})",
    )
    parser.add_argument("--model", required=True, help="name the model is served under")
    parser.add_argument("--top-k", type=int, default=0, help="labels per text, highest first; 0 for all (default)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    return parser


def _chunks(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 0:
        print("ortserve predict: --top-k must be 0 or positive", file=sys.stderr)
        return 2
    texts: Iterator[str] = iter(args.texts) if args.texts else (line.rstrip("\n") for line in sys.stdin if line.strip())
    try:
        with InferenceClient(args.target, timeout=args.timeout) as client:
            for chunk in _chunks(texts, CHUNK):
                for text, result in zip(chunk, client.classify(args.model, chunk, top_k=args.top_k), strict=True):
                    record = {
                        "text": text,
                        "model": args.model,
                        "model_version": result.model_version,
                        "labels": [{"label": s.label, "score": round(s.score, 6)} for s in result.labels],
                    }
                    print(json.dumps(record, ensure_ascii=False), flush=True)
    except InferenceError as exc:
        print(f"ortserve predict: {args.target} model {args.model!r}: {exc}", file=sys.stderr)
        return 1
    return 0
