"""XGBoost and LightGBM boosters register from their own formats, probed like any model,
and a pickle under their extensions is refused before anything reads it."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.datasets import make_classification

from servion.errors import UnsafeArtifact
from servion.registry import ModelRegistry, RegisterRequest


def test_a_booster_registers_with_its_signature_and_format(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    # One registration here (each probe is a child process with the library to import);
    # the end-to-end test registers an XGBoost model through the CLI.
    x, y = make_classification(
        n_samples=200, n_features=5, n_informative=3, n_classes=3, random_state=0
    )
    x = x.astype(np.float32)
    model = lgb.LGBMClassifier(n_estimators=10, n_jobs=1, verbose=-1).fit(x, y)
    model.booster_.save_model(tmp_path / "churn.txt")

    mv = registry.register(RegisterRequest("churn", tmp_path / "churn.txt", "v1.0.0"))
    assert mv.format == "lightgbm"
    assert mv.signature.to_dict() == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 5]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
        "batched": True,
    }
    assert mv.environment["packages"]["lightgbm"] == lgb.__version__
    runtime = registry.open_runtime(mv)
    np.testing.assert_array_equal(runtime.predict({"input": x})["label"], model.predict(x))


def test_a_pickle_named_like_a_booster_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(pickle.dumps({"learner": "not really"}))
    with pytest.raises(UnsafeArtifact, match=r"'model\.json' is a pickle"):
        registry.register(RegisterRequest("pickled", path, "v1.0.0"))
    # A named format skips detection; the file is still refused before the probe reads it.
    renamed = path.rename(tmp_path / "model.bin")
    for fmt in ("xgboost", "lightgbm"):
        with pytest.raises(UnsafeArtifact, match="is a pickle: servion never unpickles"):
            registry.register(RegisterRequest("pickled", renamed, "v1.0.0", format=fmt))
    assert registry.list_versions() == []
