"""The REST application: Open Inference Protocol (V2), its Triton extensions, and KServe V1.

Routing is a split of the path and a few comparisons; the inference handler
parses once, validates against precomputed checks, runs the model inline
(the models take microseconds; a thread hop would cost more), and encodes once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
import orjson

from servion.datatypes import datatype_of
from servion.deploy import PIN_HEADER
from servion.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    RuntimeFailure,
    ServionError,
    quoted,
)
from servion.protocol import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    Limits,
    decode_infer_request,
    encode_error,
    encode_infer_response,
    http_status_for,
    parse_header_length,
)
from servion.routing import Bulkhead, EndpointRouter, ResponseCache, Route
from servion.server.admin import AdminApi, NoAdminRoute
from servion.server.control import Control
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
from servion.server.inference import Admitted, admit, outputs_of
from servion.server.loaded import LoadedModel
from servion.server.manager import ModelManager
from servion.server.shadow import ShadowRunner
from servion.server.v1 import predict_v1
from servion.types import Arrays

log = logging.getLogger("servion.server")
perf_ns = time.perf_counter_ns

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]

Answer = Response | Awaitable[Response]
"""A response now, or something to await for it (a queued inference, a control call)."""

OCTET_STREAM = b"application/octet-stream"
PIN_HEADER_BYTES = PIN_HEADER.encode()
TIMEOUT_HEADER = b"x-servion-timeout-ms"


def _timeout_s(header: bytes | None, default: float | None) -> float | None:
    """The request's time budget: its X-Servion-Timeout-Ms, else the endpoint's."""
    if header is None:
        return default
    try:
        ms = float(header)
    except ValueError:
        ms = -1.0
    if not 0 < ms <= 600_000:
        raise InvalidInput("X-Servion-Timeout-Ms must be a number of milliseconds in (0, 600000]")
    return ms / 1e3


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


def error_response(exc: ServionError) -> Response:
    status, headers = http_status_for(exc)
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return status, encode_error(exc.message), JSON_HEADERS + extra if extra else JSON_HEADERS


def _internal_error(req: Request) -> Response:
    request_id = uuid.uuid4().hex[:16]
    log.exception("request_failed", extra={"request_id": request_id, "path": quoted(req.path)})
    return 500, encode_error(f"internal error (request id {request_id})"), JSON_HEADERS


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
    ) -> None:
        self.manager = manager
        self.graceful_timeout_s = graceful_timeout_s
        self.control = control
        self.limits = limits
        self.draining = False
        self.server_metadata: dict[str, Any] = {
            "name": "servion",
            "version": server_version,
            "extensions": EXTENSIONS,
        }
        self.admin = AdminApi(control, manager, self._guard)
        self.shadows = ShadowRunner(manager)
        self.front_ends: list[FrontEnd] = []
        """Other protocols served from this worker (gRPC), started after the models load."""

    async def startup(self) -> None:
        await self.control.startup()
        for front_end in self.front_ends:
            await front_end.start()

    async def stop_front_ends(self, grace_s: float) -> None:
        """Stop the other front ends, letting their calls finish within ``grace_s``."""
        await asyncio.gather(*(f.stop(grace_s) for f in self.front_ends))

    async def shutdown(self) -> None:
        self.shadows.close()
        self.admin.rollouts.close()
        await self.control.shutdown()

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
                return await send_asgi(send, error_response(req))
            answer = self.respond(req)
            await send_asgi(send, answer if isinstance(answer, tuple) else await answer)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def respond(self, req: Request) -> Answer:
        """The answer to ``req``; never raises (errors become their HTTP responses)."""
        try:
            return self._dispatch(req)
        except ServionError as exc:
            return error_response(exc)
        except _NoRoute:
            message = encode_error(f"no route for {req.method} {quoted(req.path)}")
            return 404, message, JSON_HEADERS
        except Exception:
            return _internal_error(req)

    def _dispatch(self, req: Request) -> Answer:
        parts = req.path.strip("/").split("/")
        head = parts[0]
        if head == "v2":
            if len(parts) > 2 and parts[1] == "models" and parts[2] != "stats":
                return self._model(req, *_model_route(parts[2:]))
            return self._v2_other(req, parts[1:])
        if head == "v1" and len(parts) >= 2 and parts[1] == "models":
            return self._v1(req, parts[2:])
        raise _NoRoute

    async def _then(
        self, answer: Awaitable[Response], step: Callable[[Response], Response]
    ) -> Response:
        return step(await answer)

    async def _guard(self, work: Awaitable[Response], req: Request) -> Response:
        try:
            return await work
        except ServionError as exc:
            return error_response(exc)
        except Exception:
            return _internal_error(req)

    def _model(self, req: Request, name: str, version: str | None, action: str) -> Answer:
        if action == "infer" and req.method == "POST":
            if self.control.inference_auth:
                self.control.authorize(req.header(b"authorization"), "viewer")
            if version is None:
                router = self.manager.endpoints.get(name)
                if router is not None:
                    return self._endpoint_infer(req, router)
            return self._infer(req, self.manager.resolve(name, version))
        if req.method != "GET":
            raise _NoRoute
        if version is None and name in self.manager.endpoints:
            return self._endpoint_info(name, action)
        if action == "":
            model = self.manager.resolve(name, version)
            return json_response(200, model.metadata(self.manager.served[name]))
        if action == "ready":
            model = self.manager.resolve(name, version)  # 404 / 503 when it is not
            return json_response(200, {"name": model.name, "ready": True})
        if action == "stats":
            return self._guard(self._stats(name, version), req)
        if action == "config":
            return json_response(200, self._config(self.manager.resolve(name, version)))
        raise _NoRoute

    def _endpoint_infer(self, req: Request, router: EndpointRouter) -> Answer:
        if router.ensemble is not None:
            return self._guard(self._ensemble(req, router), req)
        route = router.choose(req.header, req.header(PIN_HEADER_BYTES))
        timeout_s = _timeout_s(req.header(TIMEOUT_HEADER), router.timeout_s)
        if router.retries is not None:
            router.retries.request()
        cache: ResponseCache[Response] | None = router.cache
        key = None
        if cache is not None:
            # The arm is part of the key: a cached answer never crosses arms.
            key = (route.label, req.header(b"inference-header-content-length"), req.body)
            hit = cache.get(key)
            if hit is not None:
                route.stats.record(0.0, ok=True)
                return hit
        bulkhead = router.bulkhead
        if bulkhead is None:
            return self._cached(self._arm(req, router, route, timeout_s), cache, key)
        turn = bulkhead.enter()  # 503 when its queue is full too
        if turn is None:
            answer = self._arm(req, router, route, timeout_s)
            if isinstance(answer, tuple):
                bulkhead.leave()
                return self._cached(answer, cache, key)
            return self._cached(self._released(answer, bulkhead), cache, key)
        return self._cached(self._queued(turn, bulkhead, req, router, route, timeout_s), cache, key)

    def _arm(
        self,
        req: Request,
        router: EndpointRouter,
        route: Route,
        timeout_s: float | None,
        attempt: int = 0,
    ) -> Answer:
        """The chosen arm's answer, behind its circuit breaker, timeout and fallback."""
        breaker = router.breakers.get(route.label)
        if breaker is not None and not breaker.allow(time.monotonic()):
            return self._fallback(req, router, route, "circuit_open")
        try:
            model = router.models.get(route.label) or self.manager.resolve(
                route.model, route.version
            )
        except ServionError:
            route.stats.record(0.0, ok=False)
            if breaker is not None:
                breaker.record(False, time.monotonic())
            if router.fallback is None:
                raise
            return self._fallback(req, router, route, "error")
        if router.cascade is not None:
            answer: Answer = self._guard(self._cascade(req, router, route, model), req)
        else:
            answer = self._infer(req, model, route, router if router.shadows else None)
        if isinstance(answer, tuple):
            return self._settle(answer, req, router, route, timeout_s, attempt)
        return self._settle_later(answer, timeout_s, req, router, route, attempt)

    def _decode(self, req: Request) -> InferRequest:
        """The request body as an InferRequest (JSON, or JSON then binary tensors)."""
        header_length = parse_header_length(_text(req.header(b"inference-header-content-length")))
        return decode_infer_request(req.body, header_length, self.limits)

    async def _ensemble(self, req: Request, router: EndpointRouter) -> Response:
        """Run the graph's steps in order; each reads the request's inputs or earlier outputs."""
        ensemble = router.ensemble
        assert ensemble is not None
        request = self._decode(req)
        values: dict[str, Any] = {f"$request.{i.name}": i.data for i in request.inputs}
        for step, route in zip(ensemble.steps, router.routes, strict=True):
            started = perf_ns()
            ok = False
            try:
                model = self.manager.resolve(step.model, step.version)
                inputs = []
                for name, source in step.inputs.items():
                    if source not in values:
                        raise InvalidInput(
                            f"ensemble {quoted(router.name)} needs input"
                            f" {quoted(source.split('.', 1)[1])} in the request"
                        )
                    data = np.asarray(values[source])
                    inputs.append(InferInput(name, datatype_of(data.dtype), data.shape, data))
                arrays, rows = model.validate(inputs)
                results, _, _ = await model.batcher.submit(arrays, rows, None)
                for name, value in results.items():
                    values[f"{step.name}.{name}"] = value
                ok = True
            finally:
                route.stats.record((perf_ns() - started) / 1e6, ok)
        names = [o.name for o in request.outputs] if request.outputs else list(ensemble.outputs)
        unknown = [n for n in names if n not in ensemble.outputs]
        if unknown:
            raise InvalidInput(
                f"ensemble {quoted(router.name)} has no output {quoted(unknown[0])};"
                f" it has {', '.join(ensemble.outputs)}"
            )
        outputs = [InferOutput.of(n, np.asarray(values[ensemble.outputs[n]])) for n in names]
        said = {"servion_ensemble": ",".join(s.label for s in ensemble.steps)}
        response = InferResponse(router.name, str(router.revision), request.id, outputs, said)
        payload, json_length = encode_infer_response(
            response, request.outputs, request.binary_output_default
        )
        return _ok(payload, json_length)

    async def _cascade(
        self, req: Request, router: EndpointRouter, route: Route, first: LoadedModel
    ) -> Response:
        """The arm answers every row; rows it is unsure of go to the next stage, and so on.

        Confidence is the largest value of the cascade's output in a row. Each caller
        gets its rows back in order, each row from the stage that was sure enough.
        """
        cascade = router.cascade
        assert cascade is not None
        started = perf_ns()
        ok = False
        try:
            request = self._decode(req)
            job = admit(first, request)
            results, _, _ = await first.batcher.submit(*job)
            merged = {name: np.array(results[name]) for name in first.output_order}
            answered = {route.label: job.rows}
            pending = np.flatnonzero(_confidence(merged, cascade.output) < cascade.min_confidence)
            for stage in cascade.then:
                if pending.size == 0:
                    break
                model = self.manager.resolve(stage.model, stage.version)
                inputs = [
                    InferInput(
                        i.name, i.datatype, (int(pending.size), *i.shape[1:]), i.data[pending]
                    )
                    for i in request.inputs
                ]
                arrays, rows = model.validate(inputs)
                again, _, _ = await model.batcher.submit(arrays, rows, None)
                for name in merged:
                    if name not in again:
                        raise RuntimeFailure(
                            f"cascade stage {stage.label} did not produce output {quoted(name)}"
                        )
                    merged[name][pending] = np.asarray(again[name])
                answered[route.label] -= int(pending.size)
                answered[stage.label] = answered.get(stage.label, 0) + int(pending.size)
                if stage.min_confidence is None:
                    break
                confidence = _confidence({n: merged[n][pending] for n in merged}, cascade.output)
                pending = pending[confidence < stage.min_confidence]
            for label, count in answered.items():
                router.cascade_rows[label] = router.cascade_rows.get(label, 0) + count
            names = job.wanted or first.output_order
            outputs = [InferOutput.of(n, merged[n]) for n in names]
            said = {"servion_cascade": ",".join(f"{k}={v}" for k, v in answered.items())}
            response = InferResponse(first.name, first.version, request.id, outputs, said)
            payload, json_length = encode_infer_response(
                response, request.outputs, request.binary_output_default
            )
            ok = True
        finally:
            route.stats.record((perf_ns() - started) / 1e6, ok)
        return _ok(payload, json_length)

    def _settle(
        self,
        response: Response,
        req: Request,
        router: EndpointRouter,
        route: Route,
        timeout_s: float | None,
        attempt: int,
    ) -> Answer:
        failed = response[0] >= 500  # the arm's fault; a 4xx is the request's
        breaker = router.breakers.get(route.label)
        if breaker is not None:
            breaker.record(not failed, time.monotonic())
        retries = router.retries
        if failed and retries is not None and attempt < retries.attempts and retries.take():
            return self._arm(req, router, route, timeout_s, attempt + 1)
        if failed and router.fallback is not None:
            return self._fallback(req, router, route, "error")
        return response

    async def _settle_later(
        self,
        answer: Awaitable[Response],
        timeout_s: float | None,
        req: Request,
        router: EndpointRouter,
        route: Route,
        attempt: int,
    ) -> Response:
        try:
            response = await (asyncio.wait_for(answer, timeout_s) if timeout_s else answer)
        except TimeoutError:
            # The request is withdrawn: the batcher skips it if it is still queued.
            route.stats.record((timeout_s or 0) * 1e3, ok=False)
            breaker = router.breakers.get(route.label)
            if breaker is not None:
                breaker.record(False, time.monotonic())
            if router.fallback is None:
                return error_response(
                    DeadlineExceeded(
                        f"endpoint {quoted(router.name)} did not answer within"
                        f" {(timeout_s or 0) * 1e3:g} ms",
                        waited_s=timeout_s or 0,
                    )
                )
            fallback = self._fallback(req, router, route, "timeout")
            return fallback if isinstance(fallback, tuple) else await fallback
        settled = self._settle(response, req, router, route, timeout_s, attempt)
        return settled if isinstance(settled, tuple) else await settled

    def _fallback(self, req: Request, router: EndpointRouter, route: Route, reason: str) -> Answer:
        fallback = router.fallback
        if fallback is None:  # only a circuit can be open without one
            raise ModelNotReady(
                route.model, route.version, f"its circuit is open on endpoint {router.name}"
            )
        router.fallbacks[reason] = router.fallbacks.get(reason, 0) + 1
        said = {
            "servion_fallback": True,
            "servion_fallback_reason": reason,
            "servion_arm": route.label,
        }
        if fallback.outputs is not None:
            outputs = [o.model_dump() for o in fallback.outputs]
            body = {"model_name": router.name, "outputs": outputs, "parameters": said}
            return 200, orjson.dumps(body), JSON_HEADERS
        assert fallback.model is not None and fallback.version is not None
        model = self.manager.resolve(fallback.model, fallback.version)
        return self._infer(req, model, parameters=said)

    async def _released(self, answer: Awaitable[Response], bulkhead: Bulkhead) -> Response:
        try:
            return await answer
        finally:
            bulkhead.leave()

    async def _queued(
        self,
        turn: asyncio.Future[None],
        bulkhead: Bulkhead,
        req: Request,
        router: EndpointRouter,
        route: Route,
        timeout_s: float | None,
    ) -> Response:
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                bulkhead.leave()  # the place was handed over just as the caller left
            raise
        try:
            answer = self._arm(req, router, route, timeout_s)
            return answer if isinstance(answer, tuple) else await answer
        finally:
            bulkhead.leave()

    def _cached(self, answer: Answer, cache: ResponseCache[Response] | None, key: object) -> Answer:
        if cache is None:
            return answer
        if isinstance(answer, tuple):
            if answer[0] == 200:
                cache.put(key, answer)
            return answer
        return self._then(answer, lambda r: self._store(cache, key, r))

    @staticmethod
    def _store(cache: ResponseCache[Response], key: object, response: Response) -> Response:
        if response[0] == 200:
            cache.put(key, response)
        return response

    def _endpoint_info(self, name: str, action: str) -> Answer:
        router = self.manager.endpoints[name]
        models = [self.manager.resolve(r.model, r.version) for r in router.routes]
        if action == "ready":
            return json_response(200, {"name": name, "ready": True})
        if action == "" and router.ensemble is not None:
            return json_response(200, _ensemble_metadata(router, models))
        if action == "":
            meta = models[0].metadata([r.label for r in router.routes])
            return json_response(200, {**meta, "name": name})
        if action == "config":
            return json_response(200, {**self._config(models[0]), "name": name})
        raise _NoRoute

    def _infer(
        self,
        req: Request,
        model: LoadedModel,
        route: Route | None = None,
        shadowed: EndpointRouter | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Answer:
        t0 = perf_ns()
        if route is not None:
            arm = route.stats

            def tally(response: Response) -> Response:
                arm.record((perf_ns() - t0) / 1e6, response[0] < 400)
                return response

            try:
                result = self._infer(req, model, None, shadowed, parameters)
            except ServionError as exc:
                result = error_response(exc)
            if isinstance(result, tuple):
                return tally(result)
            return self._then(result, tally)
        try:
            request = self._decode(req)
            job = admit(model, request)
            t1 = perf_ns()
            answer = model.batcher.submit_nowait(*job)
            if isinstance(answer, tuple):
                return self._infer_done(model, request, job, t0, t1, answer, shadowed, parameters)
        except ServionError:
            model.stats.record_failure(perf_ns() - t0)
            raise
        # Queued: answer when the batch that carries this request has run.
        queued = answer
        out: asyncio.Future[Response] = queued.get_loop().create_future()

        def deliver(done: asyncio.Future[tuple[Arrays, int, int]]) -> None:
            if out.done():
                return
            if done.cancelled():
                out.cancel()
                return
            try:
                out.set_result(
                    self._infer_done(
                        model, request, job, t0, t1, done.result(), shadowed, parameters
                    )
                )
            except ServionError as exc:
                model.stats.record_failure(perf_ns() - t0)
                out.set_result(error_response(exc))
            except Exception:
                out.set_result(_internal_error(req))

        def withdraw(o: asyncio.Future[Response]) -> None:
            # The caller went away: the batcher skips a cancelled request.
            if o.cancelled():
                queued.cancel()

        queued.add_done_callback(deliver)
        out.add_done_callback(withdraw)
        return out

    def _infer_done(
        self,
        model: LoadedModel,
        request: InferRequest,
        job: Admitted,
        t0: int,
        t1: int,
        answer: tuple[Arrays, int, int],
        shadowed: EndpointRouter | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Response:
        results, t_queue, t_infer = answer
        if shadowed is not None:
            self.shadows.after(shadowed, request, results)
        t2 = perf_ns()
        outputs = outputs_of(model, job.wanted, results)
        response = InferResponse(model.name, model.version, request.id, outputs, parameters)
        payload, json_length = encode_infer_response(
            response, request.outputs, request.binary_output_default
        )
        model.stats.record_request(job.rows, t_queue, t1 - t0, t_infer, perf_ns() - t2)
        return _ok(payload, json_length)

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
        if route == ("GET", "models", "stats"):
            return self._guard(self._stats(None, None), req)
        if route == ("POST", "repository", "index"):
            return json_response(200, self.control.index(req.body_within(64 * 1024)))
        if len(rest) == 4 and rest[:2] == ["repository", "models"] and req.method == "POST":
            if rest[3] == "load":
                user = self.control.authorize(req.header(b"authorization"), "deployer")
                return self._guard(self._load(rest[2], user), req)
            if rest[3] == "unload":
                user = self.control.authorize(req.header(b"authorization"), "deployer")
                return self._guard(self._unload(rest[2], user), req)
        if rest and rest[0] == "admin":
            try:
                return self.admin.handle(req, rest[1:])
            except NoAdminRoute:
                raise _NoRoute from None
        raise _NoRoute

    def _v1(self, req: Request, rest: list[str]) -> Answer:
        if not rest and req.method == "GET":
            return json_response(200, {"models": sorted(self.manager.latest)})
        if len(rest) != 1:
            raise _NoRoute
        name, _, verb = rest[0].partition(":")
        if req.method == "GET" and not verb:
            ready = name in self.manager.latest
            if not ready and not any(s.name == name for s in self.manager.states):
                raise ModelNotFound(name)
            return json_response(200, {"name": name, "ready": ready})
        if req.method == "POST" and verb == "predict":
            model = self.manager.resolve(name, None)
            return self._guard(self._predict_v1(model, req.body), req)
        raise _NoRoute

    async def _predict_v1(self, model: LoadedModel, body: bytes) -> Response:
        return 200, await predict_v1(model, body, self.limits), JSON_HEADERS

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


def _ok(payload: bytes, json_length: int | None) -> Response:
    """A 200 with the encoded response: JSON, or JSON then binary tensors."""
    if json_length is None:
        return 200, payload, JSON_HEADERS
    headers = [
        (b"content-type", OCTET_STREAM),
        (b"inference-header-content-length", str(json_length).encode()),
    ]
    return 200, payload, headers


def _ensemble_metadata(router: EndpointRouter, models: list[LoadedModel]) -> dict[str, Any]:
    """The ensemble's own inputs (what its steps read from the request) and outputs."""
    ensemble = router.ensemble
    assert ensemble is not None
    inputs: dict[str, dict[str, Any]] = {}
    produced: dict[str, dict[str, Any]] = {}
    for step, model in zip(ensemble.steps, models, strict=True):
        specs = {t.name: t for t in model.signature.inputs}
        for model_input, source in step.inputs.items():
            origin, _, name = source.partition(".")
            if origin == "$request" and name not in inputs:
                inputs[name] = {**specs[model_input].to_dict(), "name": name}
        for t in model.signature.outputs:
            produced[f"{step.name}.{t.name}"] = t.to_dict()
    outputs = [{**produced[src], "name": name} for name, src in ensemble.outputs.items()]
    return {
        "name": router.name,
        "versions": [str(router.revision)],
        "platform": "ensemble",
        "inputs": list(inputs.values()),
        "outputs": outputs,
    }


def _confidence(outputs: dict[str, Any], name: str) -> Any:
    """Per row, the largest value of output ``name`` (one value per row for 1-D outputs)."""
    values = np.asarray(outputs[name], dtype=np.float64)
    return values.reshape(len(values), -1).max(axis=1)


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("the Inference-Header-Content-Length header is not ASCII") from None
