"""Container health probe: `python -m ortserve.server.healthcheck [--target HOST:PORT] [--service NAME]`.

Exits 0 when the gRPC health service reports SERVING, 1 otherwise (the Dockerfile's HEALTHCHECK runs it). With TLS on
the server, `--ca-file` (and `--cert-file`/`--key-file` under mutual TLS, `--server-name` when the certificate does
not name 127.0.0.1) make it an exec probe (deploy/kubernetes/components/tls-auth): Kubernetes' gRPC probes speak
plaintext only.
`wait_until_serving` is the same question asked until the answer is yes, for whatever starts a server process
(the demo, tests, benchmarks).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_until_serving(
    target: str,
    process: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
    timeout: float = 60.0,
    poll_s: float = 0.05,
    service: str = "",
) -> float:
    """Ask `target`'s health service until `service` is SERVING; return the seconds waited.

    Raises `RuntimeError` if `process` (the server being waited for) exits first, `TimeoutError` after `timeout`.
    """
    start = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - start < timeout:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server process exited with code {process.returncode} before SERVING")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(poll_s)
    raise TimeoutError(f"{target} did not report SERVING within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default=f"127.0.0.1:{os.environ.get('ORTSERVE_PORT', '50051')}")
    parser.add_argument("--service", default="", help="health service name: '' for the server, or a model name")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--ca-file", help="PEM root certificates of a TLS server; given, the check uses TLS")
    parser.add_argument("--cert-file", help="PEM client certificate for a server that requires one (mutual TLS)")
    parser.add_argument("--key-file", help="PEM private key of --cert-file")
    parser.add_argument("--server-name", help="name to verify the server certificate against instead of the host")
    parser.add_argument(
        "--token-env",
        help="environment variable holding a bearer token: a model's health needs one when the server checks tokens",
    )
    args = parser.parse_args()
    token = os.environ.get(args.token_env, "") if args.token_env else ""
    metadata = [("authorization", f"Bearer {token}")] if token else None
    try:
        with _channel(args) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout, metadata=metadata
            )
    except grpc.RpcError as error:
        print(f"{args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:  # a TLS file that cannot be read
        print(f"{args.target}: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.ca_file:
        return grpc.insecure_channel(args.target)
    cert, key = (Path(path).read_bytes() if path else None for path in (args.cert_file, args.key_file))
    credentials = grpc.ssl_channel_credentials(Path(args.ca_file).read_bytes(), private_key=key, certificate_chain=cert)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, credentials, options=options)


if __name__ == "__main__":
    sys.exit(main())
