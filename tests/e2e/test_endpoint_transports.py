"""Every endpoint policy, once over REST and once over gRPC, against one real server:
the same answers, the same errors and the same counters whichever protocol carries
the request (the data plane is shared; only the codecs differ)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from model_sources import DOUBLER_MODEL, FLAKY_MODEL, SHADOW_MODEL, SLOW_MODEL, UNSURE_MODEL
from tritonclient.utils import InferenceServerException

from conftest import RunningServer, TabularModels, register, start_server, wait_until
from servion.config import Settings
from servion.registry import ModelRegistry
from servion.routing import sticky_point

ROW = [0.25] * 32
STATUS = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class Reply:
    """One answer in protocol-neutral terms."""

    status: str
    model: str = ""
    version: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Transport:
    name = ""

    def __init__(self, server: RunningServer) -> None:
        self.server = server

    def infer(
        self,
        endpoint: str,
        inputs: dict[str, np.ndarray],
        headers: dict[str, str] | None = None,
        outputs: list[str] | None = None,
    ) -> Reply:
        raise NotImplementedError

    def describe(self, endpoint: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The endpoint's metadata, configuration and readiness."""
        raise NotImplementedError


class Rest(Transport):
    name = "rest"

    def describe(self, endpoint: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
        url = f"{self.server.url}/v2/models/{endpoint}"
        ready = httpx.get(f"{url}/ready").json()["ready"]
        return httpx.get(url).json(), httpx.get(f"{url}/config").json(), ready

    def infer(
        self,
        endpoint: str,
        inputs: dict[str, np.ndarray],
        headers: dict[str, str] | None = None,
        outputs: list[str] | None = None,
    ) -> Reply:
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": n,
                    "datatype": "FP32",
                    "shape": list(a.shape),
                    "data": a.ravel().tolist(),
                }
                for n, a in inputs.items()
            ]
        }
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        reply = httpx.post(
            f"{self.server.url}/v2/models/{endpoint}/infer",
            json=body,
            headers=headers or {},
            timeout=30,
        )
        doc = reply.json()
        if reply.status_code != 200:
            return Reply(STATUS[reply.status_code], error=doc["error"])
        return Reply(
            "OK",
            doc["model_name"],
            doc.get("model_version", ""),
            {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in doc["outputs"]},
            doc.get("parameters", {}),
        )


class Grpc(Transport):
    name = "grpc"

    def describe(self, endpoint: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
        with tg.InferenceServerClient(self.server.grpc_url) as client:
            meta = client.get_model_metadata(endpoint, as_json=True)
            config = client.get_model_config(endpoint, as_json=True)["config"]
            ready = client.is_model_ready(endpoint)
        return meta, config, ready

    def infer(
        self,
        endpoint: str,
        inputs: dict[str, np.ndarray],
        headers: dict[str, str] | None = None,
        outputs: list[str] | None = None,
    ) -> Reply:
        tensors = []
        for name, array in inputs.items():
            tensor = tg.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, np.float32))
            tensors.append(tensor)
        wanted = [tg.InferRequestedOutput(n) for n in outputs] if outputs else None
        with tg.InferenceServerClient(self.server.grpc_url) as client:
            try:
                result = client.infer(endpoint, tensors, outputs=wanted, headers=headers)
            except InferenceServerException as exc:
                return Reply(str(exc.status()).removeprefix("StatusCode."), error=exc.message())
        response = result.get_response(as_json=True)
        parameters = {k: next(iter(v.values())) for k, v in response.get("parameters", {}).items()}
        return Reply(
            "OK",
            response["model_name"],
            response.get("model_version", ""),
            {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]},
            parameters,
        )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("transports")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    register(registry, "tabular", tabular.onnx, "v1.0.0")
    register(registry, "tabular", tabular.onnx, "v1.1.0")
    sources = {
        "slowpoke": SLOW_MODEL,
        "doubler": DOUBLER_MODEL,
        "flaky": FLAKY_MODEL,
        "unsure": UNSURE_MODEL,
        "failing": "MODE = 'fail'\n" + SHADOW_MODEL,
    }
    for name, source in sources.items():
        path = tmp / f"{name}.py"
        path.write_text(source)
        register(registry, name, path, trust_code=True)
    registry.set_batching("slowpoke", {"execution": "thread", "dynamic": False})
    registry.close()
    srv = start_server(settings.home, tmp, "--workers", "1")
    yield srv
    srv.stop()


