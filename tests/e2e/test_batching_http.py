"""Dynamic batching through a real server: exact answers under concurrency,
deadlines (504), queue bounds (503 + Retry-After), settings that follow the registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import RunningServer, TabularModels, cli, register, served
from servion.registry import ModelRegistry

SLOW = """
import time
import numpy as np


class Slow:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]

    def load(self):
        pass

    def predict(self, inputs):
        time.sleep(0.3)
        return {"y": inputs["x"] * 2}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("batching")
    (tmp / "slow.py").write_text(SLOW)

    def setup(registry: ModelRegistry) -> None:
        register(registry, "tabular", tabular.onnx)
        register(registry, "slow", tmp / "slow.py", trust_code=True)
        registry.set_batching("slow", {"execution": "thread", "max_queue_size": 3})

    with served(tmp, setup) as srv:
        yield srv


def _body(x: np.ndarray, name: str = "X", **parameters: int) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    if parameters:
        body["parameters"] = parameters
    return body


def _rows(i: int) -> slice:
    start = (i * 5) % 500
    return slice(start, start + 1 + i % 6)


def test_concurrent_mixed_requests_get_exactly_their_own_answers(
    server: RunningServer, tabular: TabularModels
) -> None:
    url = f"{server.url}/v2/models/tabular/infer"
    expected = tabular.pipeline.predict(tabular.x)  # type: ignore[attr-defined]

    def call(i: int) -> tuple[int, int, dict[str, Any]]:
        if i % 7 == 3:  # a request that fails validation inside the same window
            return i, httpx.post(url, json=_body(tabular.x[:1, :31])).status_code, {}
        reply = httpx.post(url, json=_body(tabular.x[_rows(i)]))
        return i, reply.status_code, reply.json()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(300)))
    for i, status, reply in results:
        if i % 7 == 3:
            assert status == 400
            continue
        assert status == 200
        labels = next(o for o in reply["outputs"] if o["name"] == "label")
        assert labels["data"] == expected[_rows(i)].tolist()
    stats = httpx.get(f"{server.url}/v2/models/tabular/stats").json()["model_stats"][0]
    assert stats["execution_count"] <= stats["inference_stats"]["success"]["count"]


def test_deadline_passed_in_the_queue_is_504_and_never_run(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/slow/infer"
    x = np.ones((1, 1), np.float32)
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(httpx.post, url, json=_body(x, "x"), timeout=30)
        time.sleep(0.1)  # the model is now executing the first request
        late = httpx.post(url, json=_body(x, "x", timeout=20_000), timeout=30)  # 20 ms
        assert busy.result().status_code == 200
    assert late.status_code == 504
    assert "it was not run" in late.json()["error"]


def test_full_queue_is_503_with_retry_after(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/slow/infer"
    x = np.ones((1, 1), np.float32)
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: httpx.post(url, json=_body(x, "x"), timeout=30), range(8))
        )
    refused = [r for r in replies if r.status_code == 503]
    assert refused, [r.status_code for r in replies]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert "queued" in refused[0].json()["error"]
    assert all(r.status_code in (200, 503) for r in replies)
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_batching_settings_reach_the_running_server(server: RunningServer, tmp_path: Path) -> None:
    home = Path(str(server.log_path.parent / "home"))
    done = cli(
        home,
        "models",
        "batching",
        "tabular",
        "--max-queue-delay-us",
        "250",
        "--preferred-batch-sizes",
        "8,16",
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    config: dict[str, object] = {}
    while time.monotonic() < deadline:
        config = httpx.get(f"{server.url}/v2/models/tabular/config").json()
        if config["dynamic_batching"]["max_queue_delay_us"] == 250:  # type: ignore[index]
            break
        time.sleep(0.1)
    assert config["dynamic_batching"]["preferred_batch_sizes"] == [8, 16]  # type: ignore[index]
    bad = cli(home, "models", "batching", "tabular", "--max-batch-size", "0")
    assert bad.returncode == 2 and "max_batch_size" in bad.stderr
    unknown = cli(home, "models", "batching", "nosuchmodel", "--max-batch-size", "8")
    assert unknown.returncode == 2 and "unknown model" in unknown.stderr
