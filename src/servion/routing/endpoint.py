"""An endpoint's behaviour, written once over protocol-neutral answers.

A request to an endpoint goes through, in order: the ensemble graph (an
ensemble endpoint has no arms), the response cache, the bulkhead, the choice
of an arm (split, sticky key, pin), its circuit breaker, its timeout, retries,
the fallback, and the cascade. Whether an arm failed is decided from domain
errors: a request the arm refuses as malformed is the caller's fault and
never opens a breaker, triggers a retry or reaches the fallback.

Models run through a ``ModelRunner`` the data plane passes in, so routing
knows nothing of batchers, runtimes or wire formats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, Protocol

import numpy as np

from servion.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    RuntimeFailure,
    quoted,
)
from servion.protocol import InferInput, InferOutput, InferRequest, InferResponse
from servion.routing.context import RequestContext
from servion.routing.policies import ModelRef
from servion.routing.router import EndpointRouter, Route
from servion.routing.stats import ArmStats

perf_ns = time.perf_counter_ns

Answer = InferResponse | Awaitable[InferResponse]
"""An answer now (the model ran inline), or something to await for it."""

CALLER_FAULTS = (InvalidInput,)
"""Errors that say the request was wrong, not the arm: every other error is the arm's.
An arm's error counters (which canary gates and breakers read) count only the arm's."""


def is_callers(error: BaseException) -> bool:
    return isinstance(error, CALLER_FAULTS)


class ModelRunner(Protocol):
    """How routing asks for one model version's answer (the data plane implements it)."""

    def run(self, router: EndpointRouter, ref: ModelRef, request: InferRequest) -> Answer: ...

    def shadow(self, router: EndpointRouter, request: InferRequest, primary: InferResponse) -> None:
        """Copy ``request`` to the router's shadows, off the request path."""


async def settled(answer: Answer) -> InferResponse:
    return answer if isinstance(answer, InferResponse) else await answer


def infer_endpoint(
    router: EndpointRouter, request: InferRequest, ctx: RequestContext, runner: ModelRunner
) -> Answer:
    """The endpoint's answer to ``request``; errors are raised as domain errors."""
    if router.ensemble is not None:
        return _ensemble(router, request, runner, ctx.probe)
    route = router.choose(ctx.header, ctx.pin)
    ctx.arm = route.label
    if ctx.probe:  # checking traffic counts on a copy of the arm's counters, thrown away
        route = Route(route.model, route.version, route.weight, ArmStats())
    if router.policy.plain and ctx.timeout_s is None:
        return _plain(router, route, request, runner)
    return _guarded(router, route, request, ctx, runner)


def _plain(
    router: EndpointRouter, route: Route, request: InferRequest, runner: ModelRunner
) -> Answer:
    """The short path: an arm chosen, its answer counted (and shadowed)."""
    t0 = perf_ns()
    try:
        answer = runner.run(router, route.ref, request)
    except Exception as exc:
        route.stats.record((perf_ns() - t0) / 1e6, ok=is_callers(exc))
        raise
    if isinstance(answer, InferResponse):
        route.stats.record((perf_ns() - t0) / 1e6, ok=True)
        if router.shadows:
            runner.shadow(router, request, answer)
        return answer
    return _counted(router, route, request, runner, answer, t0)


async def _counted(
    router: EndpointRouter,
    route: Route,
    request: InferRequest,
    runner: ModelRunner,
    answer: Awaitable[InferResponse],
    t0: int,
) -> InferResponse:
    try:
        response = await answer
    except Exception as exc:
        route.stats.record((perf_ns() - t0) / 1e6, ok=is_callers(exc))
        raise
    route.stats.record((perf_ns() - t0) / 1e6, ok=True)
    if router.shadows:
        runner.shadow(router, request, response)
    return response


async def _guarded(
    router: EndpointRouter,
    route: Route,
    request: InferRequest,
    ctx: RequestContext,
    runner: ModelRunner,
) -> InferResponse:
    """Cache, bulkhead, then the arm behind its breaker, timeout, retries and fallback."""
    if router.retries is not None:
        router.retries.request()
    cache = None if ctx.probe else router.cache
    key = None
    if cache is not None:
        # The arm is part of the key: a cached answer never crosses arms.
        key = (route.label, cache_key(request))
        hit: InferResponse | None = cache.get(key)
        if hit is not None:
            route.stats.record(0.0, ok=True)
            ctx.cached = True
            return InferResponse(
                hit.model_name, hit.model_version, request.id, hit.outputs, hit.parameters
            )
    bulkhead = router.bulkhead
    if bulkhead is not None:
        turn = bulkhead.enter()  # Overloaded when its queue is full too
        if turn is not None:
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    bulkhead.leave()  # the place was handed over just as the caller left
                raise
    try:
        response = await _arm(router, route, request, ctx, runner)
    finally:
        if bulkhead is not None:
            bulkhead.leave()
    if cache is not None and not (response.parameters or {}).get("servion_fallback"):
        cache.put(key, response)
    return response


