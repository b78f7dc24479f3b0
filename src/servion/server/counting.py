"""Counting what the transports answer, whenever the answer comes: now, from a future
(a queued request), or from a coroutine (an endpoint's routing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from servion.protocol import http_status_for
from servion.serving.metrics import RequestCounts

T = TypeVar("T")


def counted(
    call: Callable[[], T | Awaitable[T]],
    status_of: Callable[[T], int],
    counts: RequestCounts,
    protocol: str,
    target: str,
) -> T | Awaitable[T]:
    """``call()``'s answer, counted once it is known: with the status ``status_of`` reads
    off it, or the one an error it raises maps to."""
    done = counts.start(protocol, target)
    try:
        answer = call()
    except BaseException as exc:
        done(http_status_for(exc)[0])
        raise
    if isinstance(answer, asyncio.Future):

        def settled(future: asyncio.Future[T]) -> None:
            if future.cancelled():
                done(499)  # the client went away (nginx's code for it)
            elif future.exception() is not None:
                done(http_status_for(future.exception())[0])  # type: ignore[arg-type]
            else:
                done(status_of(future.result()))

        answer.add_done_callback(settled)
        return answer
    if isinstance(answer, Awaitable):
        return _later(answer, status_of, done)
    done(status_of(answer))
    return answer


async def _later(
    answer: Awaitable[T], status_of: Callable[[T], int], done: Callable[[int], None]
) -> T:
    try:
        result = await answer
    except BaseException as exc:
        done(http_status_for(exc)[0])
        raise
    done(status_of(result))
    return result
