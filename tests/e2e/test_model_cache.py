"""The model cache (``servion serve --model-memory SIZE``) on a real server: versions load on
their first request (saying what they take before that, from the registry); loading one
past the budget unloads the least recently used first, each counted at the memory it
measured when it loaded; every request is answered; a bad size (or idle time) is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from model_sources import write_matmul_onnx

from conftest import RunningServer, cli, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

MODELS = 6
PARKED = "not loaded yet: loads on its first request"
EVICTED = "evicted from the model cache: loads on its next request"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Six 8 MiB ONNX models (each measures 15-30 MiB loaded) and a 64 MiB budget."""
    tmp = tmp_path_factory.mktemp("model-cache")
    home = tmp / "home"
    registry = ModelRegistry(Settings.load(home=home))
    for i in range(MODELS):
        weights = np.full((1024, 2048), i + 1, np.float32)
        path = write_matmul_onnx(tmp / f"m{i}.onnx", weights)
        register(registry, f"cached-{i}", path)
    registry.close()
    running = start_server(home, tmp, "--workers", "1", "--model-memory", "64MiB")
    yield running
    running.stop()


def _reasons(server: RunningServer) -> dict[str, str]:
    found = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
    return {entry["name"]: entry["reason"] for entry in found}


def test_models_load_on_demand_and_the_least_recently_used_leave(server: RunningServer) -> None:
    assert set(_reasons(server).values()) == {PARKED}
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server.url}/v2/models/cached-3").json()  # from the registry
    assert (meta["platform"], meta["inputs"][0]["shape"]) == ("onnxruntime_onnx", [-1, 1024])
    config = httpx.get(f"{server.url}/v2/models/cached-3/config").json()
    assert config["format"] == "onnx" and config["max_batch_size"] > 0
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1024], "data": [1.0] * 1024}]}

    order = [*range(MODELS), MODELS - 1, 0]
    for i in order:
        reply = httpx.post(f"{server.url}/v2/models/cached-{i}/infer", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"][:2] == [1024.0 * (i + 1)] * 2

    reasons = _reasons(server)
    loaded = [i for i in range(MODELS) if reasons[f"cached-{i}"] == ""]
    # What stays is what was asked for last: 0, then 5, then 4 if it fits, and so on.
    recent = list(dict.fromkeys(reversed(order)))
    assert 1 <= len(loaded) <= 3 and set(loaded) == set(recent[: len(loaded)]), reasons
    assert {reasons[f"cached-{i}"] for i in range(MODELS) if i not in loaded} == {EVICTED}
    assert server.log().count('"model_evicted"') >= MODELS - 3


def test_bad_sizes_and_idle_times_are_refused(tmp_path: Path) -> None:
    for option, value, message in (
        ("--model-memory", "lots", "'lots' is not a size"),
        ("--model-memory", "12KiB", "is less than 1 MiB"),
        ("--model-memory", "-4GB", "is less than 1 MiB"),
        ("--model-memory", "nan", "is not a size"),
        ("--model-memory", "infGB", "is not a size"),
        ("--scale-to-zero-after", "0", "--scale-to-zero-after"),
        ("--scale-to-zero-after", "-5", "--scale-to-zero-after"),
        ("--scale-to-zero-after", "soon", "'soon' is not a valid float"),
    ):
        done = cli(tmp_path / "home", "serve", option, value, "--port", "0")
        assert done.returncode == 2, (option, value, done.stderr)
        assert message in done.stderr, (option, value, done.stderr)
