"""A client's bad input is the client's error, and a model's failure says nothing of the
model's internals: the caller gets a request id, the log gets the story, statistics count
each failure, and breakers and canary gates only hear of the arm's own failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from model_sources import SLOW_MODEL
from tritonclient.utils import InferenceServerException

from conftest import RunningServer, TabularModels, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

LEAKY_MODEL = """
import numpy as np


class Leaky:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]

    def load(self):
        pass

    def predict(self, inputs):
        x = inputs["X"]
        if x[0, 0] == np.float32(0.25):
            raise RuntimeError("secret internal detail: /home/alice/model/weights.bin missing")
        if x[0, 0] == np.float32(0.75):
            return {"label": np.zeros(len(x) + 1, np.int64)}  # one row too many
        return {"label": np.zeros(len(x), np.int64)}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("failures")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    register(registry, "tabsk", tabular.joblib)
    register(registry, "tabular", tabular.onnx)
    leaky = tmp / "leaky.py"
    leaky.write_text(LEAKY_MODEL)
    register(registry, "leaky", leaky, trust_code=True)
    slow = tmp / "slowish.py"
    slow.write_text(SLOW_MODEL)  # 0.4 s a call, batching left at its default (auto)
    register(registry, "slowish", slow, trust_code=True)
    registry.close()
    srv = start_server(settings.home, tmp, "--workers", "1")
    yield srv
    srv.stop()


def binary_infer(server: RunningServer, model: str, name: str, x: np.ndarray) -> Any:
    """Infer with the binary tensor extension (JSON cannot carry NaN)."""
    client = th.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = th.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return client.infer(model, [tensor])


def stats(server: RunningServer, model: str) -> dict[str, Any]:
    doc = httpx.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
    result: dict[str, Any] = doc["inference_stats"]
    return result


def rows(value: float, n: int = 1) -> dict[str, Any]:
    return {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [n, 32], "data": [value] * 32 * n}]
    }


def test_non_finite_inputs_are_the_callers_error(server: RunningServer) -> None:
    x = np.full((2, 32), 0.5, np.float32)
    x[1, 3] = np.nan
    with pytest.raises(InferenceServerException) as info:
        binary_infer(server, "tabsk", "input", x)
    assert info.value.status() == "400"
    assert "input 'input' holds NaN or infinite values" in info.value.message()
    x[1, 3] = np.inf
    with pytest.raises(InferenceServerException, match="NaN or infinite"):
        binary_infer(server, "tabsk", "input", x)
    # ONNX models keep their own semantics for NaN: answered.
    assert binary_infer(server, "tabular", "X", np.full((1, 32), np.nan, np.float32))
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_bad_input_never_trips_the_breaker_or_the_fallback(server: RunningServer) -> None:
    spec = {
        "endpoint": "guarded",
        "models": [{"model": "tabsk", "version": "v1.0.0"}],
        "circuit_breaker": {"error_rate": 0.5, "min_requests": 2, "window_s": 60, "open_s": 60},
        "fallback": {
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [9]},
                {"name": "probabilities", "datatype": "FP64", "shape": [1, 2], "data": [0, 1]},
            ]
        },
    }
    deployed = httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(spec))
    assert deployed.status_code == 200, deployed.text
    x = np.full((1, 32), np.nan, np.float32)
    for _ in range(5):
        with pytest.raises(InferenceServerException) as info:
            binary_infer(server, "guarded", "input", x)
        assert info.value.status() == "400"
    fine = binary_infer(server, "guarded", "input", np.full((1, 32), 0.5, np.float32))
    assert fine.get_response().get("parameters") is None  # the arm answered, not the fallback
    report = httpx.get(f"{server.url}/v2/admin/endpoints/guarded/report").json()
    assert report["arms"][0]["requests"] == 6 and report["arms"][0]["errors"] == 0
    assert report["breakers"]["tabsk:v1.0.0"]["state"] == "closed"
    assert report["fallbacks"] == {}


def test_a_models_words_stay_in_the_log(server: RunningServer) -> None:
    before = stats(server, "leaky")["fail"]["count"]
    ids = []
    for _ in range(2):
        reply = httpx.post(f"{server.url}/v2/models/leaky/infer", json=rows(0.25))
        assert reply.status_code == 500
        error = reply.json()["error"]
        assert "secret" not in error and "/home/alice" not in error
        # The id the caller hears is the request's own, as its X-Request-Id says.
        request_id = reply.headers["x-request-id"]
        assert error == f"model 'leaky:v1.0.0' failed (request id {request_id})"
        ids.append(request_id)
    assert stats(server, "leaky")["fail"]["count"] == before + 2
    log = server.log()
    for request_id in ids:
        line = next(line for line in log.splitlines() if request_id in line)
        assert "model_failed" in line and "secret internal detail" in line


def test_grpc_hears_the_request_id_of_its_call(server: RunningServer) -> None:
    tensor = tg.InferInput("X", [1, 32], "FP32")
    tensor.set_data_from_numpy(np.full((1, 32), 0.25, np.float32))
    with (
        tg.InferenceServerClient(server.grpc_url) as client,
        pytest.raises(InferenceServerException) as info,
    ):
        client.infer("leaky", [tensor], headers={"x-request-id": "grpc-call-9"})
    assert info.value.message() == "model 'leaky:v1.0.0' failed (request id grpc-call-9)"
    line = next(line for line in server.log().splitlines() if "grpc-call-9" in line)
    assert "model_failed" in line and "secret internal detail" in line


def test_an_answer_of_the_wrong_size_is_a_failure(server: RunningServer) -> None:
    reply = httpx.post(
        f"{server.url}/v2/models/leaky/infer",
        json=rows(0.75, 3),
        headers={"X-Request-Id": "order-7:retry.2"},
    )
    assert reply.status_code == 500
    assert reply.json()["error"].endswith("(request id order-7:retry.2)")
    line = next(line for line in server.log().splitlines() if "order-7:retry.2" in line)
    assert "output 'label' has shape [4] for 3 input rows" in line
    assert httpx.post(f"{server.url}/v2/models/leaky/infer", json=rows(0.5, 3)).status_code == 200


def test_a_slow_model_does_not_hold_up_another(server: RunningServer) -> None:
    """A user's model runs in its own thread by default: the worker's loop stays free."""
    slow_done: list[float] = []

    def call_slow() -> None:
        started = time.perf_counter()
        reply = httpx.post(f"{server.url}/v2/models/slowish/infer", json=rows(0.5), timeout=30)
        assert reply.status_code == 200
        slow_done.append(time.perf_counter() - started)

    for _ in range(2):  # the first call of a model and a later one alike
        caller = threading.Thread(target=call_slow)
        caller.start()
        time.sleep(0.1)  # the slow call is running
        started = time.perf_counter()
        fast = httpx.post(f"{server.url}/v2/models/tabular/infer", json=rows(0.5), timeout=30)
        waited = time.perf_counter() - started
        caller.join(30)
        assert fast.status_code == 200 and waited < 0.2, waited
    assert len(slow_done) == 2 and min(slow_done) >= 0.4
