"""A rollout is one operation: while it runs, nothing else changes its endpoint; after it, a
rollback goes back to the revision from before it, and its status says it no longer rules."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import RunningServer, TabularModels, cli, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": [0.5] * 32}]}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("rules")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    for version in ("v1.0.0", "v1.1.0"):
        register(registry, "tabular", tabular.onnx, version)
    registry.close()
    srv = start_server(settings.home, tmp, "--workers", "1")
    yield srv
    srv.stop()


def call(server: RunningServer, method: str, path: str, body: Any = None) -> httpx.Response:
    content = json.dumps(body) if body is not None else None
    return httpx.request(method, f"{server.url}/v2/admin{path}", content=content, timeout=60)


def stable(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "models": [{"model": "tabular", "version": "v1.0.0"}]}


def canary(endpoint: str, **rollout: Any) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "models": [{"model": "tabular", "version": "v1.1.0"}],
        "rollout": {"steps": [50, 100], "gates": {"p99_slack_ms": 1000}, **rollout},
    }


def rollout_state(server: RunningServer, endpoint: str) -> dict[str, Any]:
    doc: dict[str, Any] = call(server, "GET", f"/endpoints/{endpoint}/rollout").json()
    return doc


def test_no_change_while_a_rollout_runs(server: RunningServer) -> None:
    assert call(server, "POST", "/endpoints", stable("held")).status_code == 200
    none_yet = call(server, "GET", "/endpoints/held/rollout")
    assert none_yet.status_code == 404 and "has no rollout" in none_yet.json()["error"]
    started = call(server, "POST", "/endpoints", canary("held", interval_s=600))
    assert started.status_code == 200, started.text
    for method, path, body in (
        ("POST", "/endpoints/held/rollback", None),
        ("POST", "/endpoints", stable("held")),
        ("DELETE", "/endpoints/held", None),
    ):
        refused = call(server, method, path, body)
        assert refused.status_code == 400, refused.text
        assert "servion rollout abort held" in refused.json()["error"]
    assert rollout_state(server, "held")["state"] == "running"
    assert call(server, "POST", "/endpoints/held/rollout/abort").status_code == 200
    rolled = call(server, "POST", "/endpoints/held/rollback")
    assert rolled.status_code == 200, rolled.text
    assert rollout_state(server, "held")["state"] == "superseded"


def test_a_rollback_after_a_promotion_goes_to_the_revision_before_it(
    server: RunningServer,
) -> None:
    assert call(server, "POST", "/endpoints", stable("promoted")).status_code == 200
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.TransportError):
                    client.post("/v2/models/promoted/infer", json=BODY)
                time.sleep(0.005)

    load = threading.Thread(target=traffic)
    load.start()
    try:
        started = call(
            server,
            "POST",
            "/endpoints",
            canary("promoted", interval_s=1, gates={"min_requests": 5, "p99_slack_ms": 1000}),
        )
        assert started.status_code == 200, started.text
        deadline = time.monotonic() + 60
        while rollout_state(server, "promoted")["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop.set()
        load.join(30)
    assert rollout_state(server, "promoted")["state"] == "promoted"
    rolled = call(server, "POST", "/endpoints/promoted/rollback").json()
    assert rolled["source_revision"] == 1  # the stable revision, not a step of the canary
    assert [a["version"] for a in rolled["spec"]["models"]] == ["v1.0.0"]
    assert rollout_state(server, "promoted")["state"] == "superseded"
    served = httpx.post(f"{server.url}/v2/models/promoted/infer", json=BODY).json()
    assert served["model_version"] == "v1.0.0"


def test_deploy_wait_exits_non_zero_unless_promoted(server: RunningServer, tmp_path: Path) -> None:
    assert call(server, "POST", "/endpoints", stable("waited")).status_code == 200
    # No traffic: the step never sees its requests, and the rollout gives up after 2 s.
    spec = canary("waited", interval_s=0.5, max_wait_s=2, gates={"min_requests": 1000})
    spec_file = tmp_path / "canary.json"
    spec_file.write_text(json.dumps(spec))
    done = cli(tmp_path / "home", "deploy", str(spec_file), "--wait", "--url", server.url)
    assert done.returncode == 1, done.stderr
    assert "canary rollout of tabular:v1.1.0: rolled_back (" in done.stdout
    assert "only 0 canary requests" in done.stdout
    served = httpx.post(f"{server.url}/v2/models/waited/infer", json=BODY).json()
    assert served["model_version"] == "v1.0.0"
