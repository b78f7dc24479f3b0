"""KServe V1 ``:predict``: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A V1 call is decoded into the same ``InferRequest`` as a V2 one and answered by
the data plane; only the two ends differ.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np
import orjson

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, ModelNotFound, ServionError
from servion.protocol import (
    InferInput,
    InferRequest,
    InferResponse,
    Limits,
    decode_v1_request,
    encode_v1_response,
    http_status_for,
)
from servion.routing import request_context
from servion.server.http import JSON_HEADERS, Request, Response, json_response
from servion.serving import (
    DataPlane,
    LoadedModel,
    ModelManager,
    current_request_id,
    current_trace,
    describe,
)
from servion.serving.sleep import obtain

if TYPE_CHECKING:
    from servion.server.tracing import RequestTrace, Tracing

Guard = Callable[[Awaitable[Response], Request], Awaitable[Response]]


class NoV1Route(Exception):
    pass


class V1Api:
    """``GET /v1/models``, ``GET /v1/models/{m}``, ``POST /v1/models/{m}:predict``, for
    models and endpoints alike."""

    def __init__(
        self,
        manager: ModelManager,
        plane: DataPlane,
        limits: Limits,
        guard: Guard,
        tracing: Tracing | None = None,
    ) -> None:
        self.manager = manager
        self.plane = plane
        self.limits = limits
        self.guard = guard
        self.tracing = tracing

    def handle(self, req: Request, rest: list[str]) -> Response | Awaitable[Response]:
        """``rest``: the path after ``/v1/models``."""
        manager = self.manager
        if not rest and req.method == "GET":
            return json_response(200, {"models": sorted({*manager.latest, *manager.endpoints})})
        if len(rest) != 1:
            raise NoV1Route
        name, _, verb = rest[0].partition(":")
        if req.method == "GET" and not verb:
            ready = name in manager.latest or name in manager.endpoints
            if not ready and not any(s.name == name for s in manager.states):
                raise ModelNotFound(name)
            return json_response(200, {"name": name, "ready": ready})
        if req.method == "POST" and verb == "predict":
            current_request_id.set(req.request_id)  # a model's failure is logged under it
            if self.tracing is None:
                return self.guard(self._predict(self._infer(req, name), None), req)
            return self._traced(req, name, self.tracing)
        raise NoV1Route

    def _infer(self, req: Request, name: str) -> InferResponse | Awaitable[InferResponse]:
        router = self.manager.endpoints.get(name)
        if router is None:
            try:
                model = self.manager.resolve(name, None)
            except ServionError:
                if not self.manager.wakeable(name, None):
                    raise
                return self._woken(req, name)
            return self.plane.infer_model(model, v1_request(model, req.body, self.limits))
        # An endpoint's instances are read against its first arm's input.
        first = describe.configured(self.manager, name, None)
        request = v1_request(first, req.body, self.limits)
        ctx = request_context(req.header)
        ctx.request_id = req.request_id.decode("ascii") or None
        return self.plane.infer_endpoint(router, request, ctx)

    async def _woken(self, req: Request, name: str) -> InferResponse:
        """A prediction from a model scaled to zero, once it is loaded again."""
        model = await obtain(self.manager, name, None)
        answer = self.plane.infer_model(model, v1_request(model, req.body, self.limits))
        return answer if isinstance(answer, InferResponse) else await answer

    def _traced(self, req: Request, name: str, tracing: Tracing) -> Awaitable[Response]:
        """The prediction with a request span (a child of the caller's ``traceparent``)."""
        attributes: dict[str, str | int] = {
            "http.request.method": req.method,
            "http.route": "/v1/models/{model}:predict",
            "servion.target": name,
            "servion.request_id": req.request_id.decode("ascii"),
        }
        trace = tracing.request(req.header, attributes)
        if trace is None:
            return self.guard(self._predict(self._infer(req, name), None), req)
        token = current_trace.set(trace)
        try:
            answer = self._infer(req, name)
        except BaseException as exc:
            trace.end(http_status_for(exc)[0], exc)
            raise
        finally:
            current_trace.reset(token)
        return self.guard(self._predict(answer, trace), req)

    async def _predict(
        self, answer: InferResponse | Awaitable[InferResponse], trace: RequestTrace | None
    ) -> Response:
        try:
            response = answer if isinstance(answer, InferResponse) else await answer
        except BaseException as exc:
            if trace is not None:
                trace.end(http_status_for(exc)[0], exc)
            raise
        if trace is None:
            return 200, v1_answer(response), JSON_HEADERS
        t0 = time.perf_counter_ns()
        body = v1_answer(response)
        trace.encoded(t0, time.perf_counter_ns())
        trace.end(200)
        return 200, body, JSON_HEADERS


def v1_request(model: LoadedModel, body: bytes, limits: Limits) -> InferRequest:
    """V1 instances as a request to a single-input model: one row per instance."""
    instances = decode_v1_request(body, limits)
    if len(model.signature.inputs) != 1:
        raise InvalidInput(f"model '{model.name}' has several inputs: use the V2 protocol")
    spec = model.signature.inputs[0]
    if spec.datatype == "BYTES":
        raise InvalidInput(f"model '{model.name}' takes BYTES: use the V2 protocol")
    try:
        array = np.asarray(instances, dtype=NUMPY_OF[spec.datatype])
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"instances are not a rectangular array of numbers: {exc}") from None
    return InferRequest(None, [InferInput(spec.name, spec.datatype, array.shape, array)], None, {})


def v1_answer(response: InferResponse) -> bytes:
    """One prediction per instance: the value of a single output, else a dict of all."""
    names = [o.name for o in response.outputs]
    columns = [np.asarray(o.data) for o in response.outputs]
    if len(columns) == 1:
        predictions = _plain(columns[0])
    else:
        plain = [_plain(c) for c in columns]
        predictions = [dict(zip(names, values, strict=True)) for values in zip(*plain, strict=True)]
    return encode_v1_response(predictions)


def _plain(array: np.ndarray) -> list[object]:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return list(orjson.loads(orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)))
