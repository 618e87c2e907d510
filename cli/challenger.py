"""`ortserve challenger report`: how a model's challenger compares with its serving version, from a running server.

Reads `GetModel` (the `challenger` field of `ModelInfo`) and prints the comparison as text, or as one JSON object with
`--json` (for scripts and DAGs). Runs on the client-only install (grpcio and protobuf). Exit codes: 0 with a report,
1 when the server cannot answer or the model has no challenger, 2 for wrong arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from ortserve.client import DEFAULT_TARGET, default_target
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve challenger",
        description="Champion and challenger: report how a model's challenger version compares on live traffic.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{report}")
    report = actions.add_parser("report", help="print the comparison of a model's challenger with its champion")
    env_model = os.environ.get("ORTSERVE_MODEL")
    report.add_argument(
        "--model", required=env_model is None, default=env_model, help="served model name [env ORTSERVE_MODEL]"
    )
    report.add_argument(
        "--target", default=default_target(), help=f"server HOST:PORT [env ORTSERVE_TARGET] (default {DEFAULT_TARGET})"
    )
    report.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    report.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    report.add_argument("--token", default=os.environ.get("ORTSERVE_TOKEN"), help="bearer token [env ORTSERVE_TOKEN]")
    report.add_argument(
        "--root-certificates",
        default=os.environ.get("ORTSERVE_ROOT_CERTIFICATES"),
        help="PEM file of root certificates; given, the connection uses TLS [env ORTSERVE_ROOT_CERTIFICATES]",
    )
    return parser


def report_dict(model: str, info: pb.ChallengerInfo, champion_version: str) -> dict[str, Any]:
    """The report as plain data (the `--json` output)."""
    flips = [
        {"champion": p.champion_label, "challenger": p.challenger_label, "texts": p.texts}
        for p in info.label_pairs
        if p.champion_label != p.challenger_label
    ]
    return {
        "model": model,
        "champion_version": info.champion_version or champion_version,
        "challenger_version": info.version,
        "challenger_uri": info.source_uri,
        "comparing": info.comparing,
        "stopped_reason": info.stopped_reason,
        "shadow": info.shadow,
        "canary": info.canary,
        "canary_calls": info.canary_calls,
        "texts_compared": info.texts_compared,
        "agreements": info.agreements,
        "agreement": info.agreement,
        "label_pairs": [
            {"champion": p.champion_label, "challenger": p.challenger_label, "texts": p.texts} for p in info.label_pairs
        ],
        "label_flips": flips,
        "score_delta": {"mean": info.score_delta_mean, "p99": info.score_delta_p99},
        "latency_ms": {
            "champion": {"p50": info.champion_latency_p50_s * 1000, "p95": info.champion_latency_p95_s * 1000},
            "challenger": {"p50": info.challenger_latency_p50_s * 1000, "p95": info.challenger_latency_p95_s * 1000},
        },
        "errors": {"champion": info.champion_errors, "challenger": info.challenger_errors},
        "shadow_dropped": dict(sorted(info.shadow_dropped.items())),
    }


def report_text(report: dict[str, Any]) -> str:
    """The report for people."""
    latency = report["latency_ms"]
    lines = [
        f"model {report['model']}: champion version {report['champion_version'] or '-'}, "
        f"challenger version {report['challenger_version'] or '-'} ({report['challenger_uri']})",
        "comparing: yes" if report["comparing"] else f"comparing: no ({report['stopped_reason']})",
        f"shadow {report['shadow']:.1%} of texts, canary {report['canary']:.1%} of calls "
        f"({report['canary_calls']} answered by the challenger)",
        f"texts compared: {report['texts_compared']}, top-1 agreement {report['agreement']:.2%} "
        f"({report['agreements']} texts)",
    ]
    if report["label_flips"]:
        lines.append("label flips (champion -> challenger):")
        lines += [f"  {f['champion']} -> {f['challenger']}: {f['texts']}" for f in report["label_flips"]]
    else:
        lines.append("label flips: none")
    lines += [
        f"|score delta| on the champion's top label: mean {report['score_delta']['mean']:.4f}, "
        f"p99 {report['score_delta']['p99']:.4f}",
        f"latency p50/p95: champion {latency['champion']['p50']:.2f}/{latency['champion']['p95']:.2f} ms, "
        f"challenger {latency['challenger']['p50']:.2f}/{latency['challenger']['p95']:.2f} ms",
        f"errors: champion {report['errors']['champion']}, challenger {report['errors']['challenger']}",
        "shadow texts dropped: " + ", ".join(f"{k} {v}" for k, v in report["shadow_dropped"].items()),
    ]
    return "\n".join(lines)


def fetch_model(target: str, model: str, timeout: float, token: str | None, root_certificates: str | None) -> Any:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    if root_certificates:
        credentials = grpc.ssl_channel_credentials(Path(root_certificates).read_bytes())
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = pb_grpc.InferenceStub(channel)
        return stub.GetModel(pb.GetModelRequest(name=model), timeout=timeout, metadata=metadata)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        info = fetch_model(args.target, args.model, args.timeout, args.token, args.root_certificates)
    except grpc.RpcError as error:
        code = error.code().name if error.code() else "UNKNOWN"
        print(f"ortserve challenger: {args.target} model {args.model!r}: {code}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ortserve challenger: cannot read --root-certificates: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not info.HasField("challenger"):
        print(
            f"ortserve challenger: model {args.model!r} has no challenger (serve it with "
            f"--model '{args.model}=URI?challenger=URI&shadow=0.1')",
            file=sys.stderr,
        )
        return 1
    report = report_dict(args.model, info.challenger, info.version)
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0