async def _arm(
    router: EndpointRouter,
    route: Route,
    request: InferRequest,
    ctx: RequestContext,
    runner: ModelRunner,
) -> InferResponse:
    timeout_s = ctx.timeout_s if ctx.timeout_s is not None else router.timeout_s
    breaker = router.breakers.get(route.label)
    retries = router.retries
    attempt = 0
    while True:
        if breaker is not None and not breaker.allow(time.monotonic()):
            return await _fallback(router, route, request, runner, "circuit_open")
        t0 = perf_ns()
        try:
            if router.cascade is not None:
                work: Answer = _cascade(router, route, request, runner)
            else:
                work = runner.run(router, route.ref, request)
            if isinstance(work, InferResponse):
                response = work
            elif timeout_s is not None:
                response = await asyncio.wait_for(work, timeout_s)
            else:
                response = await work
        except TimeoutError:
            # The request is withdrawn: the batcher skips it if it is still queued.
            route.stats.record(timeout_s * 1e3 if timeout_s else 0.0, ok=False)
            if breaker is not None:
                breaker.record(False, time.monotonic())
            if router.fallback is None:
                raise DeadlineExceeded(
                    f"endpoint {quoted(router.name)} did not answer within"
                    f" {(timeout_s or 0) * 1e3:g} ms",
                    waited_s=timeout_s or 0.0,
                ) from None
            return await _fallback(router, route, request, runner, "timeout")
        except Exception as exc:
            caller = is_callers(exc)
            route.stats.record((perf_ns() - t0) / 1e6, ok=caller)
            if breaker is not None:
                breaker.record(caller, time.monotonic())
            if caller:
                raise
            if retries is not None and attempt < retries.attempts and retries.take():
                attempt += 1
                continue
            if router.fallback is None:
                raise
            return await _fallback(router, route, request, runner, "error")
        route.stats.record((perf_ns() - t0) / 1e6, ok=True)
        if breaker is not None:
            breaker.record(True, time.monotonic())
        if router.shadows:
            runner.shadow(router, request, response)
        return response


async def _fallback(
    router: EndpointRouter,
    route: Route,
    request: InferRequest,
    runner: ModelRunner,
    reason: str,
) -> InferResponse:
    """The fallback's answer, said to be one in its parameters."""
    fallback = router.fallback
    if fallback is None:  # only a circuit can be open without one
        raise ModelNotReady(
            route.model, route.version, f"its circuit is open on endpoint {router.name}"
        )
    router.fallbacks[reason] = router.fallbacks.get(reason, 0) + 1
    said: dict[str, Any] = {
        "servion_fallback": True,
        "servion_fallback_reason": reason,
        "servion_arm": route.label,
    }
    if fallback.outputs is not None:
        return InferResponse(router.name, None, request.id, _fixed(fallback.outputs, request), said)
    assert fallback.ref is not None
    response = await settled(runner.run(router, fallback.ref, request))
    response.parameters = {**(response.parameters or {}), **said}
    return response


