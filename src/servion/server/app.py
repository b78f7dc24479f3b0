"""The REST application: Open Inference Protocol (V2), its Triton extensions, and KServe V1.

Routing is a split of the path and a few comparisons; the inference handler
parses once, validates against precomputed checks, runs the model inline
(the models take microseconds; a thread hop would cost more), and encodes once.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np

from servion.batching import request_scheduling
from servion.errors import (
    InvalidInput,
    ModelNotFound,
    ServionError,
    Unauthorized,
    UnsupportedMediaType,
    quoted,
)
from servion.protocol import (
    InferOutput,
    InferResponse,
    Limits,
    decode_infer_request,
    encode_error,
    encode_infer_response,
    http_status_for,
    parse_header_length,
)
from servion.server.control import Control
from servion.server.http import JSON_HEADERS, Receive, Request, Scope, Send, send_bytes, send_json
from servion.server.loaded import LoadedModel
from servion.server.manager import ModelManager
from servion.server.v1 import predict_v1

log = logging.getLogger("servion.server")
perf_ns = time.perf_counter_ns

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]

# Bodies that would need unpickling are refused by type, before they are read.
PICKLE_TYPES = (
    b"application/python-pickle",
    b"application/x-python-pickle",
    b"application/pickle",
    b"application/x-pickle",
)


def _model_route(parts: list[str]) -> tuple[str, str | None, str]:
    """Split ``{m}[/versions/{v}][/action]`` into (model, version, action)."""
    if len(parts) == 1:
        return parts[0], None, ""
    if len(parts) == 2 and parts[1] != "versions":
        return parts[0], None, parts[1]
    if len(parts) in (3, 4) and parts[1] == "versions":
        return parts[0], parts[2], parts[3] if len(parts) == 4 else ""
    raise _NoRoute


class _NoRoute(Exception):
    pass


class ServionApp:
    """The ASGI callable one worker process serves."""

    def __init__(
        self, manager: ModelManager, control: Control, limits: Limits, server_version: str
    ) -> None:
        self.manager = manager
        self.control = control
        self.limits = limits
        self.draining = False
        self._metadata = {"name": "servion", "version": server_version, "extensions": EXTENSIONS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(Request(scope, receive), send)
        elif scope["type"] == "lifespan":
            await self.control.lifespan(receive, send)

    async def _http(self, req: Request, send: Send) -> None:
        try:
            await self._dispatch(req, send)
        except ServionError as exc:
            status, headers = http_status_for(exc)
            extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            await send_bytes(send, status, encode_error(exc.message), JSON_HEADERS + extra)
        except _NoRoute:
            await send_bytes(
                send, 404, encode_error(f"no route for {req.method} {quoted(req.path)}")
            )
        except Exception:
            request_id = uuid.uuid4().hex[:16]
            log.exception(
                "request_failed", extra={"request_id": request_id, "path": quoted(req.path)}
            )
            await send_bytes(send, 500, encode_error(f"internal error (request id {request_id})"))

    async def _dispatch(self, req: Request, send: Send) -> None:
        parts = req.path.strip("/").split("/")
        head = parts[0]
        if head == "v2":
            if len(parts) > 2 and parts[1] == "models" and parts[2] != "stats":
                return await self._model(req, send, *_model_route(parts[2:]))
            return await self._v2_other(req, send, parts[1:])
        if head == "v1" and len(parts) >= 2 and parts[1] == "models":
            return await self._v1(req, send, parts[2:])
        raise _NoRoute

    async def _model(
        self, req: Request, send: Send, name: str, version: str | None, action: str
    ) -> None:
        if action == "infer" and req.method == "POST":
            return await self._infer(req, send, self.manager.resolve(name, version))
        if req.method != "GET":
            raise _NoRoute
        if action == "":
            model = self.manager.resolve(name, version)
            return await send_json(send, 200, model.metadata(self.manager.served[name]))
        if action == "ready":
            model = self.manager.resolve(name, version)  # 404 / 503 when it is not
            return await send_json(send, 200, {"name": model.name, "ready": True})
        if action == "stats":
            return await send_json(send, 200, await self.control.stats(name, version))
        if action == "config":
            return await send_json(send, 200, self._config(self.manager.resolve(name, version)))
        raise _NoRoute

    async def _infer(self, req: Request, send: Send, model: LoadedModel) -> None:
        t0 = perf_ns()
        try:
            content_type = req.header(b"content-type")
            if content_type is not None and content_type.split(b";")[0].strip() in PICKLE_TYPES:
                raise UnsupportedMediaType("pickled request bodies are never accepted: send JSON")
            body = await req.body(self.limits.max_body_bytes)
            t0 = perf_ns()
            header_length = parse_header_length(
                _text(req.header(b"inference-header-content-length"))
            )
            request = decode_infer_request(body, header_length, self.limits)
            arrays, batch = model.validate(request.inputs)
            wanted = None
            if request.outputs:
                wanted = [o.name for o in request.outputs]
                model.check_outputs(wanted)
            priority, timeout = (
                request_scheduling(request.parameters) if request.parameters else (0, 0)
            )
            t1 = perf_ns()
            results, t_queue, t_infer = await model.batcher.submit(
                arrays, batch, wanted, priority, timeout
            )
            t2 = perf_ns()
            names = wanted or [s.name for s in model.signature.outputs]
            outputs = [InferOutput.of(n, np.asarray(results[n])) for n in names]
            response = InferResponse(model.name, model.version, request.id, outputs)
            payload, json_length = encode_infer_response(
                response, request.outputs, request.binary_output_default
            )
        except ServionError:
            model.stats.record_failure(perf_ns() - t0)
            raise
        t3 = perf_ns()
        model.stats.record_request(batch, t_queue, t1 - t0, t_infer, t3 - t2)
        if json_length is None:
            return await send_bytes(send, 200, payload)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(json_length).encode()),
        ]
        await send_bytes(send, 200, payload, headers)

    async def _v2_other(self, req: Request, send: Send, rest: list[str]) -> None:
        route = (req.method, *rest)
        if route == ("GET",) or route == ("GET", ""):
            return await send_json(send, 200, self._metadata)
        if route == ("GET", "health", "live"):
            return await send_json(send, 200, {"live": True})
        if route == ("GET", "health", "ready"):
            ready = self.manager.ready and not self.draining
            return await send_json(send, 200 if ready else 503, {"ready": ready})
        if route == ("GET", "models", "stats"):
            return await send_json(send, 200, await self.control.stats(None, None))
        if route == ("POST", "repository", "index"):
            return await send_json(send, 200, await self.control.index(req))
        if len(rest) == 4 and rest[:2] == ["repository", "models"] and req.method == "POST":
            self._require_admin(req)
            if rest[3] == "load":
                await self.control.load(rest[2])
                return await send_bytes(send, 200, b"")
            if rest[3] == "unload":
                await self.control.unload(rest[2])
                return await send_bytes(send, 200, b"")
        raise _NoRoute

    async def _v1(self, req: Request, send: Send, rest: list[str]) -> None:
        if not rest and req.method == "GET":
            return await send_json(send, 200, {"models": sorted(self.manager.latest)})
        if len(rest) != 1:
            raise _NoRoute
        name, _, verb = rest[0].partition(":")
        if req.method == "GET" and not verb:
            ready = name in self.manager.latest
            if not ready and not any(s.name == name for s in self.manager.states):
                raise ModelNotFound(name)
            return await send_json(send, 200, {"name": name, "ready": ready})
        if req.method == "POST" and verb == "predict":
            model = self.manager.resolve(name, None)
            body = await req.body(self.limits.max_body_bytes)
            return await send_bytes(send, 200, await predict_v1(model, body, self.limits))
        raise _NoRoute

    def _require_admin(self, req: Request) -> None:
        if not self.control.admin_required:
            return
        auth = req.header(b"authorization")
        if auth is None:
            raise Unauthorized("this operation needs an admin token: Authorization: Bearer TOKEN")
        if not self.control.check_token(auth):
            raise Unauthorized("the admin token is not valid")

    def _config(self, model: LoadedModel) -> dict[str, Any]:
        return {
            "name": model.name,
            "version": model.version,
            "platform": model.runtime.platform,
            "format": model.meta.format,
            "max_batch_size": model.max_batch_size if model.batched else 0,
            "dynamic_batching": model.batcher.config.to_dict() if model.batched else None,
            "input": [s.to_dict() for s in model.signature.inputs],
            "output": [s.to_dict() for s in model.signature.outputs],
            "sha256": model.meta.sha256,
        }


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("the Inference-Header-Content-Length header is not ASCII") from None
