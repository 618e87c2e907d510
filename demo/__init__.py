"""The demo's training job, outside the installed `ortserve` package: generated news headlines (`headlines`),
MiniLM-L6 fine-tuning with a cache (`train`), MLflow logging as users do it (`publish`) and held-out accuracy of a
served model (`evaluate`). Used by `scripts/demo.py` (`make demo`), `benchmarks/` and `tests/test_training.py`."""
