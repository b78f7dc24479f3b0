"""The data plane on a real server: every path into a model counts the same in
statistics, a version any endpoint names cannot be deleted, and a runtime is
released only after the executions that hold it have ended."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from model_sources import DOUBLER_MODEL, UNSURE_MODEL

from conftest import RunningServer, TabularModels, cli, register, start_server
from servion.config import Settings
from servion.deploy import Deployments, parse_spec
from servion.registry import ModelRegistry

LIFETIME_MODEL = """
import os
import time

import numpy as np

MARKS = {marks!r}


def mark(name):
    with open(os.path.join(MARKS, name), "w") as fh:
        fh.write(repr(time.time()))


class Lifetime:
    inputs = [{{"name": "X", "datatype": "FP32", "shape": [-1, 32]}}]
    outputs = [{{"name": "label", "datatype": "INT64", "shape": [-1]}}]

    def load(self):
        pass

    def predict(self, inputs):
        if inputs["X"][0, 0] == np.float32(0.75):  # the tests' requests, not warm-ups
            mark("predict_start")
            time.sleep(0.8)
            mark("predict_end")
        return {{"label": np.zeros(len(inputs["X"]), np.int64)}}

    def unload(self):
        mark("unload")
"""

DOUBLER = {"model": "doubler", "version": "v1.0.0"}
STEP = {"model": "step-m", "version": "v1.0.0"}
PATH_MODELS = ("rest-m", "grpc-m", "v1-m", "stage-m", "step-m", "verify-m", "shadow-m")


def write_model(tmp: Path, name: str, source: str) -> Path:
    path = tmp / f"{name}.py"
    path.write_text(source)
    return path


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("plane")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    for name in (*PATH_MODELS, "arm-m"):
        register(registry, name, tabular.onnx)
    register(registry, "unsure", write_model(tmp, "unsure", UNSURE_MODEL), trust_code=True)
    register(registry, "doubler", write_model(tmp, "doubler", DOUBLER_MODEL), trust_code=True)
    for name in ("lifetime", "lifeshadow"):
        marks = tmp / f"marks-{name}"
        marks.mkdir()
        source = LIFETIME_MODEL.format(marks=str(marks))
        register(registry, name, write_model(tmp, name, source), trust_code=True)
        registry.set_batching(name, {"execution": "thread", "dynamic": False})
    # Loaded only as an endpoint's shadow: retired when the endpoint stops naming it.
    registry.set_loaded("lifeshadow", False)
    registry.close()
    srv = start_server(settings.home, tmp, "--workers", "1")
    yield srv, tmp
    srv.stop()


def deploy(server: RunningServer, doc: dict[str, Any]) -> None:
    reply = httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(doc), timeout=60)
    assert reply.status_code == 200, reply.text


def counts(server: RunningServer) -> dict[str, tuple[int, int]]:
    stats = httpx.get(f"{server.url}/v2/models/stats", timeout=30).json()["model_stats"]
    return {s["name"]: (s["inference_count"], s["execution_count"]) for s in stats}


def rows(n: int, value: float = 0.5) -> list[float]:
    return [value] * (32 * n)


def test_every_path_counts_the_same(
    server: tuple[RunningServer, Path], tabular: TabularModels
) -> None:
    srv, _ = server
    before = counts(srv)
    # Warm-ups and registration probes are not inferences.
    assert all(before[m] == (0, 0) for m in PATH_MODELS), before
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": rows(1)}]}
    assert httpx.post(f"{srv.url}/v2/models/rest-m/infer", json=body).status_code == 200
    tensor = tg.InferInput("X", [3, 32], "FP32")
    tensor.set_data_from_numpy(np.full((3, 32), 0.5, np.float32))
    with tg.InferenceServerClient(srv.grpc_url) as client:
        client.infer("grpc-m", [tensor])
    v1 = httpx.post(f"{srv.url}/v1/models/v1-m:predict", json={"instances": [[0.5] * 32] * 2})
    assert v1.status_code == 200, v1.text
    deploy(
        srv,
        {
            "endpoint": "stage-ep",
            "models": [{"model": "unsure", "version": "v1.0.0"}],
            "cascade": {
                "output": "probabilities",
                "min_confidence": 0.9,
                "then": [{"model": "stage-m", "version": "v1.0.0"}],
            },
        },
    )
    x = np.ascontiguousarray(tabular.x[:10])
    unsure = int((x[:, 0] <= 0).sum())
    cascade = {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [10, 32], "data": x.ravel().tolist()}]
    }
    assert httpx.post(f"{srv.url}/v2/models/stage-ep/infer", json=cascade).status_code == 200
    deploy(
        srv,
        {
            "endpoint": "step-ep",
            "ensemble": {
                "steps": [
                    {
                        "name": "a",
                        "model": "doubler",
                        "version": "v1.0.0",
                        "inputs": {"A": "$request.r"},
                    },
                    {
                        "name": "b",
                        "model": "step-m",
                        "version": "v1.0.0",
                        "inputs": {"X": "a.twice"},
                    },
                ],
                "outputs": {"label": "b.label"},
            },
        },
    )
    graph = {"inputs": [{"name": "r", "datatype": "FP32", "shape": [4, 32], "data": rows(4)}]}
    assert httpx.post(f"{srv.url}/v2/models/step-ep/infer", json=graph).status_code == 200
    deploy(srv, {"endpoint": "verify-ep", "models": [{"model": "verify-m", "version": "v1.0.0"}]})
    verified = httpx.post(f"{srv.url}/v2/admin/endpoints/verify-ep/verify", timeout=30)
    assert verified.json()["ok"] is True, verified.text
    deploy(
        srv,
        {
            "endpoint": "shadow-ep",
            "models": [{"model": "arm-m", "version": "v1.0.0"}],
            "shadows": [{"model": "shadow-m", "version": "v1.0.0"}],
        },
    )
    assert httpx.post(f"{srv.url}/v2/models/shadow-ep/infer", json=body).status_code == 200
    deadline = time.monotonic() + 20
    while counts(srv)["shadow-m"] != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.05)  # the shadow copy runs after the answer
    after = counts(srv)
    assert after["rest-m"] == (1, 1)
    assert after["grpc-m"] == (3, 1)
    assert after["v1-m"] == (2, 1)
    assert after["unsure"] == (10, 1) and after["stage-m"] == (unsure, 1)
    assert after["doubler"] == (4, 1) and after["step-m"] == (4, 1)
    assert after["verify-m"] == (1, 1)
    assert after["arm-m"] == (1, 1) and after["shadow-m"] == (1, 1)


def slow_request(srv: RunningServer, url: str, replies: list[int]) -> threading.Thread:
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": rows(1, 0.75)}]}

    def call() -> None:
        replies.append(httpx.post(f"{srv.url}{url}", json=body, timeout=30).status_code)

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def wait_for_file(path: Path, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never written"
        time.sleep(0.02)
    time.sleep(0.02)  # written and closed
    return float(path.read_text())


def test_an_unload_waits_for_the_running_batch(server: tuple[RunningServer, Path]) -> None:
    srv, tmp = server
    marks = tmp / "marks-lifetime"
    for stale in marks.iterdir():  # the registration probe loaded and unloaded it once
        stale.unlink()
    replies: list[int] = []
    caller = slow_request(srv, "/v2/models/lifetime/infer", replies)
    wait_for_file(marks / "predict_start")
    unloaded = httpx.post(f"{srv.url}/v2/repository/models/lifetime/unload", timeout=30)
    assert unloaded.status_code == 200, unloaded.text
    caller.join(30)
    assert replies == [200]  # the request in the model's thread finished normally
    released = wait_for_file(marks / "unload")
    assert released >= float((marks / "predict_end").read_text())
    gone = httpx.post(f"{srv.url}/v2/models/lifetime/infer", json={"inputs": []})
    assert gone.status_code == 503 and "unloaded" in gone.json()["error"]
    assert httpx.get(f"{srv.url}/v2/health/ready").status_code == 200


def test_a_deploy_keeps_a_running_shadow_until_it_ends(server: tuple[RunningServer, Path]) -> None:
    srv, tmp = server
    marks = tmp / "marks-lifeshadow"
    for stale in marks.iterdir():
        stale.unlink()
    arm = [{"model": "arm-m", "version": "v1.0.0"}]
    shadow = [{"model": "lifeshadow", "version": "v1.0.0"}]
    deploy(srv, {"endpoint": "life-ep", "models": arm, "shadows": shadow})
    replies: list[int] = []
    slow_request(srv, "/v2/models/life-ep/infer", replies).join(30)
    assert replies == [200]
    wait_for_file(marks / "predict_start")  # the copy runs in the shadow's thread
    deploy(srv, {"endpoint": "life-ep", "models": arm})  # no shadow any more
    released = wait_for_file(marks / "unload")
    assert released >= float((marks / "predict_end").read_text())
    report = httpx.get(f"{srv.url}/v2/admin/endpoints/life-ep/report").json()
    assert report["shadows"] == []  # the new revision has none; the copy still completed


def test_delete_refuses_every_kind_of_reference(tmp_path: Path, tabular: TabularModels) -> None:
    settings = Settings.load(home=tmp_path / "home")
    registry = ModelRegistry(settings)
    for name in ("arm-m", "shadow-m", "stage-m", "fallback-m", "step-m", "old-m", "free-m"):
        register(registry, name, tabular.onnx)
    register(registry, "unsure", write_model(tmp_path, "unsure", UNSURE_MODEL), trust_code=True)
    deployments = Deployments(registry)
    spec: dict[str, Any] = {
        "endpoint": "everything",
        "models": [{"model": "old-m", "version": "v1.0.0"}],
    }
    deployments.deploy(parse_spec(json.dumps(spec)), "test")
    spec.update(
        models=[{"model": "unsure", "version": "v1.0.0"}],
        shadows=[{"model": "shadow-m", "version": "v1.0.0"}],
        cascade={
            "output": "probabilities",
            "min_confidence": 0.9,
            "then": [{"model": "stage-m", "version": "v1.0.0"}],
        },
        fallback={"model": "fallback-m", "version": "v1.0.0"},
    )
    deployments.deploy(parse_spec(json.dumps(spec)), "test")
    graph = {
        "endpoint": "graph",
        "ensemble": {
            "steps": [
                {"name": "s", "model": "step-m", "version": "v1.0.0", "inputs": {"X": "$request.X"}}
            ],
            "outputs": {"label": "s.label"},
        },
    }
    deployments.deploy(parse_spec(json.dumps(graph)), "test")
    registry.close()
    refused = {
        "unsure": "as models (revision 2)",
        "shadow-m": "as shadows",
        "stage-m": "as cascade.then",
        "fallback-m": "as fallback",
        "step-m": "as ensemble.steps",
        "old-m": "as models (revision 1)",  # the rollback standby
    }
    for name, words in refused.items():
        result = cli(settings.home, "models", "delete", f"{name}:v1.0.0")
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert words in result.stderr, (name, result.stderr)
    assert cli(settings.home, "models", "delete", "free-m:v1.0.0").returncode == 0
    left = ModelRegistry(settings)
    try:
        assert {mv.name for mv in left.list_versions()} == set(refused) | {"arm-m"}
    finally:
        left.close()
