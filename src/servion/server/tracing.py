"""OpenTelemetry spans for inference requests (the optional ``servion[otel]`` extra).

Imported only when tracing is on, so a server without it never loads OpenTelemetry. Each
worker builds its own provider: workers are fresh processes, and a batching exporter thread
does not survive a fork anyway. The request span runs from the transport's routing to its
answer; the queue, execution and encode spans are made after the fact from times the batcher
and the encoder measure, so tracing adds no work inside a batch's execution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from servion._version import __version__
from servion.batching import Trace
from servion.errors import ServionError
from servion.protocol import http_status_for
from servion.server.answers import Answer
from servion.server.http import Request
from servion.serving import current_trace

if TYPE_CHECKING:
    from servion.config import ServerSettings

Lookup = Callable[[bytes], bytes | None]
"""A header (REST) or metadata (gRPC) value by lower-case name."""

Infer = Callable[[Request, str, str | None, "RequestTrace | None"], Answer]


class _LookupGetter(Getter[Lookup]):
    def get(self, carrier: Lookup, key: str) -> list[str] | None:
        value = carrier(key.encode("ascii"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Lookup) -> list[str]:
        return []  # only TraceContext's two names are ever asked for


_GETTER = _LookupGetter()


class Tracing:
    """One worker's tracer: starts request spans and ends what the batcher reports.

    >>> tracing = Tracing.from_settings(settings.server, worker_id="w1")  # doctest: +SKIP
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("servion", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self.offset_ns = time.time_ns() - time.perf_counter_ns()
        """Added to a ``perf_counter_ns`` time (what the batcher measures) for the epoch."""

    @classmethod
    def from_settings(cls, settings: ServerSettings, worker_id: str) -> Tracing:
        """OTLP/HTTP export in batches; the SDK reads the ``OTEL_*`` variables itself."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        endpoint = settings.otlp_endpoint
        if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
        return cls.with_processor(BatchSpanProcessor(exporter), worker_id)

    @classmethod
    def with_processor(cls, processor: SpanProcessor, worker_id: str) -> Tracing:
        """A provider that hands its spans to ``processor`` (tests give an in-memory one)."""
        resource = Resource.create({SERVICE_VERSION: __version__, SERVICE_INSTANCE_ID: worker_id})
        # The SDK's "unknown_service:<executable>" means OTEL_SERVICE_NAME was not set.
        if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_"):
            resource = resource.merge(Resource({SERVICE_NAME: "servion"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(processor)
        return cls(provider)

    def request(
        self, lookup: Lookup, attributes: dict[str, str | int], rest: bool = True
    ) -> RequestTrace | None:
        """A request span, child of the caller's ``traceparent`` if it sent one; None when
        the sampler leaves the request out (then nothing else is recorded for it)."""
        parent = self._propagator.extract(lookup, getter=_GETTER)
        span = self.tracer.start_span(
            "servion.request", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return RequestTrace(self, span, rest) if span.is_recording() else None

    def rest(self, req: Request, name: str, version: str | None, infer: Infer) -> Answer:
        """``infer``'s answer to a REST inference, traced; the answer ends the span."""
        route = "/v2/models/{model}" + ("/versions/{version}" if version else "") + "/infer"
        attributes: dict[str, str | int] = {
            "http.request.method": req.method,
            "http.route": route,
            "servion.target": name,
            "servion.request_id": req.request_id.decode("ascii"),
        }
        if version:
            attributes["servion.version"] = version
        trace = self.request(req.header, attributes)
        if trace is None:
            return infer(req, name, version, None)
        token = current_trace.set(trace)
        try:
            return infer(req, name, version, trace)
        except BaseException as exc:
            trace.end(http_status_for(exc)[0], exc)
            raise
        finally:
            current_trace.reset(token)

    def close(self) -> None:
        """Export what is buffered and stop (blocks up to the exporter's timeout)."""
        self.provider.shutdown()


class RequestTrace:
    """One request's span, and the spans made for it after the fact."""

    __slots__ = ("_context", "_tracing", "failure", "rest", "span")

    def __init__(self, tracing: Tracing, span: Span, rest: bool) -> None:
        self._tracing = tracing
        self.span = span
        self.rest = rest
        self._context = set_span_in_context(span)
        self.failure: BaseException | None = None
        """The error answered, when whoever answers knows it before ``end`` is called."""

    def queued(self, enqueued_ns: int, started_ns: int) -> None:
        offset = self._tracing.offset_ns
        span = self._tracing.tracer.start_span(
            "servion.queue", context=self._context, start_time=enqueued_ns + offset
        )
        span.end(end_time=started_ns + offset)

    def executed(
        self,
        label: str,
        batch: Sequence[Trace],
        started_ns: int,
        executions: Sequence[tuple[int, int]],
        error: ServionError | None,
    ) -> None:
        # A batch serves several traces, so its span belongs to none of them and links to
        # each (OpenTelemetry's way for batches); alone, it is simply the request's child.
        traces = [t for t in batch if isinstance(t, RequestTrace)]
        links = [Link(t.span.get_span_context()) for t in traces]
        parent = self._context if len(traces) == 1 else Context()
        start = started_ns + self._tracing.offset_ns
        span = self._tracing.tracer.start_span(
            "servion.execution",
            context=parent,
            links=links,
            start_time=start,
            attributes={
                "servion.model": label,
                "servion.batch.requests": len(traces),
                "servion.batch.rows": sum(rows for rows, _ in executions),
                "servion.executions": len(executions),
            },
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error.message))
        span.end(end_time=start + sum(ns for _, ns in executions))

    def encoded(self, started_ns: int, ended_ns: int) -> None:
        offset = self._tracing.offset_ns
        span = self._tracing.tracer.start_span(
            "servion.encode", context=self._context, start_time=started_ns + offset
        )
        span.end(end_time=ended_ns + offset)

    def end(self, status: int, error: BaseException | None = None) -> None:
        """End the request span with the HTTP status (gRPC: the one REST would answer)."""
        span = self.span
        error = error or self.failure
        span.set_attribute("http.response.status_code" if self.rest else "servion.status", status)
        # As OpenTelemetry's conventions for servers: a 4xx is the client's error, not ours.
        if status >= 500:
            if isinstance(error, ServionError):
                span.set_status(Status(StatusCode.ERROR, error.message))
            else:
                span.set_status(Status(StatusCode.ERROR))
                if error is not None:
                    span.record_exception(error)
        span.end()
