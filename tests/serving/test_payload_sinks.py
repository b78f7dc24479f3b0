"""Payload log sinks and channels on their own: one thread per sink, shared by the endpoints
that write there, a bounded share of the queue per endpoint, failed deliveries counted, and
sinks that close when the last endpoint using them stops logging."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np

from conftest import wait_until
from servion.batching import BatchingConfig
from servion.protocol import InferInput, InferOutput, InferRequest, InferResponse
from servion.registry import ModelRegistry
from servion.routing import (
    ArmPolicy,
    EndpointPolicy,
    EndpointRouter,
    ModelRef,
    PayloadLogPolicy,
    PayloadLogStats,
    RequestContext,
)
from servion.serving import ModelManager, PayloadLogger
from servion.serving.payload_events import Payload
from servion.serving.payload_sinks import Channel, SinkWriter

REQUEST = InferRequest(None, [InferInput.of("x", np.array([[1.0, 2.0]]))], None, {})
RESPONSE = InferResponse("m", "v1.0.0", None, [InferOutput.of("y", np.array([3.0]))])


def payload(rid: str) -> Payload:
    return Payload("ep", rid, 0.0, "m:v1.0.0", REQUEST, RESPONSE, None, 200, False, 8)


def sink_threads() -> int:
    return sum(t.name == "servion-payload-log" and t.is_alive() for t in threading.enumerate())


def test_each_endpoint_has_its_own_bounded_share_and_failures_are_counted() -> None:
    stuck = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    url = f"http://127.0.0.1:{stuck.getsockname()[1]}/events"
    sink = SinkWriter(url, http_timeout_s=30)
    small = Channel(PayloadLogPolicy(1.0, url, 8, 1), PayloadLogStats(), sink)
    roomy = Channel(PayloadLogPolicy(1.0, url, 8, 100), PayloadLogStats(), sink)
    for i in range(10):
        sink.offer(small, payload(f"s{i}"))
        sink.offer(roomy, payload(f"r{i}"))
    # At most one event of each is on its way, and one of the small one's waits.
    assert small.stats.dropped >= 8 and roomy.stats.dropped == 0
    stuck.close()  # the waiting POST fails at once, and so do the next
    sink.close()
    assert sink.join(10)
    assert roomy.stats.to_dict() == {"written": 0, "dropped": 0, "failed": 10}
    assert small.stats.failed + small.stats.dropped == 10 and small.stats.written == 0
    sink.offer(roomy, payload("late"))  # a closed sink takes nothing more
    assert roomy.stats.dropped == 1


def logging_router(name: str, sink: str, sample: float = 1.0) -> EndpointRouter:
    arms = (ArmPolicy(ModelRef("m", "v1.0.0"), 100.0),)
    log = PayloadLogPolicy(sample, sink, 8, 100)
    return EndpointRouter(EndpointPolicy(name, 1, arms, payload_log=log))


def test_sinks_follow_the_endpoints(registry: ModelRegistry, tmp_path: Path) -> None:
    before = sink_threads()
    manager = ModelManager(registry, BatchingConfig())
    logger = PayloadLogger(manager)
    events = tmp_path / "events.jsonl"
    sink = f"file://{tmp_path}/./events.jsonl"
    routers = {"one": logging_router("one", sink), "two": logging_router("two", f"file://{events}")}
    manager.endpoints = routers
    logger.sync(routers)
    assert sink_threads() == before + 1  # one file, one writer
    for name, rid in (("one", "a"), ("two", "b")):
        ctx = RequestContext(request_id=rid)
        assert logger.watch(routers[name], REQUEST, ctx, lambda: RESPONSE) is RESPONSE
    probe = RequestContext(request_id="p", probe=True)
    logger.watch(routers["one"], REQUEST, probe, lambda: RESPONSE)

    def written() -> list[str]:
        text = events.read_text() if events.exists() else ""
        return [json.loads(line)["id"] for line in text.splitlines()]

    wait_until(lambda: sorted(written()) == ["a", "b"], 10, "both events, not the probe")
    # A new revision with other settings keeps the shared file's writer; its counters stay.
    routers = {
        **routers,
        "one": EndpointRouter(logging_router("one", sink, 0.5).policy, routers["one"]),
    }
    manager.endpoints = routers
    logger.sync(routers)
    assert sink_threads() == before + 1
    assert routers["one"].stats()["payload_log"] == {"written": 1, "dropped": 0, "failed": 0}
    logger.sync({})  # neither endpoint logs any more: the writer finishes and goes
    wait_until(lambda: sink_threads() == before, 10, "the sink's thread to end")
    logger.close()
    assert logger.join(5)