@pytest.fixture(params=[Rest, Grpc], ids=["rest", "grpc"])
def transport(request: pytest.FixtureRequest, server: RunningServer) -> Transport:
    made: Transport = request.param(server)
    return made


def deploy(server: RunningServer, doc: dict[str, Any]) -> None:
    reply = httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(doc), timeout=60)
    assert reply.status_code == 200, reply.text


def report(server: RunningServer, endpoint: str) -> dict[str, Any]:
    reply = httpx.get(f"{server.url}/v2/admin/endpoints/{endpoint}/report", timeout=30)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def x(value: float = 0.25, rows: int = 1) -> dict[str, np.ndarray]:
    return {"X": np.full((rows, 32), value, np.float32)}


def arms(name: str, *versions: str, weights: tuple[float, ...] = ()) -> list[dict[str, Any]]:
    weights = weights or tuple(100 / len(versions) for _ in versions)
    return [
        {"model": name, "version": v, "weight": w} for v, w in zip(versions, weights, strict=True)
    ]


def test_split_sticky_and_pin(server: RunningServer, transport: Transport) -> None:
    endpoint = f"split-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("tabular", "v1.0.0", "v1.1.0"),
            "sticky": {"header": "x-user-id"},
        },
    )
    # A sticky key lands on the arm its hash names, over either protocol.
    expected = {"tabular:v1.0.0": 0, "tabular:v1.1.0": 1}
    for user in ("alice", "bob", "carol"):
        arm = "v1.0.0" if sticky_point(user.encode()) < 0.5 else "v1.1.0"
        seen = {transport.infer(endpoint, x(), {"x-user-id": user}).version for _ in range(5)}
        assert seen == {arm}, (user, seen)
        expected[f"tabular:{arm}"] += 5
    pinned = transport.infer(endpoint, x(), {"x-servion-version": "v1.1.0"})
    assert pinned.status == "OK" and pinned.version == "v1.1.0"
    wrong = transport.infer(endpoint, x(), {"x-servion-version": "v9.0.0"})
    assert wrong.status == "INVALID_ARGUMENT" and "no arm 'v9.0.0' to pin" in wrong.error
    counted = {a["arm"]: a["requests"] for a in report(server, endpoint)["arms"]}
    assert counted == expected
    meta, config, ready = transport.describe(endpoint)
    assert meta["name"] == endpoint and ready
    assert meta["versions"] == ["v1.0.0", "v1.1.0"]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("X", "FP32")]
    assert config["name"] == endpoint and int(config["max_batch_size"]) > 0


def test_shadow_copies_are_compared(server: RunningServer, transport: Transport) -> None:
    endpoint = f"shadow-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("tabular", "v1.0.0"),
            "shadows": [{"model": "tabular", "version": "v1.1.0"}],
        },
    )
    for _ in range(10):
        assert transport.infer(endpoint, x()).version == "v1.0.0"
    shadow = wait_for(lambda: report(server, endpoint)["shadows"][0], "requests", 10)
    assert shadow["agreement"] == 1.0 and shadow["errors"] == 0


def test_cache_answers_repeats(server: RunningServer, transport: Transport) -> None:
    endpoint = f"cache-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("tabular", "v1.0.0"),
            "cache": {"max_entries": 8, "ttl_s": 60},
        },
    )
    first = transport.infer(endpoint, x())
    for _ in range(4):
        again = transport.infer(endpoint, x())
        np.testing.assert_array_equal(
            again.outputs["probabilities"], first.outputs["probabilities"]
        )
    transport.infer(endpoint, x(0.5))
    assert report(server, endpoint)["cache"] == {"hits": 4, "misses": 2, "entries": 2}


def test_bulkhead_refuses_beyond_its_queue(server: RunningServer, transport: Transport) -> None:
    endpoint = f"bulkhead-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("slowpoke", "v1.0.0"),
            "concurrency": {"limit": 1, "queue": 1},
        },
    )
    statuses: list[str] = []
    callers = [
        threading.Thread(target=lambda: statuses.append(transport.infer(endpoint, x()).status))
        for _ in range(4)
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join(30)
    assert sorted(statuses) == ["OK", "OK", "UNAVAILABLE", "UNAVAILABLE"]
    assert report(server, endpoint)["bulkhead"] == {"running": 0, "waiting": 0, "rejected": 2}


STATIC = {
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]},
    ]
}


