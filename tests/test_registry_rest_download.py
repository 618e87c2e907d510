"""Downloads over MLflow's REST artifact routes equal the MLflow client's (issue 26): the same files, marker and
digests, and the same errors, against real `mlflow server`s on 127.0.0.1 — with proxied artifacts (`--serve-artifacts`,
the default), without (`--no-serve-artifacts`: the run-relative and logged-model routes), and behind `--app-name
basic-auth` (401, 403, credentials kept out of every message). The MLflow client's side is the server's own child
(`RegistryWorker.download`); the REST side is what the server runs in-process (`fetch_version_over_rest`)."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ortserve.contract.cache import COMPLETE_MARKER
from ortserve.contract.errors import ContractError
from ortserve.server.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE
from ortserve.server.sources.registry_rest import RestRegistryClient
from ortserve.server.sources.registry_rest_artifacts import (
    LoggedModelRoutes,
    ProxyRoutes,
    RunRoutes,
    artifact_routes,
    fetch_version_over_rest,
)
from ortserve.server.sources.registry_worker import RegistryWorker

from .helpers import free_port
from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact, register_run_artifacts

ADMIN, ADMIN_PASSWORD = "admin", "adm1n-Passw0rd-for-tests"
OUTSIDER, OUTSIDER_PASSWORD = "outsider", "0utsider-Passw0rd-for-tests"


def both_ways(tracking_uri: str, name: str, version: str, root: Path) -> dict[str, object]:
    """Download `name`/`version` with the MLflow client (a child) and over REST; each side's entry or error."""
    outcomes: dict[str, object] = {}
    for side in ("mlflow", "rest"):
        destination = root / side / name / version
        try:
            if side == "mlflow":
                RegistryWorker(tracking_uri).download(name, version, destination)
            else:
                fetch_version_over_rest(RestRegistryClient(tracking_uri), name, version, destination)
            outcomes[side] = entry(destination)
        except ContractError as exc:
            outcomes[side] = (type(exc).__name__, str(exc))
            assert not destination.exists()
            left = destination.parent.iterdir() if destination.parent.exists() else iter(())
            assert not [p.name for p in left if p.name.startswith(".")]  # no scratch directory left behind
    return outcomes


def entry(directory: Path) -> dict[str, object]:
    """A cache entry as comparable data: every file's bytes digest, and its marker."""
    import hashlib

    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}
    return {"files": files, "marker": json.loads((directory / COMPLETE_MARKER).read_text())}


def assert_equal_entries(outcomes: dict[str, object], artifact: Path) -> None:
    assert outcomes["rest"] == outcomes["mlflow"]
    rest = outcomes["rest"]
    assert isinstance(rest, dict), rest
    assert sorted(rest["files"]) == [COMPLETE_MARKER, MODEL_FILE, MANIFEST_FILE, TOKENIZER_FILE]
    assert rest["marker"]["files"][MODEL_FILE]["size"] == (artifact / MODEL_FILE).stat().st_size


