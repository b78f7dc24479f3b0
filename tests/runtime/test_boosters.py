"""XGBoost and LightGBM runtimes: models trained here by the real frameworks, saved in
their own formats, served with the answers of the frameworks' scikit-learn API."""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification

from servion.config import RuntimeSettings
from servion.errors import InvalidInput, RuntimeFailure, UnsafeArtifact, ValidationFailed
from servion.runtime import Runtime, detect_format, make_runtime

N_FEATURES = 6
# One thread: on small data, the frameworks' thread pools cost more than the training.
SMALL: dict[str, Any] = {"n_estimators": 15, "max_depth": 3, "n_jobs": 1}


@dataclass(frozen=True)
class Trained:
    """A model file and the scikit-learn-API estimator that wrote it."""

    path: Path
    estimator: Any
    outputs: tuple[str, ...]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=300, n_features=N_FEATURES, n_informative=4, n_classes=3, random_state=0
    )
    x = x.astype(np.float32)
    x[::7, 1] = np.nan  # missing values: boosters take NaN as "unknown", so must the runtime
    return x, y


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, data: tuple[np.ndarray, np.ndarray]
) -> dict[str, Trained]:
    root = tmp_path_factory.mktemp("boosters")
    x, y = data
    binary, target = (y == 0).astype(int), x[:, 0] * 2.0 + y
    classes, regression = ("label", "probabilities"), ("prediction",)
    fitted: dict[str, tuple[str, Any, tuple[str, ...]]] = {
        "xgb-binary-json": ("json", xgb.XGBClassifier(**SMALL).fit(x, binary), classes),
        "xgb-multi-softmax": (
            "json",
            xgb.XGBClassifier(objective="multi:softmax", **SMALL).fit(x, y),
            classes,
        ),
        "xgb-regression": ("ubj", xgb.XGBRegressor(**SMALL).fit(x, target), regression),
        "xgb-gblinear": (
            "ubj",
            xgb.XGBRegressor(booster="gblinear", n_estimators=15, n_jobs=1).fit(x, target),
            regression,
        ),
        "xgb-early-stopped": (
            "ubj",
            xgb.XGBClassifier(n_estimators=60, early_stopping_rounds=2, max_depth=3, n_jobs=1).fit(
                x[:200], y[:200], eval_set=[(x[200:], y[200:])], verbose=False
            ),
            classes,
        ),
        "lgb-binary": ("txt", lgb.LGBMClassifier(verbose=-1, **SMALL).fit(x, binary), classes),
        "lgb-multiclass": ("txt", lgb.LGBMClassifier(verbose=-1, **SMALL).fit(x, y), classes),
        "lgb-ova": (
            "lgb",
            lgb.LGBMClassifier(objective="ova", verbose=-1, **SMALL).fit(x, y),
            classes,
        ),
        "lgb-regression": (
            "txt",
            lgb.LGBMRegressor(verbose=-1, **SMALL).fit(x, target),
            regression,
        ),
    }
    fitted["xgb-binary-ubj"] = ("ubj", fitted["xgb-binary-json"][1], classes)
    fitted["xgb-multi-softprob"] = ("ubj", xgb.XGBClassifier(**SMALL).fit(x, y), classes)
    trained = {}
    for name, (ext, estimator, outputs) in fitted.items():
        path = root / f"{name}.{ext}"
        if name.startswith("xgb"):
            estimator.save_model(path)
        else:
            estimator.booster_.save_model(path)
        trained[name] = Trained(path, estimator, outputs)
    return trained


def loaded(path: Path, fmt: str | None = None) -> Runtime:
    runtime = make_runtime(fmt or detect_format(path), path, RuntimeSettings())
    runtime.load()
    return runtime


