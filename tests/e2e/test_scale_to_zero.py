"""Scale to zero (``servion serve --scale-to-zero-after S``) on a real server: a model left
idle is unloaded while an endpoint's version stays loaded; asleep, it still says it is
ready and what it takes; a burst of REST and gRPC requests wakes it with one load, every
request answered as the model answers, the wake counted; and the memory a model held is given
back when it sleeps (a bad idle time is refused with the cache's bad sizes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as tg
from model_sources import write_matmul_onnx
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, TabularModels, register, start_server, wait_until
from servion.config import Settings
from servion.deploy import Deployments, parse_spec
from servion.registry import ModelRegistry

ASLEEP = "scaled to zero: loads on its next request"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("scale-to-zero")
    home = tmp / "home"
    registry = ModelRegistry(Settings.load(home=home))
    register(registry, "sleepy", tabular.onnx)
    register(registry, "kept", tabular.onnx)
    spec = {"endpoint": "kept-ep", "models": [{"model": "kept", "version": "v1.0.0"}]}
    Deployments(registry).deploy(parse_spec(json.dumps(spec)), "test")
    registry.close()
    running = start_server(home, tmp, "--workers", "1", "--scale-to-zero-after", "1")
    yield running
    running.stop()


def _index(server: RunningServer) -> dict[str, dict[str, Any]]:
    found = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
    return {entry["name"]: entry for entry in found}


def _body(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}  # fmt: skip


def test_an_idle_model_sleeps_and_one_load_wakes_it_for_a_burst(
    server: RunningServer, tabular: TabularModels
) -> None:
    x = tabular.x[:4].astype(np.float32)
    first = httpx.post(f"{server.url}/v2/models/sleepy/infer", json=_body(x))
    assert first.status_code == 200, first.text
    expected = first.json()["outputs"]

    wait_until(lambda: _index(server)["sleepy"]["reason"] == ASLEEP, 60, "sleepy to sleep")
    index = _index(server)
    assert index["sleepy"]["state"] == "READY"
    assert (index["kept"]["state"], index["kept"]["reason"]) == ("READY", "")  # an endpoint's
    assert "model_unloaded" in server.log()
    # Asleep, it is ready (it answers, after its load) and says what it takes.
    assert httpx.get(f"{server.url}/v2/models/sleepy/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server.url}/v2/models/sleepy").json()
    assert meta["inputs"][0]["name"] == "X" and meta["versions"] == ["v1.0.0"]
    assert server.log().count('"model_woken"') == 0

    answers: list[Any] = []
    errors: list[BaseException] = []

    def rest() -> None:
        try:
            answers.append(httpx.post(f"{server.url}/v2/models/sleepy/infer", json=_body(x)))
        except BaseException as exc:  # reported below, with the rest
            errors.append(exc)

    def grpc() -> None:
        try:
            inp = tg.InferInput("X", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            answers.append(tg.InferenceServerClient(server.grpc_url).infer("sleepy", [inp]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rest) for _ in range(8)]
    threads += [threading.Thread(target=grpc) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors
    assert len(answers) == 12
    for answer in answers:
        if isinstance(answer, httpx.Response):
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"] == expected
        else:
            np.testing.assert_array_equal(answer.as_numpy("label"), expected[0]["data"])
    assert server.log().count('"model_woken"') == 1  # the burst shared one load
    assert _index(server)["sleepy"]["reason"] == ""
    missing = httpx.post(f"{server.url}/v2/models/nosuch/infer", json=_body(x))
    assert missing.status_code == 404  # nothing to wake: the usual answer
    # The wake and the time requests waited for it, as counters.
    wait_until(lambda: _metric(server, "servion_model_wakes_total") == 1, 30, "the wake counted")
    assert 0 < _metric(server, "servion_model_wake_seconds_total") < 30


def _metric(server: RunningServer, name: str) -> float:
    reply = httpx.get(f"{server.url}/metrics")
    assert reply.status_code == 200, reply.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("model") == "sleepy"
    )


def test_scaling_to_zero_gives_the_memory_back(tmp_path: Path) -> None:
    """A 32 MiB model: the worker's resident memory falls by most of it once it sleeps."""
    weights = np.random.default_rng(0).standard_normal((2048, 4096)).astype(np.float32)
    path = write_matmul_onnx(tmp_path / "wide.onnx", weights)
    home = tmp_path / "home"
    registry = ModelRegistry(Settings.load(home=home))
    register(registry, "wide", path)
    registry.close()
    server = start_server(home, tmp_path, "--workers", "1", "--scale-to-zero-after", "1")
    try:
        children = psutil.Process(server.proc.pid).children()
        (worker,) = [c for c in children if "servion.server.worker" in " ".join(c.cmdline())]
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2048],
                            "data": [0.5] * 2048}]}  # fmt: skip
        wait_until(lambda: _index(server)["wide"]["reason"] == ASLEEP, 60, "wide to sleep")
        reply = httpx.post(f"{server.url}/v2/models/wide/infer", json=body)
        assert reply.status_code == 200, reply.text
        loaded = worker.memory_info().rss
        wait_until(lambda: _index(server)["wide"]["reason"] == ASLEEP, 60, "wide to sleep again")
        wait_until(
            lambda: worker.memory_info().rss < loaded - 24 * 2**20, 30, "the memory given back"
        )
    finally:
        server.stop()
