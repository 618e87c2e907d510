"""p50 latency of one Open Inference Protocol `ModelInfer` next to one ortserve.v1 `Classify`, in the same run.

    python -m benchmarks.v2_latency --target 127.0.0.1:50051 --model sentiment [--calls 300] [--pid SERVER_PID]

Calls alternate between the two protocols on one channel (same texts, one text per call, as tritonclient sends it:
raw BYTES input), so both see the same server state. With --pid, the server's resident memory (VmRSS, VmHWM from
/proc/PID/status) is printed after the calls: the figure the Kubernetes memory request is sized from.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time
from pathlib import Path

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc
from ortserve.v2 import grpc_predict_v2_pb2 as v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

TEXT = "Shares rallied after a strong quarter."


def model_infer_request(model: str, text: str) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    encoded = text.encode()
    request.raw_input_contents.append(struct.pack("<I", len(encoded)) + encoded)
    request.parameters["top_k"].int64_param = 1
    return request


def memory(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return ", ".join(" ".join(line.split()) for line in status if line.startswith(("VmRSS", "VmHWM")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--model", default="sentiment")
    parser.add_argument("--calls", type=int, default=300, help="calls per protocol")
    parser.add_argument("--pid", type=int, help="server process whose memory to report")
    args = parser.parse_args()

    with grpc.insecure_channel(args.target) as channel:
        classify = pb_grpc.InferenceStub(channel).Classify
        infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        classify_request = pb.ClassifyRequest(model=args.model, texts=[TEXT], top_k=1)
        infer_request = model_infer_request(args.model, TEXT)
        for _ in range(20):  # warm-up: connections, first runs
            classify(classify_request, timeout=10)
            infer(infer_request, timeout=10)
        seconds: dict[str, list[float]] = {"Classify": [], "ModelInfer": []}
        for _ in range(args.calls):
            for name, call, request in [("Classify", classify, classify_request), ("ModelInfer", infer, infer_request)]:
                start = time.perf_counter()
                call(request, timeout=10)
                seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{name:<10} p50 {statistics.median(ms):.3f} ms  p90 {ms[int(0.9 * len(ms))]:.3f} ms  ({len(ms)} calls)")
    if args.pid:
        print(f"server memory after the calls: {memory(args.pid)}")


if __name__ == "__main__":
    main()
