"""One loaded classifier: the fast tokenizer, one ONNX Runtime session and the post-processing to label scores."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from .artifact import MODEL_FILE, TOKENIZER_FILE, ArtifactManifest, check_artifact_dir
from .errors import ArtifactError
from .memory import ArenaShrinkAfterBursts, shared_cpu_arena_registered
from .stage_timings import BatchStages
from .text_cost import CHARS_PER_TOKEN_BOUND, window_tokens, windows_char_budget
from .types import Classification, LabelScore
from .windows import TextWindows, split_windows

log = logging.getLogger(__name__)

#: Graph inputs the runtime knows how to feed from a tokenizer encoding.
SUPPORTED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
"""Run options that return the CPU arena's free chunks to the system after the run (see `arena_shrink_width`): a
small run made with them once a burst of wide runs is over (`ArenaShrinkAfterBursts`)."""

_GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime session settings of one model.

    The defaults were chosen by measurement on 2 cores (see BENCHMARKS.md, "Runtime tuning").
    """

    intra_op_threads: int = 0
    """Threads one inference may use (0: ONNX Runtime's default, one per physical core)."""
    allow_spinning: bool = False
    """Let idle intra-op threads spin for the next op. Off: in a server the spinning threads take the cores that the
    event loop, gRPC and the other models' sessions need (measured 2-3× lower throughput with spinning on 2 cores)."""
    spin_during_runs: bool = False
    """Let the intra-op threads spin between the ops of a run, and stop spinning as soon as no run of the session is
    in progress (ONNX Runtime's `session.force_spinning_stop`): a one-text run then wakes no sleeping thread per op
    (minilm in process 2.4 -> 1.5 ms, with less CPU), and idle threads never spin. Off by default: under concurrent
    calls a run is nearly always in progress, so the threads spin nearly always, and on 2 busy cores that cost a third
    of the 32-caller throughput (BENCHMARKS.md, "Where one call's time goes"). `allow_spinning` overrides it."""
    enable_cpu_mem_arena: bool = True
    """Reuse a memory arena across runs instead of allocating every tensor afresh."""
    graph_optimization_level: str = "all"
    """ONNX Runtime graph optimizations applied at load: disable, basic, extended or all."""
    arena_shrink_width: int = 256
    """Once no run padded to at least this many tokens has been in progress for `ARENA_SHRINK_IDLE_S`, hand the
    memory arena's free chunks back to the system (a small run with ONNX Runtime's
    `memory.enable_memory_arena_shrinkage` run option); 0 never does. A wide run grows the arena by hundreds of MB that
    it otherwise keeps for good (minilm +436 MB, bert-base +1,059 MB after bursts of 16 × 512 tokens; +1 and +33 MB
    with shrinkage, BENCHMARKS.md "Scrape floods and memory after long bursts"). Not after every wide run: the next
    one faulted the memory in again, and bulk callers lost 15-25 % of their throughput."""
    use_global_thread_pool: bool = False
    """Run on the process-wide thread pool set up by `use_global_thread_pool()` instead of a pool per session.
    ONNX Runtime then requires every session of the process to do the same."""
    max_length: int = 0
    """Tokens of one text (one window) the model reads, special tokens included; 0 for the artifact's `max_length`.
    Not an ONNX Runtime option: the one load setting of a model besides them, so it travels with them. At most the
    model's own limit (its position embeddings, `model_max_length` in the manifest's export record)."""

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        # One request batch runs at a time per model; inter-op parallelism only adds contention on few cores.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.use_global_thread_pool:
            options.use_per_session_threads = False
        else:
            options.intra_op_num_threads = self.intra_op_threads
            options.inter_op_num_threads = 1
            spinning = self.allow_spinning or self.spin_during_runs
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
            if spinning and not self.allow_spinning:  # spin inside runs only: stop when the last run returns
                options.add_session_config_entry("session.force_spinning_stop", "1")
        options.enable_cpu_mem_arena = self.enable_cpu_mem_arena
        if self.enable_cpu_mem_arena and shared_cpu_arena_registered():  # one arena for every model (memory.py)
            options.add_session_config_entry("session.use_env_allocators", "1")
        try:
            options.graph_optimization_level = _GRAPH_OPTIMIZATION_LEVELS[self.graph_optimization_level]
        except KeyError:
            raise ValueError(
                f"graph_optimization_level must be one of {sorted(_GRAPH_OPTIMIZATION_LEVELS)}, "
                f"got {self.graph_optimization_level!r}"
            ) from None
        return options


