"""int8 quantization steps on onnxruntime's quantization tool.

``quantize_dynamic_int8`` stores weights as int8 and quantizes activations per batch
as the model runs; ``quantize_static_int8`` also fixes the activations' scales ahead of
time from calibration rows, in the QDQ format onnxruntime's CPU kernels fuse. Both
follow onnxruntime's documented path: ``quant_pre_process`` first (its basic graph
optimizations and ONNX shape inference), then the quantizer. Weights are signed and
activations unsigned (U8S8): x86's 8-bit multiply instructions (AVX2 ``VPMADDUBSW``,
AVX-512 VNNI ``VPDPBUSD``) take unsigned-by-signed bytes, and unsigned weights run on a
slower widening path (docs/performance.md measures both).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, RuntimeFailure, quoted
from servion.optimize.onnx_steps import StepFiles, op_names, step_failure, writing
from servion.runtime import Signature, TensorSpec
from servion.types import Arrays

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CALIBRATION_BATCH",
    "calibration_batches",
    "quantize_dynamic_int8",
    "quantize_static_int8",
]

CALIBRATION_BATCH = 64
"""Rows per calibration run: big enough to be quick, small enough to bound memory."""


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    """Write ``source`` with int8 weights; activations are quantized per batch at run time.

    Needs no data. The weights of MatMul and Gemm (and Gather, LSTM, Attention) go from
    4 bytes to 1 and run as integer kernels. Convolutions stay float32: what dynamic
    quantization makes of a Conv, ConvInteger, has no fast kernel in onnxruntime's CPU
    provider (the benchmark CNN ran 6.7x slower with it); static int8 quantizes them.
    A model with nothing to quantize (a scikit-learn linear model or tree ensemble in
    ONNX-ML operators, a network of convolutions only) raises ``RuntimeFailure``
    naming its operators rather than coming back unchanged.

    >>> quantize_dynamic_int8(Path("mlp.onnx"), Path("mlp.int8.onnx"))  # doctest: +SKIP
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    ops = sorted(set(IntegerOpsRegistry) - {"Conv"})
    # Gemm is not in the registry: the dynamic quantizer splits it into MatMul + Add.
    handled = {*ops, "Gemm"}
    with writing(source, target) as files, tempfile.TemporaryDirectory() as tmp:
        _require_quantizable(files, "dynamic", handled)
        prepared = _prepare(files, Path(tmp))
        try:
            quantize_dynamic(
                prepared,
                files.out,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=ops,
                extra_options=_EXTRA,
            )
        except Exception as exc:  # the tool raises whatever its helpers raise
            raise step_failure("dynamic int8 quantization", source, exc) from exc
        _require_quantized(files, "dynamic", handled)


_EXTRA = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT
"""The type of a tensor shape inference cannot type: after the graph step, outputs of
onnxruntime's fused operators (com.microsoft) have none, and the quantizer would refuse
the model rather than assume float."""


