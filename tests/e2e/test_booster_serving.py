"""An XGBoost model registered with ``servion register`` from its UBJSON file and served
by a real server: its answers over HTTP are the framework's, missing values included."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as tc
import xgboost as xgb
from sklearn.datasets import make_classification

from conftest import RunningServer, cli, start_server

N_FEATURES = 6


@pytest.fixture(scope="module")
def fraud(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, xgb.XGBClassifier, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("boosters")
    x, y = make_classification(n_samples=300, n_features=N_FEATURES, random_state=0)
    x = x.astype(np.float32)
    x[::5, 2] = np.nan
    model = xgb.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=1).fit(x, y)
    model.save_model(tmp / "model.ubj")
    home = tmp / "home"
    done = cli(home, "register", "fraud", str(tmp / "model.ubj"), "--version", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert "registered fraud:v1.0.0 (xgboost," in done.stdout
    server = start_server(home, tmp, "--workers", "1")
    try:
        yield server, model, x
    finally:
        server.stop()


def test_metadata_names_the_platform_and_signature(
    fraud: tuple[RunningServer, xgb.XGBClassifier, np.ndarray],
) -> None:
    server = fraud[0]
    meta = httpx.get(f"{server.url}/v2/models/fraud").json()
    assert meta["platform"] == "xgboost"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("label", "INT64"),
        ("probabilities", "FP64"),
    ]


def test_inference_over_http_matches_the_framework(
    fraud: tuple[RunningServer, xgb.XGBClassifier, np.ndarray],
) -> None:
    server, model, x = fraud
    rows = x[:10]  # rows 0 and 5 miss a value: binary tensors carry the NaN
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    inp = tc.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=True)
    wanted = [tc.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
    result = client.infer("fraud", [inp], outputs=wanted)
    np.testing.assert_array_equal(result.as_numpy("label"), model.predict(rows))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), model.predict_proba(rows), rtol=0, atol=1e-6
    )

    tensor = {
        "name": "input",
        "shape": [2, N_FEATURES],
        "datatype": "FP32",
        "data": x[1:3].tolist(),
    }
    body = {"inputs": [tensor], "outputs": [{"name": "label"}]}
    reply = httpx.post(f"{server.url}/v2/models/fraud/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert [o["name"] for o in reply.json()["outputs"]] == ["label"]
    assert reply.json()["outputs"][0]["data"] == model.predict(x[1:3]).tolist()

    wide = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert httpx.post(f"{server.url}/v2/models/fraud/infer", json=wide).status_code == 400
