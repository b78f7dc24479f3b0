"""Canary gates on a busy machine: with a busy loop on every core beside a two-worker server,
a healthy canary still promotes itself (the hog slows a few requests of either arm, which is
noise), and a canary three times slower than the stable version is still rolled back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from model_sources import PACED_MODEL

from conftest import RunningServer, TabularModels, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.5] * 32}]}
PACE_S = 0.005
"""The stable paced model's time per request; its slow canary takes three times as long."""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("gates")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    for version in ("v1.0.0", "v1.1.0"):
        register(registry, "tabular", tabular.onnx, version)
    for version, pace in (("v1.0.0", PACE_S), ("v2.0.0", 3 * PACE_S)):
        source = tmp / f"paced-{version}.py"
        source.write_text(f"PACE_S = {pace!r}\n" + PACED_MODEL)
        register(registry, "paced", source, version, trust_code=True)
    # In the model's thread, as a sleeping model would be served: the event loop stays free.
    registry.set_batching("paced", {"execution": "thread", "dynamic": False})
    registry.close()
    srv = start_server(settings.home, tmp, "--workers", "2")
    try:
        wait_for_every_worker(srv)
        yield srv
    finally:
        srv.stop()


def wait_for_every_worker(server: RunningServer) -> None:
    """Until both workers serve a first endpoint: a deploy waits only for the workers that
    have reported once, and at start one of them may not have yet."""
    stable = {"endpoint": "warm-up", "models": [{"model": "tabular", "version": "v1.0.0"}]}
    admin(server, "POST", "/endpoints", stable)
    answered, deadline = 0, time.monotonic() + 60
    while answered < 20:  # fresh connections land on either worker
        assert time.monotonic() < deadline, "a worker never served the endpoint"
        reply = httpx.post(f"{server.url}/v2/models/warm-up/infer", json=BODY, timeout=30)
        answered = answered + 1 if reply.status_code == 200 else 0
        time.sleep(0.05)


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """A busy loop on every core the tests may use, for as long as the test runs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores or 2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


class Traffic:
    """One client calling an endpoint back to back, keeping what failed."""

    def __init__(self, server: RunningServer, endpoint: str) -> None:
        self.url = f"{server.url}/v2/models/{endpoint}/infer"
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                reply = client.post(self.url, json=BODY)
                if reply.status_code != 200:
                    self.failures.append(f"{reply.status_code} {reply.text}")
                time.sleep(0.002)


def admin(server: RunningServer, method: str, path: str, body: Any = None) -> dict[str, Any]:
    content = json.dumps(body) if body is not None else None
    reply = httpx.request(method, f"{server.url}/v2/admin{path}", content=content, timeout=60)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def roll_out(server: RunningServer, endpoint: str, model: str, stable: str, canary: str) -> str:
    """Deploy ``stable``, roll ``canary`` out under traffic with the default gates (but for
    the sample size), and answer how the rollout ended and why."""
    admin(
        server,
        "POST",
        "/endpoints",
        {"endpoint": endpoint, "models": [{"model": model, "version": stable}]},
    )
    spec = {
        "endpoint": endpoint,
        "models": [{"model": model, "version": canary}],
        "rollout": {"steps": [25, 50, 100], "interval_s": 1, "gates": {"min_requests": 30}},
    }
    with Traffic(server, endpoint) as traffic:
        admin(server, "POST", "/endpoints", spec)
        deadline = time.monotonic() + 60
        state = admin(server, "GET", f"/endpoints/{endpoint}/rollout")
        while state["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            state = admin(server, "GET", f"/endpoints/{endpoint}/rollout")
    assert not traffic.failures, traffic.failures[:3]
    return f"{state['state']}: {state['reason']}"


def test_a_healthy_canary_promotes_itself_on_a_busy_machine(
    server: RunningServer, cpu_hog: None
) -> None:
    outcome = roll_out(server, "busy-ok", "tabular", "v1.0.0", "v1.1.0")
    assert outcome.startswith("promoted: "), outcome
    served = admin(server, "GET", "/endpoints/busy-ok")["spec"]["models"]
    assert [m["version"] for m in served] == ["v1.1.0"]


def test_a_canary_three_times_slower_is_rolled_back_on_a_busy_machine(
    server: RunningServer, cpu_hog: None
) -> None:
    outcome = roll_out(server, "busy-slow", "paced", "v1.0.0", "v2.0.0")
    assert outcome.startswith("rolled_back: step 1 at 25 %: canary median"), outcome
    assert "Mann-Whitney p=" in outcome, outcome
    served = admin(server, "GET", "/endpoints/busy-slow")["spec"]["models"]
    assert [m["version"] for m in served] == ["v1.0.0"]