def corrupt_in_store(store: Path, tracking_uri: str, name: str, version: str) -> None:
    """Change 64 bytes in the middle of the stored model.onnx of `name`/`version` (same size): what a broken upload
    or a bad disk leaves. `store` is where the server keeps `mlflow-artifacts:` paths."""
    from urllib.parse import urlsplit

    location = urlsplit(RestRegistryClient(tracking_uri).get_model_version_download_uri(name, version))
    stored = store / location.path.lstrip("/") if location.scheme == "mlflow-artifacts" else Path(location.path)
    path = stored / MODEL_FILE
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes((b + 1) % 256 for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def no_proxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server --no-serve-artifacts`: versions are local paths that only the server's routes serve over HTTP."""
    root = tmp_path_factory.mktemp("mlflow-no-proxy")
    server = MlflowServer(root, args=["--no-serve-artifacts", "--default-artifact-root", str(root / "store")]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server --app-name basic-auth` (proxied artifacts) with an admin and a user who may read nothing."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = {ADMIN}\nadmin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = MlflowServer(
        root,
        args=["--artifacts-destination", str(root / "artifacts"), "--app-name", "basic-auth"],
        env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex},
    ).start()
    admin = "Basic " + base64.standard_b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
    body = json.dumps({"username": OUTSIDER, "password": OUTSIDER_PASSWORD}).encode()
    request = urllib.request.Request(
        f"{server.tracking_uri}/api/2.0/mlflow/users/create",
        data=body,
        headers={"Authorization": admin, "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).close()
    yield server
    server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_proxied_artifacts_download_as_with_the_mlflow_client(
    mlflow_server: MlflowServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    registry = mlflow_server.tracking_uri
    name = unique("rest-proxy")
    logged = register_artifact(registry, name, artifacts["bert"])  # an MLflow 3 logged model
    from_run = register_run_artifacts(registry, name, artifacts["bert"])  # a run's artifacts
    client = RestRegistryClient(registry)
    assert isinstance(artifact_routes(client, name, logged), ProxyRoutes)
    assert isinstance(artifact_routes(client, name, from_run), ProxyRoutes)
    for version in (logged, from_run):
        assert_equal_entries(both_ways(registry, name, version, tmp_path), artifacts["bert"])

    missing = both_ways(registry, name, "99", tmp_path)
    assert (
        missing["rest"]
        == missing["mlflow"]
        == ("RegistryNotFoundError", f"models:/{name}/99: not found in the registry")
    )

    corrupt_in_store(
        mlflow_server.root / "artifacts", registry, name, logged
    )  # what a broken upload or a bad disk leaves
    corrupted = both_ways(registry, name, logged, tmp_path / "corrupt")
    assert corrupted["rest"] == corrupted["mlflow"]
    kind, message = corrupted["rest"]  # type: ignore[misc]
    assert kind == "IntegrityError" and "model.onnx" in message and "does not match" in message


def test_artifacts_the_server_reads_itself_download_as_with_the_mlflow_client(
    no_proxy_server: MlflowServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    registry = no_proxy_server.tracking_uri
    name = unique("rest-local")
    logged = register_artifact(registry, name, artifacts["distilbert"])
    from_run = register_run_artifacts(registry, name, artifacts["distilbert"])
    client = RestRegistryClient(registry)
    assert isinstance(artifact_routes(client, name, logged), LoggedModelRoutes)
    assert isinstance(artifact_routes(client, name, from_run), RunRoutes)
    for version in (logged, from_run):
        assert_equal_entries(both_ways(registry, name, version, tmp_path), artifacts["distilbert"])

    corrupt_in_store(no_proxy_server.root / "store", registry, name, from_run)
    corrupted = both_ways(registry, name, from_run, tmp_path / "corrupt")
    assert corrupted["rest"] == corrupted["mlflow"] and corrupted["rest"][0] == "IntegrityError"  # type: ignore[index]


def test_basic_auth_and_its_refusals_as_with_the_mlflow_client(
    auth_server: MlflowServer, artifacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    registry = auth_server.tracking_uri
    name = unique("rest-auth")
    version = register_artifact(registry, name, artifacts["roberta"])
    assert_equal_entries(both_ways(registry, name, version, tmp_path / "admin"), artifacts["roberta"])

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wr0ng-s3cret")
    refused = both_ways(registry, name, version, tmp_path / "wrong")
    assert (
        refused["rest"]
        == refused["mlflow"]
        == ("RegistryError", f"models:/{name}/{version}: registry error UNAUTHENTICATED")
    )

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", OUTSIDER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", OUTSIDER_PASSWORD)
    forbidden = both_ways(registry, name, version, tmp_path / "outsider")
    assert forbidden["rest"] == forbidden["mlflow"]
    assert forbidden["rest"] == ("RegistryError", f"models:/{name}/{version}: registry error PERMISSION_DENIED")

    # Credentials in the URI, the wrong ones: neither the message nor the detail for the log holds them.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with_userinfo = registry.replace("http://", f"http://{ADMIN}:wr0ng-s3cret@")
    with pytest.raises(ContractError) as caught:
        fetch_version_over_rest(RestRegistryClient(with_userinfo), name, version, tmp_path / "uri" / name / version)
    assert "wr0ng-s3cret" not in f"{caught.value} {caught.value.detail}"
    assert str(caught.value) == f"models:/{name}/{version}: registry error UNAUTHENTICATED"


def test_a_registry_that_is_down_fails_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}"
    outcomes = both_ways(down, "m", "1", tmp_path)
    assert outcomes["rest"] == outcomes["mlflow"] == ("RegistryUnavailableError", "models:/m/1: registry unreachable")


def test_files_the_server_does_not_serve_are_left_to_the_mlflow_client(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    import mlflow

    from ortserve.server.sources.registry_rest_artifacts import RestArtifactsUnsupported

    registry = mlflow_server.tracking_uri
    name = unique("rest-s3")
    client = mlflow.MlflowClient(registry)
    client.create_registered_model(name)
    version = str(client.create_model_version(name, "s3://some-bucket/models/onnx-model").version)  # never fetched
    with pytest.raises(RestArtifactsUnsupported):
        artifact_routes(RestRegistryClient(registry), name, version)
    destination = tmp_path / name / version
    with pytest.raises(RestArtifactsUnsupported):  # the caller (RegistrySource) hands it to the worker's child
        fetch_version_over_rest(RestRegistryClient(registry), name, version, destination)
    assert not destination.exists() and list(destination.parent.iterdir()) == []
