"""Distillation: a smaller student trained to answer as a teacher model does.

The student learns the teacher's answers, not the data's labels: what the teacher says is
what the student must repeat, and the teacher can label as many rows as are wanted. So the
transfer set is the given rows plus ``augment`` noisy copies of each (Gaussian noise of
``noise`` times each feature's standard deviation), all labelled by the teacher. A
classifier student learns the teacher's labels (scikit-learn's students cannot learn soft
targets); a regression student learns its values.

Students are scikit-learn estimators that convert to ONNX: a small MLP (``mlp``) or
histogram gradient-boosted trees (``trees``, for tabular teachers). Fidelity is measured
on a held-out quarter of the given rows, which the student never saw: label agreement for
a classifier, R² against the teacher's values for a regressor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from servion.errors import InvalidInput

STUDENTS: Final = ("mlp", "trees")
MIN_ROWS: Final = 50
"""Fewer rows than this teach a student nothing reliable, and hold out too few to judge it."""

Teacher = Callable[[np.ndarray], np.ndarray]
"""Rows (2-D) in, the teacher's answer per row out: labels, or values for a regressor."""


@dataclass(frozen=True, slots=True)
class Distilled:
    """A trained student and how faithfully it answers as its teacher."""

    student: Any
    """The fitted scikit-learn estimator."""
    kind: str
    classifier: bool
    fidelity: float
    """Held-out label agreement (classifier) or R² against the teacher (regressor)."""
    transfer_rows: int
    held_out_rows: int


def distill(
    teacher: Teacher,
    x: np.ndarray,
    kind: str = "mlp",
    *,
    classifier: bool,
    augment: int = 4,
    noise: float = 0.1,
    hidden: tuple[int, ...] = (64,),
    seed: int = 0,
) -> Distilled:
    """Train a ``kind`` student on what ``teacher`` answers for ``x`` (see the module)."""
    rows = _checked(x, kind, augment, noise, hidden)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    held = rows[order[: len(rows) // 4]]
    taught = rows[order[len(rows) // 4 :]]
    transfer = _augmented(taught, augment, noise, rng)
    answers = np.asarray(teacher(transfer))
    if len(answers) != len(transfer):
        raise InvalidInput(f"the teacher answered {len(answers)} rows for {len(transfer)}")
    if classifier and len(np.unique(answers)) < 2:
        raise InvalidInput("the teacher gives one label for every row: nothing to distill")
    student = _student(kind, classifier, hidden, seed)
    student.fit(transfer, answers.ravel() if answers.ndim > 1 else answers)
    fidelity = _fidelity(student, teacher, held, classifier)
    return Distilled(student, kind, classifier, fidelity, len(transfer), len(held))


def _checked(
    x: np.ndarray, kind: str, augment: int, noise: float, hidden: tuple[int, ...]
) -> np.ndarray:
    if kind not in STUDENTS:
        raise InvalidInput(f"unknown student {kind!r}: use one of {', '.join(STUDENTS)}")
    rows = np.asarray(x)
    if rows.ndim != 2 or rows.dtype.kind not in "fiu":
        raise InvalidInput(
            f"distillation takes rows of numbers (a 2-D numeric tensor), got {rows.dtype}"
            f" of shape {list(rows.shape)}"
        )
    if len(rows) < MIN_ROWS:
        raise InvalidInput(f"distillation needs at least {MIN_ROWS} rows, got {len(rows)}")
    if not np.isfinite(rows).all():
        raise InvalidInput("the rows hold NaN or infinite values")
    if augment < 0 or noise < 0:
        raise InvalidInput("augment and noise cannot be negative")
    if not hidden or any(h < 1 for h in hidden):
        raise InvalidInput(f"hidden layer sizes must be positive, got {list(hidden)}")
    return rows.astype(np.float32)


def _augmented(rows: np.ndarray, copies: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``rows`` and ``copies`` noisy copies of them: the teacher labels any row, so the
    student sees more of the space around the data than the data alone."""
    if copies == 0 or noise == 0:
        return rows
    scale = rows.std(axis=0) * noise
    jitter = [rows + rng.normal(size=rows.shape).astype(np.float32) * scale for _ in range(copies)]
    return np.concatenate([rows, *jitter]).astype(np.float32)


def _student(kind: str, classifier: bool, hidden: tuple[int, ...], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "trees":
        trees = HistGradientBoostingClassifier if classifier else HistGradientBoostingRegressor
        return trees(max_iter=100, random_state=seed)
    mlp = MLPClassifier if classifier else MLPRegressor
    # Scaled inputs: an MLP learns badly from features of very different ranges.
    return make_pipeline(
        StandardScaler(),
        mlp(hidden_layer_sizes=hidden, max_iter=300, early_stopping=True, random_state=seed),
    )


def _fidelity(student: Any, teacher: Teacher, held: np.ndarray, classifier: bool) -> float:
    said = np.asarray(teacher(held)).ravel()
    guessed = np.asarray(student.predict(held)).ravel()
    if classifier:
        return float(np.mean(said == guessed))
    spread = float(np.sum((said - said.mean()) ** 2))
    if spread == 0:
        return 1.0 if np.allclose(said, guessed) else 0.0
    return 1.0 - float(np.sum((said - guessed) ** 2)) / spread
