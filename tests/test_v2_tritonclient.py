"""The real Triton client (`tritonclient[grpc]`) against a real server: health, metadata, BYTES inference, errors.

tritonclient runs in its own venv (`make tritonclient-venv`, part of `make venv`), as any separate client would:
it pins protobuf<7, and its generated `inference` package cannot share a process's descriptor pool with ortserve.v2.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

ROOT = Path(__file__).resolve().parent.parent
TRITON_PYTHON = ROOT / ".venv-tritonclient" / "bin" / "python"
pytestmark = pytest.mark.skipif(not TRITON_PYTHON.exists(), reason="`make venv` installs tritonclient in its own venv")

TEXTS = ["Shares rallied after a strong quarter.", "Rain cancelled the match", "é ünïcode ✓"]

#: Runs in the tritonclient venv: every call a Triton user makes, answers printed as JSON.
CALLS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    target, model, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = grpcclient.InferenceServerClient(url=target)
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(model, as_json=True),
    }

    def infer(shape, top_k=None, outputs=("probabilities", "labels", "top_labels", "top_scores")):
        text = grpcclient.InferInput("text", shape, "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object).reshape(shape))
        result = client.infer(model, [text], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                              parameters=None if top_k is None else {"top_k": top_k}, request_id="r1")
        response = result.get_response()
        answer = {"model_name": response.model_name, "model_version": response.model_version, "id": response.id,
                  "raw": len(response.raw_output_contents) > 0}
        for name in outputs:
            array = result.as_numpy(name)
            answer[name] = {"dtype": str(array.dtype), "shape": list(array.shape),
                            "values": [v.decode() if isinstance(v, bytes) else float(v) for v in array.ravel()]}
        return answer

    report["infer"] = infer([len(texts)], top_k=2)
    report["infer_n1"] = infer([len(texts), 1], outputs=("top_labels",))

    def error(call):
        try:
            call()
        except InferenceServerException as exc:
            return [exc.status(), exc.message()]
        return None

    def bad_input(datatype, shape, data):
        tensor = grpcclient.InferInput("text", shape, datatype)
        tensor.set_data_from_numpy(data)
        return lambda: client.infer(model, [tensor])

    report["errors"] = {
        "unknown_model": error(lambda: client.infer("nope", [grpcclient.InferInput("text", [1], "BYTES")
                                                             .set_data_from_numpy(np.array([b"x"], dtype=object))])),
        "unknown_model_ready": error(lambda: client.is_model_ready("nope")),
        "wrong_datatype": error(bad_input("FP32", [2], np.array([1.0, 2.0], dtype=np.float32))),
        "wrong_shape": error(bad_input("BYTES", [2, 2], np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object))),
        "no_input": error(lambda: client.infer(model, [])),
    }
    per_text = grpcclient.InferInput("text", [3], "BYTES")
    per_text.set_data_from_numpy(np.array([b"fine", b"  ", ("word " * 200).encode()], dtype=object))
    wanted = [grpcclient.InferRequestedOutput(o) for o in ("truncated", "errors")]
    marked = client.infer(model, [per_text], outputs=wanted)
    report["per_text"] = {"truncated": marked.as_numpy("truncated").tolist(),
                          "errors": [e.decode() for e in marked.as_numpy("errors")]}
    client.close()
    print(json.dumps(report))
""")


def run_tritonclient(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TRITON_PYTHON), "-c", script, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(server: RunningServer) -> dict:  # type: ignore[type-arg]
    run = run_tritonclient(CALLS, server.target, "bert", json.dumps(TEXTS))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def classify(server: RunningServer) -> tuple[pb.ClassifyResponse, pb.ModelInfo]:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        return (
            stub.Classify(pb.ClassifyRequest(model="bert", texts=TEXTS), timeout=30),
            stub.GetModel(pb.GetModelRequest(name="bert"), timeout=10),
        )


def test_health_and_metadata(report: dict, classify: tuple[pb.ClassifyResponse, pb.ModelInfo]) -> None:  # type: ignore[type-arg]
    _, info = classify
    assert report["live"] is True and report["ready"] is True and report["model_ready"] is True
    assert report["server_metadata"]["name"] == "ortserve"
    metadata = report["metadata"]
    assert metadata["name"] == "bert" and metadata["versions"] == [info.version]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs["probabilities"] == ("FP32", ["-1", str(len(info.labels))])
    assert outputs["labels"] == ("BYTES", [str(len(info.labels))])


def test_infer_equals_classify(report: dict, classify: tuple[pb.ClassifyResponse, pb.ModelInfo]) -> None:  # type: ignore[type-arg]
    reference, info = classify
    answer = report["infer"]
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("bert", reference.model_version, "r1")
    assert answer["raw"] is True  # tritonclient sent raw_input_contents, so the answer is raw too
    labels = list(info.labels)
    assert answer["labels"]["values"] == labels
    probabilities = answer["probabilities"]
    assert probabilities["dtype"] == "float32" and probabilities["shape"] == [len(TEXTS), len(labels)]
    expected = [[{s.label: s.score for s in r.labels}[label] for label in labels] for r in reference.results]
    np.testing.assert_allclose(np.reshape(probabilities["values"], (len(TEXTS), -1)), expected, atol=1e-6)
    assert answer["top_labels"]["shape"] == answer["top_scores"]["shape"] == [len(TEXTS), 2]
    assert answer["top_labels"]["values"] == [s.label for r in reference.results for s in r.labels[:2]]
    top_scores = [s.score for r in reference.results for s in r.labels[:2]]
    np.testing.assert_allclose(answer["top_scores"]["values"], top_scores, atol=1e-6)
    n1 = report["infer_n1"]["top_labels"]
    assert n1["shape"] == [len(TEXTS), len(labels)]  # [N, 1] input accepted; no top_k = every label
    assert n1["values"] == [s.label for r in reference.results for s in r.labels]


