"""The server images `make image` built, run for real under runc, the way the Kubernetes Deployment runs them: read-only
root filesystem, the manifest's uid, HOME and /tmp, the cache on a writable mount, host network (`make image-test`).

From outside: health, Classify, V2 ModelInfer; inside: the image's own HEALTHCHECK command (and its cost); SIGTERM
drains with calls in flight; a second start on the same cache mount serves from the verified cache with the registry
gone. Measured and printed (and written to image-work/image-report.json): image size and layers above the base,
build times, start-to-SERVING, the HEALTHCHECK's CPU time and peak memory, the drain.

Skipped unless ORTSERVE_IMAGE_TEST=1 (set by `make image-test`, which builds the images first): the suite (`make test`)
does not build images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixtures.tiny_models import SENTIMENT_LABELS, build_tiny_classifier
from ortserve.client import InferenceClient, InferenceError
from ortserve.export.pipeline import ExportOptions, export_local_model
from ortserve.server.healthcheck import wait_until_serving
from ortserve.v2 import grpc_predict_v2_pb2 as v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from scripts.image.runc_bundle import WORK, ImageConfig, Mount, RuncContainer

from .helpers import free_port
from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("ORTSERVE_IMAGE", "ortserve:0.1.0")
IMAGE_SLIM = os.environ.get("ORTSERVE_IMAGE_SLIM", "ortserve:0.1.0-slim")
BASE = "python:3.11-slim"
WAIT_S = 120  # generous bound for "this happens", never a performance claim
#: Calls in flight when SIGTERM arrives.
IN_FLIGHT = 20
#: Runs of the HEALTHCHECK command whose median cost is reported.
PROBE_RUNS = 5
#: Runs the HEALTHCHECK command as a child and prints the child's CPU seconds and peak RSS (MB) as JSON: the
#: probe's own cost, without this wrapper's.
PROBE_COST = (
    "import json, resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(json.dumps({'code': code, 'cpu_s': usage.ru_utime + usage.ru_stime, 'rss_mb': usage.ru_maxrss / 1024}))"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("ORTSERVE_IMAGE_TEST") != "1", reason="`make image-test` runs the image tests"),
]

REPORT: dict[str, Any] = {}


def deployment() -> tuple[dict[str, Any], dict[str, str]]:
    """The Kubernetes base Deployment's pod spec and its ConfigMap's data: what the container must run with."""
    base = ROOT / "deploy" / "kubernetes" / "base"
    pod = yaml.safe_load((base / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    config = yaml.safe_load((base / "configmap.yaml").read_text())["data"]
    return pod, config


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[dict[str, Any]]:
    yield REPORT
    if REPORT:
        WORK.mkdir(exist_ok=True)
        (WORK / "image-report.json").write_text(json.dumps(REPORT, indent=1) + "\n")
        print("\n--- image report (image-work/image-report.json) ---\n" + json.dumps(REPORT, indent=1))


@pytest.fixture(scope="module")
def images() -> dict[str, ImageConfig]:
    found = {}
    for tag in (IMAGE, IMAGE_SLIM, BASE):
        if subprocess.run(["podman", "image", "exists", tag]).returncode != 0:
            pytest.fail(f"podman has no image {tag}: run `make image` first (`make image-test` does)")
        found[tag] = ImageConfig.inspect(tag)
    return found


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A directory the container's user can traverse (pytest's tmp dirs are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="ortserve-image-test-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(scratch: Path) -> Path:
    """A tiny exported classifier, mounted read-only at /models/sentiment (the Dockerfile's `docker run` example)."""
    hf = build_tiny_classifier(scratch / "hf", "bert", SENTIMENT_LABELS)
    export_local_model(hf, scratch / "models" / "sentiment", ExportOptions(quantize=False))
    for path in [scratch / "models", *(scratch / "models").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return scratch / "models"


def user_writable(path: Path, uid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    return path


def container(config: ImageConfig, port: int, cache: Path, **env: str) -> RuncContainer:
    """The image run as the Deployment runs it: its uid, HOME and mounts, a read-only root; the port is free one."""
    pod, settings = deployment()
    (spec,) = pod["containers"]
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert mounts == {settings["ORTSERVE_CACHE_DIR"], "/tmp"}
    pod_env = {item["name"]: item["value"] for item in spec["env"]}
    return RuncContainer(
        config,
        env={**pod_env, "ORTSERVE_PORT": str(port), "ORTSERVE_DRAIN_PERIOD_S": "1", **env},
        uid=pod["securityContext"]["runAsUser"],
        read_only_root=spec["securityContext"]["readOnlyRootFilesystem"],
        mounts=[Mount(settings["ORTSERVE_CACHE_DIR"], cache), Mount("/tmp")],
    )


def health(target: str, service: str = "") -> str:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def probe_cost(running: RuncContainer) -> dict[str, float]:
    """Median CPU seconds and peak RSS of the image's HEALTHCHECK command, run inside the container."""
    runs = []
    for _ in range(PROBE_RUNS):
        result = running.exec(["python", "-c", PROBE_COST, *running.config.healthcheck])
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout))
    assert {run["code"] for run in runs} == {0}
    return {
        "cpu_s": round(statistics.median(run["cpu_s"] for run in runs), 3),
        "rss_mb": round(statistics.median(run["rss_mb"] for run in runs), 1),
    }


def outcome(client: InferenceClient, text: str) -> str:
    """ "ok", or the status a call ended with."""
    try:
        client.classify("sentiment", [text])
        return "ok"
    except InferenceError as error:
        return error.code.name


def layers_above(image: str, base: str) -> list[dict[str, Any]]:
    history = json.loads(subprocess.run(["podman", "history", "--format", "json", image], capture_output=True,
                                        text=True, check=True).stdout)  # fmt: skip
    base_count = len(json.loads(subprocess.run(["podman", "history", "--format", "json", base], capture_output=True,
                                               text=True, check=True).stdout))  # fmt: skip
    above = history[: len(history) - base_count]
    return [
        {"mb": round(layer["size"] / 1e6, 1), "step": re.sub(r"^/bin/sh -c (#\(nop\) )?", "", layer["CreatedBy"])[:90]}
        for layer in above
        if layer["size"] > 0
    ]


def test_images_match_what_the_deployments_expect(images: dict[str, ImageConfig]) -> None:
    pod, settings = deployment()
    (spec,) = pod["containers"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())["services"]["ortserve"]
    config = images[IMAGE]
    assert spec["image"] == compose["image"] == IMAGE
    assert int(config.user) == pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"]
    assert config.env["ORTSERVE_PORT"] == settings["ORTSERVE_PORT"] == str(spec["ports"][0]["containerPort"])
    assert compose["ports"] == [f"{settings['ORTSERVE_PORT']}:{config.env['ORTSERVE_PORT']}"]
    assert config.env["ORTSERVE_CACHE_DIR"] == settings["ORTSERVE_CACHE_DIR"]
    assert compose["volumes"] == [f"model-cache:{config.env['ORTSERVE_CACHE_DIR']}"]
    assert config.healthcheck == ["python", "-m", "ortserve.server.healthcheck"]
    assert compose["healthcheck"]["test"] == ["CMD", *config.healthcheck]
    # A volume mounted at the cache path starts out with the image's ownership of it (compose): the user's.
    for tag in (IMAGE, IMAGE_SLIM):
        rootfs_cache = RuncContainer(images[tag]).spec()["root"]["path"] + config.env["ORTSERVE_CACHE_DIR"]
        assert os.stat(rootfs_cache).st_uid == int(images[tag].user)
    REPORT["images"] = {
        tag: {
            "size_mb": round(images[tag].size / 1e6, 1),
            "above_base_mb": round((images[tag].size - images[BASE].size) / 1e6, 1),
            "layers_above_base": layers_above(tag, BASE),
        }
        for tag in (IMAGE, IMAGE_SLIM)
    }
    REPORT["base"] = {"tag": BASE, "size_mb": round(images[BASE].size / 1e6, 1)}
    times = WORK / "build-times.json"
    if times.exists():
        REPORT["build_times_s"] = json.loads(times.read_text())


def test_server_image_serves_probes_itself_and_drains(
    images: dict[str, ImageConfig], scratch: Path, model_dir: Path
) -> None:
    """The [server] image: a registry model over HTTP (a real mlflow server on loopback), health, Classify, V2, the
    HEALTHCHECK inside, SIGTERM with calls in flight; then a second start, registry gone, from the cache mount."""
    registry = MlflowServer(scratch / "mlflow").start()
    cache = user_writable(scratch / "cache", int(images[IMAGE].user))
    port = free_port()
    target = f"127.0.0.1:{port}"
    try:
        version = register_artifact(registry.tracking_uri, "sentiment-onnx", model_dir / "sentiment", "production")
        running = container(
            images[IMAGE],
            port,
            cache,
            ORTSERVE_MODELS="sentiment=models:/sentiment-onnx@production",
            MLFLOW_TRACKING_URI=registry.tracking_uri,
            # A long batch delay keeps the calls below in flight (queued) across SIGTERM.
            ORTSERVE_MAX_BATCH_DELAY_MS="3000",
            ORTSERVE_MAX_BATCH_SIZE="128",
            ORTSERVE_GRACE_PERIOD_S="20",
        )
        started = time.monotonic()
        running.start()
        try:
            wait_until_serving(target, running.process, timeout=WAIT_S)
            REPORT["start_to_serving_s"] = {"registry model, cold cache": round(time.monotonic() - started, 2)}
            assert health(target) == health(target, "sentiment") == "SERVING"
            with InferenceClient(target, timeout=WAIT_S) as client:
                (answer,) = client.classify("sentiment", ["Shares rallied after a strong quarter."])
            assert answer.model_version == version
            assert {score.label for score in answer.labels} == set(SENTIMENT_LABELS)
            with grpc.insecure_channel(target) as channel:
                request = v2.ModelInferRequest(model_name="sentiment")
                request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"fine")
                response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=WAIT_S)
            assert response.model_version == version and response.outputs
            check = running.exec(running.config.healthcheck)
            assert check.returncode == 0, check.stdout + check.stderr
            assert check.stdout.strip() == f"127.0.0.1:{port} (server): SERVING"
            assert running.exec(["python", "-m", "ortserve.server.healthcheck", "--service", "nope"]).returncode == 1
            REPORT["healthcheck"] = {IMAGE: probe_cost(running)}
            state = json.loads(subprocess.run(["runc", "state", running.name], capture_output=True, text=True).stdout)
            status = Path(f"/proc/{state['pid']}/status").read_text()
            assert re.search(r"^Uid:\s+10001\s", status, re.M), status
            assert running.exec(["touch", "/opt/ortserve/written"]).returncode != 0  # the root is read-only
            assert running.exec(["touch", "/tmp/written"]).returncode == 0

            with ThreadPoolExecutor(IN_FLIGHT) as pool, InferenceClient(target, timeout=WAIT_S, retry=None) as client:
                calls = [pool.submit(outcome, client, f"call number {i} in flight") for i in range(IN_FLIGHT)]
                time.sleep(0.5)  # let the calls reach the server (setup only; nothing below asserts a duration)
                signalled = time.monotonic()
                running.kill(signal.SIGTERM)
                exit_code, output = running.wait(WAIT_S)
                exited_after = time.monotonic() - signalled
                outcomes = [call.result(WAIT_S) for call in calls]
        finally:
            running.remove()
        assert exit_code == 0, output
        assert outcomes == ["ok"] * IN_FLIGHT  # every call accepted before SIGTERM was answered
        assert "stopped" in output and "downloading version" in output
        REPORT["drain"] = {"calls_in_flight": IN_FLIGHT, "answered": outcomes.count("ok"), "exit_code": exit_code,
                           "exit_s_after_sigterm": round(exited_after, 2), "drain_s": 1, "grace_s": 20}  # fmt: skip
    finally:
        registry.stop()

    # The registry is gone: the second start serves the version it resolved last, from the cache it verifies.
    second = container(images[IMAGE], port, cache, ORTSERVE_MODELS="sentiment=models:/sentiment-onnx@production",
                       MLFLOW_TRACKING_URI=registry.tracking_uri)  # fmt: skip
    started = time.monotonic()
    second.start()
    try:
        wait_until_serving(target, second.process, timeout=WAIT_S)
        REPORT["start_to_serving_s"]["registry model, from the cache, registry down"] = round(
            time.monotonic() - started, 2
        )
        with InferenceClient(target, timeout=WAIT_S) as client:
            assert client.classify("sentiment", ["again"])[0].model_version == version
        second.kill(signal.SIGTERM)
        exit_code, output = second.wait(WAIT_S)
    finally:
        second.remove()
    assert exit_code == 0, output
    assert "downloading version" not in output


