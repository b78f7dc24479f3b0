"""REST answers: a data plane answer encoded as a response (now, or when its batch has
run), and errors as responses."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from servion.errors import ServionError, quoted
from servion.protocol import (
    InferRequest,
    InferResponse,
    encode_error,
    encode_infer_response,
    http_status_for,
)
from servion.server.http import JSON_HEADERS, Request, Response

if TYPE_CHECKING:
    from servion.server.tracing import RequestTrace

log = logging.getLogger("servion.server")

OCTET_STREAM = b"application/octet-stream"

Answer = Response | Awaitable[Response]
"""A response now, or something to await for it (a queued inference, a control call)."""

Guard = Callable[[Awaitable[Response], Request], Awaitable[Response]]


def error_response(exc: ServionError) -> Response:
    status, headers = http_status_for(exc)
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return status, encode_error(exc.message), JSON_HEADERS + extra if extra else JSON_HEADERS


def internal_error(req: Request, error: BaseException | None = None) -> Response:
    request_id = req.request_id.decode("ascii") or uuid.uuid4().hex[:16]
    log.error(
        "request_failed",
        extra={"request_id": request_id, "path": quoted(req.path)},
        exc_info=error or True,
    )
    return 500, encode_error(f"internal error (request id {request_id})"), JSON_HEADERS


Done = Callable[[int], None]
"""Told the status of the answer once it is known (for the metrics)."""


def encoded(
    answer: InferResponse | Awaitable[InferResponse],
    request: InferRequest,
    req: Request,
    guard: Guard,
    done: Done | None = None,
    trace: RequestTrace | None = None,
) -> Answer:
    """The HTTP response for a data plane answer, now or when it is ready; ``done`` hears
    its status from the callback that delivers it (no extra turn of the event loop), and
    ``trace`` (tracing on) its encoding and end."""
    if trace is not None:
        done = _traced(trace, done)
    if isinstance(answer, InferResponse):
        response = ok(request, answer, trace)
        if done is not None:
            done(200)
        return response
    if not isinstance(answer, asyncio.Future):
        return guard(_encode_later(answer, request, done, trace), req)
    # A queued request: no task, one callback when its batch has run.
    queued = answer
    out: asyncio.Future[Response] = queued.get_loop().create_future()

    def deliver(ran: asyncio.Future[InferResponse]) -> None:
        if out.done():
            return
        if ran.cancelled():
            out.cancel()
            if done is not None:
                done(499)  # the client went away (nginx's code for it)
            return
        error = ran.exception()
        if error is None:
            response = ok(request, ran.result(), trace)
        elif isinstance(error, ServionError):
            response = error_response(error)
        else:
            response = internal_error(req, error)
        if trace is not None:
            trace.failure = error
        out.set_result(response)
        if done is not None:
            done(response[0])

    def withdraw(o: asyncio.Future[Response]) -> None:
        if o.cancelled():  # the caller went away: so does its request
            queued.cancel()

    queued.add_done_callback(deliver)
    out.add_done_callback(withdraw)
    return out


async def _encode_later(
    answer: Awaitable[InferResponse],
    request: InferRequest,
    done: Done | None,
    trace: RequestTrace | None,
) -> Response:
    try:
        response = ok(request, await answer, trace)
    except BaseException as exc:
        if trace is not None:
            trace.failure = exc
        if done is not None:
            done(http_status_for(exc)[0])
        raise
    if done is not None:
        done(200)
    return response


def _traced(trace: RequestTrace, done: Done | None) -> Done:
    def ended(status: int) -> None:
        if done is not None:
            done(status)
        trace.end(status)

    return ended


def ok(
    request: InferRequest, response: InferResponse, trace: RequestTrace | None = None
) -> Response:
    """A 200 with the encoded response: JSON, or JSON then binary tensors."""
    t0 = time.perf_counter_ns() if trace is not None else 0
    payload, json_length = encode_infer_response(
        response, request.outputs, request.binary_output_default
    )
    if trace is not None:
        trace.encoded(t0, time.perf_counter_ns())
    if json_length is None:
        return 200, payload, JSON_HEADERS
    headers = [
        (b"content-type", OCTET_STREAM),
        (b"inference-header-content-length", str(json_length).encode()),
    ]
    return 200, payload, headers


def not_allowed(req: Request, allowed: str) -> Response:
    """405 with the method the route takes (RFC 9110 asks for ``Allow``)."""
    message = encode_error(f"{quoted(req.path)} takes {allowed}, not {req.method}")
    return 405, message, [*JSON_HEADERS, (b"allow", allowed.encode())]
