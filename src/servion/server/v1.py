"""KServe V1 ``:predict``: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A V1 call is decoded into the same ``InferRequest`` as a V2 one and answered by
the data plane; only the two ends differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, ModelNotFound
from servion.protocol import (
    InferInput,
    InferRequest,
    InferResponse,
    Limits,
    decode_v1_request,
    encode_v1_response,
)
from servion.routing import request_context
from servion.server.http import JSON_HEADERS, Request, Response, json_response
from servion.serving import DataPlane, LoadedModel, ModelManager, current_request_id, describe

Guard = Callable[[Awaitable[Response], Request], Awaitable[Response]]


class NoV1Route(Exception):
    pass


class V1Api:
    """``GET /v1/models``, ``GET /v1/models/{m}``, ``POST /v1/models/{m}:predict``, for
    models and endpoints alike."""

    def __init__(
        self, manager: ModelManager, plane: DataPlane, limits: Limits, guard: Guard
    ) -> None:
        self.manager = manager
        self.plane = plane
        self.limits = limits
        self.guard = guard

    def handle(self, req: Request, rest: list[str]) -> Response | Awaitable[Response]:
        """``rest``: the path after ``/v1/models``."""
        manager = self.manager
        if not rest and req.method == "GET":
            return json_response(200, {"models": sorted({*manager.latest, *manager.endpoints})})
        if len(rest) != 1:
            raise NoV1Route
        name, _, verb = rest[0].partition(":")
        router = manager.endpoints.get(name)
        if req.method == "GET" and not verb:
            ready = name in manager.latest or router is not None
            if not ready and not any(s.name == name for s in manager.states):
                raise ModelNotFound(name)
            return json_response(200, {"name": name, "ready": ready})
        if req.method == "POST" and verb == "predict":
            current_request_id.set(req.request_id)  # a model's failure is logged under it
            if router is None:
                model = manager.resolve(name, None)
                request = v1_request(model, req.body, self.limits)
                return self.guard(self._predict(self.plane.infer_model(model, request)), req)
            # An endpoint's instances are read against its first arm's input.
            request = v1_request(describe.configured(manager, name, None), req.body, self.limits)
            ctx = request_context(req.header)
            ctx.request_id = req.request_id.decode("ascii") or None
            answer = self.plane.infer_endpoint(router, request, ctx)
            return self.guard(self._predict(answer), req)
        raise NoV1Route

    async def _predict(self, answer: InferResponse | Awaitable[InferResponse]) -> Response:
        response = answer if isinstance(answer, InferResponse) else await answer
        return 200, v1_answer(response), JSON_HEADERS


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
