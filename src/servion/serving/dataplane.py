"""The data plane: the one way into a model, whatever protocol carried the request.

REST (native and ASGI), gRPC, KServe V1, the admin API's verify, routing's
cascades, ensembles and fallbacks, and the shadow runner all call here. It is
the only place that validates a request against a signature, submits it to a
batcher and records statistics, so every path is counted the same way.

Answers are protocol-neutral (``InferResponse``); failures are domain errors
that the transport maps to a status through ``protocol/errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from contextvars import ContextVar
from typing import Any, Protocol

from servion.batching import Trace, model_failure, reported
from servion.errors import InvalidInput, ServionError
from servion.protocol import InferRequest, InferResponse
from servion.routing import (
    EndpointRouter,
    ModelRef,
    RequestContext,
    infer_endpoint,
)
from servion.routing.endpoint import Answer
from servion.serving.loaded import Admitted, LoadedModel, admit, outputs_of
from servion.serving.manager import ModelManager
from servion.serving.quality import PARAMETER, screen
from servion.types import Arrays

perf_ns = time.perf_counter_ns

Ran = tuple[Arrays, int, int]
"""A batcher's answer: outputs, queue ns, execution ns."""

current_trace: ContextVar[Trace | None] = ContextVar("servion_trace", default=None)
"""The trace of the request a transport is answering, when tracing is on. A context
variable reaches every model a request runs (routing's arms, cascades, ensembles) without
each signature carrying it, and tasks that routing starts inherit it."""


current_request_id: ContextVar[bytes | None] = ContextVar("servion_request_id", default=None)
"""The transport's id of the request being answered (``X-Request-Id``, gRPC's trailer): a
model's failure is logged under it, and the caller hears it. Set per request by the
transports; callbacks that deliver a queued answer run in the context they were added in."""


def _reported(error: BaseException) -> BaseException:
    rid = current_request_id.get()
    return reported(error, rid.decode("ascii") if rid else None)


class ShadowSink(Protocol):
    def after(self, router: EndpointRouter, request: InferRequest, primary: InferResponse) -> None:
        """Copy ``request`` to the router's shadows once the answer is on its way."""


class PayloadWatcher(Protocol):
    def watch(
        self,
        router: EndpointRouter,
        request: InferRequest,
        ctx: RequestContext,
        answer: Callable[[], Answer],
    ) -> Answer:
        """``answer()``, copying the request and its outcome to the endpoint's payload log."""


class DriftSampler(Protocol):
    every: int
    """Every ``every``-th answer of a model is offered."""

    def offer(self, name: str, version: str, inputs: Arrays, outputs: Arrays) -> None:
        """Keep a copy of these rows for drift."""


