"""Graph optimization of an exported encoder (ONNX Runtime's transformer fusions) and int8 quantization (dynamic, or
static in QDQ format calibrated on the accuracy gate's texts).

Fusion rewrites the attention block, GELU and LayerNorm (+ residual add) of BERT-style encoders into single
ONNX Runtime contrib ops (`Attention`, `BiasGelu`/`FastGelu`, `SkipLayerNormalization`, `EmbedLayerNormalization`).
Only hardware-independent rewrites are saved (ONNX Runtime "basic" level plus the Python fusions); the server
applies the hardware-specific ones when it loads the graph.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ortserve.contract.errors import first_line

from .errors import ExportError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

log = logging.getLogger(__name__)

#: Hugging Face model types whose encoders ONNX Runtime's optimizer fuses with its BERT rules (the same list optimum
#: maps to the "bert" optimizer). Other architectures are exported unfused, which is correct, only slower.
FUSABLE_MODEL_TYPES = frozenset(
    {
        "albert",
        "bert",
        "camembert",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "mpnet",
        "roberta",
        "xlm-roberta",
    }
)
#: Contrib ops whose presence shows that a fusion happened (standard ops such as LayerNormalization are left out:
#: optimum may emit them itself).
FUSED_OPS = frozenset(
    {
        "Attention",
        "MultiHeadAttention",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "BiasGelu",
        "FastGelu",
        "SkipSimplifiedLayerNormalization",
    }
)
#: ONNX Runtime optimization level saved with the fused graph: 1 (basic) is portable across CPUs.
SAVED_OPT_LEVEL = 1


@dataclass(frozen=True)
class FusionResult:
    """What `fuse_transformer_graph` did to a graph."""

    applied: bool
    """True if a fused graph was written to the destination."""
    fused_ops: dict[str, int] = field(default_factory=dict)
    """Count of each fused contrib op in the written graph."""
    note: str = ""
    """Why fusion was skipped, when it was."""


def fuse_transformer_graph(source: Path, destination: Path, config: Any) -> FusionResult:
    """Fuse attention, GELU and LayerNorm of the encoder in `source` into `destination`, where the architecture allows.

    `config` is the model's Hugging Face config: its model type picks the fusion rules, its head count and hidden
    size are passed on because the optimizer cannot always infer them from a graph exported with dynamic shapes.
    Returns `applied=False` (and writes nothing) for architectures the optimizer does not know or when no op fused.
    """
    model_type = getattr(config, "model_type", "")
    if model_type not in FUSABLE_MODEL_TYPES:
        return FusionResult(False, note=f"no transformer fusions for model type {model_type!r}; kept the plain graph")
    from onnxruntime.transformers.optimizer import optimize_model

    num_heads, hidden_size = _heads_and_width(config)
    try:
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=SAVED_OPT_LEVEL,
            use_gpu=False,
        )
    except Exception as exc:  # the optimizer raises assorted errors on graphs it cannot pattern-match
        log.warning("transformer fusion failed for %s (%s); keeping the plain graph", model_type, exc)
        return FusionResult(False, note=f"transformer fusion failed ({type(exc).__name__}); kept the plain graph")
    ops = Counter(node.op_type for node in optimized.model.graph.node if node.op_type in FUSED_OPS)
    if not ops:
        return FusionResult(False, note=f"no fusion pattern matched the {model_type} graph; kept the plain graph")
    optimized.save_model_to_file(str(destination), use_external_data_format=False)
    return FusionResult(True, dict(sorted(ops.items())))


#: Quantize weights with one scale per output channel rather than one per tensor. Measured on a 6-layer,
#: 768-wide BERT with random weights (2 cores): top-1 agreement with PyTorch 95.3% vs 92.2% per tensor, mean
#: |Δp| 0.017 vs 0.040 (unfused graph), and no measurable latency difference (~19 ms for an 18-token text).
INT8_PER_CHANNEL = True


def quantize_dynamic_int8(source: Path, destination: Path, per_channel: bool = INT8_PER_CHANNEL) -> Path:
    """Dynamic int8 quantization: int8 weights (per output channel by default), activations quantized per batch
    at run time.

    `DefaultTensorType` lets the quantizer proceed past tensors whose type shape inference cannot tell, which the
    fused contrib ops produce (without it: "Unable to find data type for weight_name").
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(
            source,
            destination,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    except Exception as exc:  # onnxruntime's quantizer raises bare exceptions for graphs it cannot handle
        raise ExportError(f"dynamic int8 quantization failed: {exc}; export again with --no-quantize") from None
    return destination


#: The int8 methods `ortserve export --int8` can try, the incumbent first.
INT8_METHODS = ("dynamic", "static")
Int8Choice = Literal["auto", "dynamic", "static"]
#: The `--int8` default (`ExportOptions.int8`), chosen by measurement: see BENCHMARKS.md, "Static int8".
DEFAULT_INT8: Int8Choice = "auto"
#: Op types static quantization rewrites: the weight products, which hold nearly all of an encoder's arithmetic.
#: Quantizing the others (Add, Gather, Softmax, LayerNorm...) adds QDQ pairs without a faster kernel behind them.
#: Gemm (the pooler and the classifier head, one row per text) is left out: in fused graphs its input's range is
#: not calibrated ("Unable to get valid quantization scale"), and it is a negligible share of the work.
STATIC_OP_TYPES = ("MatMul",)
#: Quantize static weights to 7 bits. onnxruntime suggests it on x86 CPUs without VNNI (their uint8 × int8 products
#: can saturate a 16-bit intermediate); off, like dynamic int8's weights, because static passed the gate without it
#: on the trained models (not measured with it).
STATIC_REDUCE_RANGE = False


def quantize_static_int8(
    source: Path,
    destination: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    per_channel: bool = INT8_PER_CHANNEL,
    reduce_range: bool = STATIC_REDUCE_RANGE,
) -> Path:
    """Static int8 quantization in QDQ format: int8 weights (per output channel by default) and uint8 activations
    whose scales are fixed ahead of time from the ranges `calibration` (model feeds, one text each) produces.

    ONNX Runtime fuses each QuantizeLinear → DequantizeLinear → MatMul group into an integer MatMul when it loads
    the graph, so nothing is quantized per call at run time (dynamic int8 computes each activation's range per
    call). MatMuls of two activations (attention scores and context) stay float, where int8 costs the most
    accuracy; `DefaultTensorType` is needed on fused graphs, as for `quantize_dynamic_int8`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportError("static int8 quantization needs calibration texts; pass --validation-texts or --int8 dynamic")
    prepared = destination.with_name(destination.stem + ".shapes.onnx")
    try:
        # Symbolic shape inference types the outputs of the fused contrib ops; without it the calibrator collects
        # no ranges for the MatMuls behind them and the quantizer leaves their activations in float.
        quant_pre_process(source, prepared, skip_optimization=True, auto_merge=True)
        quantize_static(
            prepared,
            destination,
            _FeedReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(STATIC_OP_TYPES),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_activation_matmuls(prepared),
            extra_options={
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                # MatMul outputs stay float: ONNX Runtime then runs each group as one MatMulIntegerToFloat (the
                # kernel dynamic int8 uses, with a fixed input scale) instead of QLinearMatMul + requantization.
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )
    except Exception as exc:  # onnxruntime's quantizer raises bare exceptions for graphs it cannot handle
        prepared.unlink(missing_ok=True)
        raise ExportError(
            f"static int8 quantization failed: {first_line(exc)[:200]}; "
            "export again with --int8 dynamic or --no-quantize"
        ) from None
    prepared.unlink(missing_ok=True)
    return destination


def _activation_matmuls(graph_path: Path) -> list[str]:
    """Names of the MatMuls with no constant operand (attention scores and context): kept in float. The QDQ quantizer
    ignores `MatMulConstBOnly`, and int8 attention scores cost the most accuracy for no weight saved."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    constants = {initializer.name for initializer in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]


class _FeedReader:
    """The `CalibrationDataReader` protocol of onnxruntime.quantization over a list of feeds (duck-typed: the
    quantizer only calls `get_next`)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _heads_and_width(config: Any) -> tuple[int, int]:
    # DistilBERT names them n_heads/dim; 0 lets the optimizer detect them from the graph.
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    width = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    return int(heads), int(width)
