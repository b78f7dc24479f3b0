"""The REST application: Open Inference Protocol (V2), its Triton extensions, and KServe V1.

Routing is a split of the path and a few comparisons; the inference handler
parses once, validates against precomputed checks, runs the model inline
(the models take microseconds; a thread hop would cost more), and encodes once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from servion.deploy import DeployService
from servion.errors import InvalidInput, ServionError, quoted
from servion.protocol import (
    InferRequest,
    Limits,
    decode_infer_request,
    encode_error,
    http_status_for,
    parse_header_length,
)
from servion.routing import EndpointRouter, request_context
from servion.server import answers, openapi
from servion.server.admin import AdminApi, NoAdminRoute
from servion.server.answers import Answer, Done, encoded, error_response, internal_error
from servion.server.control import Control
from servion.server.cost_export import Pricing
from servion.server.counting import counted
from servion.server.gate import Gate
from servion.server.http import (
    EMPTY_HEADERS,
    JSON_HEADERS,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    json_response,
    read_asgi,
    send_asgi,
)
from servion.server.metrics_files import MetricsFolder, current_cost, scrape
from servion.server.request_log import RequestIds
from servion.server.v1 import NoV1Route, V1Api
from servion.server.waking import woken
from servion.serving import (
    DataPlane,
    ModelManager,
    PayloadLogger,
    ShadowRunner,
    current_request_id,
    describe,
)
from servion.serving.drift import DriftMonitor
from servion.serving.metrics import WorkerMetrics

if TYPE_CHECKING:
    from servion.server.tracing import RequestTrace, Tracing

log = logging.getLogger("servion.server")

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]


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


class FrontEnd(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


class ServionApp:
    """One worker's REST handlers, and the ASGI callable that carries them."""

    def __init__(
        self,
        manager: ModelManager,
        control: Control,
        limits: Limits,
        server_version: str,
        graceful_timeout_s: float = 30.0,
        gate: Gate | None = None,
        metrics: WorkerMetrics | None = None,
        metrics_folder: MetricsFolder | None = None,
        tracing: Tracing | None = None,
        drift: DriftMonitor | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self.manager = manager
        self.pricing = pricing or Pricing()
        self.tracing = tracing
        """None when tracing is off: then OpenTelemetry is not even imported."""
        self.metrics = metrics
        """None when metrics are off: then nothing is counted for them at all."""
        self.metrics_folder = metrics_folder
        self._ids = RequestIds()
        """Request ids of the ASGI path (the native front end keeps its own)."""
        self.gate = gate or Gate(loopback=True)
        self.graceful_timeout_s = graceful_timeout_s
        self.control = control
        self.limits = limits
        self.draining = False
        self.server_metadata: dict[str, Any] = {
            "name": "servion",
            "version": server_version,
            "extensions": EXTENSIONS,
        }
        self.plane = DataPlane(manager)
        self.plane.traced = tracing is not None
        self.shadows = ShadowRunner(self.plane)
        self.payloads = PayloadLogger(manager)
        self.plane.payloads = self.payloads
        self.drift = drift
        if drift is not None:
            self.plane.drift = drift
            control.drift_results = drift.results
        self.deploys = DeployService(control.deployments, control, control.audit)
        control.every_second.append(self.deploys.canaries.adopt)
        if metrics is not None:
            metrics.canary = self.deploys.canaries.observed
            if drift is not None:
                metrics.drift = drift.results
            if metrics_folder is not None:
                control.every_second.append(
                    lambda: asyncio.to_thread(metrics_folder.write, metrics.snapshot())
                )
        self.admin = AdminApi(control, manager, self.plane, self.deploys, self.guard, self._cost)
        self.v1 = V1Api(manager, self.plane, limits, self.guard, tracing)
        self.front_ends: list[FrontEnd] = []
        """Other protocols served from this worker (gRPC), started after the models load."""

    async def startup(self) -> None:
        await self.control.startup()
        if self.drift is not None:
            self.drift.start()
        for front_end in self.front_ends:
            await front_end.start()

    async def stop_front_ends(self, grace_s: float) -> None:
        """Stop the other front ends, letting their calls finish within ``grace_s``."""
        await asyncio.gather(*(f.stop(grace_s) for f in self.front_ends))

    async def shutdown(self) -> None:
        self.shadows.close()
        # After the drain: what was logged is written (or given up on) before the exit.
        self.payloads.close()
        await asyncio.to_thread(self.payloads.join, 5.0)
        self.deploys.canaries.close()
        if self.drift is not None:
            await asyncio.to_thread(self.drift.close)
        await self.control.shutdown()
        if self.tracing is not None:  # the last spans, before the worker exits
            await asyncio.to_thread(self.tracing.close)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI lifespan: ``startup`` and, after the server's drain, ``shutdown``."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("worker_start_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop_front_ends(self.graceful_timeout_s)
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            req = await read_asgi(scope, receive, self.limits.max_body_bytes)
            if isinstance(req, ServionError):
                rid = self._ids.pick(None)
                return await send_asgi(send, error_response(req), rid)
            req.request_id = self._ids.pick(req.header(b"x-request-id"))
            answer = self.respond(req)
            response = answer if isinstance(answer, tuple) else await answer
            await send_asgi(send, response, req.request_id)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def respond(self, req: Request) -> Answer:
        """The answer to ``req``; never raises (errors become their HTTP responses)."""
        try:
            refusal = self.gate.check(req)
            if refusal is not None:
                return error_response(refusal)
            return self._dispatch(req)
        except ServionError as exc:
            return error_response(exc)
        except _NoRoute:
            message = encode_error(f"no route for {req.method} {quoted(req.path)}")
            return 404, message, JSON_HEADERS
        except Exception:
            return internal_error(req)

    def _dispatch(self, req: Request) -> Answer:
        parts = req.path.strip("/").split("/")
        head = parts[0]
        if head == "v2":
            if len(parts) > 2 and parts[1] == "models" and parts[2] != "stats":
                return self._model(req, *_model_route(parts[2:]))
            return self._v2_other(req, parts[1:])
        if head == "v1" and len(parts) >= 2 and parts[1] == "models":
            if req.method == "POST" and self.control.inference_auth:  # :predict is inference
                self.control.authorize(req.header(b"authorization"), "viewer")
            try:
                if self.metrics is None or req.method != "POST" or len(parts) != 3:
                    return self.v1.handle(req, parts[2:])
                name = parts[2].partition(":")[0]
                return counted(
                    lambda: self.v1.handle(req, parts[2:]),
                    _status,
                    self.metrics.requests,
                    "v1",
                    self.target(name),
                )
            except NoV1Route:
                raise _NoRoute from None
        if head == "metrics" and len(parts) == 1 and self.metrics is not None:
            if req.method != "GET":
                return answers.not_allowed(req, "GET")
            snapshot = self.metrics.snapshot()
            return self.guard(scrape(snapshot, self.metrics_folder, self.pricing), req)
        raise _NoRoute

    async def _cost(self) -> dict[str, Any]:
        own = None if self.metrics is None else self.metrics.snapshot()
        return await current_cost(self.pricing, own, self.metrics_folder)

    async def guard(self, work: Awaitable[Response], req: Request) -> Response:
        try:
            return await work
        except ServionError as exc:
            return error_response(exc)
        except Exception:
            return internal_error(req)

    def target(self, name: str) -> str:
        """A label for ``name``: itself if served, else "" (clients do not make up labels)."""
        manager = self.manager
        return name if name in manager.served or name in manager.endpoints else ""

    def _model(self, req: Request, name: str, version: str | None, action: str) -> Answer:
        if action == "infer" and req.method == "POST":
            if self.tracing is not None:
                return self.tracing.rest(req, name, version, self._counted)
            return self._counted(req, name, version, None)
        if action == "infer":
            return answers.not_allowed(req, "POST")
        if action not in ("", "ready", "stats", "config"):
            raise _NoRoute
        if req.method != "GET":
            return answers.not_allowed(req, "GET")
        if action == "":
            return json_response(200, describe.metadata(self.manager, name, version))
        if action == "ready":
            describe.ready(self.manager, name, version)  # 404 / 503 when it is not
            return json_response(200, {"name": name, "ready": True})
        if action == "stats":
            return self.guard(self._stats(name, version), req)
        if action == "config":
            return json_response(200, describe.config(self.manager, name, version))
        raise _NoRoute

    def _counted(
        self, req: Request, name: str, version: str | None, trace: RequestTrace | None
    ) -> Answer:
        if self.metrics is None:
            return self._infer(req, name, version, None, trace)
        done = self.metrics.requests.start("rest", self.target(name))
        try:
            return self._infer(req, name, version, done, trace)
        except BaseException as exc:
            done(http_status_for(exc)[0])
            raise

    def _infer(
        self,
        req: Request,
        name: str,
        version: str | None,
        done: Done | None,
        trace: RequestTrace | None,
    ) -> Answer:
        if self.control.inference_auth:
            self.control.authorize(req.header(b"authorization"), "viewer")
        # Read by the data plane only when a model fails (its log line and message).
        current_request_id.set(req.request_id)
        router = self._endpoint(name, version)
        if router is None:
            try:
                model = self.manager.resolve(name, version)  # 404 / 503 before decoding
            except ServionError:
                if not self.manager.wakeable(name, version):
                    raise
                return self.guard(woken(self, req, name, version, done, trace), req)
            request = self.decode(req)
            answer = self.plane.infer_model(model, request)
            return encoded(answer, request, req, self.guard, done, trace)
        # Headers are read only for endpoints: a model's hot path reads none.
        request = self.decode(req)
        ctx = request_context(req.header)
        ctx.request_id = req.request_id.decode("ascii") or None
        if version is not None:  # /v2/models/{endpoint}/versions/{v}: that arm
            ctx.pin = version.encode()
        answer = self.plane.infer_endpoint(router, request, ctx)
        return encoded(answer, request, req, self.guard, done, trace)

    def _endpoint(self, name: str, version: str | None) -> EndpointRouter | None:
        """The endpoint a request to ``name`` goes to: ``version`` pins one of its arms,
        unless ``name`` is also a model's (whose versions it then names)."""
        router = self.manager.endpoints.get(name)
        if router is None or version is None or name not in self.manager.served:
            return router
        return None

    def decode(self, req: Request) -> InferRequest:
        """The request body as an InferRequest (JSON, or JSON then binary tensors)."""
        header_length = parse_header_length(_text(req.header(b"inference-header-content-length")))
        return decode_infer_request(req.body, header_length, self.limits)

    async def _stats(self, name: str | None, version: str | None) -> Response:
        return json_response(200, await self.control.stats(name, version))

    async def _load(self, name: str, user: str) -> Response:
        with self.control.audit.operation("load", user=user, model_name=name) as op:
            await self.control.load(name)
            op.resources_affected = [f"model:{name}"]
        return 200, b"", EMPTY_HEADERS

    async def _unload(self, name: str, user: str) -> Response:
        with self.control.audit.operation("unload", user=user, model_name=name) as op:
            await self.control.unload(name)
            op.resources_affected = [f"model:{name}"]
        return 200, b"", EMPTY_HEADERS

    def _v2_other(self, req: Request, rest: list[str]) -> Answer:
        route = (req.method, *rest)
        if route == ("GET",) or route == ("GET", ""):
            return json_response(200, self.server_metadata)
        if route == ("GET", "health", "live"):
            return json_response(200, {"live": True})
        if route == ("GET", "health", "ready"):
            ready = self.manager.ready and not self.draining
            return json_response(200 if ready else 503, {"ready": ready})
        if route == ("GET", "openapi.json"):  # a description, readable like the metadata
            return 200, openapi.served(), JSON_HEADERS
        if route == ("GET", "models", "stats"):
            return self.guard(self._stats(None, None), req)
        if route == ("POST", "repository", "index"):
            return json_response(200, self.control.index(req.body_within(64 * 1024)))
        if len(rest) == 4 and rest[:2] == ["repository", "models"] and req.method == "POST":
            if rest[3] == "load":
                user = self.control.authorize(req.header(b"authorization"), "deployer")
                return self.guard(self._load(rest[2], user), req)
            if rest[3] == "unload":
                user = self.control.authorize(req.header(b"authorization"), "deployer")
                return self.guard(self._unload(rest[2], user), req)
        if rest and rest[0] == "admin":
            try:
                return self.admin.handle(req, rest[1:])
            except NoAdminRoute:
                raise _NoRoute from None
        raise _NoRoute


def _status(response: Response) -> int:
    return response[0]


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("the Inference-Header-Content-Length header is not ASCII") from None
