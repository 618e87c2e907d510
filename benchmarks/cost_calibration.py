"""How well a fresh server's cost model estimates a run, per width, and what its warm-up adds to start-up (issue 27).

For each artifact (`--model NAME=DIR`, several allowed), one `ortserve serve` is started with metrics on; the seconds
from `Popen` to health SERVING are measured, and the warm-up's calibration time is read from the server's log (the
line "cost model calibrated ... in N ms", absent from servers older than issue 27). Then, for each width (8, 64, 256,
512 tokens, capped at the model's max length), `--calls` Classify calls of one text of that width are sent one after
the other (the widths take turns), and after each the server's `ortserve_run_estimate_ratio` histogram is read: the
change of its sum is that run's estimated/measured ratio. The first ratio at a width is a fresh server's (the warm-up's
estimate alone); the median is over all calls (the estimate then also learns from the runs).

    .venv/bin/python -m benchmarks.cost_calibration --model topic=DIR [--model ...] [--calls 8] [--rounds 3]
        [--baseline-ref main] [--out FILE]

With `--baseline-ref`, each round also starts a server of each model from a `git archive` of that ref (before this
tree's, on the same venv), so before and after are measured side by side under the same load.

Writes JSON (default benchmarks/work/results/cost_calibration.json) and prints one line per model and width.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .hostile_load import baseline_tree, python_path_first
from .load import LOOPBACK
from .paths import RESULTS, WORK
from .processes import free_port, ortserve_process

WIDTHS = (8, 64, 256, 512)
CALIBRATED = re.compile(r"cost model calibrated from (\d+) warm-up runs in (\d+) ms")


#: Seconds to wait before reading the metrics page again: the server renders it at most once a second.
FRESH_PAGE_S = 1.05


def text_of(tokens: int) -> str:
    """One text of `tokens` tokens for a BERT WordPiece vocabulary ([CLS] and [SEP] included), whose length-based
    estimate is `tokens - 1`, in the same width band."""
    return " ".join(["the"] * max(1, tokens - 2))


def _ratio_sums(metrics_port: int, model: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the estimate-ratio histogram per width band."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, tuple[float, float]] = {}
    for width, value in re.findall(rf'ortserve_run_estimate_ratio_sum\{{model="{model}",width="(\d+)"\}} (\S+)', text):
        found[width] = (float(value), found.get(width, (0.0, 0.0))[1])
    pattern = rf'ortserve_run_estimate_ratio_count\{{model="{model}",width="(\d+)"\}} (\S+)'
    for width, value in re.findall(pattern, text):
        found[width] = (found.get(width, (0.0, 0.0))[0], float(value))
    return found


def measure_model(name: str, artifact: Path, calls: int, log_file: Path) -> dict[str, Any]:
    """Start-up and per-width estimate ratios of one fresh server of `artifact`."""
    max_length = int(json.loads((artifact / "ortserve.json").read_text())["max_length"])
    metrics_port = free_port()
    args = ["--log-level", "INFO", "--metrics-port", str(metrics_port), "--poll-interval", "0"]
    log_start = log_file.stat().st_size if log_file.exists() else 0
    with ortserve_process({name: artifact}, log_file, args) as server:
        logged = CALIBRATED.findall(log_file.read_bytes()[log_start:].decode(errors="replace"))
        result: dict[str, Any] = {
            "model": name,
            "max_length": max_length,
            "start_to_serving_s": round(server.start_to_serving_s, 3),
            "calibration_runs": int(logged[-1][0]) if logged else None,
            "calibration_ms": int(logged[-1][1]) if logged else None,
            "widths": {},
        }
        widths = sorted({min(w, max_length) for w in WIDTHS})
        ratios: dict[int, list[float]] = {width: [] for width in widths}
        seconds: dict[int, list[float]] = {width: [] for width in widths}
        with grpc.insecure_channel(f"{LOOPBACK}:{server.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            before = _ratio_sums(metrics_port, name)
            for _ in range(calls):  # the widths take turns, so that other work on the machine weighs on each alike
                for width in widths:
                    start = time.perf_counter()
                    stub.Classify(pb.ClassifyRequest(model=name, texts=[text_of(width)]), timeout=60)
                    seconds[width].append(time.perf_counter() - start)
                    time.sleep(FRESH_PAGE_S)
                    after = _ratio_sums(metrics_port, name)
                    changed = [k for k in after if after[k][1] > before.get(k, (0.0, 0.0))[1]]
                    if len(changed) == 1:
                        ratios[width].append(after[changed[0]][0] - before.get(changed[0], (0.0, 0.0))[0])
                    before = after
        for width in widths:
            result["widths"][str(width)] = {
                "first_ratio": round(ratios[width][0], 3) if ratios[width] else None,
                "median_ratio": round(statistics.median(ratios[width]), 3) if ratios[width] else None,
                "ratios": [round(r, 3) for r in ratios[width]],
                "median_call_ms": round(1000 * statistics.median(seconds[width]), 2),
            }
    return result


def test_model(work: Path) -> Path:
    """The model of tests/test_cost_calibration.py (BERT, 4 layers, 256 wide, 512 positions, random weights), exported
    fp32 under `work` (built once)."""
    artifact = work / "artifacts" / "wide-4x256"
    if not (artifact / "ortserve.json").is_file():
        from fixtures.tiny_models import TOPIC_LABELS, build_tiny_classifier
        from ortserve.export import ExportOptions, export_local_model

        source = build_tiny_classifier(
            work / "hf" / "wide-4x256",
            "bert",
            TOPIC_LABELS,
            hidden_size=256,
            layers=4,
            max_position_embeddings=512,
            seed=3,
        )
        export_local_model(source, artifact, ExportOptions(quantize=False))
    return artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", action="append", default=[], help="NAME=DIR of an exported artifact (default: the tests' model)"
    )
    parser.add_argument("--calls", type=int, default=8, help="calls of one text per width")
    parser.add_argument("--rounds", type=int, default=1, help="fresh servers per model")
    parser.add_argument("--baseline-ref", help="also measure servers of this git ref, alternating (e.g. main)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/work/results/cost_calibration.json"))
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    if not args.model:
        args.model = [f"wide={test_model(WORK)}"]
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.baseline_ref:
        trees.insert(0, (args.baseline_ref, baseline_tree(args.baseline_ref, WORK)))
    for _ in range(args.rounds):
        for (tree, pythonpath), spec in [(tree, spec) for tree in trees for spec in args.model]:
            name, _, directory = spec.partition("=")
            load = _load_average()
            with python_path_first(pythonpath):
                model = measure_model(name, Path(directory), args.calls, WORK / "cost_calibration.log")
            results.append({"tree": tree, "load": load, **model})
            print(
                f"{name} ({tree}, load {load}): start-to-SERVING {model['start_to_serving_s']:.2f} s, "
                f"calibration {model['calibration_ms']} ms ({model['calibration_runs']} runs)"
            )
            for width, figures in model["widths"].items():
                print(
                    f"  width {width:>3}: first {figures['first_ratio']}, median {figures['median_ratio']}, "
                    f"call {figures['median_call_ms']} ms; {figures['ratios']}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"uptime_load": _load_average(), "models": results}, indent=2))


def _load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


if __name__ == "__main__":
    main()
