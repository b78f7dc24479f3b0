"""Tracing on a real server: spans of REST and gRPC requests reach an OTLP/HTTP collector
(a tiny one in the test), in the callers' traces, carrying the ids the callers were answered."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import RunningServer, TabularModels, cli, wait_until
from servion.protocol.grpc import grpc_service_pb2 as pb

ROW = [0.25] * 32
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}
REST_TRACE, GRPC_TRACE = "0af7651916cd43dd8448eb211c80319c", "5b8efff798038103d269b633813fc60c"
V1_TRACE = "2c6e1b7d9a0f4e3c8b5d7a9e1f3c5b7d"
CALLER_SPAN = "b7ad6b7169203331"


class OtlpReceiver:
    """``POST /v1/traces`` as a collector takes it: protobuf ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, str], Span]] = []
        self.lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                export = ExportTraceServiceRequest.FromString(body)
                with received.lock:
                    for resource_spans in export.resource_spans:
                        resource = {
                            a.key: a.value.string_value for a in resource_spans.resource.attributes
                        }
                        for scope_spans in resource_spans.scope_spans:
                            received.spans += [(resource, s) for s in scope_spans.spans]
                answer = ExportTraceServiceResponse().SerializeToString()
                status = 200 if self.path == "/v1/traces" else 404
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def has(self, trace_id: str, names: set[str]) -> Callable[[], bool]:
        return lambda: {s.name for s in self.of_trace(trace_id)} >= names

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for _, s in self.spans if s.trace_id.hex() == trace_id]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    started = OtlpReceiver()
    yield started
    started.http.shutdown()


def attributes(span: Span) -> dict[str, object]:
    found: dict[str, object] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        found[a.key] = getattr(a.value, kind) if kind else None
    return found


def test_rest_and_grpc_spans_reach_the_collector_in_the_callers_traces(
    tmp_path: Path,
    tabular: TabularModels,
    receiver: OtlpReceiver,
    serve: Callable[..., RunningServer],
) -> None:
    home = tmp_path / "home"
    assert cli(home, "register", "tab", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    server = serve(
        home,
        "--tracing",
        "--otlp-endpoint",
        receiver.url,
        env={"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "servion-e2e"},
    )
    answered = httpx.post(
        f"{server.url}/v2/models/tab/infer",
        json=BODY,
        headers={"traceparent": f"00-{REST_TRACE}-{CALLER_SPAN}-01"},
        timeout=30,
    )
    assert answered.status_code == 200
    request = pb.ModelInferRequest(model_name="tab")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 32])
    tensor.contents.fp32_contents.extend(ROW)
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        metadata = (("traceparent", f"00-{GRPC_TRACE}-{CALLER_SPAN}-01"),)
        _, done = call.with_call(request, timeout=30, metadata=metadata)
    grpc_rid = dict(done.trailing_metadata())["x-request-id"]
    predicted = httpx.post(
        f"{server.url}/v1/models/tab:predict",
        json={"instances": [ROW]},
        headers={"traceparent": f"00-{V1_TRACE}-{CALLER_SPAN}-01"},
        timeout=30,
    )
    assert predicted.status_code == 200
    wanted = {"servion.request", "servion.queue", "servion.execution", "servion.encode"}
    for trace_id in (REST_TRACE, GRPC_TRACE, V1_TRACE):
        wait_until(receiver.has(trace_id, wanted), 20, f"the spans of trace {trace_id}")
    for trace_id, rid in (
        (REST_TRACE, answered.headers["x-request-id"]),
        (GRPC_TRACE, grpc_rid),
        (V1_TRACE, predicted.headers["x-request-id"]),
    ):
        spans = receiver.of_trace(trace_id)
        [top] = [s for s in spans if s.name == "servion.request"]
        assert top.parent_span_id.hex() == CALLER_SPAN and top.kind == Span.SPAN_KIND_SERVER
        assert attributes(top)["servion.request_id"] == rid
        assert attributes(top)["servion.target"] == "tab"
        others = [s for s in spans if s is not top]
        assert {s.parent_span_id for s in others} == {top.span_id}
    v1_top = next(s for s in receiver.of_trace(V1_TRACE) if s.name == "servion.request")
    assert attributes(v1_top)["http.route"] == "/v1/models/{model}:predict"
    assert attributes(v1_top)["http.response.status_code"] == 200
    grpc_top = next(s for s in receiver.of_trace(GRPC_TRACE) if s.name == "servion.request")
    assert attributes(grpc_top)["rpc.method"] == "ModelInfer"
    assert attributes(grpc_top)["rpc.grpc.status_code"] == 0
    with receiver.lock:
        assert {r.get("service.name") for r, _ in receiver.spans} == {"servion-e2e"}