async def _cascade(
    router: EndpointRouter, route: Route, request: InferRequest, runner: ModelRunner
) -> InferResponse:
    """The arm answers every row; rows it is unsure of go to the next stage, and so on.

    Confidence is the largest value of the cascade's output in a row. The caller
    gets its rows back in order, each row from the stage that was sure enough.
    """
    cascade = router.cascade
    assert cascade is not None
    everything = InferRequest(request.id, request.inputs, None, request.parameters)
    first = await settled(runner.run(router, route.ref, everything))
    merged = {o.name: np.array(o.data) for o in first.outputs}
    if cascade.output not in merged:
        raise RuntimeFailure(f"{route.label} did not produce output {quoted(cascade.output)}")
    answered = {route.label: len(merged[cascade.output])}
    pending = np.flatnonzero(_confidence(merged[cascade.output]) < cascade.min_confidence)
    for stage in cascade.stages:
        if pending.size == 0:
            break
        inputs = [
            InferInput(i.name, i.datatype, (int(pending.size), *i.shape[1:]), i.data[pending])
            for i in request.inputs
        ]
        again = await settled(
            runner.run(router, stage.ref, InferRequest(request.id, inputs, None, {}))
        )
        produced = {o.name: o.data for o in again.outputs}
        for name in merged:
            if name not in produced:
                raise RuntimeFailure(
                    f"cascade stage {stage.ref.label} did not produce output {quoted(name)}"
                )
            merged[name][pending] = np.asarray(produced[name])
        answered[route.label] -= int(pending.size)
        answered[stage.ref.label] = answered.get(stage.ref.label, 0) + int(pending.size)
        if stage.min_confidence is None:
            break
        confidence = _confidence(merged[cascade.output][pending])
        pending = pending[confidence < stage.min_confidence]
    for label, count in answered.items():
        router.cascade_rows[label] = router.cascade_rows.get(label, 0) + count
    names = [o.name for o in request.outputs] if request.outputs else list(merged)
    _check_outputs(names, list(merged), f"model {quoted(first.model_name)}")
    outputs = [InferOutput.of(n, merged[n]) for n in names]
    said = {"servion_cascade": ",".join(f"{k}={v}" for k, v in answered.items())}
    return InferResponse(first.model_name, first.model_version, request.id, outputs, said)


async def _ensemble(
    router: EndpointRouter, request: InferRequest, runner: ModelRunner, probe: bool = False
) -> InferResponse:
    """Run the graph's steps in order; each reads the request's inputs or earlier outputs."""
    ensemble = router.ensemble
    assert ensemble is not None
    names = [o.name for o in request.outputs] if request.outputs else list(ensemble.output_names)
    _check_outputs(names, list(ensemble.output_names), f"ensemble {quoted(router.name)}")
    values: dict[str, Any] = {f"$request.{i.name}": i.data for i in request.inputs}
    for step, counted in zip(ensemble.steps, router.routes, strict=True):
        route = Route(step.ref.model, step.ref.version, 0.0, ArmStats()) if probe else counted
        t0 = perf_ns()
        ok = False
        try:
            inputs = []
            for name, source in step.inputs:
                if source not in values:
                    raise InvalidInput(
                        f"ensemble {quoted(router.name)} needs input"
                        f" {quoted(source.split('.', 1)[1])} in the request"
                    )
                data = np.asarray(values[source])
                inputs.append(InferInput.of(name, data))
            answer = await settled(
                runner.run(router, step.ref, InferRequest(request.id, inputs, None, {}))
            )
            for output in answer.outputs:
                values[f"{step.name}.{output.name}"] = output.data
            ok = True
        except Exception as exc:
            ok = is_callers(exc)
            raise
        finally:
            route.stats.record((perf_ns() - t0) / 1e6, ok)
    sources = dict(ensemble.outputs)
    outputs = [InferOutput.of(n, np.asarray(values[sources[n]])) for n in names]
    said = {"servion_ensemble": ",".join(s.ref.label for s in ensemble.steps)}
    return InferResponse(router.name, str(router.revision), request.id, outputs, said)


def _fixed(outputs: tuple[InferOutput, ...], request: InferRequest) -> list[InferOutput]:
    """The fixed answer for this request: its one row repeated for each request row, only
    the outputs asked for."""
    first = request.inputs[0] if request.inputs else None
    rows = first.shape[0] if first is not None and first.shape else 1
    wanted = {o.name for o in request.outputs} if request.outputs else None
    answer = []
    for output in outputs:
        if wanted is not None and output.name not in wanted:
            continue
        data = output.data
        if rows != 1 and data.ndim and data.shape[0] == 1:
            data = np.repeat(data, rows, axis=0)
        answer.append(InferOutput(output.name, output.datatype, data.shape, data))
    return answer


def _check_outputs(names: list[str], known: list[str], what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(f"{what} has no output {quoted(unknown[0])}; it has {', '.join(known)}")


def _confidence(values: Any) -> Any:
    """Per row, the largest value (one value per row for 1-D outputs)."""
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(len(array), -1).max(axis=1)


def cache_key(request: InferRequest) -> tuple[Any, ...]:
    """What makes two requests the same question, whatever protocol carried them."""
    inputs = tuple(
        (
            i.name,
            i.datatype,
            i.shape,
            # Object arrays (BYTES) hold pointers: key on their values instead.
            tuple(i.data.ravel().tolist()) if i.data.dtype == object else i.data.tobytes(),
        )
        for i in request.inputs
    )
    outputs = tuple(o.name for o in request.outputs) if request.outputs else None
    return inputs, outputs, tuple(sorted(request.parameters.items()))