def test_errors_have_the_statuses_of_classify(report: dict) -> None:  # type: ignore[type-arg]
    errors = report["errors"]
    assert errors["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert "no model named 'nope'" in errors["unknown_model"][1]
    assert errors["unknown_model_ready"][0] == "StatusCode.NOT_FOUND"
    for case in ["wrong_datatype", "wrong_shape", "no_input"]:
        assert errors[case] is not None and errors[case][0] == "StatusCode.INVALID_ARGUMENT", case
    assert "send BYTES" in errors["wrong_datatype"][1]


def test_a_blank_or_long_text_is_answered_per_text(report: dict) -> None:  # type: ignore[type-arg]
    """No poison pill: a blank text gets its error and a text over max_text_chars (500 here) is cut and marked,
    while the call succeeds for the others."""
    assert report["per_text"]["truncated"] == [False, False, True]
    errors = report["per_text"]["errors"]
    assert errors[0] == errors[2] == "" and errors[1].startswith("the text is empty: it has no visible character")


#: Runs in the tritonclient venv: Triton's extensions (repository index, statistics, model config) after exactly two
#: inference calls of 3 and 1 texts.
EXTENSIONS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    target, model = sys.argv[1], sys.argv[2]
    client = grpcclient.InferenceServerClient(url=target)
    for texts in ([b"markets rallied", b"rain again", b"a vote"], [b"one more"]):
        text = grpcclient.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array(texts, dtype=object))
        client.infer(model, [text])
    report = {
        "server_metadata": client.get_server_metadata(as_json=True),
        "index": client.get_model_repository_index(as_json=True),
        "stats": client.get_inference_statistics(model_name=model, as_json=True),
        "all_stats": client.get_inference_statistics(as_json=True),
        "config": client.get_model_config(model, as_json=True),
    }
    try:
        client.get_model_config("nope")
    except InferenceServerException as exc:
        report["unknown_config"] = [exc.status(), exc.message()]
    print(json.dumps(report))
""")


def test_repository_index_statistics_and_config(artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()  # exists, but holds no artifact: FAILED, listed as UNAVAILABLE with its reason
    with running_server(models=[f"bert={artifacts['bert']}", f"broken={broken}"], max_texts_per_request=16) as server:
        run = run_tritonclient(EXTENSIONS, server.target, "bert")
        with grpc.insecure_channel(server.target) as channel:
            info = pb_grpc.InferenceStub(channel).GetModel(pb.GetModelRequest(name="bert"), timeout=10)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"model_configuration", "statistics"} <= set(report["server_metadata"]["extensions"])

    index = {entry["name"]: entry for entry in report["index"]["models"]}
    assert index["bert"]["state"] == "READY" and index["bert"]["version"] == info.version
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]

    (stats,) = report["stats"]["model_stats"]
    assert stats["name"] == "bert" and stats["version"] == info.version
    assert stats["inference_count"] == "4" and stats["execution_count"] == "2"  # uint64 is a string in proto JSON
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == "2" and int(infer["success"]["ns"]) > 0
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert infer[stage]["count"] == "2" and int(infer[stage]["ns"]) > 0, stage
    assert int(stats["last_inference"]) > 0
    assert [s["name"] for s in report["all_stats"]["model_stats"]] == ["bert", "broken"]

    config = report["config"]["config"]
    assert config["name"] == "bert" and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": ["1"]}]
    outputs = {o["name"]: (o["data_type"], o["dims"]) for o in config["output"]}
    assert outputs["probabilities"] == ("TYPE_FP32", [str(len(info.labels))])
    assert outputs["truncated"] == ("TYPE_BOOL", ["1"]) and outputs["errors"] == ("TYPE_STRING", ["1"])
    assert json.loads(config["parameters"]["labels"]["string_value"]) == list(info.labels)
    assert config["parameters"]["max_length"]["string_value"] == str(info.max_length)
    assert report["unknown_config"][0] == "StatusCode.NOT_FOUND"


def readme_tritonclient_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Open Inference Protocol.*?```python\n(.*?)```", readme, re.S)
    assert match, "README has no Open Inference Protocol section with a Python example"
    return match.group(1)


def test_readme_example_runs_verbatim(artifacts: dict[str, Path]) -> None:
    with running_server(models=[f"sentiment={artifacts['bert']}"]) as server:
        run = run_tritonclient(readme_tritonclient_example().replace("localhost:50051", server.target))
    assert run.returncode == 0, run.stderr
    ready, answer, labels = run.stdout.strip().splitlines()
    assert ready.startswith("ready: True {'name': 'probabilities', 'datatype': 'FP32', 'shape': ['-1', '3']}")
    assert re.fullmatch(r"sha256-[0-9a-f]+ \(2, 3\) \[\[b'(negative|neutral|positive)'\], \[b'\w+'\]\]", answer), answer
    assert labels == "[b'negative', b'neutral', b'positive']"
