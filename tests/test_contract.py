"""The neutral contract package (`ortserve.contract`): manifest, digests and marker, URI resolution against a real
`mlflow server`, MLflow error mapping, client settings and credential redaction."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from ortserve.contract.artifact import MANIFEST_FILE, ArtifactManifest, file_digests, verify_recorded_digests
from ortserve.contract.cache import verify_marker, write_marker
from ortserve.contract.errors import (
    ArtifactInvalidError,
    IntegrityError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
)
from ortserve.contract.redact import RedactingFilter, redact_text, redact_uri
from ortserve.contract.registry import VersionNotFoundError, mlflow_error, resolve_version
from ortserve.contract.settings import SERVER_HTTP, configure_mlflow_client
from ortserve.contract.uri import RegistryUri

from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact

MINIMAL = {"labels": ["a", "b"], "problem_type": "single_label_classification", "max_length": 16}


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://alice:s3cr3tPW@host:5000/api", "http://***@host:5000/api"),
        ("https://token@mlflow.example/", "https://***@mlflow.example/"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("s3://bucket/key?X-Amz-Signature=abc&x=1", "s3://bucket/key?X-Amz-Signature=***&x=1"),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_redact_text_and_log_filter() -> None:
    text = "API request to http://alice:s3cr3tPW@127.0.0.1:5000/api/2.0/x failed with exception refused"
    assert redact_text(text) == "API request to http://***@127.0.0.1:5000/api/2.0/x failed with exception refused"
    record = logging.LogRecord("mlflow", logging.WARNING, __file__, 1, "retrying %s", (text,), None)
    assert RedactingFilter().filter(record) and "s3cr3tPW" not in record.getMessage()


def test_manifest_is_validated_once_with_optional_input_names(tmp_path: Path) -> None:
    manifest = ArtifactManifest.from_dict(MINIMAL)
    assert manifest.input_names == [] and not manifest.multi_label and manifest.digests == {}
    manifest.write(tmp_path)
    assert ArtifactManifest.read(tmp_path) == manifest
    for bad, expected in [
        ({**MINIMAL, "format": 99}, "format: format 99 is newer than this ortserve reads"),
        ({**MINIMAL, "labels": []}, "labels:"),
        ({**MINIMAL, "problem_type": "regression"}, "problem_type:"),
        ({**MINIMAL, "max_length": 1}, "max_length:"),
    ]:
        with pytest.raises(ArtifactInvalidError, match=expected):
            ArtifactManifest.from_dict(bad)
    with pytest.raises(ArtifactInvalidError) as missing:
        ArtifactManifest.read(tmp_path / "nowhere")
    assert str(tmp_path) not in str(missing.value) and str(tmp_path) in missing.value.detail


def test_marker_and_recorded_digests_prove_the_bytes(artifacts: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(artifacts["bert"], tmp_path / "entry"))
    manifest = ArtifactManifest.read(copy)
    assert set(manifest.digests) == {"model.onnx", "tokenizer.json"}  # export records them
    assert manifest.digests == file_digests(copy)
    write_marker(copy)
    assert set(verify_marker(copy)) == {"model.onnx", "tokenizer.json", MANIFEST_FILE}
    tokenizer = copy / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"', "'", 1))  # same size, other bytes
    with pytest.raises(IntegrityError, match="cached tokenizer.json does not match"):
        verify_marker(copy)
    with pytest.raises(IntegrityError, match="tokenizer.json does not match the digest recorded at export"):
        verify_recorded_digests(copy, manifest)
    (copy / ".complete").write_text(json.dumps({"model.onnx": 1}))  # the size-only marker of earlier releases
    with pytest.raises(ArtifactInvalidError, match="no verifiable marker"):
        verify_marker(copy)


def test_mlflow_errors_map_to_contract_errors_without_credentials() -> None:
    secret_url = "http://alice:s3cr3tPW@127.0.0.1:1/api/2.0/mlflow/registered-models/alias"
    down = mlflow_error("models:/m@prod", requests.ConnectionError(f"API request to {secret_url} failed"))
    assert isinstance(down, RegistryUnavailableError) and str(down) == "models:/m@prod: registry unreachable"
    assert "s3cr3tPW" not in down.detail and "***@127.0.0.1" in down.detail
    gone = MlflowException("no such model", error_code=databricks_pb2.RESOURCE_DOES_NOT_EXIST)
    missing = mlflow_error("models:/m@prod", gone)
    assert isinstance(missing, RegistryNotFoundError)
    busy = mlflow_error("models:/m@prod", MlflowException("later", error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE))
    assert isinstance(busy, RegistryUnavailableError)
    denied = mlflow_error("models:/m@prod", MlflowException("no", error_code=databricks_pb2.PERMISSION_DENIED))
    assert type(denied) is RegistryError and "PERMISSION_DENIED" in str(denied)


def test_client_settings_leave_explicit_ones_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    configure_mlflow_client(SERVER_HTTP, timeout_s=2.4)
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"


def test_one_resolution_for_alias_version_stage_and_latest(
    mlflow_server: MlflowServer, artifacts: dict[str, Path]
) -> None:
    from mlflow import MlflowClient

    name = f"resolve-{uuid.uuid4().hex[:8]}"
    register_artifact(mlflow_server.tracking_uri, name, artifacts["bert"], alias="production")
    register_artifact(mlflow_server.tracking_uri, name, artifacts["bert"])
    client = MlflowClient(mlflow_server.tracking_uri)
    client.transition_model_version_stage(name, "1", "Staging")

    def resolved(uri: str) -> str:
        return str(resolve_version(client, RegistryUri.parse(uri)).version)

    assert [resolved(f"models:/{name}{ref}") for ref in ("@production", "/2", "/staging", "/latest")] == [
        "1",
        "2",
        "1",
        "2",
    ]
    for ref, missing, reason in [
        ("@nope", "alias", "has no alias 'nope' (aliases: production)"),
        ("/7", "version", "has no version 7 (versions: 1, 2)"),
        ("/Archived", "stage", "has no version in stage 'Archived'"),
    ]:
        with pytest.raises(VersionNotFoundError) as caught:
            resolved(f"models:/{name}{ref}")
        assert caught.value.missing == missing and reason in str(caught.value)
    with pytest.raises(VersionNotFoundError, match="not found in the registry: no registered model"):
        resolved(f"models:/{name}-absent@production")
