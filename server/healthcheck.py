"""Container health probe: `python -m ortserve.server.healthcheck [--target HOST:PORT] [--service NAME]`.

Exits 0 when the gRPC health service reports SERVING, 1 otherwise (the Dockerfile's HEALTHCHECK runs it).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


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
