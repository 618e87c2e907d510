"""In-process baselines: the `transformers` pipeline in PyTorch (the status quo) and raw ONNX Runtime (the floor)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ortserve.contract.artifact import MODEL_FILE, TOKENIZER_FILE, ArtifactManifest
from ortserve.server.runtime import SessionConfig


@dataclass(frozen=True)
class InProcess:
    """Single-text latency (p50/p99 ms) and batch-of-32 throughput (texts/s) of one in-process system."""

    p50_ms: float
    p99_ms: float
    batch32_texts_per_s: float


def latencies_ms(predict: Callable[[list[str]], object], texts: Sequence[str], calls: int) -> list[float]:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        predict([texts[i % len(texts)]])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def batch_rate(predict: Callable[[list[str]], object], texts: Sequence[str], batches: int) -> float:
    chunks = [list(texts[i * 32 : (i + 1) * 32]) for i in range(batches)]
    start = time.perf_counter()
    for chunk in chunks:
        predict(chunk)
    return batches * 32 / (time.perf_counter() - start)


def summarize(latencies: Sequence[float], rates: Sequence[float]) -> InProcess:
    """p50/p99 of pooled single-text latencies, and the median of batch-of-32 throughputs."""
    samples = sorted(latencies)
    return InProcess(statistics.median(samples), samples[int(0.99 * (len(samples) - 1))], statistics.median(rates))


class TorchPipeline:
    """The `transformers` text-classification pipeline in PyTorch, called with `batch_size=32` (the status quo)."""

    def __init__(self, hf_dir: Path):
        from transformers import pipeline

        self._pipe = pipeline("text-classification", model=str(hf_dir), tokenizer=str(hf_dir), device="cpu", top_k=None)

    def __call__(self, texts: list[str]) -> object:
        import torch

        with torch.inference_mode():
            return self._pipe(texts, batch_size=32, truncation=True)


class RawOrt:
    """Tokenizer and ONNX Runtime session with no server code: pad to the longest text, run, softmax."""

    def __init__(self, artifact: Path, config: SessionConfig):
        manifest = ArtifactManifest.read(artifact)
        self._tokenizer = Tokenizer.from_file(str(artifact / TOKENIZER_FILE))
        self._tokenizer.enable_padding(pad_id=manifest.pad_token_id)
        self._tokenizer.enable_truncation(manifest.max_length)
        self._session = ort.InferenceSession(
            str(artifact / MODEL_FILE), config.session_options(), providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch_fast(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (logits,) = self._session.run(None, {name: feeds[name] for name in self._inputs})
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
