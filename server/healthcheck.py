"""Container health probe: `python -m ortserve.server.healthcheck [--target HOST:PORT] [--service NAME]`.

Exits 0 when the gRPC health service reports SERVING, 1 otherwise (the Dockerfile's HEALTHCHECK runs it).
`wait_until_serving` is the same question asked until the answer is yes, for whatever starts a server process
(the demo, tests, benchmarks).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

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
    args = parser.parse_args()
    try:
        with grpc.insecure_channel(args.target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"{args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