def test_slim_image_serves_a_mounted_model(images: dict[str, ImageConfig], scratch: Path, model_dir: Path) -> None:
    """The server-slim image (no MLflow client) serves a mounted artifact directory, and its probe is as cheap."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    running = container(
        images[IMAGE_SLIM],
        port,
        user_writable(scratch / "cache-slim", int(images[IMAGE_SLIM].user)),
        ORTSERVE_MODELS="sentiment=/models/sentiment",
    )
    running.mounts = [*running.mounts, Mount("/models", model_dir, read_only=True)]
    started = time.monotonic()
    running.start()
    try:
        wait_until_serving(target, running.process, timeout=WAIT_S)
        REPORT.setdefault("start_to_serving_s", {})["slim, mounted model"] = round(time.monotonic() - started, 2)
        with InferenceClient(target, timeout=WAIT_S) as client:
            assert client.classify("sentiment", ["a mounted model"])[0].labels
        assert running.exec(["python", "-c", "import mlflow"]).returncode != 0  # the slim image has no MLflow
        REPORT.setdefault("healthcheck", {})[IMAGE_SLIM] = probe_cost(running)
        running.kill(signal.SIGTERM)
        exit_code, output = running.wait(WAIT_S)
    finally:
        running.remove()
    assert exit_code == 0, output
