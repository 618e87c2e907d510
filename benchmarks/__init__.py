"""Side-by-side benchmark of ortserve against raw ONNX Runtime, PyTorch and `mlflow models serve` (`make bench`).

A client of the product: it serves through the `ortserve serve` CLI and calls through the client, the generated
stubs and the health probe; it builds artifacts with the public export API and reads them through the artifact
contract; in process it uses only the runtime's public classes (`OnnxClassifier`, `SessionConfig`), whose settings
the runtime tuning measures. Measuring modules write JSON; `report.py` and `under_load_report.py` render it and
import no measuring module. Everything a run writes goes under `benchmarks/work/` (gitignored, see `paths.py`).
"""
