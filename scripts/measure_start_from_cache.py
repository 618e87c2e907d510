"""Time from process start to SERVING with a verified cache, for the demo's models (issue 9's figure).

Seeds a SQLite registry with the demo's two models, exports them (int8 where the gate allows) and registers them
back, fills a cache by serving once, then starts `ortserve serve` ROUNDS times on that cache and reports, per
round, the seconds from `Popen` to health SERVING (every cached file's sha256 is checked before it is loaded).

    .venv/bin/python scripts/measure_start_from_cache.py [--rounds 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `fixtures` is not installed: import it from this checkout

from scripts.demo import MODELS, serve_command  # noqa: E402  (the demo's models, served the demo's way)


def serve_until_serving(tracking_uri: str, cache: Path, port: int) -> float:
    from ortserve.server.healthcheck import wait_until_serving

    command = serve_command(port, cache, "--tracking-uri", tracking_uri, "--poll-interval", "0")
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(f"127.0.0.1:{port}", process, timeout=120, poll_s=0.01)
        return time.monotonic() - start
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from fixtures.registry_seed import seed_registry
    from ortserve.export import export_model
    from ortserve.server.healthcheck import wait_until_serving  # noqa: F401  (import cost outside the timing)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ortserve-start-"))
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    if not (work / "mlflow.db").exists():
        seed_registry(tracking_uri)
        for registered in MODELS.values():
            export_model(f"models:/{registered}@production", alias="production", tracking_uri=tracking_uri)
    cache = work / "cache"
    first = serve_until_serving(tracking_uri, cache, 50131)
    print(f"first start (downloads into an empty cache): {first:.2f}s")
    sizes = {p.relative_to(cache): p.stat().st_size for p in cache.rglob("model.onnx")}
    print("cached model.onnx sizes:", {str(k): v for k, v in sizes.items()})
    rounds = [serve_until_serving(tracking_uri, cache, 50131) for _ in range(args.rounds)]
    print("start to SERVING from a verified cache, seconds:", " ".join(f"{r:.2f}" for r in rounds))
    print(f"median {statistics.median(rounds):.2f}s, max {max(rounds):.2f}s over {len(rounds)} rounds")


if __name__ == "__main__":
    main()
