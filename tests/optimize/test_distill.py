"""Distillation with real teachers: a random forest's labels and a boosted regressor's
values are learnt by small students that answer as the teacher does on rows they never
saw, are far smaller, and convert to ONNX answering as they do."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from servion.errors import InvalidInput
from servion.optimize.distill import MIN_ROWS, distill


@pytest.fixture(scope="module")
def forest() -> tuple[object, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=1200, n_features=12, n_informative=6, random_state=0)
    teacher = RandomForestClassifier(n_estimators=200, random_state=0).fit(x, y)
    return teacher, x.astype(np.float32)


@pytest.mark.parametrize("kind", ["mlp", "trees"])
def test_a_student_answers_as_its_teacher_and_is_smaller(
    forest: tuple[object, np.ndarray], kind: str
) -> None:
    teacher, x = forest
    done = distill(teacher.predict, x, kind, classifier=True, augment=2)  # type: ignore[attr-defined]
    assert done.fidelity >= 0.85, done.fidelity
    assert done.held_out_rows == len(x) // 4
    assert done.transfer_rows == 3 * (len(x) - len(x) // 4)
    assert len(pickle.dumps(done.student)) * 5 < len(pickle.dumps(teacher))


def test_rows_the_teacher_labels_beyond_the_data_teach_more(
    forest: tuple[object, np.ndarray],
) -> None:
    teacher, x = forest
    alone = distill(teacher.predict, x, "mlp", classifier=True, augment=0)  # type: ignore[attr-defined]
    helped = distill(teacher.predict, x, "mlp", classifier=True, augment=4)  # type: ignore[attr-defined]
    assert helped.fidelity > alone.fidelity + 0.03, (alone.fidelity, helped.fidelity)


def test_a_student_converts_to_onnx_answering_as_itself(
    forest: tuple[object, np.ndarray],
) -> None:
    import onnxruntime as ort
    from skl2onnx import to_onnx

    teacher, x = forest
    done = distill(teacher.predict, x, "mlp", classifier=True, augment=1)  # type: ignore[attr-defined]
    model = to_onnx(done.student, x[:1], options={"zipmap": False})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.mean(labels == done.student.predict(x)) >= 0.999


def test_a_regressor_teacher_is_learnt_by_value() -> None:
    from sklearn.datasets import make_regression
    from sklearn.ensemble import GradientBoostingRegressor

    x, y = make_regression(n_samples=800, n_features=8, noise=1.0, random_state=1)
    teacher = GradientBoostingRegressor(random_state=0).fit(x, y)
    done = distill(teacher.predict, x.astype(np.float32), "trees", classifier=False)
    assert not done.classifier
    assert done.fidelity >= 0.8, done.fidelity


@pytest.mark.parametrize(
    ("x", "kind", "message"),
    [
        (
            np.zeros((100, 3), np.float32),
            "forest",
            "unknown student 'forest': use one of mlp, trees",
        ),
        (np.zeros((MIN_ROWS - 1, 3), np.float32), "mlp", f"at least {MIN_ROWS} rows, got 49"),
        (np.zeros(100, np.float32), "mlp", "2-D numeric tensor"),
        (np.array([["a"]] * 100), "mlp", "2-D numeric tensor"),
        (np.full((100, 3), np.nan, np.float32), "mlp", "NaN or infinite"),
    ],
)
def test_bad_rows_and_students_are_refused(x: np.ndarray, kind: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        distill(lambda rows: np.zeros(len(rows)), x, kind, classifier=True)


def test_a_teacher_with_one_label_has_nothing_to_teach() -> None:
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    with pytest.raises(InvalidInput, match="one label for every row"):
        distill(lambda rows: np.zeros(len(rows)), x, "mlp", classifier=True)