@pytest.mark.parametrize(
    "name",
    [
        "xgb-binary-json",
        "xgb-binary-ubj",
        "xgb-multi-softprob",
        "xgb-multi-softmax",
        "xgb-regression",
        "xgb-gblinear",
        "xgb-early-stopped",
        "lgb-binary",
        "lgb-multiclass",
        "lgb-ova",
        "lgb-regression",
    ],
)
def test_predictions_match_the_framework(
    models: dict[str, Trained], data: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    trained, x = models[name], data[0][:50]
    runtime = loaded(trained.path)
    signature = runtime.signature()
    assert runtime.format == ("xgboost" if name.startswith("xgb") else "lightgbm")
    assert [t.to_dict() for t in signature.inputs] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}
    ]
    assert tuple(t.name for t in signature.outputs) == trained.outputs
    got = runtime.predict({"input": x})
    if "label" in trained.outputs:
        np.testing.assert_array_equal(got["label"], trained.estimator.predict(x))
        assert got["label"].dtype == np.int64
        expected = trained.estimator.predict_proba(x)
        assert signature.outputs[1].shape == (-1, expected.shape[1])
        np.testing.assert_allclose(got["probabilities"], expected, rtol=0, atol=1e-6)
    else:
        assert signature.outputs[0].shape == (-1,) and got["prediction"].dtype == np.float64
        np.testing.assert_allclose(
            got["prediction"], trained.estimator.predict(x), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("name", ["xgb-binary-ubj", "xgb-multi-softmax", "lgb-multiclass"])
def test_only_the_requested_outputs_are_given(
    models: dict[str, Trained], data: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    runtime, x = loaded(models[name].path), data[0][:5]
    assert set(runtime.predict({"input": x}, ["label"])) == {"label"}
    assert set(runtime.predict({"input": x}, ["probabilities"])) == {"probabilities"}
    assert runtime.predict({"input": x[:0]})["probabilities"].shape[0] == 0


@pytest.mark.parametrize("name", ["xgb-binary-ubj", "lgb-regression"])
def test_a_wrong_width_is_the_callers_error(models: dict[str, Trained], name: str) -> None:
    runtime = loaded(models[name].path)
    with pytest.raises(InvalidInput, match=r"shape \[2, 4\].*takes \[rows, 6\]"):
        runtime.predict({"input": np.zeros((2, 4), np.float32)})


def test_binary_hinge_gives_labels_only(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = data
    model = xgb.XGBClassifier(objective="binary:hinge", **SMALL).fit(x, (y == 1).astype(int))
    model.save_model(tmp_path / "hinge.ubj")
    runtime = loaded(tmp_path / "hinge.ubj")
    assert [t.name for t in runtime.signature().outputs] == ["label"]
    np.testing.assert_array_equal(runtime.predict({"input": x})["label"], model.predict(x))


def test_multi_label_classifiers_are_refused(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = data
    labels = np.stack([y == 0, y == 1], axis=1).astype(int)
    xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(x, labels).save_model(
        tmp_path / "multilabel.json"
    )
    with pytest.raises(RuntimeFailure, match="'binary:logistic' over 2 targets"):
        loaded(tmp_path / "multilabel.json")


def test_lightgbm_objective_aliases_are_read_by_their_own_name(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = data
    params = {"objective": "softmax", "num_class": 3, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=5)
    booster.save_model(tmp_path / "alias.txt")
    runtime = loaded(tmp_path / "alias.txt")
    got = runtime.predict({"input": x[:20]})
    np.testing.assert_allclose(got["probabilities"], booster.predict(x[:20]), atol=1e-12)


def test_garbage_is_refused_with_the_reason(tmp_path: Path, models: dict[str, Trained]) -> None:
    (tmp_path / "noise.ubj").write_bytes(b"{" + bytes(range(256)) * 4)
    with pytest.raises(RuntimeFailure, match="XGBoost could not load the model: "):
        loaded(tmp_path / "noise.ubj")
    cut = models["xgb-binary-json"].path.read_bytes()[:500]
    (tmp_path / "cut.json").write_bytes(cut)
    with pytest.raises(
        RuntimeFailure, match=r"XGBoost could not load the model: .*character position"
    ):
        loaded(tmp_path / "cut.json")
    (tmp_path / "noise.lgb").write_bytes(b"not a model\n")
    with pytest.raises(RuntimeFailure, match="not a LightGBM text model"):
        loaded(tmp_path / "noise.lgb")
    text = models["lgb-binary"].path.read_text()
    # LightGBM itself aborts the process on trees cut short: the runtime refuses them first.
    for end, reason in ((200, "has no trees"), (len(text) // 2, "not where its header says")):
        (tmp_path / "cut.lgb").write_text(text[:end])
        with pytest.raises(RuntimeFailure, match=reason):
            loaded(tmp_path / "cut.lgb")
    (tmp_path / "wide.lgb").write_text(text.replace("max_feature_idx=5", "max_feature_idx=9"))
    with pytest.raises(RuntimeFailure, match="LightGBM could not load the model: Wrong size"):
        loaded(tmp_path / "wide.lgb")


def test_deprecated_binary_is_refused_with_how_to_resave(tmp_path: Path) -> None:
    old = tmp_path / "old.xgb"
    old.write_bytes(b"binf" + bytes(64))
    with pytest.raises(ValidationFailed, match=r"deprecated binary.*save_model\('model.ubj'\)"):
        detect_format(old)
    with pytest.raises(RuntimeFailure, match=r"deprecated binary.*save_model\('model.ubj'\)"):
        loaded(old, "xgboost")


def test_pickles_are_refused_before_any_library_reads_them(
    tmp_path: Path, models: dict[str, Trained]
) -> None:
    for name, ext, fmt in (
        ("xgb-binary-json", "json", "xgboost"),
        ("lgb-binary", "txt", "lightgbm"),
    ):
        path = tmp_path / f"pickled.{ext}"
        path.write_bytes(pickle.dumps(models[name].estimator))
        with pytest.raises(
            UnsafeArtifact, match=r"'pickled.* is a pickle: servion never unpickles"
        ):
            detect_format(path)
        with pytest.raises(UnsafeArtifact, match="is a pickle"):
            loaded(path, fmt)


def test_formats_are_told_by_content_where_extensions_are_shared(
    tmp_path: Path, models: dict[str, Trained]
) -> None:
    (tmp_path / "config.json").write_text('{"threshold": 0.5}')
    with pytest.raises(ValidationFailed, match=r"unknown model format for 'config\.json'"):
        detect_format(tmp_path / "config.json")
    (tmp_path / "notes.txt").write_text("tree\nnot a model\n")
    with pytest.raises(ValidationFailed, match=r"unknown model format for 'notes\.txt'"):
        detect_format(tmp_path / "notes.txt")
    # XGBoost writes UBJSON under extensions it does not know: .xgb is read by content.
    ubj_as_xgb = tmp_path / "model.xgb"
    ubj_as_xgb.write_bytes(models["xgb-binary-ubj"].path.read_bytes())
    assert detect_format(ubj_as_xgb) == "xgboost"
    assert detect_format(models["xgb-binary-ubj"].path) == "xgboost"
    assert detect_format(models["lgb-ova"].path) == "lightgbm"


def test_a_missing_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Trained]
) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(RuntimeFailure, match=r"pip install 'servion\[lightgbm\]'"):
        loaded(models["lgb-binary"].path)
