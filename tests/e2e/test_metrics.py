"""``GET /metrics``: what every worker counted, added up, in the Prometheus format; read
back through prometheus-client's own parser, and through a real Prometheus server."""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as tg
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    Prometheus,
    RunningServer,
    TabularModels,
    cli,
    free_port,
    start_server,
    wait_until,
)

ROW = [0.25] * 32
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    reply = httpx.get(f"{url}/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    return sum(
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("metrics")
    home = tmp / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    srv = start_server(home, tmp, "--workers", "2")
    yield srv
    srv.stop()


def workers(server: RunningServer) -> list[psutil.Process]:
    """The live worker processes (a killed one is a zombie until the supervisor reaps it)."""
    found = []
    for p in psutil.Process(server.proc.pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "servion.server.worker" in p.cmdline():
                found.append(p)
        except psutil.Error:
            continue
    return found


def flushed(server: RunningServer) -> int:
    """REST requests to tabular in the workers' metrics files (what a killed one leaves)."""
    folders = Path(tempfile.gettempdir()).glob(f"servion-metrics-{server.port}-*")
    total = 0
    for folder in folders:
        for path in folder.glob("*.json"):
            snapshot = json.loads(path.read_bytes())
            rows = snapshot["requests"]
            total += sum(n for p, t, c, n in rows if (p, t, c) == ("rest", "tabular", "2xx"))
    return total


def test_counts_from_every_worker_add_up_and_survive_kill_9(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(40):  # new connections: both workers take some
            assert (
                client.post(
                    "/v2/models/tabular/infer", json=BODY, headers={"Connection": "close"}
                ).status_code
                == 200
            )
        wrong = {"inputs": [{**BODY["inputs"][0], "name": "Y"}]}
        assert client.post("/v2/models/tabular/infer", json=wrong).status_code == 400
        assert client.post("/v2/models/nosuch/infer", json=BODY).status_code == 404
    grpc = tg.InferenceServerClient(server.grpc_url)
    x = tg.InferInput("X", [1, 32], "FP32")
    x.set_data_from_numpy(np.asarray([ROW], dtype=np.float32))
    for _ in range(5):
        grpc.infer("tabular", [x])
    grpc.close()

    # Every count in one scrape: the other worker's file may be up to a second old.
    expected = {
        ("servion_requests_total", ("rest", "tabular", "2xx")): 40,
        ("servion_requests_total", ("rest", "tabular", "4xx")): 1,
        ("servion_requests_total", ("rest", "", "4xx")): 1,
        ("servion_requests_total", ("grpc", "tabular", "2xx")): 5,
    }

    def counted(s: Samples) -> dict[tuple[str, tuple[str, ...]], float]:
        return {
            (name, key): value(s, name, protocol=key[0], target=key[1], code=key[2])
            for name, key in expected
        }

    seen: list[Samples] = []

    def complete() -> bool:
        seen.append(scrape(server.url))
        # Both workers' snapshots in the scrape: all 40 connections may go to one worker.
        return counted(seen[-1]) == expected and value(seen[-1], "servion_models_loaded") == 2

    wait_until(complete, 20, "every count in one scrape")
    s = seen[-1]  # a later scrape may come from the other worker, before its next flush
    assert (
        value(s, "servion_request_duration_seconds_count", protocol="rest", target="tabular") == 41
    )
    assert value(s, "servion_model_requests_total", model="tabular", version="v1.0.0") == 46
    assert value(s, "servion_model_failures_total", model="tabular", reason="invalid_input") == 1
    assert value(s, "servion_model_queue_duration_seconds_count", model="tabular") == 45
    # Sub-millisecond serving is resolved: the first buckets are below 1 ms.
    assert any(
        n == "servion_model_compute_duration_seconds_bucket" and dict(labels)["le"] == "0.0005"
        for n, labels in s
    )
    assert value(s, "servion_model_batch_size_count", model="tabular") >= 1
    assert value(s, "servion_models_loaded") == 2  # one version in each of two workers
    rss = "servion_process_resident_memory_bytes"
    assert len({dict(labels)["worker"] for n, labels in s if n == rss}) == 2
    assert not any(n.startswith("servion_gpu_") for n, _ in s)  # no GPU here: absent, not 0

    # kill -9 a worker once its counts are on disk: they stay in the totals.
    wait_until(lambda: flushed(server) == 40, 20, "every worker's counts flushed")
    victim = workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    wait_until(
        lambda: victim.pid not in {p.pid for p in workers(server)} and len(workers(server)) == 2,
        30,
        "the worker replaced",
    )
    wait_until(lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200, 30, "ready")
    s = scrape(server.url)
    assert value(s, "servion_requests_total", protocol="rest", target="tabular", code="2xx") == 40
    with httpx.Client(base_url=server.url) as client:
        for _ in range(10):
            assert (
                client.post(
                    "/v2/models/tabular/infer", json=BODY, headers={"Connection": "close"}
                ).status_code
                == 200
            )
    wait_until(
        lambda: (
            value(
                scrape(server.url),
                "servion_requests_total",
                protocol="rest",
                target="tabular",
                code="2xx",
            )
            == 50
        ),
        20,
        "the new requests counted on top",
    )


def test_endpoint_requests_are_counted_and_leave_flight_and_unloads_are_timed(
    tmp_path: Path, tabular: TabularModels
) -> None:
    home = tmp_path / "home"
    for name in ("tabular", "spare"):
        registered = cli(home, "register", name, str(tabular.onnx), "--version", "v1.0.0")
        assert registered.returncode == 0, registered.stderr
    srv = start_server(home, tmp_path, "--workers", "1")
    try:
        spec = "endpoint: front\nmodels:\n  - {model: tabular, version: v1.0.0}\n"
        headers = {"Content-Type": "application/yaml"}
        deployed = httpx.post(f"{srv.url}/v2/admin/endpoints", content=spec, headers=headers)
        assert deployed.status_code == 200, deployed.text
        for _ in range(7):
            assert httpx.post(f"{srv.url}/v2/models/front/infer", json=BODY).status_code == 200
        s = scrape(srv.url)  # one worker: its live counts
        assert value(s, "servion_requests_total", protocol="rest", target="front", code="2xx") == 7
        assert value(s, "servion_request_duration_seconds_count", target="front") == 7
        assert value(s, "servion_arm_requests_total", endpoint="front") == 7
        assert value(s, "servion_inflight_requests") == 0  # every request left flight
        assert value(s, "servion_model_unloads_total", model="spare") == 0
        unloaded = httpx.post(f"{srv.url}/v2/repository/models/spare/unload")
        assert unloaded.status_code == 200, unloaded.text
        wait_until(
            lambda: value(scrape(srv.url), "servion_model_unloads_total", model="spare") == 1,
            20,
            "the unload counted",
        )
        s = scrape(srv.url)
        assert 0 < value(s, "servion_model_unload_seconds_total", model="spare") < 10
    finally:
        srv.stop()


def test_metrics_on_a_port_of_their_own(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    port = free_port()
    srv = start_server(
        home, tmp_path, "--workers", "1", "--metrics-port", str(port),
        "--cost-per-replica-hour", "3.6",
    )  # fmt: skip
    try:
        assert httpx.post(f"{srv.url}/v2/models/tabular/infer", json=BODY).status_code == 200

        def counted() -> bool:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            return 'servion_model_requests_total{model="tabular",version="v1.0.0"} 1.0' in text

        wait_until(counted, 20, "the request on the metrics port")
        # The supervisor prices the workers' files the same way a worker does.
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'servion_cost_per_hour{resource="replica"} 3.6' in text
        assert "\nservion_cost_per_1000_requests " in text
        assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404
    finally:
        srv.stop()


def test_metrics_can_be_turned_off(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    priced = ("--cost-per-replica-hour", "1")
    srv = start_server(home, tmp_path, "--workers", "1", "--no-metrics", *priced)
    try:
        assert httpx.post(f"{srv.url}/v2/models/tabular/infer", json=BODY).status_code == 200
        assert httpx.get(f"{srv.url}/metrics").status_code == 404
        status = cli(home, "status", "--url", srv.url)
        assert "\ncost: $1.00/hour (no request rate: metrics are off)\n" in status.stdout
    finally:
        srv.stop()


def test_a_real_prometheus_reads_totals_without_resets(
    prometheus: Prometheus, tmp_path: Path, tabular: TabularModels
) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    srv = start_server(home, tmp_path, "--workers", "2", "--no-grpc")
    try:
        prometheus.scrape(srv.port)
        sent = 0
        with httpx.Client(base_url=srv.url) as client:
            for _ in range(30):
                headers = {"Connection": "close"}
                assert (
                    client.post("/v2/models/tabular/infer", json=BODY, headers=headers).status_code
                    == 200
                )
                sent += 1
        total = 'sum(servion_requests_total{target="tabular",code="2xx"})'
        wait_until(lambda: prometheus.value(total) == sent, 60, f"Prometheus to read {sent}")
        wait_until(lambda: flushed(srv) == sent, 20, "the counts on disk")
        victim = workers(srv)[0]
        victim.send_signal(signal.SIGKILL)
        wait_until(
            lambda: len(workers(srv)) == 2 and victim.pid not in {p.pid for p in workers(srv)},
            30,
            "a new worker",
        )
        wait_until(lambda: httpx.get(f"{srv.url}/v2/health/ready").status_code == 200, 30, "ready")
        with httpx.Client(base_url=srv.url) as client:
            for _ in range(20):
                headers = {"Connection": "close"}
                assert (
                    client.post("/v2/models/tabular/infer", json=BODY, headers=headers).status_code
                    == 200
                )
                sent += 1
        wait_until(lambda: prometheus.value(total) == sent, 60, f"Prometheus to read {sent}")
        # No series of servion's counted down, before or after the kill.
        resets = (
            "sum(resets(servion_requests_total[10m]))"
            " + sum(resets(servion_model_requests_total[10m]))"
        )
        assert prometheus.value(resets) == 0.0
        histogram = 'sum(servion_request_duration_seconds_count{target="tabular"})'
        assert prometheus.value(histogram) == sent
        buckets = "rate(servion_model_compute_duration_seconds_bucket[1m])"
        p99 = f"histogram_quantile(0.99, sum by (le) ({buckets}))"
        assert (prometheus.value(p99) or 0) > 0
    finally:
        srv.stop()