def quantize_static_int8(
    source: Path,
    target: Path,
    calibration: Mapping[str, np.ndarray],
    per_channel: bool = True,
    *,
    reduce_range: bool = False,
) -> None:
    """Write ``source`` quantized to int8 weights and activations (QDQ format), with the
    activation ranges measured on ``calibration`` (input name -> rows, e.g. a sample of
    the validation data; min-max calibration, ``CALIBRATION_BATCH`` rows per run).

    ``per_channel`` gives each output channel of a weight its own scale (better accuracy
    for weights whose channels differ in range, at a small cost in speed).
    ``reduce_range`` stores weights in 7 bits: set it when the serving CPUs lack VNNI
    (AVX2-only x86), where onnxruntime's kernels add pairs of 8-bit products in 16 bits
    that full-range weights can saturate. It costs a bit of accuracy everywhere.

    >>> quantize_static_int8(Path("cnn.onnx"), Path("q.onnx"), {"image": x})  # doctest: +SKIP
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry

    with writing(source, target) as files, tempfile.TemporaryDirectory() as tmp:
        batches = calibration_batches(files.signature, calibration)
        _require_quantizable(files, "static", set(QDQRegistry))
        prepared = _prepare(files, Path(tmp))
        _flatten_gemm_bias(prepared)
        try:
            quantize_static(
                prepared,
                files.out,
                _reader(batches),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
                extra_options=_EXTRA,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:
            raise step_failure("static int8 quantization", source, exc) from exc
        _require_quantized(files, "static", set(QDQRegistry))


def calibration_batches(
    signature: Signature, calibration: Mapping[str, np.ndarray], batch: int = CALIBRATION_BATCH
) -> list[Arrays]:
    """Split calibration rows into batches the model takes, after checking that they
    name exactly the model's inputs, share one row count, have the inputs' shapes and
    hold finite numbers (cast to each input's datatype). Raises ``InvalidInput``.

    >>> sig = Signature((TensorSpec("X", "FP32", (-1, 2)),), (TensorSpec("y", "INT64", (-1,)),))
    >>> [b["X"].shape for b in calibration_batches(sig, {"X": np.zeros((100, 2))}, 64)]
    [(64, 2), (36, 2)]
    """
    names = [t.name for t in signature.inputs]
    listed = ", ".join(quoted(n) for n in names)
    if not calibration:
        raise InvalidInput(
            "the calibration data is empty: static quantization measures activation "
            f"ranges on sample rows of every input ({listed})"
        )
    missing = [n for n in names if n not in calibration]
    if missing:
        raise InvalidInput(
            f"the calibration data has no rows for input {quoted(missing[0])}"
            f" (the model's inputs: {listed})"
        )
    unknown = sorted(set(calibration) - set(names))
    if unknown:
        raise InvalidInput(
            f"the calibration data names {quoted(unknown[0])}, which is not an input of"
            f" the model (its inputs: {listed})"
        )
    arrays = {
        spec.name: _calibration_array(spec, calibration[spec.name]) for spec in signature.inputs
    }
    counts = {len(a) for a in arrays.values()}
    if len(counts) > 1:
        found = ", ".join(f"{quoted(n)}: {len(a)}" for n, a in arrays.items())
        raise InvalidInput(f"the calibration inputs differ in row count ({found})")
    rows = counts.pop()
    first = signature.inputs[0].shape
    # A model exported for one batch size takes exactly that many rows per run.
    fixed = first[0] if not signature.batched and first and first[0] > 0 else None
    size = fixed or batch
    if rows < size:
        raise InvalidInput(
            f"the calibration data has {rows} rows; the model takes batches of {size}"
            if fixed
            else "the calibration data has no rows"
        )
    stop = rows - rows % size if fixed else rows
    return [{n: a[i : i + size] for n, a in arrays.items()} for i in range(0, stop, size)]


def _calibration_array(spec: TensorSpec, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if spec.datatype == "BYTES" or array.dtype.kind not in "biuf":
        raise InvalidInput(
            f"calibration input {quoted(spec.name)} holds {array.dtype} values; static "
            f"quantization calibrates numeric inputs and the model takes {spec.datatype}"
        )
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True)
    ):
        raise InvalidInput(
            f"calibration input {quoted(spec.name)} has shape {list(array.shape)};"
            f" the model takes {list(spec.shape)} (-1: any size)"
        )
    cast = array.astype(NUMPY_OF[spec.datatype], copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        raise InvalidInput(
            f"calibration input {quoted(spec.name)} holds NaN or infinite values,"
            " which min-max calibration would turn into the activation scale"
        )
    return cast


def _prepare(files: StepFiles, folder: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / "prepared.onnx"
    try:
        # Symbolic shape inference (it needs sympy) is skipped: onnxruntime documents it
        # as most useful for transformers, and ONNX's shape inference still runs.
        quant_pre_process(str(files.source), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:
        raise step_failure("onnxruntime's quantization pre-processing", files.source, exc) from exc
    return prepared


def _flatten_gemm_bias(path: Path) -> None:
    """Store a Gemm's [1, N] bias as [N]. skl2onnx writes MLP biases as [1, N], and
    onnxruntime 1.32's quantizer, checking per channel that the int32 bias cannot
    overflow, indexes the bias by channel and fails on a 2-D one. Gemm broadcasts both
    shapes alike."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensors = {t.name: t for t in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    declared = {v.name for v in (*model.graph.input, *model.graph.value_info)}
    changed = False
    for node in model.graph.node:
        bias = (
            tensors.get(node.input[2]) if node.op_type == "Gemm" and len(node.input) > 2 else None
        )
        if bias is None or uses[bias.name] != 1 or bias.name in declared:
            continue
        if len(bias.dims) == 2 and bias.dims[0] == 1:
            bias.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), bias.name)
            )
            changed = True
    if changed:
        onnx.save(model, str(path))


def _reader(batches: list[Arrays]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types
        """The calibration batches, one per call, as onnxruntime's calibrator reads them."""

        def __init__(self) -> None:
            self._left = iter(batches)

        def get_next(self) -> Arrays | None:
            return next(self._left, None)

    return Batches()


def _require_quantizable(files: StepFiles, kind: str, handled: set[str]) -> None:
    """Refuse early a model with no operator the quantizer handles (the tool's own
    error for an ONNX-ML-only graph names a missing opset, not the reason)."""
    if not any(
        n.op_type in handled and n.domain in ("", "ai.onnx") for n in files.model.graph.node
    ):
        raise _nothing_to_quantize(files, kind, handled)


def _require_quantized(files: StepFiles, kind: str, handled: set[str]) -> None:
    """Refuse an output with no more 8-bit tensors than its source: nothing was quantized
    (a MatMul of two activations, say, has no weight to store in int8)."""
    import onnx

    def eight_bit(model: onnx.ModelProto) -> int:
        types = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        return sum(t.data_type in types for t in model.graph.initializer)

    if eight_bit(onnx.load(str(files.out), load_external_data=False)) <= eight_bit(files.model):
        raise _nothing_to_quantize(files, kind, handled)


def _nothing_to_quantize(files: StepFiles, kind: str, handled: set[str]) -> RuntimeFailure:
    return RuntimeFailure(
        f"{kind} int8 quantization found nothing to quantize in {quoted(files.source.name)}:"
        f" its operators are {op_names(files.model)}, and onnxruntime's {kind} quantizer"
        f" works on {', '.join(sorted(handled))}"
    )