class DataPlane:
    """``infer_endpoint`` and ``infer_model`` over one worker's model manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.shadows: ShadowSink | None = None
        """Set by the shadow runner, which itself runs its copies through here."""
        self.payloads: PayloadWatcher | None = None
        """Set by the payload logger."""
        self.traced = False
        """Tracing is on: hand the batcher each request's trace (off, nothing is looked up)."""
        self.drift: DriftSampler | None = None
        """Set when drift is watched."""

    def infer_endpoint(
        self, router: EndpointRouter, request: InferRequest, ctx: RequestContext
    ) -> Answer:
        """An endpoint's answer: its routing policies over ``infer_model``."""
        if router.payload_log is None or self.payloads is None:
            return infer_endpoint(router, request, ctx, self)
        return self.payloads.watch(
            router, request, ctx, lambda: infer_endpoint(router, request, ctx, self)
        )

    def infer_model(
        self,
        model: LoadedModel,
        request: InferRequest,
        parameters: dict[str, Any] | None = None,
    ) -> Answer:
        """Validate, submit to the model's batcher and count: the answer itself when the
        model ran inline, else a future of it (cancel it to withdraw the request)."""
        t0 = perf_ns()
        try:
            job = admit(model, request)
            if model.quality is not None:
                flagged = screen(model, model.quality, job.arrays)
                if flagged is not None:
                    parameters = {**(parameters or {}), PARAMETER: flagged}
            t1 = perf_ns()
            trace = current_trace.get() if self.traced else None
            answer = model.batcher.submit_nowait(*job, trace)
            if isinstance(answer, tuple):
                return _answered(model, request, job, t0, t1, answer, parameters, self.drift)
        except ServionError as exc:
            model.stats.record_failure(perf_ns() - t0, exc)
            raise _reported(exc) from None
        # Queued: answer when the batch that carries this request has run.
        queued = answer
        out: asyncio.Future[InferResponse] = queued.get_loop().create_future()

        def deliver(done: asyncio.Future[Ran]) -> None:
            if out.done():
                return
            if done.cancelled():
                out.cancel()
                return
            try:
                out.set_result(
                    _answered(model, request, job, t0, t1, done.result(), parameters, self.drift)
                )
            except ServionError as exc:
                model.stats.record_failure(perf_ns() - t0, exc)
                out.set_exception(_reported(exc))
            except Exception as exc:
                out.set_exception(exc)

        def withdraw(o: asyncio.Future[InferResponse]) -> None:
            # The caller went away: the batcher skips a cancelled request.
            if o.cancelled():
                queued.cancel()

        queued.add_done_callback(deliver)
        out.add_done_callback(withdraw)
        return out

    def infer_off_loop(
        self, model: LoadedModel, request: InferRequest, pool: Executor
    ) -> asyncio.Future[InferResponse]:
        """Validate on the loop, run the model in ``pool`` past its batcher, and count.

        For work that must never wait in, or hold up, the batcher's queue (shadow
        copies). The runtime is held until the execution ends.
        """
        t0 = perf_ns()
        try:
            job = admit(model, request)
        except ServionError as exc:
            model.stats.record_failure(perf_ns() - t0, exc)
            raise
        t1 = perf_ns()
        loop = asyncio.get_running_loop()
        out: asyncio.Future[InferResponse] = loop.create_future()
        model.handle.acquire()

        def timed() -> Ran:
            started = perf_ns()
            try:
                results = model.runtime.predict(job.arrays, job.wanted)
            except InvalidInput:
                raise
            except Exception as exc:  # the model's own code may raise anything
                raise model_failure(model.meta.label, exc) from None
            return results, 0, perf_ns() - started

        def finish(done: ThreadFuture[Ran]) -> None:
            model.handle.release()
            if done.cancelled():  # the pool shut down first
                out.cancel()
                return
            error = done.exception()
            if error is not None:
                model.stats.record_failure(perf_ns() - t0, error)
                out.set_exception(reported(error, None))  # a shadow copy: no caller waits
                return
            ran = done.result()
            model.stats.record_execution(job.rows, ran[2])
            out.set_result(_answered(model, request, job, t0, t1, ran, None, self.drift))

        running = pool.submit(timed)
        running.add_done_callback(functools.partial(_on_loop, loop, finish))
        return out

    # -- what routing asks of the data plane (routing.ModelRunner) -----------------------

    def run(self, router: EndpointRouter, ref: ModelRef, request: InferRequest) -> Answer:
        model = router.models.get(ref.label) or self.manager.resolve(ref.model, ref.version)
        return self.infer_model(model, request)

    def shadow(self, router: EndpointRouter, request: InferRequest, primary: InferResponse) -> None:
        if self.shadows is not None:
            self.shadows.after(router, request, primary)


def _on_loop(
    loop: asyncio.AbstractEventLoop,
    finish: Callable[[ThreadFuture[Ran]], None],
    done: ThreadFuture[Ran],
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed at shutdown: nobody waits
        loop.call_soon_threadsafe(finish, done)


def _answered(
    model: LoadedModel,
    request: InferRequest,
    job: Admitted,
    t0: int,
    t1: int,
    ran: Ran,
    parameters: dict[str, Any] | None,
    drift: DriftSampler | None,
) -> InferResponse:
    results, t_queue, t_infer = ran
    t2 = perf_ns()
    outputs = outputs_of(model, job.wanted, job.rows, results)
    if drift is not None:  # after outputs_of: only well-formed answers are sampled
        model.answered += 1
        if model.answered % drift.every == 0:  # the only cost to the other k-1 requests
            drift.offer(model.name, model.version, job.arrays, results)
    response = InferResponse(model.name, model.version, request.id, outputs, parameters)
    model.stats.record_request(job.rows, t_queue, t1 - t0, t_infer, perf_ns() - t2)
    return response
