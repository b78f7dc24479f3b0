"""scikit-learn (and XGBoost, LightGBM) models converted to ONNX keep what clients send
and get back: the converted model's signature is the source's, and so are its answers;
a part no converter knows is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest

from conftest import TabularModels
from servion.config import RuntimeSettings
from servion.errors import InvalidInput
from servion.optimize.convert import sklearn_to_onnx
from servion.optimize.steps import StepInput
from servion.runtime import Runtime, make_runtime


def convert(
    tmp_path: Path, model: Any, settings: RuntimeSettings | None = None
) -> tuple[Runtime, Runtime]:
    """The source and converted runtimes, loaded."""
    settings = settings or RuntimeSettings()
    source_path = tmp_path / "model.joblib"
    if not source_path.exists():
        joblib.dump(model, source_path)
    source = make_runtime("sklearn-joblib", source_path, settings)
    source.load()
    target = tmp_path / "model.onnx"
    step = StepInput(source_path, target, "sklearn-joblib", source.signature(), settings, {}, {})
    sklearn_to_onnx(step)
    converted = make_runtime("onnx", target, settings)
    converted.load()
    return source, converted


def test_a_pipeline_converts_with_the_sources_signature_and_answers(
    tmp_path: Path, tabular: TabularModels
) -> None:
    (tmp_path / "model.joblib").write_bytes(tabular.joblib.read_bytes())
    source, converted = convert(tmp_path, None)
    assert converted.signature() == source.signature()  # input name, FP64 probabilities
    assert [t.name for t in converted.signature().inputs] == ["input"]
    domains = [o.domain for o in onnx.load(tmp_path / "model.onnx").opset_import]
    assert sorted(domains) == sorted(set(domains))  # quantizers want one entry each
    before = source.predict({"input": tabular.x})
    after = converted.predict({"input": tabular.x})
    np.testing.assert_array_equal(after["label"], before["label"])
    assert after["probabilities"].dtype == np.float64
    np.testing.assert_allclose(after["probabilities"], before["probabilities"], atol=1e-5)


def test_a_regressor_gives_one_fp64_value_per_row_as_its_source(tmp_path: Path) -> None:
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge

    x, y = make_regression(n_samples=200, n_features=6, random_state=0)
    x = x.astype(np.float32)
    source, converted = convert(tmp_path, Ridge().fit(x, y))
    assert converted.signature() == source.signature()
    assert [(t.name, t.datatype, t.shape) for t in converted.signature().outputs] == [
        ("prediction", "FP64", (-1,))
    ]
    after = converted.predict({"input": x})["prediction"]
    np.testing.assert_allclose(after, source.predict({"input": x})["prediction"], rtol=1e-4)


def test_text_labels_stay_text(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    labels = np.where(x[:, 0] > 0, "cat", "dog")
    source, converted = convert(tmp_path, LogisticRegression().fit(x, labels))
    assert converted.signature() == source.signature()
    assert converted.predict({"input": x})["label"].tolist() == [
        s.encode() for s in source.predict({"input": x})["label"].tolist()
    ]


def test_a_part_without_a_converter_is_named(tmp_path: Path, tabular: TabularModels) -> None:
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = (tabular.x[:, 0] > 0).astype(int)
    model = make_pipeline(StandardScaler(), Nystroem(n_components=10), LogisticRegression())
    with pytest.raises(InvalidInput) as refused:
        convert(tmp_path, model.fit(tabular.x, y))
    assert refused.value.message.startswith(
        "cannot convert pipeline step 'nystroem' (sklearn.kernel_approximation."
    )
    assert "skl2onnx has no converter for it" in refused.value.message
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize(
    ("package", "model", "trusted"),
    [
        ("xgboost", "XGBClassifier", ("xgboost.sklearn.XGBClassifier", "xgboost.core.Booster")),
        ("xgboost", "XGBRegressor", ("xgboost.sklearn.XGBRegressor", "xgboost.core.Booster")),
        (
            "lightgbm",
            "LGBMClassifier",
            ("lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster"),
        ),
        ("lightgbm", "LGBMRegressor", ("lightgbm.sklearn.LGBMRegressor", "lightgbm.basic.Booster")),
    ],
)
def test_boosters_convert_through_onnxmltools(
    tmp_path: Path, tabular: TabularModels, package: str, model: str, trusted: tuple[str, ...]
) -> None:
    module = pytest.importorskip(package)
    pytest.importorskip("onnxmltools")
    y = (tabular.x[:, 0] + tabular.x[:, 1] > 0).astype(int)
    params = {"verbose": -1} if package == "lightgbm" else {}
    fitted = getattr(module, model)(n_estimators=20, max_depth=3, **params).fit(tabular.x, y)
    source, converted = convert(tmp_path, fitted, RuntimeSettings(trusted_globals=trusted))
    assert converted.signature() == source.signature()
    before = source.predict({"input": tabular.x})
    after = converted.predict({"input": tabular.x})
    for name, value in before.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(after[name], value, atol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(after[name], value, err_msg=name)
