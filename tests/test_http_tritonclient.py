"""The real Triton HTTP client (`tritonclient[http]`, in its own venv like the gRPC one) against the HTTP port:
health, metadata, inference with binary tensors (its default) and with JSON tensors, and errors, each answer equal to
what Classify gives over gRPC."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

ROOT = Path(__file__).resolve().parent.parent
TRITON_PYTHON = ROOT / ".venv-tritonclient" / "bin" / "python"


def has_http_client() -> bool:
    if not TRITON_PYTHON.exists():
        return False
    probe = subprocess.run([str(TRITON_PYTHON), "-c", "import tritonclient.http"], capture_output=True, timeout=60)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not has_http_client(), reason="`make tritonclient-venv` installs tritonclient[http]")

TEXTS = ["Shares rallied after a strong quarter.", "Rain cancelled the match", "é ünïcode ✓"]

CALLS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    target, model, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = httpclient.InferenceServerClient(url=target)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_ready": client.is_model_ready("nope"),
        "server_metadata": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
    }

    def infer(binary, top_k=None):
        text = httpclient.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary)
                   for name in ("probabilities", "labels", "top_labels", "top_scores")]
        result = client.infer(model, [text], outputs=outputs, request_id="r1",
                              parameters=None if top_k is None else {"top_k": top_k})
        response = result.get_response()
        answer = {"model_name": response["model_name"], "model_version": response["model_version"],
                  "id": response.get("id")}
        for name in ("probabilities", "labels", "top_labels", "top_scores"):
            array = result.as_numpy(name)
            answer[name] = {"shape": list(array.shape),
                            "values": [v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else float(v)
                                       for v in array.ravel()]}
        return answer

    report["binary"] = infer(True, top_k=2)
    report["json"] = infer(False)

    def error(call):
        try:
            call()
        except InferenceServerException as exc:
            return [exc.status(), exc.message()]
        return None

    def bad_input(datatype, shape, data):
        tensor = httpclient.InferInput("text", shape, datatype)
        tensor.set_data_from_numpy(data)
        return lambda: client.infer(model, [tensor])

    report["errors"] = {
        "unknown_model": error(lambda: client.infer("nope", [httpclient.InferInput("text", [1], "BYTES")
                                                             .set_data_from_numpy(np.array([b"x"], dtype=object))])),
        "wrong_datatype": error(bad_input("FP32", [2], np.array([1.0, 2.0], dtype=np.float32))),
        "wrong_shape": error(bad_input("BYTES", [2, 2], np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object))),
    }
    client.close()
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def http_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"bert={artifacts['bert']}"], http_port=0) as server:
        yield server


@pytest.fixture(scope="module")
def report(http_server: RunningServer) -> dict:  # type: ignore[type-arg]
    assert http_server.server is not None
    target = f"127.0.0.1:{http_server.server.http_port}"
    run = subprocess.run(
        [str(TRITON_PYTHON), "-c", CALLS, target, "bert", json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def classify(http_server: RunningServer) -> tuple[pb.ClassifyResponse, pb.ModelInfo]:
    with grpc.insecure_channel(http_server.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        return (
            stub.Classify(pb.ClassifyRequest(model="bert", texts=TEXTS), timeout=30),
            stub.GetModel(pb.GetModelRequest(name="bert"), timeout=10),
        )


def test_health_and_metadata(report: dict, classify: tuple[pb.ClassifyResponse, pb.ModelInfo]) -> None:  # type: ignore[type-arg]
    _, info = classify
    assert (report["live"], report["ready"], report["model_ready"], report["unknown_ready"]) == (
        True,
        True,
        True,
        False,
    )
    assert report["server_metadata"]["name"] == "ortserve"
    assert report["metadata"]["name"] == "bert" and report["metadata"]["versions"] == [info.version]
    assert report["metadata"]["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("form", ["binary", "json"])
def test_infer_equals_classify(report: dict, classify: tuple[pb.ClassifyResponse, pb.ModelInfo], form: str) -> None:  # type: ignore[type-arg]
    reference, info = classify
    answer = report[form]
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("bert", reference.model_version, "r1")
    labels = list(info.labels)
    assert answer["labels"]["values"] == labels
    expected = [[{s.label: s.score for s in r.labels}[label] for label in labels] for r in reference.results]
    np.testing.assert_allclose(np.reshape(answer["probabilities"]["values"], (len(TEXTS), -1)), expected, atol=1e-6)
    k = 2 if form == "binary" else len(labels)
    assert answer["top_labels"]["shape"] == [len(TEXTS), k]
    assert answer["top_labels"]["values"] == [s.label for r in reference.results for s in r.labels[:k]]


def test_errors_have_the_statuses_of_the_table(report: dict) -> None:  # type: ignore[type-arg]
    errors = report["errors"]
    assert errors["unknown_model"][0] == "404" and "nope" in errors["unknown_model"][1]  # tritonclient: a string
    for case in ["wrong_datatype", "wrong_shape"]:  # an empty text is answered per text (its `errors` entry)
        assert errors[case] is not None and errors[case][0] == "400", (case, errors[case])
    assert "send BYTES" in errors["wrong_datatype"][1]


#: Runs in the tritonclient venv: Triton's REST extensions (repository index, statistics, model config) after exactly
#: two inference calls of 3 and 1 texts.
EXTENSIONS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    target, model = sys.argv[1], sys.argv[2]
    client = httpclient.InferenceServerClient(url=target)
    for texts in ([b"markets rallied", b"rain again", b"a vote"], [b"one more"]):
        text = httpclient.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array(texts, dtype=object))
        client.infer(model, [text])
    version = client.get_model_metadata(model)["versions"][0]
    report = {
        "server_metadata": client.get_server_metadata(),
        "index": client.get_model_repository_index(),
        "stats": client.get_inference_statistics(model_name=model),
        "version_stats": client.get_inference_statistics(model_name=model, model_version=version),
        "all_stats": client.get_inference_statistics(),
        "config": client.get_model_config(model),
        "version_config": client.get_model_config(model, model_version=version),
    }
    for name, call in [("unknown_config", lambda: client.get_model_config("nope")),
                       ("other_version_stats", lambda: client.get_inference_statistics(model, model_version="999"))]:
        try:
            call()
        except InferenceServerException as exc:
            report[name] = [exc.status(), exc.message()]
    client.close()
    print(json.dumps(report))
""")


