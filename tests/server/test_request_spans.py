"""Tracing inside one worker: the real app, data plane and batcher, with the SDK's in-memory
exporter in place of OTLP, so that every span can be looked at as it was made."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import TabularModels, register
from servion.config import ServerSettings, Settings
from servion.registry import ModelRegistry
from servion.server.app import ServionApp
from servion.server.http import Request, Response
from servion.server.tracing import Tracing
from servion.server.worker import build_app

ROW = [0.25] * 32
BODY = json.dumps(
    {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
).encode()
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
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def traced(
    settings: Settings, tabular: TabularModels, tmp_path: Path
) -> Iterator[tuple[ServionApp, InMemorySpanExporter]]:
    registry = ModelRegistry(settings)
    register(registry, "tab", tabular.onnx)
    failing = tmp_path / "failing.py"
    failing.write_text(FAILING_MODEL)
    register(registry, "failing", failing, trust_code=True)
    registry.close()
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_processor(SimpleSpanProcessor(exporter), "test-worker")
    quiet = settings.model_copy(update={"server": ServerSettings(grpc=False, tracing=True)})
    yield build_app(quiet, admin_required=False, tracing=tracing), exporter


def request(rid: str, model: str = "tab", traceparent: str | None = None) -> Request:
    headers = [(b"content-type", b"application/json")]
    if traceparent is not None:
        headers.append((b"traceparent", traceparent.encode()))
    req = Request("POST", f"/v2/models/{model}/infer", headers, BODY)
    req.request_id = rid.encode()  # what the front end does before it calls the app
    return req


async def answers(app: ServionApp, reqs: list[Request]) -> list[Response]:
    """Hand ``reqs`` to the app in one loop turn, as requests read from the sockets at once."""
    pending = [app.respond(r) for r in reqs]
    return [p if isinstance(p, tuple) else await p for p in pending]


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def request_span(spans: tuple[ReadableSpan, ...], rid: str) -> ReadableSpan:
    [span] = [
        s
        for s in named(spans, "servion.request")
        if s.attributes and s.attributes["servion.request_id"] == rid
    ]
    return span


def children(
    spans: tuple[ReadableSpan, ...], name: str, parent: ReadableSpan
) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in named(spans, name)
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def test_one_batch_links_the_requests_it_carries(
    traced: tuple[ServionApp, InMemorySpanExporter],
) -> None:
    app, exporter = traced

    async def scenario() -> list[Response]:
        await app.startup()
        try:
            # Two arrivals in one turn run inline and tell the batcher that load came in
            # pairs: from the next turn on, concurrent requests queue and share a batch.
            await answers(app, [request("warm-1"), request("warm-2")])
            await asyncio.sleep(0)
            caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
            return await answers(app, [request("a", traceparent=caller), request("b")])
        finally:
            await app.shutdown()

    a, b = asyncio.run(scenario())
    assert a[0] == b[0] == 200
    spans = exporter.get_finished_spans()
    first, second = request_span(spans, "a"), request_span(spans, "b")
    assert first.context is not None and second.context is not None
    # The caller's traceparent makes its trace ours; the other request starts its own.
    assert format(first.context.trace_id, "032x") == CALLER_TRACE
    assert first.parent is not None and format(first.parent.span_id, "016x") == CALLER_SPAN
    assert first.parent.is_remote and first.kind == SpanKind.SERVER
    assert second.context.trace_id != first.context.trace_id
    assert first.attributes is not None
    assert first.attributes["http.response.status_code"] == 200
    assert first.attributes["http.route"] == "/v2/models/{model}/infer"
    assert first.attributes["servion.target"] == "tab"
    # One execution for both, linked to each request; each waited in the queue.
    shared = [
        s
        for s in named(spans, "servion.execution")
        if {link.context.span_id for link in s.links}
        == {first.context.span_id, second.context.span_id}
    ]
    assert len(shared) == 1, [(s.name, s.links) for s in spans]
    execution = shared[0]
    assert execution.attributes is not None
    assert execution.attributes["servion.batch.requests"] == 2
    assert execution.attributes["servion.batch.rows"] == 2
    for parent in (first, second):
        [queue] = children(spans, "servion.queue", parent)
        [encode] = children(spans, "servion.encode", parent)
        assert queue.start_time is not None and queue.end_time is not None
        assert execution.start_time is not None and execution.end_time is not None
        assert parent.start_time is not None and parent.end_time is not None
        # In order on one clock: queued, executed, encoded, answered.
        assert parent.start_time <= queue.start_time <= queue.end_time
        assert queue.end_time <= execution.start_time <= execution.end_time
        assert encode.end_time is not None and encode.end_time <= parent.end_time
    # A request that ran alone (inline) has its execution as a child.
    warm = request_span(spans, "warm-1")
    [alone] = children(spans, "servion.execution", warm)
    assert alone.attributes is not None and alone.attributes["servion.batch.requests"] == 1
    assert {s.resource.attributes["service.name"] for s in spans} == {"servion"}


def test_refused_requests_end_their_span_with_the_status(
    traced: tuple[ServionApp, InMemorySpanExporter],
) -> None:
    app, exporter = traced
    bad = Request("POST", "/v2/models/tab/infer", [], b"{not json")
    bad.request_id = b"bad"

    async def scenario() -> list[Response]:
        await app.startup()
        try:
            return await answers(app, [request("gone", model="nosuch"), bad])
        finally:
            await app.shutdown()

    missing, malformed = asyncio.run(scenario())
    assert (missing[0], malformed[0]) == (404, 400)
    spans = exporter.get_finished_spans()
    for rid, status in (("gone", 404), ("bad", 400)):
        span = request_span(spans, rid)
        assert span.attributes is not None
        assert span.attributes["http.response.status_code"] == status
        assert span.status.status_code == StatusCode.UNSET  # the client's error, not ours
        assert not children(spans, "servion.queue", span)


def test_a_failing_model_marks_its_spans_as_errors(
    traced: tuple[ServionApp, InMemorySpanExporter],
) -> None:
    app, exporter = traced

    async def scenario() -> list[Response]:
        await app.startup()
        try:
            return await answers(app, [request("boom", model="failing")])
        finally:
            await app.shutdown()

    [failed] = asyncio.run(scenario())
    assert failed[0] == 500
    spans = exporter.get_finished_spans()
    top = request_span(spans, "boom")
    assert top.status.status_code == StatusCode.ERROR
    assert top.status.description and "failed (request id" in top.status.description
    assert "secret" not in top.status.description  # no more than the client was told
    [execution] = children(spans, "servion.execution", top)
    assert execution.status.status_code == StatusCode.ERROR


def test_without_tracing_opentelemetry_is_never_imported(settings: Settings) -> None:
    """The default worker, REST and gRPC included, loads no OpenTelemetry module at all."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from servion.config import Settings\n"
        "from servion.server.worker import build_app\n"
        "app = build_app(Settings.load(home=Path(sys.argv[1])), False)\n"
        "assert app.tracing is None and app.front_ends, 'gRPC is served by default'\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVION_SERVER_")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(settings.home)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tracing_without_the_extra_is_refused_up_front(tmp_path: Path) -> None:
    # A package of that name without the SDK in it: what an environment without
    # servion[otel] looks like to the import system.
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "servion.cli.main", "--home", str(tmp_path / "h"), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path, "SERVION_SERVER_TRACING": "true"},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'servion[otel]'" in done.stderr
