"""Counting what the transports answer, whenever the answer comes: now, from a future
(a queued request), or from a coroutine (an endpoint's routing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from servion.protocol import http_status_for
from servion.serving.metrics import RequestCounts

T = TypeVar("T")
perf_ns = time.perf_counter_ns


def counted(
    call: Callable[[], T | Awaitable[T]],
    status_of: Callable[[T], int],
    counts: RequestCounts,
    protocol: str,
    target: str,
) -> T | Awaitable[T]:
    """``call()``'s answer, counted once it is known: with the status ``status_of`` reads
    off it, or the one an error it raises maps to."""
    t0 = perf_ns()
    counts.inflight += 1
    try:
        answer = call()
    except BaseException as exc:
        counts.record(protocol, target, http_status_for(exc)[0], perf_ns() - t0)
        raise
    if isinstance(answer, asyncio.Future):

        def done(future: asyncio.Future[T]) -> None:
            if future.cancelled():
                status = 499  # the client went away (nginx's code for it)
            elif future.exception() is not None:
                status = http_status_for(future.exception())[0]  # type: ignore[arg-type]
            else:
                status = status_of(future.result())
            counts.record(protocol, target, status, perf_ns() - t0)

        answer.add_done_callback(done)
        return answer
    if isinstance(answer, Awaitable):
        return _later(answer, status_of, counts, protocol, target, t0)
    counts.record(protocol, target, status_of(answer), perf_ns() - t0)
    return answer


async def _later(
    answer: Awaitable[T],
    status_of: Callable[[T], int],
    counts: RequestCounts,
    protocol: str,
    target: str,
    t0: int,
) -> T:
    try:
        result = await answer
    except BaseException as exc:
        counts.record(protocol, target, http_status_for(exc)[0], perf_ns() - t0)
        raise
    counts.record(protocol, target, status_of(result), perf_ns() - t0)
    return result
