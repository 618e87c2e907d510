"""Side-by-side benchmark of ortserve against raw ONNX Runtime, PyTorch and `mlflow models serve` (`make bench`)."""