def use_global_thread_pool(intra_op_threads: int = 0) -> None:
    """Create the process-wide ONNX Runtime thread pool; call it once, before the first session of the process."""
    ort.set_global_thread_pool_sizes(intra_op_threads, 1)


@dataclass(frozen=True)
class TokenizedBatch:
    """Padded model inputs for a batch of texts, plus each text's real token count."""

    inputs: dict[str, np.ndarray]
    lengths: list[int]

    @property
    def width(self) -> int:
        """Tokens of the longest row: every row is padded to it."""
        return max(self.lengths, default=0)

    @property
    def padded_tokens(self) -> int:
        """Tokens the model computes on, padding included (rows × longest row)."""
        return len(self.lengths) * self.width


class OnnxClassifier:
    """A text classifier exported by `ortserve export`, answering with label probabilities.

    Thread-safe: the tokenizer and the ONNX Runtime session may be called from several threads at once.
    """

    def __init__(
        self,
        directory: Path,
        manifest: ArtifactManifest,
        tokenizer: Tokenizer,
        session: ort.InferenceSession,
        arena_shrink_width: int = 0,
        inference_executor: Executor | None = None,
    ):
        self.directory = directory
        self.manifest = manifest
        self._tokenizer = tokenizer
        self._session = session
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_name = session.get_outputs()[0].name
        self._window_tokenizer: Tokenizer | None = None
        self._window_lock = threading.Lock()
        self._arena_shrink_width = arena_shrink_width
        self._arena_shrink = ArenaShrinkAfterBursts(self._shrink_arena)
        self.inference_executor = inference_executor
        """Where ONNX Runtime's `run` itself executes; None: the calling thread. Tokenizing, padding and ranking
        hold Python's GIL, the run does not: a shadow-only challenger runs only this part on its low-priority thread,
        since a thread that holds the GIL and waits behind everything else for a core stalls the event loop."""

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        config: SessionConfig | None = None,
        inference_executor: Executor | None = None,
    ) -> OnnxClassifier:
        """Load an artifact directory; raise `ArtifactError` naming the problem if it is not servable.
        `inference_executor`: see the attribute of that name."""
        directory = Path(directory)
        config = config or SessionConfig()
        check_artifact_dir(directory)
        manifest = served_manifest(ArtifactManifest.read(directory), config.max_length, directory)
        tokenizer = _load_tokenizer(directory / TOKENIZER_FILE, manifest)
        try:
            session = ort.InferenceSession(
                str(directory / MODEL_FILE),
                sess_options=config.session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt or unsupported graphs
            raise ArtifactError(f"ONNX Runtime cannot load {directory / MODEL_FILE}: {exc}") from exc
        unknown = [i.name for i in session.get_inputs() if i.name not in SUPPORTED_INPUTS]
        if unknown:
            raise ArtifactError(f"{directory / MODEL_FILE} needs inputs {unknown} that a text tokenizer cannot supply")
        outputs = session.get_outputs()
        width = outputs[0].shape[-1] if outputs and outputs[0].shape else None
        if isinstance(width, int) and width != len(manifest.labels):
            raise ArtifactError(
                f"{directory}: the model has {width} outputs but {len(manifest.labels)} labels are listed"
            )
        return cls(directory, manifest, tokenizer, session, config.arena_shrink_width, inference_executor)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def max_length(self) -> int:
        """Most tokens of one text the model reads (special tokens included); longer texts are truncated."""
        return self.manifest.max_length

    @property
    def char_budget(self) -> int:
        """Characters of a text tokenized at first: what `max_length` tokens take in ordinary text, with a margin
        (see `CHARS_PER_TOKEN_BOUND`). A text whose cut does not fill `max_length` tokens is tokenized again with a
        larger budget, so the result always equals tokenizing the whole text."""
        return self.manifest.max_length * CHARS_PER_TOKEN_BOUND

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        """Tokenize, truncate at the model's max length and pad to the longest text of `texts`."""
        return self._collate(self._encode(texts))

    def count_tokens(self, text: str) -> int:
        """Tokens of one text after truncation, special tokens included."""
        return len(self._encode([text])[0].ids)

    @property
    def window_capacity(self) -> int:
        """Tokens of a text that one window holds: `max_length` less the special tokens added around it."""
        return max(1, self.max_length - self._tokenizer.num_special_tokens_to_add(False))

    def fits_one_window(self, text: str) -> bool:
        """Whether `text` surely fits in one window, known without tokenizing: every token covers at least one byte
        of UTF-8 (characters for WordPiece and SentencePiece, bytes for byte-level BPE)."""
        return len(text) <= self.window_capacity and len(text.encode("utf-8")) <= self.window_capacity

    def windows(self, texts: Sequence[str], max_chunks: int, stride: int) -> list[TextWindows]:
        """Each text cut into at most `max_chunks` windows of at most `max_length` tokens, overlapping by `stride`
        tokens (see `windows.split_windows`). Blocking (it tokenizes): call it off the event loop.

        Like `_encode`, no more of a text is tokenized than the windows can hold: it is cut at a character budget
        (`text_cost.windows_char_budget`) and read further only when the cut holds too few tokens to fill them.
        """
        capacity = self.window_capacity
        stride = min(stride, capacity // 2)  # a window must move on by at least half its length
        needed = window_tokens(capacity, max_chunks, stride)
        result = [TextWindows([text]) for text in texts]
        todo = [i for i, text in enumerate(texts) if not self.fits_one_window(text)]
        budgets = dict.fromkeys(todo, windows_char_budget(capacity, max_chunks, stride))
        tokenizer = self._untruncated_tokenizer()
        while todo:
            cuts = [cut_text(texts[i], budgets[i]) for i in todo]
            encodings = tokenizer.encode_batch(cuts, add_special_tokens=True)  # with offsets and word ids
            short = []
            for i, cut, encoding in zip(todo, cuts, encodings, strict=True):
                read = len(encoding.ids) - sum(encoding.special_tokens_mask)
                if len(cut) < len(texts[i]) and read < needed:  # a sparse text: read further, as `_encode` does
                    budgets[i] = int(budgets[i] * max(1.25, 1.1 * needed / max(1, read)))
                    short.append(i)
                    continue
                split = split_windows(cut, encoding, capacity, stride, max_chunks)
                result[i] = TextWindows(split.windows, split.cut or len(cut) < len(texts[i]))
            todo = short
        return result

    def _untruncated_tokenizer(self) -> Tokenizer:
        """A copy of the tokenizer without truncation, for windows: the serving one truncates, and changing its
        settings would race with the runs that use it from other threads."""
        with self._window_lock:
            if self._window_tokenizer is None:
                tokenizer = Tokenizer.from_str(self._tokenizer.to_str())
                tokenizer.no_truncation()
                tokenizer.no_padding()
                self._window_tokenizer = tokenizer
            return self._window_tokenizer

    def _collate(self, encodings: Sequence[Encoding]) -> TokenizedBatch:
        # Padding by hand (not by the tokenizer) lets one tokenization serve several length-grouped runs.
        lengths = [len(e.ids) for e in encodings]
        width = max(lengths, default=0)
        ids = np.full((len(encodings), width), self.manifest.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        type_ids = np.zeros((len(encodings), width), dtype=np.int64)
        for row, (encoding, length) in enumerate(zip(encodings, lengths, strict=True)):
            ids[row, :length] = encoding.ids
            mask[row, :length] = 1
            type_ids[row, :length] = encoding.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
        return TokenizedBatch({name: arrays[name] for name in self._input_names}, lengths)

    def run(self, batch: TokenizedBatch) -> np.ndarray:
        """Run the model on a tokenized batch; return probabilities of shape (texts, labels)."""
        wide = bool(self._arena_shrink_width) and batch.width >= self._arena_shrink_width
        if wide:
            self._arena_shrink.wide_run_started()
        try:
            if self.inference_executor is None:
                (logits,) = self._session.run([self._output_name], batch.inputs)
            else:
                (logits,) = self.inference_executor.submit(
                    self._session.run, [self._output_name], batch.inputs
                ).result()
        finally:
            if wide:
                self._arena_shrink.wide_run_ended()
        return _sigmoid(logits) if self.manifest.multi_label else _softmax(logits)

    def _shrink_arena(self) -> None:
        """A one-text run that returns the arena's free memory to the system when it ends (`ArenaShrinkAfterBursts`
        calls it once a burst of wide runs is over)."""
        # "." is a token with or without special tokens; "" is none for a tokenizer that adds none.
        self._session.run([self._output_name], self.tokenize(["."]).inputs, _SHRINK_ARENA)

    def probabilities(
        self,
        texts: Sequence[str],
        max_batch_size: int = 0,
        max_batch_tokens: int = 0,
        by_length: bool = False,
        stages: BatchStages | None = None,
        truncated: list[bool] | None = None,
    ) -> np.ndarray:
        """Probabilities of shape (texts, labels) for `texts`, rows in input order.

        With no limits and not `by_length`, all texts run in one ONNX Runtime call padded to the longest. Otherwise
        texts are grouped by token count (`group_by_length`) so that a short text is not padded to the length of a
        long one, in groups of at most `max_batch_size` texts and `max_batch_tokens` padded tokens (0: no limit;
        the server's batcher applies its limits when it forms a batch and passes none here). `stages`, if given,
        receives the tokenization and inference times (the server's metrics and traces read them). `truncated`, if
        given, receives one flag per text: True where the model read only the text's first `max_length` tokens.
        """
        if stages is not None:
            stages.tokenize_start = time.monotonic()
        encodings = self._encode(texts)
        if stages is not None:
            stages.tokenize_end = time.monotonic()
        if truncated is not None:
            truncated[:] = [self._was_cut(text, encoding) for text, encoding in zip(texts, encodings, strict=True)]
        if not max_batch_size and not max_batch_tokens and not by_length:
            return self._timed_run(self._collate(encodings), stages)
        groups = group_by_length([len(e.ids) for e in encodings], max_batch_size, max_batch_tokens)
        if len(groups) == 1:
            return self._timed_run(self._collate(encodings), stages)
        result = np.empty((len(encodings), len(self.labels)), dtype=np.float32)
        for group in groups:
            result[group] = self._timed_run(self._collate([encodings[i] for i in group]), stages)
        return result

    def _was_cut(self, text: str, encoding: Encoding) -> bool:
        """Whether the model reads only the beginning of `text`: its tokens overflowed `max_length`, or it was cut at
        a character budget (`_encode`) and what was read fills `max_length`."""
        if encoding.overflowing:
            return True
        return len(text) > self.char_budget and len(encoding.ids) >= self.max_length

    def _timed_run(self, batch: TokenizedBatch, stages: BatchStages | None) -> np.ndarray:
        if stages is None:
            return self.run(batch)
        start = time.monotonic()
        try:
            return self.run(batch)
        finally:
            end = time.monotonic()
            if not stages.inference_start:
                stages.inference_start = start
            stages.inference_end = end
            stages.inference_s += end - start
            stages.padded_tokens += batch.padded_tokens

    def _encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Tokenize and truncate at `max_length`, reading no more of a text than the model can use.

        Tokenizing a 10,000-character text in full to keep its first 128 tokens costs ~30× what the kept part
        costs, and a caller controls the text length. So each text is first cut to `char_budget` characters (at a
        whitespace, so that no word is split) and the tokenizer truncates exactly. A cut text that yields fewer than
        `max_length` tokens (long runs of spaces, say) may have lost tokens: it is tokenized again with a budget
        grown in proportion to the missing tokens, until it fills `max_length` or is whole. The result is the same
        as tokenizing the whole text.
        """
        # encode_batch_fast skips character offsets, which classification never reads; it releases the GIL.
        budgets = [self.char_budget] * len(texts)
        encodings = self._tokenizer.encode_batch_fast([cut_text(text, self.char_budget) for text in texts])
        short = [
            i for i, text in enumerate(texts) if len(text) > budgets[i] and len(encodings[i].ids) < self.max_length
        ]
        while short:
            for i in short:  # read further in proportion to what is missing, and by at least a quarter
                budgets[i] = int(budgets[i] * max(1.25, 1.1 * self.max_length / max(1, len(encodings[i].ids))))
            again = self._tokenizer.encode_batch_fast([cut_text(texts[i], budgets[i]) for i in short])
            for i, encoding in zip(short, again, strict=True):
                encodings[i] = encoding
            short = [i for i in short if len(texts[i]) > budgets[i] and len(encodings[i].ids) < self.max_length]
        return encodings

    def rank(self, probabilities: np.ndarray, top_k: int = 0) -> list[Classification]:
        """Turn a (texts, labels) probability matrix into label scores sorted highest first (ties: label order)."""
        keep = top_k if 0 < top_k < len(self.labels) else len(self.labels)
        if probabilities.size <= SMALL_OUTPUT:
            labels = self.labels
            ranked_rows = []
            for row in probabilities.tolist():
                best = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:keep]  # stable, as argsort
                ranked_rows.append([LabelScore(labels[j], row[j]) for j in best])
            return ranked_rows
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :keep]
        return [
            [LabelScore(self.labels[j], float(row[j])) for j in ranked]
            for row, ranked in zip(probabilities, order, strict=True)
        ]


def served_manifest(manifest: ArtifactManifest, max_length: int, directory: Path) -> ArtifactManifest:
    """`manifest` as served with a window of `max_length` tokens (0: the artifact's own), or `ArtifactError` if the
    model cannot read that many (its limit: the export record's `model_max_length`, else the manifest's length)."""
    if not max_length or max_length == manifest.max_length:
        return manifest
    limit = int(manifest.export.get("model_max_length") or manifest.max_length)
    if max_length > limit:
        raise ArtifactError(f"{directory}: max_length={max_length} is over the {limit} tokens this model can read")
    if max_length < 2:
        raise ArtifactError(f"{directory}: max_length={max_length} leaves no room for a token")
    return manifest.model_copy(update={"max_length": max_length})


def _load_tokenizer(path: Path, manifest: ArtifactManifest) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise ArtifactError(f"cannot read tokenizer {path}: {exc}") from exc
    # A tokenizer.json saved by a training run often pads every input to a fixed length (e.g. 128) and truncates
    # at its own length. Replace both: no padding here (batches are padded to their longest text when collated),
    # truncation at the model's limit.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.enable_truncation(max_length=manifest.max_length)
    return tokenizer


#: How far back from the character budget a cut looks for whitespace, so that the cut does not split a word.
_CUT_LOOKBACK = 64


def cut_text(text: str, budget: int) -> str:
    """`text`, or its first `budget` characters ending before a whitespace (a word is not split) when it is longer.

    Without whitespace in the last `_CUT_LOOKBACK` characters (a long URL, CJK text), the cut is at `budget`: the
    kept tokens are then still whole unless the model's window ends within that last word.
    """
    if len(text) <= budget:
        return text
    for index in range(budget, max(0, budget - _CUT_LOOKBACK), -1):
        if text[index].isspace():
            return text[:index]
    return text[:budget]


#: The fixed cost of one ONNX Runtime run, in padded tokens (rows × width) of the same cost. Measured on 2 cores for
#: both benchmark models (see BENCHMARKS.md); it decides when splitting a batch by length saves more than it costs.
RUN_OVERHEAD_TOKENS = 32


def group_by_length(
    lengths: Sequence[int], max_size: int = 0, max_tokens: int = 0, run_overhead_tokens: int = RUN_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Split indices into runs of similar length, each with at most `max_size` rows and `max_tokens` padded tokens.

    Indices are sorted by length and cut into contiguous groups that minimise the total cost, modelled as
    `run_overhead_tokens` per run plus rows × longest row per run: a 10-token text is not padded to 120 tokens when
    running it apart costs less than the padding. A single text longer than `max_tokens` still forms a group of its
    own. A limit of 0 means no limit.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    count = len(order)
    # best[i]: least cost of the first i sorted texts; cut[i]: where the last group of that solution starts.
    best = [0.0] + [float("inf")] * count
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        width = lengths[order[end - 1]]  # sorted: the last text of a group is its longest
        lowest = max(0, end - max_size) if max_size else 0
        for start in range(end - 1, lowest - 1, -1):
            rows = end - start
            if max_tokens and rows > 1 and rows * width > max_tokens:
                break  # more rows only make the group wider in tokens
            cost = best[start] + run_overhead_tokens + rows * width
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups: list[list[int]] = []
    end = count
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    groups.reverse()
    return groups


#: Outputs of at most this many values (texts × labels) are post-processed in plain Python: numpy's fixed cost per
#: operation (tens of microseconds for softmax and ranking together) is most of the work for one text's few labels.
SMALL_OUTPUT = 64


def _softmax(logits: np.ndarray) -> np.ndarray:
    if logits.size <= SMALL_OUTPUT:
        rows = []
        for row in logits.tolist():
            top = max(row)
            exp = [math.exp(value - top) for value in row]
            total = sum(exp)
            rows.append([value / total for value in exp])
        return np.array(rows, dtype=np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    if logits.size <= SMALL_OUTPUT:
        rows = [[_logistic(value) for value in row] for row in logits.tolist()]
        return np.array(rows, dtype=np.float32)
    return 1.0 / (1.0 + np.exp(-logits))


def _logistic(value: float) -> float:
    """The sigmoid of one value, in the form that cannot overflow."""
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)
