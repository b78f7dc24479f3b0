"""The distillation steps: a registered model of any format teaches a small scikit-learn
student (``servion.optimize.distill``), which is written as ONNX with the teacher's input
and outputs, so clients do not change."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from servion.errors import InvalidInput, quoted
from servion.optimize.convert import estimator_to_onnx
from servion.optimize.distill import distill
from servion.optimize.steps import StepInput
from servion.runtime import Runtime, Signature, make_runtime

LABEL = "label"
"""The output a classifier gives its decisions in (scikit-learn's and skl2onnx's name)."""


def distill_step(kind: str) -> Callable[[StepInput], tuple[str, ...]]:
    """The step that distills into a ``kind`` student; it says how faithful the student is."""

    def run(step: StepInput) -> tuple[str, ...]:
        name, output, classifier = _roles(step.signature)
        teacher = make_runtime(step.format, step.source, step.runtime)
        teacher.load()
        try:
            done = distill(
                _answers(teacher, name, output, step.signature),
                np.asarray(step.rows[name]),
                kind,
                classifier=classifier,
            )
        finally:
            teacher.unload()
        estimator_to_onnx(done.student, step.signature, step.target)
        measure = "label agreement" if classifier else "R²"
        return (
            f"student {kind}: {measure} with the teacher {done.fidelity:.4f} on"
            f" {done.held_out_rows} held-out rows; trained on {done.transfer_rows} rows"
            " the teacher labelled (the given rows and noisy copies)",
        )

    return run


def _roles(signature: Signature) -> tuple[str, str, bool]:
    """The input rows come in by, the output the student learns, and whether it is a label."""
    if len(signature.inputs) != 1 or len(signature.inputs[0].shape) != 2:
        raise InvalidInput(
            "distillation takes a model with one input of rows of features (2-D);"
            f" this one takes {', '.join(s.describe() for s in signature.inputs)}"
        )
    names = [s.name for s in signature.outputs]
    if LABEL in names:
        return signature.inputs[0].name, LABEL, True
    first = signature.outputs[0]
    if first.datatype not in ("FP16", "FP32", "FP64") or len(first.shape) > 2:
        raise InvalidInput(
            f"distillation learns a label output or one value per row; output"
            f" {quoted(first.name)} is {first.describe()}"
        )
    return signature.inputs[0].name, first.name, False


def _answers(
    teacher: Runtime, name: str, output: str, signature: Signature
) -> Callable[[np.ndarray], np.ndarray]:
    dtype = np.float64 if signature.inputs[0].datatype == "FP64" else np.float32

    def answer(rows: np.ndarray) -> np.ndarray:
        found = np.asarray(teacher.predict({name: rows.astype(dtype)}, [output])[output])
        return found.reshape(len(rows)) if found.ndim > 1 and found.shape[1] == 1 else found

    return answer