def test_breaker_and_fixed_fallback(server: RunningServer, transport: Transport) -> None:
    endpoint = f"breaker-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("failing", "v1.0.0"),
            "circuit_breaker": {"error_rate": 0.5, "min_requests": 3, "window_s": 60, "open_s": 60},
            "fallback": STATIC,
        },
    )
    replies = [transport.infer(endpoint, x(0.25)) for _ in range(5)]
    assert [r.parameters["servion_fallback_reason"] for r in replies] == [
        "error",
        "error",
        "error",
        "circuit_open",
        "circuit_open",
    ]
    assert all(r.status == "OK" and r.outputs["label"].tolist() == [-1] for r in replies)
    assert all(r.parameters["servion_arm"] == "failing:v1.0.0" for r in replies)
    doc = report(server, endpoint)
    assert doc["fallbacks"] == {"error": 3, "circuit_open": 2}
    assert doc["breakers"]["failing:v1.0.0"]["state"] == "open"


def test_fallback_version_answers_for_a_failing_arm(
    server: RunningServer, transport: Transport, tabular: TabularModels
) -> None:
    endpoint = f"fallback-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("failing", "v1.0.0"),
            "fallback": {"model": "tabular", "version": "v1.0.0"},
        },
    )
    rescued = transport.infer(endpoint, x(0.25))
    assert rescued.status == "OK" and (rescued.model, rescued.version) == ("tabular", "v1.0.0")
    assert rescued.parameters["servion_fallback"] is True
    expected = tabular.pipeline.predict(x(0.25)["X"])  # type: ignore[attr-defined]
    assert rescued.outputs["label"].tolist() == expected.tolist()
    assert transport.infer(endpoint, x(0.5)).model == "failing"  # the arm answers what it can
    malformed = transport.infer(endpoint, {"X": np.zeros((1, 3), np.float32)})
    assert malformed.status == "INVALID_ARGUMENT"  # the caller's fault: no fallback
    assert report(server, endpoint)["fallbacks"] == {"error": 1}


def test_timeout_answers_deadline_exceeded(server: RunningServer, transport: Transport) -> None:
    endpoint = f"timeout-{transport.name}"
    deploy(
        server,
        {"endpoint": endpoint, "models": arms("slowpoke", "v1.0.0"), "timeout_ms": 100},
    )
    late = transport.infer(endpoint, x())
    assert late.status == "DEADLINE_EXCEEDED"
    assert late.error == f"endpoint '{endpoint}' did not answer within 100 ms"
    patient = transport.infer(endpoint, x(), {"x-servion-timeout-ms": "5000"})
    assert patient.status == "OK"
    bad = transport.infer(endpoint, x(), {"x-servion-timeout-ms": "soon"})
    assert bad.status == "INVALID_ARGUMENT" and "X-Servion-Timeout-Ms" in bad.error


def test_retries_hide_every_other_failure(server: RunningServer, transport: Transport) -> None:
    endpoint = f"retries-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("flaky", "v1.0.0"),
            "retries": {"attempts": 1, "budget": 1.0},
        },
    )
    assert {transport.infer(endpoint, x(0.25)).status for _ in range(8)} == {"OK"}
    doc = report(server, endpoint)
    # Every first try fails (the model fails every other call) and its retry answers.
    assert doc["retries"] == {"retried": 8, "refused": 0}


def test_cascade_sends_only_unsure_rows_on(
    server: RunningServer, transport: Transport, tabular: TabularModels
) -> None:
    endpoint = f"cascade-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("unsure", "v1.0.0"),
            "cascade": {
                "output": "probabilities",
                "min_confidence": 0.9,
                "then": [{"model": "tabular", "version": "v1.0.0"}],
            },
        },
    )
    rows = np.ascontiguousarray(tabular.x[:20])
    sure = rows[:, 0] > 0
    reply = transport.infer(endpoint, {"X": rows})
    assert reply.status == "OK"
    big = tabular.pipeline.predict(rows)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(reply.outputs["label"][sure], 0)
    np.testing.assert_array_equal(reply.outputs["label"][~sure], big[~sure])
    unsure = int((~sure).sum())
    assert reply.parameters["servion_cascade"] == (
        f"unsure:v1.0.0={20 - unsure},tabular:v1.0.0={unsure}"
    )
    only = transport.infer(endpoint, {"X": rows}, outputs=["label"])
    assert list(only.outputs) == ["label"]
    both = {"unsure:v1.0.0": 2 * (20 - unsure), "tabular:v1.0.0": 2 * unsure}
    # The other worker's counts reach this one's report within a second.
    wait_until(lambda: report(server, endpoint)["cascade"] == both, 30, "both calls counted")


