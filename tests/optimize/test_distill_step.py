"""``servion optimize --steps distill-mlp|distill-trees``: a registered random forest
teaches a small student, registered as ONNX with the forest's input and outputs, far
smaller, within the accuracy gate, and its fidelity to the teacher in the report."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest

from conftest import cli


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    tmp = tmp_path_factory.mktemp("distill")
    x, y = make_classification(n_samples=1200, n_features=12, n_informative=6, random_state=0)
    x = x.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=150, random_state=0).fit(x[:600], y[:600])
    joblib.dump(forest, tmp / "forest.joblib")
    np.savez(tmp / "val.npz", input=x[600:], y=y[600:])
    registered = cli(tmp / "home", "register", "forest", str(tmp / "forest.joblib"),
                     "--version", "v1.0.0")  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    return tmp / "home", tmp / "val.npz"


@pytest.mark.parametrize(("kind", "version"), [("mlp", "v1.1.0"), ("trees", "v1.2.0")])
def test_a_forest_teaches_a_small_student(home: tuple[Path, Path], kind: str, version: str) -> None:
    registry, data = home
    done = cli(
        registry, "optimize", "forest:v1.0.0", "--to-version", version,
        "--steps", f"distill-{kind}", "--validate", str(data), "--target", "y",
        "--max-accuracy-drop", "0.05", "--measure-seconds", "0.1",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(cli(registry, "models", "show", f"forest:{version}", "--json").stdout)
    source = json.loads(cli(registry, "models", "show", "forest:v1.0.0", "--json").stdout)
    assert shown["format"] == "onnx"
    assert shown["size_bytes"] * 5 < source["size_bytes"]
    assert [o["name"] for o in shown["signature"]["outputs"]] == ["label", "probabilities"]
    lineage = shown["lineage"]
    assert lineage["derived_from"] == "forest:v1.0.0"
    (stage,) = [s for s in lineage["report"]["stages"] if s["step"] == f"distill-{kind}"]
    (note,) = [n for n in stage["notes"] if n.startswith(f"student {kind}")]
    fidelity = float(note.split("teacher ")[1].split(" ")[0])
    assert fidelity >= 0.8, note


def test_distill_names_its_students(home: tuple[Path, Path]) -> None:
    registry, data = home
    done = cli(registry, "optimize", "forest:v1.0.0", "--to-version", "v1.3.0",
               "--steps", "distill", "--validate", str(data))  # fmt: skip
    assert done.returncode == 2
    assert "name the student: distill-mlp or distill-trees" in done.stderr
