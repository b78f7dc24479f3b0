"""How a model does on the validation data, and how far a step moved its answers.

The judged output is the source's label output (integers, text or booleans, one per
row): classification, scored by accuracy. Failing that, a score of one value per row:
regression, scored by R². Failing that, a table of scores per row whose highest column
is the predicted class. Without a target, the source's own answers are the target: the
score is then agreement with the source (R² against it for a regressor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from servion.datatypes import NUMPY_OF
from servion.errors import RuntimeFailure, ValidationFailed, quoted
from servion.optimize.data import ValidationSet
from servion.runtime import Signature
from servion.types import Array, Arrays

Predict = Callable[[Arrays], Arrays]
Kind = Literal["label", "argmax", "value"]


@dataclass(frozen=True)
class Judged:
    """The output a model is scored on, and how."""

    output: str
    kind: Kind

    @property
    def metric(self) -> str:
        return "r2" if self.kind == "value" else "accuracy"

    def decisions(self, outputs: Arrays) -> Array:
        """The per-row answer: a label, a class index or a value."""
        found = outputs.get(self.output)
        if found is None:
            raise RuntimeFailure(f"the model gives no output {quoted(self.output)} to judge")
        value = np.asarray(found)
        if self.kind == "argmax":
            return np.asarray(value.reshape(len(value), -1).argmax(axis=1))
        if self.kind == "value":
            return value.reshape(len(value)).astype(np.float64)
        if value.dtype.kind in "US":
            # scikit-learn answers numpy text, onnxruntime bytes: one form to compare.
            return np.array([_text(v) for v in value.tolist()], dtype=object)
        return value


def judged_output(signature: Signature) -> Judged:
    """Which output of ``signature`` a model is scored on."""
    outputs = signature.outputs
    for spec in outputs:
        if len(spec.shape) == 1 and NUMPY_OF[spec.datatype].kind in "iubO":
            return Judged(spec.name, "label")
    for spec in outputs:
        if spec.shape[1:] in ((), (1,)) and NUMPY_OF[spec.datatype].kind == "f":
            return Judged(spec.name, "value")
    for spec in outputs:
        if len(spec.shape) == 2 and NUMPY_OF[spec.datatype].kind == "f":
            return Judged(spec.name, "argmax")
    raise ValidationFailed(
        "the model has no output to judge accuracy on (a label, one score per row,"
        " or a row of class scores)"
    )


def predict_all(predict: Predict, data: ValidationSet, feed: Callable[[Arrays], Arrays]) -> Arrays:
    """Every output for every validation row, predicted chunk by chunk."""
    chunks = [predict(feed(chunk)) for chunk in data.chunks()]
    return {n: np.concatenate([np.asarray(c[n]) for c in chunks]) for n in chunks[0]}


def expected_answers(data: ValidationSet, judged: Judged, source: Array) -> Array:
    """The target as the model's kind of answer, or (no target) the source's answers.
    Refused when its values cannot be the model's labels at all."""
    if data.target is None:
        return source
    name = quoted(data.target_name or "")
    target = np.asarray(data.target)
    if judged.kind == "value" or source.dtype.kind in "iub":
        target = _numbers(target, name, integral=judged.kind != "value")
        if judged.kind != "value":
            target = target.astype(source.dtype)
    elif source.dtype.kind == "O":
        target = np.array([_text(v) for v in target.tolist()], dtype=object)
    if judged.kind != "value" and not np.isin(target, source).any():
        raise ValidationFailed(
            f"target {name} holds values ({_some(target)}) none of which the model predicts"
            f" ({_some(source)}): is it the right column?"
        )
    return target


def _numbers(target: Array, name: str, integral: bool) -> Array:
    try:
        values = target.astype(np.float64)
    except (TypeError, ValueError):
        raise ValidationFailed(f"target {name} holds {_some(target)}: not numbers") from None
    if integral and not np.array_equal(values, np.round(values)):
        bad = values[values != np.round(values)][0]
        raise ValidationFailed(f"target {name} holds {bad:g}, not a class label")
    return values


def _text(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _some(values: Array) -> str:
    unique = list(dict.fromkeys(values.reshape(-1).tolist()))
    return ", ".join(repr(v) for v in unique[:3]) + (", ..." if len(unique) > 3 else "")


def score(judged: Judged, decisions: Array, expected: Array) -> float:
    """Accuracy (labels, class indexes) or R² (values) of ``decisions``."""
    if judged.kind != "value":
        return float(np.mean(decisions == expected))
    residual = float(np.sum((expected - decisions) ** 2))
    total = float(np.sum((expected - expected.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


@dataclass(frozen=True)
class Equivalence:
    """How far a model's answers moved from the model's before it, row by row."""

    max_score_diff: float | None
    """Largest difference of any shared float output (relative where the value exceeds
    1 in magnitude); None when no float output is shared."""
    worst_output: str | None
    label_agreement: float | None
    """Share of rows with the same label or class; None for a regressor."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_score_diff": self.max_score_diff,
            "worst_output": self.worst_output,
            "label_agreement": self.label_agreement,
        }


def equivalence(judged: Judged, before: Arrays, after: Arrays) -> Equivalence:
    worst: tuple[float, str] | None = None
    for name, old in before.items():
        new = after.get(name)
        if new is None or old.dtype.kind != "f" or new.dtype.kind != "f":
            continue
        if old.shape != new.shape:
            continue
        diff = _scaled_diff(old.astype(np.float64), new.astype(np.float64))
        if worst is None or diff > worst[0]:
            worst = (diff, name)
    agreement = None
    if judged.kind != "value":
        agreement = float(np.mean(judged.decisions(before) == judged.decisions(after)))
    return Equivalence(
        None if worst is None else worst[0], None if worst is None else worst[1], agreement
    )


def _scaled_diff(old: Array, new: Array) -> float:
    if old.size == 0:
        return 0.0
    both_nan = np.isnan(old) & np.isnan(new)
    diff = np.abs(old - new) / np.maximum(1.0, np.abs(old))
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    return float(diff.max())