def test_ensemble_runs_the_graph(
    server: RunningServer, transport: Transport, tabular: TabularModels
) -> None:
    endpoint = f"graph-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "ensemble": {
                "steps": [
                    {
                        "name": "prep",
                        "model": "doubler",
                        "version": "v1.0.0",
                        "inputs": {"A": "$request.raw"},
                    },
                    {
                        "name": "clf",
                        "model": "tabular",
                        "version": "v1.0.0",
                        "inputs": {"X": "prep.twice"},
                    },
                ],
                "outputs": {"label": "clf.label", "p": "clf.probabilities"},
            },
        },
    )
    raw = np.ascontiguousarray(tabular.x[:6])
    reply = transport.infer(endpoint, {"raw": raw})
    assert reply.status == "OK", reply.error
    assert reply.model == endpoint
    np.testing.assert_array_equal(reply.outputs["label"], tabular.pipeline.predict(2 * raw))  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        reply.outputs["p"],
        tabular.pipeline.predict_proba(2 * raw),  # type: ignore[attr-defined]
        rtol=1e-5,
        atol=1e-6,
    )
    assert reply.parameters == {"servion_ensemble": "doubler:v1.0.0,tabular:v1.0.0"}
    missing = transport.infer(endpoint, {"other": raw})
    assert missing.status == "INVALID_ARGUMENT" and "needs input 'raw'" in missing.error


def test_endpoint_batching_has_its_own_limit(server: RunningServer, transport: Transport) -> None:
    endpoint = f"batched-{transport.name}"
    deploy(
        server,
        {
            "endpoint": endpoint,
            "models": arms("tabular", "v1.0.0"),
            "batching": {"max_batch_size": 4, "execution": "thread"},
        },
    )
    refused = transport.infer(endpoint, x(rows=5))
    assert refused.status == "RESOURCE_EXHAUSTED" and "batch size 5" in refused.error
    assert transport.infer(endpoint, x(rows=4)).status == "OK"
    assert transport.infer("tabular", x(rows=5)).status == "OK"  # the model's own limit


def wait_for(read: Any, key: str, value: int, timeout: float = 20) -> dict[str, Any]:
    """Poll ``read()`` until its ``key`` reaches ``value`` (shadows finish after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] = read()
        if found[key] >= value or time.monotonic() > deadline:
            assert found[key] == value, found
            return found
        time.sleep(0.05)


def test_an_endpoint_is_called_like_a_model(server: RunningServer) -> None:
    endpoint = "like-a-model"
    deploy(server, {"endpoint": endpoint, "models": arms("tabular", "v1.0.0", "v1.1.0")})
    meta = httpx.get(f"{server.url}/v2/models/{endpoint}").json()
    assert meta["versions"] == ["v1.0.0", "v1.1.0"]
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
    pinned = httpx.post(f"{server.url}/v2/models/{endpoint}/versions/v1.1.0/infer", json=body)
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "v1.1.0"
    nope = httpx.post(f"{server.url}/v2/models/{endpoint}/versions/v9.0.0/infer", json=body)
    assert nope.status_code == 400 and "no arm 'v9.0.0'" in nope.json()["error"]
    v1 = httpx.post(f"{server.url}/v1/models/{endpoint}:predict", json={"instances": [ROW, ROW]})
    assert v1.status_code == 200 and len(v1.json()["predictions"]) == 2
    assert endpoint in httpx.get(f"{server.url}/v1/models").json()["models"]
    assert httpx.get(f"{server.url}/v1/models/{endpoint}").json() == {
        "name": endpoint,
        "ready": True,
    }
    rest = th.InferenceServerClient(server.url.removeprefix("http://"))
    stats = rest.get_inference_statistics(endpoint)["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [
        ("tabular", "v1.0.0"),
        ("tabular", "v1.1.0"),
    ]
    with tg.InferenceServerClient(server.grpc_url) as client:
        over_grpc = client.get_inference_statistics(endpoint, as_json=True)["model_stats"]
    assert [s["version"] for s in over_grpc] == ["v1.0.0", "v1.1.0"]
    only = httpx.get(f"{server.url}/v2/models/{endpoint}/versions/v1.1.0/stats").json()
    assert [s["version"] for s in only["model_stats"]] == ["v1.1.0"]
