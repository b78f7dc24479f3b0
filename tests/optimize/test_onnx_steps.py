"""The ONNX-to-ONNX optimization steps on real models: a scikit-learn MLP converted by
skl2onnx and the shared tabular pipeline. Each step's output must load in onnxruntime
and in servion's ONNX runtime with the source's interface, agree with the source on
held-out rows, and leave the source untouched; bad arguments and models a tool cannot
handle get errors that say what is wrong.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import TabularModels
from servion.config import RuntimeSettings
from servion.errors import InvalidInput, RuntimeFailure
from servion.optimize.onnx_steps import check_same_interface, optimize_graph, tensorrt, to_fp16
from servion.optimize.quantize import (
    calibration_batches,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from servion.runtime import Signature, TensorSpec, make_runtime
from servion.types import Arrays

FEATURES = 64


@dataclass
class Mlp:
    """An MLP classifier in ONNX, rows to calibrate on, and held-out rows to compare on."""

    path: Path
    calibration: np.ndarray
    held_out: np.ndarray


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Mlp:
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = make_classification(
        n_samples=1600, n_features=FEATURES, n_informative=24, n_classes=4, class_sep=2.0,
        random_state=0,
    )  # fmt: skip
    x = x.astype(np.float32)
    # A model that barely learned puts many rows on a class boundary, where any rounding
    # flips the label; 30 iterations (0.3 s) give one that is right 96 % of the time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((256, 128), max_iter=30, random_state=0).fit(x[:1000], y[:1000])
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return Mlp(path, x[1000:1256], x[1256:])


def predict(path: Path, x: np.ndarray) -> Arrays:
    """Answers of a model file as servion serves it."""
    runtime = make_runtime("onnx", path, RuntimeSettings())
    runtime.load()
    try:
        return runtime.predict({"X": x})
    finally:
        runtime.unload()


def signature(path: Path) -> Signature:
    runtime = make_runtime("onnx", path, RuntimeSettings())
    runtime.load()
    return runtime.signature()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


Step = Callable[[Path, Path, Mlp], None]

STEPS: dict[str, tuple[Step, float]] = {
    # step, and the largest probability difference it may make on a held-out row
    "graph": (lambda s, t, m: optimize_graph(s, t), 1e-5),
    "dynamic-int8": (lambda s, t, m: quantize_dynamic_int8(s, t), 0.15),
    "static-int8": (lambda s, t, m: quantize_static_int8(s, t, {"X": m.calibration}), 0.15),
    "static-int8-per-tensor": (
        lambda s, t, m: quantize_static_int8(s, t, {"X": m.calibration}, per_channel=False),
        0.15,
    ),
    "fp16": (lambda s, t, m: to_fp16(s, t), 0.01),
}


@pytest.mark.parametrize("name", STEPS)
def test_a_step_keeps_the_interface_and_the_answers(mlp: Mlp, tmp_path: Path, name: str) -> None:
    step, tolerance = STEPS[name]
    before = digest(mlp.path)
    target = tmp_path / "out.onnx"
    step(mlp.path, target, mlp)

    assert digest(mlp.path) == before, "the source was modified"
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert signature(target) == signature(mlp.path)
    assert check_same_interface(mlp.path, target) == signature(mlp.path)
    expected, got = predict(mlp.path, mlp.held_out), predict(target, mlp.held_out)
    agreement = float(np.mean(expected["label"] == got["label"]))
    assert agreement >= 0.99, f"{name}: labels agree on {agreement:.1%} of held-out rows"
    difference = np.abs(expected["probabilities"] - got["probabilities"])
    assert difference.max() < tolerance and difference.mean() < 0.01, (
        difference.max(),
        difference.mean(),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"], "a temporary was left"


def test_graph_optimization_fuses_operators_portably(mlp: Mlp, tmp_path: Path) -> None:
    optimize_graph(mlp.path, tmp_path / "opt.onnx")
    ops = [(n.domain, n.op_type) for n in onnx.load(tmp_path / "opt.onnx").graph.node]
    assert ("com.microsoft", "FusedGemm") in ops  # Gemm + Relu, fused once and saved
    assert ("", "MatMul") not in ops
    # No layout transforms: those are tied to the CPU that made them.
    assert not any(domain == "com.microsoft.nchwc" for domain, _ in ops)


def test_dynamic_int8_shrinks_the_mlp(mlp: Mlp, tmp_path: Path) -> None:
    quantize_dynamic_int8(mlp.path, tmp_path / "int8.onnx")
    ratio = mlp.path.stat().st_size / (tmp_path / "int8.onnx").stat().st_size
    assert ratio > 3.4, f"only {ratio:.2f}x smaller"
    weights = [t for t in onnx.load(tmp_path / "int8.onnx").graph.initializer if t.dims]
    assert any(t.data_type == onnx.TensorProto.INT8 for t in weights)


def test_static_int8_is_qdq_with_int8_weights(mlp: Mlp, tmp_path: Path) -> None:
    quantize_static_int8(mlp.path, tmp_path / "int8.onnx", {"X": mlp.calibration})
    model = onnx.load(tmp_path / "int8.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Less than dynamic's: a scale per weight channel and per activation come along.
    assert mlp.path.stat().st_size / (tmp_path / "int8.onnx").stat().st_size > 3.0


def test_fp16_halves_the_weights_and_keeps_float32_io(mlp: Mlp, tmp_path: Path) -> None:
    to_fp16(mlp.path, tmp_path / "fp16.onnx")
    model = onnx.load(tmp_path / "fp16.onnx")
    matrices = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert matrices and all(t.data_type == onnx.TensorProto.FLOAT16 for t in matrices)
    ratio = (tmp_path / "fp16.onnx").stat().st_size / mlp.path.stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    assert signature(tmp_path / "fp16.onnx").inputs[0].datatype == "FP32"


def test_the_tabular_pipeline_optimizes_but_has_nothing_to_quantize(
    tabular: TabularModels, tmp_path: Path
) -> None:
    optimize_graph(tabular.onnx, tmp_path / "opt.onnx")
    x = tabular.x[:100]
    got = predict(tmp_path / "opt.onnx", x)
    assert np.array_equal(got["label"], tabular.pipeline.predict(x))  # type: ignore[attr-defined]

    with pytest.raises(RuntimeFailure, match=r"nothing to quantize .*LinearClassifier \(ai\.onnx"):
        quantize_dynamic_int8(tabular.onnx, tmp_path / "dyn.onnx")
    with pytest.raises(RuntimeFailure, match=r"nothing to quantize .*Scaler \(ai\.onnx\.ml\)"):
        quantize_static_int8(tabular.onnx, tmp_path / "st.onnx", {"X": x})
    with pytest.raises(RuntimeFailure, match=r"all float32.*LinearClassifier, Scaler"):
        to_fp16(tabular.onnx, tmp_path / "fp16.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.onnx"]


def test_a_changed_interface_is_named(mlp: Mlp, tabular: TabularModels) -> None:
    with pytest.raises(RuntimeFailure, match=r"input 'X' shape \[-1, 64\] became \[-1, 32\]"):
        check_same_interface(mlp.path, tabular.onnx)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("missing.onnx", "out.onnx", "no model file at '.*missing.onnx'"),
        ("model.joblib", "out.onnx", "'model.joblib' is not an ONNX model"),
        ("text.onnx", "out.onnx", "'text.onnx' is not an ONNX model"),
        ("mlp.onnx", "mlp.onnx", "is the source; a step never overwrites it"),
        ("mlp.onnx", "no/such/folder/out.onnx", "no folder '.*no/such/folder'"),
        ("mlp.onnx", ".", "is a folder"),
    ],
    ids=["missing", "joblib", "text", "onto-source", "no-folder", "folder"],
)
@pytest.mark.parametrize("step", ["graph", "dynamic-int8", "fp16"])
def test_bad_paths_are_invalid_input(
    mlp: Mlp, tabular: TabularModels, tmp_path: Path, step: str, source: str, target: str,
    message: str,
) -> None:  # fmt: skip
    (tmp_path / "mlp.onnx").write_bytes(mlp.path.read_bytes())
    (tmp_path / "model.joblib").write_bytes(tabular.joblib.read_bytes())
    (tmp_path / "text.onnx").write_text("ir_version: 8\nthis is not a protobuf\n")
    with pytest.raises(InvalidInput, match=message):
        STEPS[step][0](tmp_path / source, tmp_path / target, mlp)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({}, "the calibration data is empty"),
        ({"x": np.zeros((8, FEATURES))}, "no rows for input 'X' \\(the model's inputs: 'X'\\)"),
        (
            {"X": np.zeros((8, FEATURES)), "extra": np.zeros((8, 1))},
            "names 'extra', which is not an input",
        ),
        ({"X": np.zeros((8, 3))}, r"input 'X' has shape \[8, 3\]; the model takes \[-1, 64\]"),
        ({"X": np.zeros((0, FEATURES))}, "the calibration data has no rows"),
        ({"X": np.full((8, FEATURES), np.nan)}, "'X' holds NaN or infinite values"),
        ({"X": np.full((8, FEATURES), "a")}, "'X' holds <U1 values"),
    ],
    ids=["empty", "missing-input", "extra-input", "wrong-width", "no-rows", "nan", "text"],
)
def test_bad_calibration_is_invalid_input(
    mlp: Mlp, tmp_path: Path, calibration: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        quantize_static_int8(mlp.path, tmp_path / "out.onnx", calibration)
    assert list(tmp_path.iterdir()) == []


def test_calibration_rows_are_cast_and_batched() -> None:
    batched = Signature((TensorSpec("X", "FP32", (-1, 2)),), (TensorSpec("y", "INT64", (-1,)),))
    batches = calibration_batches(batched, {"X": np.zeros((150, 2))}, batch=64)
    assert [b["X"].shape for b in batches] == [(64, 2), (64, 2), (22, 2)]
    assert batches[0]["X"].dtype == np.float32
    # A model exported for batches of 4 gets whole batches of 4; the remainder is dropped.
    fixed = Signature((TensorSpec("X", "FP32", (4, 2)),), (TensorSpec("y", "INT64", (4,)),), False)
    assert [len(b["X"]) for b in calibration_batches(fixed, {"X": np.zeros((10, 2))})] == [4, 4]
    with pytest.raises(InvalidInput, match="has 3 rows; the model takes batches of 4"):
        calibration_batches(fixed, {"X": np.zeros((3, 2))})


@pytest.mark.skipif(
    "TensorrtExecutionProvider" in ort.get_available_providers(), reason="TensorRT is here"
)
def test_tensorrt_without_a_gpu_says_what_it_needs(mlp: Mlp, tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure) as raised:
        tensorrt(mlp.path, tmp_path / "trt.onnx")
    message = str(raised.value)
    assert message.startswith(
        "TensorRT needs an NVIDIA GPU and onnxruntime-gpu with TensorRT; this machine has"
    )
    assert f"onnxruntime {ort.__version__}" in message and "CPUExecutionProvider" in message
    assert list(tmp_path.iterdir()) == []
