"""Requests you can follow: an id on every answer (REST header, gRPC trailer), an access
log, a slow-request log, lifecycle events, and a log level."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from model_sources import SLOW_MODEL

from conftest import RunningServer, TabularModels, cli, start_server, wait_until
from servion.protocol.grpc import grpc_service_pb2 as pb

ROW = [0.25] * 32
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
GENERATED = re.compile(r"[0-9a-f]{8}-[0-9a-f]+")

FAILING_MODEL = """
class Failing:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1]}]

    def load(self):
        pass

    def predict(self, inputs):
        if inputs["X"][0, 0] == 0.25:  # the test's rows; registration's sample passes
            raise RuntimeError("secret internal detail")
        return {"y": inputs["X"][:, 0]}
"""


def lines(server: RunningServer) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def events(server: RunningServer, name: str) -> list[dict[str, Any]]:
    return [e for e in lines(server) if e.get("event") == name]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("logs")
    home = tmp / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    slow, failing = tmp / "slow.py", tmp / "failing.py"
    slow.write_text(SLOW_MODEL)
    failing.write_text(FAILING_MODEL)
    for name, path in (("slowpoke", slow), ("failing", failing)):
        done = cli(home, "register", name, str(path), "--version", "v1.0.0", "--trust-code")
        assert done.returncode == 0, done.stderr
    srv = start_server(home, tmp, "--workers", "1", "--access-log", "--slow-request-ms", "200")
    yield srv
    srv.stop()


def test_every_answer_carries_a_request_id(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/tabular/infer"
    made = httpx.post(url, json=BODY)
    assert made.status_code == 200 and GENERATED.fullmatch(made.headers["x-request-id"])
    other = httpx.post(url, json=BODY)
    assert other.headers["x-request-id"] != made.headers["x-request-id"]
    mine = httpx.post(url, json=BODY, headers={"X-Request-Id": "checkout-42:a.b_c"})
    assert mine.headers["x-request-id"] == "checkout-42:a.b_c"
    for insane in ("has spaces", "x" * 129, "semi;colon"):
        replaced = httpx.post(url, json=BODY, headers={"X-Request-Id": insane})
        assert GENERATED.fullmatch(replaced.headers["x-request-id"]), insane
    # Errors and other routes too.
    assert "x-request-id" in httpx.get(f"{server.url}/v2/models/nosuch").headers
    assert "x-request-id" in httpx.get(f"{server.url}/v2/health/ready").headers

    def logged() -> bool:
        return any(e.get("request_id") == "checkout-42:a.b_c" for e in events(server, "request"))

    wait_until(logged, 10, "the access log line")
    line = next(e for e in events(server, "request") if e["request_id"] == "checkout-42:a.b_c")
    assert line["method"] == "POST" and line["path"] == "/v2/models/tabular/infer"
    assert line["status"] == 200 and line["bytes"] > 0 and line["duration_ms"] > 0


def test_grpc_returns_the_id_in_its_trailers(server: RunningServer) -> None:
    assert server.grpc_url
    request = pb.ModelInferRequest(model_name="tabular")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 32])
    tensor.contents.fp32_contents.extend(ROW)
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        _, done = call.with_call(request, timeout=30, metadata=(("x-request-id", "grpc-7"),))
        assert dict(done.trailing_metadata())["x-request-id"] == "grpc-7"
        _, done = call.with_call(request, timeout=30)
        assert GENERATED.fullmatch(dict(done.trailing_metadata())["x-request-id"])
        with pytest.raises(grpc.RpcError) as failed:
            call(pb.ModelInferRequest(model_name="nosuch"), timeout=30)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert "x-request-id" in dict(failed.value.trailing_metadata())


def test_slow_and_failed_requests_are_logged_with_their_id(server: RunningServer) -> None:
    slow = httpx.post(f"{server.url}/v2/models/slowpoke/infer", json=BODY, timeout=30)
    assert slow.status_code == 200
    rid = slow.headers["x-request-id"]
    wait_until(
        lambda: any(e.get("request_id") == rid for e in events(server, "slow_request")),
        10,
        "the slow-request line",
    )
    line = next(e for e in events(server, "slow_request") if e["request_id"] == rid)
    assert line["level"] == "warning" and line["duration_ms"] >= 200
    failed = httpx.post(f"{server.url}/v2/models/failing/infer", json=BODY)
    assert failed.status_code == 500 and "secret" not in failed.text
    rid = failed.headers["x-request-id"]
    wait_until(
        lambda: any(e.get("request_id") == rid for e in events(server, "request")),
        10,
        "the 500's line",
    )
    line = next(e for e in events(server, "request") if e["request_id"] == rid)
    assert line["status"] == 500 and line["level"] == "warning"


def test_lifecycle_events_and_the_log_level(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    srv = start_server(home, tmp_path, "--workers", "1", "--drain-delay", "0")
    spec = "endpoint: front\nmodels:\n  - {model: tabular, version: v1.0.0}\n"
    deployed = httpx.post(
        f"{srv.url}/v2/admin/endpoints", content=spec, headers={"Content-Type": "application/yaml"}
    )
    assert deployed.status_code == 200, deployed.text
    wait_until(lambda: bool(events(srv, "server_ready")), 20, "server_ready")
    wait_until(lambda: bool(events(srv, "endpoint_applied")), 20, "endpoint_applied")
    srv.stop(signal.SIGTERM)
    names = [e.get("event") for e in lines(srv)]
    for expected in (
        "server_listening",
        "worker_started",
        "model_loaded",
        "server_ready",
        "endpoint_applied",
        "draining",
        "server_stopped",
    ):
        assert expected in names, (expected, names)
    assert events(srv, "endpoint_applied")[0]["endpoint"] == "front"
    # WARNING and up only: no lifecycle news, and the access log (off) says nothing.
    quiet = start_server(home, tmp_path, "--workers", "1", "--log-level", "warning")
    try:
        assert httpx.post(f"{quiet.url}/v2/models/tabular/infer", json=BODY).status_code == 200
        assert not events(quiet, "model_loaded") and not events(quiet, "request")
    finally:
        quiet.stop()
