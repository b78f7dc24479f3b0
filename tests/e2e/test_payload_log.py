"""Payload logs on a real server: CloudEvents lines in a file for REST, gRPC and refused
requests, batches POSTed to a collector, drops (never waits) when the sink is stuck, a
deterministic sample, and spec refusals that name the field."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg

from conftest import RunningServer, TabularModels, register, served, wait_until
from servion.registry import ModelRegistry
from servion.serving.payload_log import sampled

ROW = [0.25] * 32
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
YAML = {"content-type": "application/yaml"}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels
) -> Iterator[RunningServer]:
    def setup(registry: ModelRegistry) -> None:
        register(registry, "tabular", tabular.onnx, "v1.0.0")

    with served(tmp_path_factory.mktemp("payload-log"), setup) as srv:
        yield srv


def deploy(server: RunningServer, text: str, status: int = 200) -> httpx.Response:
    reply = httpx.post(f"{server.url}/v2/admin/endpoints", content=text, headers=YAML, timeout=60)
    assert reply.status_code == status, reply.text
    return reply


def endpoint(name: str, payload_log: str, extra: str = "") -> str:
    return (
        f"endpoint: {name}\nmodels: [{{model: tabular, version: v1.0.0}}]\n"
        f"payload_log: {payload_log}\n{extra}"
    )


def report(server: RunningServer, name: str) -> dict[str, int]:
    reply = httpx.get(f"{server.url}/v2/admin/endpoints/{name}/report", timeout=30)
    assert reply.status_code == 200, reply.text
    counts: dict[str, int] = reply.json()["payload_log"]
    return counts


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_in_a_file_for_rest_grpc_errors_and_cache_hits(
    server: RunningServer, tmp_path: Path
) -> None:
    events = tmp_path / "logs" / "events.jsonl"
    log = f"{{sample: 1.0, sink: 'file://{events}', max_elements: 8}}"
    deploy(server, endpoint("logged", log, "cache: {max_entries: 16}"))
    url = f"{server.url}/v2/models/logged/infer"
    with httpx.Client(timeout=30) as client:
        for rid in ("rest-1", "rest-2"):  # the second is the cache's answer
            assert client.post(url, json=BODY, headers={"x-request-id": rid}).status_code == 200
        bad = {"inputs": [{**BODY["inputs"][0], "shape": [1, 31], "data": ROW[:31]}]}
        assert client.post(url, json=bad, headers={"x-request-id": "bad-1"}).status_code == 400
        probe = {"x-request-id": "probe-1", "x-servion-probe": "1"}
        assert client.post(url, json=BODY, headers=probe).status_code == 200
    x = tg.InferInput("X", [1, 32], "FP32")
    x.set_data_from_numpy(np.full((1, 32), 0.5, np.float32))
    tg.InferenceServerClient(server.grpc_url).infer("logged", [x], headers={"x-request-id": "g-1"})

    wait_until(lambda: len(lines(events)) >= 4, 10, "four payload log lines")
    by_id = {e["id"]: e for e in lines(events)}
    assert set(by_id) == {"rest-1", "rest-2", "bad-1", "g-1"}  # never the probe
    for event in by_id.values():
        assert event["specversion"] == "1.0" and event["type"] == "io.servion.inference"
        assert event["source"] == "servion/logged"
        assert event["datacontenttype"] == "application/json"
        assert event["subject"] == "tabular:v1.0.0"
        assert datetime.datetime.fromisoformat(event["time"]).tzinfo == datetime.UTC
    rest = by_id["rest-1"]["data"]
    assert rest["status"] == 200 and rest["error"] is None and rest["cached"] is False
    # 32 input elements are past max_elements (8): a summary; the outputs are whole.
    (given,) = rest["request"]["inputs"]
    assert {k: given[k] for k in ("name", "datatype", "shape")} == {
        "name": "X",
        "datatype": "FP32",
        "shape": [1, 32],
    }
    assert "data" not in given
    assert given["summary"] == {
        "count": 32,
        "min": 0.25,
        "max": 0.25,
        "mean": 0.25,
        "std": 0.0,
        "nan": 0,
    }
    outputs = {o["name"]: o for o in rest["response"]["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 2]
    assert len(outputs["probabilities"]["data"][0]) == 2 and "summary" not in outputs["label"]
    assert rest["response"]["model_version"] == "v1.0.0"
    assert by_id["rest-2"]["data"]["cached"] is True
    assert by_id["rest-2"]["data"]["response"]["outputs"] == rest["response"]["outputs"]
    assert by_id["g-1"]["data"]["request"]["inputs"][0]["summary"]["mean"] == 0.5
    refused = by_id["bad-1"]["data"]
    assert refused["status"] == 400 and refused["response"] is None
    assert "X" in refused["error"] and refused["request"]["inputs"][0]["shape"] == [1, 31]
    wait_until(lambda: report(server, "logged")["written"] == 4, 10, "written == 4")
    assert report(server, "logged") == {"written": 4, "dropped": 0, "failed": 0}

    # New settings, a new sink: later events go there, not to the old file.
    moved = tmp_path / "moved.jsonl"
    deploy(server, endpoint("logged", f"{{sink: 'file://{moved}'}}"))
    reply = httpx.post(url, json=BODY, headers={"x-request-id": "rest-3"}, timeout=30)
    assert reply.status_code == 200
    wait_until(lambda: len(lines(moved)) == 1, 10, "the event in the new file")
    assert lines(moved)[0]["id"] == "rest-3" and len(lines(events)) == 4


class EventCollector:
    """A collector of POSTed event batches: the bodies and their content types."""

    def __init__(self) -> None:
        self.batches: list[Any] = []
        self.content_types: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.content_types.append(self.headers["Content-Type"])
                collector.batches.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_batches_are_posted_to_an_http_collector(server: RunningServer) -> None:
    collector = EventCollector()
    try:
        deploy(server, endpoint("posted", f"{{sink: '{collector.url}'}}"))
        with httpx.Client(timeout=30) as client:
            for i in range(20):
                reply = client.post(
                    f"{server.url}/v2/models/posted/infer",
                    json=BODY,
                    headers={"x-request-id": f"post-{i}"},
                )
                assert reply.status_code == 200
        wait_until(lambda: len(collector.events()) == 20, 10, "20 posted events")
        assert all(isinstance(batch, list) and batch for batch in collector.batches)
        assert set(collector.content_types) == {"application/cloudevents-batch+json"}
        assert {e["id"] for e in collector.events()} == {f"post-{i}" for i in range(20)}
        assert all(e["source"] == "servion/posted" for e in collector.events())
        wait_until(lambda: report(server, "posted")["written"] == 20, 10, "written == 20")
    finally:
        collector.stop()


def test_a_stuck_sink_drops_events_and_never_slows_an_answer(server: RunningServer) -> None:
    # Connections are accepted by the kernel, and never answered.
    stuck = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        sink = f"http://127.0.0.1:{stuck.getsockname()[1]}/events"
        deploy(server, endpoint("stuck", f"{{sink: '{sink}', buffer: 1}}"))
        slowest = 0.0
        with httpx.Client(timeout=30) as client:
            for i in range(100):
                started = time.perf_counter()
                reply = client.post(
                    f"{server.url}/v2/models/stuck/infer",
                    json=BODY,
                    headers={"x-request-id": f"stuck-{i}"},
                )
                slowest = max(slowest, time.perf_counter() - started)
                assert reply.status_code == 200
        # The sink's POST waits 2 s for an answer; no request waited for it.
        assert slowest < 1.0
        counts = report(server, "stuck")
        assert counts["dropped"] >= 90 and counts["written"] == 0
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        dropped = [
            line
            for line in metrics.splitlines()
            if line.startswith('servion_payload_log_dropped_total{endpoint="stuck"}')
        ]
        assert dropped and float(dropped[0].split()[-1]) >= 90
        # The posts time out: those events are counted as failed, not lost silently.
        wait_until(lambda: report(server, "stuck")["failed"] >= 1, 10, "a failed post")
        assert sum(report(server, "stuck").values()) <= 100
    finally:
        stuck.close()


def test_a_sample_logs_the_requests_its_ids_choose(server: RunningServer, tmp_path: Path) -> None:
    events = tmp_path / "sampled.jsonl"
    deploy(server, endpoint("sampled", f"{{sample: 0.1, sink: 'file://{events}'}}"))
    ids = [f"sample-{i}" for i in range(300)]
    chosen = {rid for rid in ids if sampled(rid, 0.1)}
    assert 10 <= len(chosen) <= 60  # a hash, not a draw: the same ids, the same choice
    with httpx.Client(timeout=30) as client:
        for rid in ids:
            reply = client.post(
                f"{server.url}/v2/models/sampled/infer", json=BODY, headers={"x-request-id": rid}
            )
            assert reply.status_code == 200
    wait_until(lambda: len(lines(events)) == len(chosen), 10, f"{len(chosen)} sampled events")
    assert {e["id"] for e in lines(events)} == chosen


@pytest.mark.parametrize(
    ("payload_log", "words"),
    [
        ("{sample: 0, sink: 'file:///tmp/x.jsonl'}", "payload_log.sample: Input should be greater"),
        ("{sink: 'ftp://host/x'}", "payload_log.sink: scheme ftp:// is not a sink"),
        ("{sink: 'file://events.jsonl'}", "payload_log.sink: a file sink needs an absolute path"),
        ("{sink: 'events.jsonl'}", "payload_log.sink: scheme (none) is not a sink"),
        ("{sink: 'http:///x'}", "payload_log.sink: an HTTP sink needs a host"),
        ("{sink: 'file:///tmp/x', buffer: 0}", "payload_log.buffer: Input should be greater"),
        ("{sample: 0.5}", "payload_log.sink: Field required"),
    ],
)
def test_bad_payload_log_specs_are_refused(
    server: RunningServer, payload_log: str, words: str
) -> None:
    reply = deploy(server, endpoint("refused", payload_log), status=400)
    assert words in reply.json()["error"]
