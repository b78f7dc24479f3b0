"""A real server, real clients: tritonclient (JSON and binary), raw HTTP, KServe V1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as tc

from conftest import RunningServer, TabularModels, register, served
from servion.registry import ModelRegistry


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("rest")

    def setup(registry: ModelRegistry) -> None:
        register(registry, "tabular", tabular.onnx)
        register(registry, "tabsk", tabular.joblib)
        register(registry, "tabsk", tabular.skops, "v1.1.0")

    with served(tmp, setup) as srv:
        yield srv


def client(server: RunningServer) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(f"127.0.0.1:{server.port}")


def test_tritonclient_reads_health_and_metadata(server: RunningServer) -> None:
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    meta = c.get_server_metadata()
    assert meta["name"] == "servion"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])
    model = c.get_model_metadata("tabular")
    assert model["versions"] == ["v1.0.0"]
    assert model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    assert {o["name"] for o in model["outputs"]} == {"label", "probabilities"}
    assert c.is_model_ready("tabular") and c.is_model_ready("tabular", "v1.0.0")
    assert c.get_model_metadata("tabsk", "v1.1.0")["platform"] == "sklearn"


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_inference_matches_the_framework(
    server: RunningServer, tabular: TabularModels, binary: bool
) -> None:
    c = client(server)
    x = tabular.x[:5]
    expected_label = tabular.pipeline.predict(x)  # type: ignore[attr-defined]
    expected_proba = tabular.pipeline.predict_proba(x)  # type: ignore[attr-defined]
    for model, name in (("tabular", "X"), ("tabsk", "input")):
        inp = tc.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            tc.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")
        ]
        result = c.infer(model, [inp], outputs=outputs, request_id="req-7")
        assert result.get_response()["id"] == "req-7"
        np.testing.assert_array_equal(result.as_numpy("label"), expected_label)
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected_proba, rtol=1e-5, atol=1e-6
        )


def test_versions_are_pinned_by_path_and_latest_by_default(
    server: RunningServer, tabular: TabularModels
) -> None:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 32], "datatype": "FP32", "data": tabular.x[0].tolist()}
        ]
    }
    latest = httpx.post(f"{server.url}/v2/models/tabsk/infer", json=body).json()
    assert latest["model_version"] == "v1.1.0"
    # latest:1 is the default policy, so v1.0.0 is registered but not served
    old = httpx.post(f"{server.url}/v2/models/tabsk/versions/v1.0.0/infer", json=body)
    assert old.status_code == 404
    assert "not served" in old.json()["error"]


def test_outputs_subset_and_nested_data(server: RunningServer, tabular: TabularModels) -> None:
    body = {
        "id": "n1",
        "inputs": [
            {"name": "X", "shape": [2, 32], "datatype": "FP32", "data": tabular.x[:2].tolist()}
        ],
        "outputs": [{"name": "label"}],
    }
    reply = httpx.post(f"{server.url}/v2/models/tabular/infer", json=body)
    assert reply.status_code == 200, reply.text
    payload = reply.json()
    assert payload["id"] == "n1" and payload["model_name"] == "tabular"
    assert [o["name"] for o in payload["outputs"]] == ["label"]
    assert payload["outputs"][0]["data"] == tabular.pipeline.predict(tabular.x[:2]).tolist()  # type: ignore[attr-defined]


def test_kserve_v1_predict(server: RunningServer, tabular: TabularModels) -> None:
    reply = httpx.post(
        f"{server.url}/v1/models/tabular:predict", json={"instances": tabular.x[:3].tolist()}
    )
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    labels = [p["label"] for p in predictions]
    assert labels == tabular.pipeline.predict(tabular.x[:3]).tolist()  # type: ignore[attr-defined]
    assert httpx.get(f"{server.url}/v1/models").json() == {"models": ["tabsk", "tabular"]}
    assert httpx.get(f"{server.url}/v1/models/tabular").json() == {"name": "tabular", "ready": True}


def test_statistics_count_inferences(server: RunningServer, tabular: TabularModels) -> None:
    c = client(server)
    inp = tc.InferInput("X", [4, 32], "FP32")
    inp.set_data_from_numpy(tabular.x[:4])
    before = c.get_inference_statistics("tabular", "v1.0.0")["model_stats"][0]
    for _ in range(3):
        c.infer("tabular", [inp])
    stats = c.get_inference_statistics("tabular")["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert entry["inference_count"] - before["inference_count"] == 12
    assert entry["execution_count"] - before["execution_count"] == 3
    success = entry["inference_stats"]["success"]["count"]
    assert success - before["inference_stats"]["success"]["count"] == 3
    assert 4 in {b["batch_size"] for b in entry["batch_stats"]}
    everything = httpx.get(f"{server.url}/v2/models/stats").json()["model_stats"]
    assert {(e["name"], e["version"]) for e in everything} >= {("tabular", "v1.0.0")}


def test_repository_index_unload_and_load(server: RunningServer, tabular: TabularModels) -> None:
    c = client(server)
    index = {(m["name"], m["version"]): m["state"] for m in c.get_model_repository_index()}
    assert index[("tabular", "v1.0.0")] == "READY"
    assert index[("tabsk", "v1.0.0")] == "UNAVAILABLE"
    c.unload_model("tabular")
    assert not c.is_model_ready("tabular")
    reply = httpx.post(f"{server.url}/v2/models/tabular/infer", json={"inputs": []})
    assert reply.status_code == 503 and "unloaded" in reply.json()["error"]
    c.load_model("tabular")
    inp = tc.InferInput("X", [1, 32], "FP32")
    inp.set_data_from_numpy(tabular.x[:1])
    assert c.infer("tabular", [inp]).as_numpy("label") is not None
    missing = httpx.post(f"{server.url}/v2/repository/models/nosuchmodel/load")
    assert missing.status_code == 404


def test_model_config_extension(server: RunningServer) -> None:
    config = client(server).get_model_config("tabular")
    assert config["max_batch_size"] == 128 and config["format"] == "onnx"