def test_repository_index_statistics_and_config(artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()  # exists, but holds no artifact: FAILED, listed as UNAVAILABLE with its reason
    models = [f"bert={artifacts['bert']}", f"broken={broken}"]
    with running_server(models=models, http_port=0, max_texts_per_request=16) as server:
        assert server.server is not None
        run = subprocess.run(
            [str(TRITON_PYTHON), "-c", EXTENSIONS, f"127.0.0.1:{server.server.http_port}", "bert"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        with grpc.insecure_channel(server.target) as channel:
            info = pb_grpc.InferenceStub(channel).GetModel(pb.GetModelRequest(name="bert"), timeout=10)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"model_configuration", "statistics"} <= set(report["server_metadata"]["extensions"])

    index = {entry["name"]: entry for entry in report["index"]}
    assert index["bert"]["state"] == "READY" and index["bert"]["version"] == info.version
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]

    (stats,) = report["stats"]["model_stats"]
    assert report["version_stats"] == report["stats"]
    assert stats["name"] == "bert" and stats["version"] == info.version
    assert stats["inference_count"] == 4 and stats["execution_count"] == 2  # numbers, as Triton's REST API sends
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == 2 and infer["success"]["ns"] > 0
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert infer[stage]["count"] == 2 and infer[stage]["ns"] > 0, stage
    assert stats["last_inference"] > 0
    assert [s["name"] for s in report["all_stats"]["model_stats"]] == ["bert", "broken"]

    config = report["config"]
    assert report["version_config"] == config
    assert config["name"] == "bert" and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [1]}]
    outputs = {o["name"]: (o["data_type"], o["dims"]) for o in config["output"]}
    assert outputs["probabilities"] == ("TYPE_FP32", [len(info.labels)])
    assert outputs["truncated"] == ("TYPE_BOOL", [1]) and outputs["errors"] == ("TYPE_STRING", [1])
    assert json.loads(config["parameters"]["labels"]["string_value"]) == list(info.labels)
    assert report["unknown_config"][0] == "404" and "nope" in report["unknown_config"][1]
    assert report["other_version_stats"][0] == "404" and "999" in report["other_version_stats"][1]
