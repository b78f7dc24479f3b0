"""A canary rollout outlives the worker that drives it: kill -9 that worker and another
takes the rollout over when its database lease runs out, and it still finishes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import RunningServer, TabularModels, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.5] * 32}]}


@pytest.fixture
def server(tmp_path: Path, tabular: TabularModels) -> Iterator[RunningServer]:
    settings = Settings.load(home=tmp_path / "home")
    registry = ModelRegistry(settings)
    for version in ("v1.0.0", "v1.1.0"):
        register(registry, "tabular", tabular.onnx, version)
    registry.close()
    srv = start_server(settings.home, tmp_path, "--workers", "2")
    yield srv
    srv.stop()


def admin(server: RunningServer, method: str, path: str, body: Any = None) -> dict[str, Any]:
    content = json.dumps(body) if body is not None else None
    reply = httpx.request(method, f"{server.url}/v2/admin{path}", content=content, timeout=60)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def traffic(server: RunningServer, stop: threading.Event) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError):  # the killed worker's connections
                client.post("/v2/models/takeover/infer", json=BODY)
            time.sleep(0.005)


def test_a_killed_drivers_rollout_is_taken_over(server: RunningServer) -> None:
    stable = {"endpoint": "takeover", "models": [{"model": "tabular", "version": "v1.0.0"}]}
    admin(server, "POST", "/endpoints", stable)
    stop = threading.Event()
    load = threading.Thread(target=traffic, args=(server, stop))
    load.start()
    try:
        canary = {
            "endpoint": "takeover",
            "models": [{"model": "tabular", "version": "v1.1.0"}],
            "rollout": {
                "steps": [50, 100],
                "interval_s": 3,
                "max_wait_s": 60,
                # The gate is not what is tested here: a killed worker slows both arms.
                "gates": {"min_requests": 5, "max_p99_ratio": 100, "p99_slack_ms": 1000},
            },
        }
        started = admin(server, "POST", "/endpoints", canary)
        driver = started["driver"]
        pid = int(driver.rsplit("-", 1)[1])
        assert pid != server.proc.pid  # a worker, not the supervisor
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 60
        state = started
        while state["state"] in ("running", "paused") and time.monotonic() < deadline:
            time.sleep(0.25)
            try:
                state = admin(server, "GET", "/endpoints/takeover/rollout")
            except httpx.TransportError:
                continue
        assert state["state"] == "promoted", state
        assert state["driver"] != driver  # another worker finished it
        # Adoption waits out the lease (3 s), then the step's interval (3 s) and the promotion.
        assert time.monotonic() - killed_at < 40
    finally:
        stop.set()
        load.join(30)
    served = httpx.post(f"{server.url}/v2/models/takeover/infer", json=BODY, timeout=10)
    assert served.json()["model_version"] == "v1.1.0"
