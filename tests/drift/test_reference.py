"""Reference files (.npz, .csv, .parquet) fitted to a signature, and refused when they do
not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servion.drift.reference import load_labelled, load_reference, profile_from_file
from servion.errors import ValidationFailed
from servion.runtime import Signature, TensorSpec
from servion.types import Arrays

SIGNATURE = Signature((TensorSpec("X", "FP32", (-1, 3)),), (TensorSpec("label", "INT64", (-1,)),))
DATA = np.arange(12, dtype=np.float32).reshape(4, 3)


def test_npz_csv_and_parquet_give_the_same_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "ref.npz", X=DATA)
    named = "X[0],X[1],X[2]\n" + "\n".join(",".join(str(v) for v in row) for row in DATA)
    (tmp_path / "named.csv").write_text(named)
    anonymous = "a,b,c\n" + "\n".join(",".join(str(v) for v in row) for row in DATA)
    (tmp_path / "anonymous.csv").write_text(anonymous)
    table = pa.table({f"X[{j}]": DATA[:, j] for j in range(3)})
    pq.write_table(table, tmp_path / "ref.parquet")
    for name in ("ref.npz", "named.csv", "anonymous.csv", "ref.parquet"):
        got = load_reference(tmp_path / name, SIGNATURE)
        assert got["X"].dtype == np.float32
        np.testing.assert_array_equal(got["X"], DATA)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("wide.csv", "a,b\n1,2\n", "no columns X[0]..X[2]"),
        ("text.csv", "a,b,c\n1,2,x\n", "is not FP32"),
        ("ref.json", "{}", "use .npz, .csv or .parquet"),
    ],
)
def test_a_file_that_does_not_fit_is_refused(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ValidationFailed, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_reference(tmp_path / name, SIGNATURE)


def test_npz_with_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "ref.npz", X=np.zeros((4, 5), np.float32))
    with pytest.raises(ValidationFailed, match="has shape"):
        load_reference(tmp_path / "ref.npz", SIGNATURE)


def test_the_profile_holds_inputs_and_the_outputs_the_model_gave(tmp_path: Path) -> None:
    np.savez(tmp_path / "ref.npz", X=DATA)

    def predict(inputs: Arrays) -> Arrays:
        return {"label": (inputs["X"][:, 0] > 4).astype(np.int64)}

    profile = profile_from_file(tmp_path / "ref.npz", SIGNATURE, predict)
    assert sorted(profile["inputs"]) == ["X[0]", "X[1]", "X[2]"]
    assert profile["outputs"]["label"]["frequencies"] == {"0": 0.5, "1": 0.5}
    assert profile["inputs"]["X[1]"]["min"] == 1.0 and profile["rows"] == 4


def test_a_target_column_is_taken_apart_from_the_inputs(tmp_path: Path) -> None:
    labels = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "val.npz", X=DATA, y=labels)
    rows = "\n".join(
        ",".join([*map(str, row), str(t)]) for row, t in zip(DATA, labels, strict=True)
    )
    (tmp_path / "val.csv").write_text("a,b,c,y\n" + rows)
    table = pa.table({**{f"X[{j}]": DATA[:, j] for j in range(3)}, "y": labels})
    pq.write_table(table, tmp_path / "val.parquet")
    for name in ("val.npz", "val.csv", "val.parquet"):
        inputs, target = load_labelled(tmp_path / name, SIGNATURE, "y", "validation")
        np.testing.assert_array_equal(inputs["X"], DATA)
        assert target is not None and target.astype(int).tolist() == [0, 1, 1, 0], name
    with pytest.raises(ValidationFailed, match=r"validation file 'val\.csv' has no 'label'"):
        load_labelled(tmp_path / "val.csv", SIGNATURE, "label", "validation")
    np.savez(tmp_path / "short.npz", X=DATA, y=labels[:3])
    with pytest.raises(ValidationFailed, match="'y' has 3 values for 4 rows"):
        load_labelled(tmp_path / "short.npz", SIGNATURE, "y", "validation")
    with pytest.raises(ValidationFailed, match=r"validation file 'val\.csv' is a folder"):
        (tmp_path / "dir").mkdir()
        (tmp_path / "dir" / "val.csv").mkdir()
        load_labelled(tmp_path / "dir" / "val.csv", SIGNATURE, "y", "validation")
