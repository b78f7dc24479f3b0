"""The pure-Python load generator: closed loop (fixed concurrency) and open loop
(fixed arrival rate), over keep-alive connections on one event loop.

wrk cannot send at a fixed rate, and is not always installed; this engine does
both. It is lean on purpose (one pre-encoded request, a hand-written response
parser, uvloop when present, no per-request objects beyond a timeout), yet it
still costs about twice wrk's CPU per request.

Measured cost, on the 2-core development machine against ``servion serve``
(the 32-feature tabular ONNX model, concurrency 64): 31-43 us of CPU per
request (JSON or binary), a ceiling of roughly 23-32k req/s on one core, where
wrk spends 17-20 us (~55k req/s). Against a one-worker server (~14-15k req/s)
both engines measure the same throughput; against two workers sharing the
machine, wrk measured 18-21k req/s and this engine 13-16k, because its CPU
comes out of the server's. Use wrk for closed-loop runs near that range.

The open loop's scheduler wakes up to ~0.5 ms late (uvloop timers, p90), and
that lag is part of every latency it reports: a floor for sub-millisecond
services.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Sequence
from time import perf_counter_ns
from typing import Any, TypeVar

from servion.bench._http import Connection, Endpoint, ProtocolViolation
from servion.bench.stats import ERROR_KINDS, LatencySummary, LoadResult

T = TypeVar("T")
Requests = bytes | Sequence[bytes]
"""One encoded request, or several sent in turn."""
_RECONNECT_PAUSE_S = 0.01
"""After a failed connect: retrying at once would turn a down server into a busy loop."""
_READ_ERRORS = (OSError, EOFError, ValueError, asyncio.LimitOverrunError, ProtocolViolation)


class _Recorder:
    """Latencies and error counts shared by every connection of one run."""

    __slots__ = ("errors", "latencies")

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)


class _Client:
    """One connection, reopened after any error; counts its failures into the recorder."""

    __slots__ = ("_conn", "_endpoint", "_rec", "_requests", "_timeout_s", "_turn")

    def __init__(self, endpoint: Endpoint, request: Requests, timeout_s: float, rec: _Recorder):
        self._endpoint = endpoint
        # Several requests are sent in turn (inputs that vary, so nothing can be answered
        # from a cache); one is the usual, cheapest case.
        self._requests = (request,) if isinstance(request, bytes) else tuple(request)
        self._turn = 0
        self._timeout_s = timeout_s
        self._rec = rec
        self._conn: Connection | None = None

    async def connect(self) -> bool:
        if self._conn is not None and not self._conn.closed:
            return True
        try:
            async with asyncio.timeout(self._timeout_s):
                self._conn = await Connection.open(self._endpoint)
        except (OSError, TimeoutError):
            self._rec.errors["connect"] += 1
            return False
        return True

    async def send(self) -> bool:
        """One request on the open connection; True when a response came back."""
        conn = self._conn
        assert conn is not None, "connect() first"
        requests = self._requests
        if len(requests) == 1:
            request = requests[0]
        else:
            request = requests[self._turn % len(requests)]
            self._turn += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                status, _ = await conn.exchange(request)
        except TimeoutError:
            self._rec.errors["timeout"] += 1
            conn.close()
            return False
        except _READ_ERRORS:
            self._rec.errors["read"] += 1
            conn.close()
            return False
        if status > 399:  # wrk's rule, so both engines count the same responses as errors
            self._rec.errors["status"] += 1
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed: it halves the generator's cost per request."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    # Collections of the ever-growing latency list would pause the generator mid-run.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    finally:
        if was_enabled:
            gc.enable()


async def closed_loop(
    endpoint: Endpoint, request: Requests, concurrency: int, duration_s: float, timeout_s: float
) -> LoadResult:
    """``concurrency`` connections, each sending its next request when the last returns."""
    rec = _Recorder()
    t0 = perf_counter_ns()
    deadline = t0 + int(duration_s * 1e9)

    async def loop(client: _Client) -> None:
        latencies = rec.latencies
        while perf_counter_ns() < deadline:
            if not await client.connect():
                await asyncio.sleep(_RECONNECT_PAUSE_S)
                continue
            start = perf_counter_ns()
            if await client.send():
                latencies.append(perf_counter_ns() - start)
        client.close()

    clients = [_Client(endpoint, request, timeout_s, rec) for _ in range(concurrency)]
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = (perf_counter_ns() - t0) / 1e9
    return _result("closed", concurrency, None, elapsed, rec)


class _OpenLoop:
    """A scheduler that queues send times at a fixed rate, and a pool of connections.

    Latency is measured from each request's *scheduled* time, not from when a
    connection became free to send it: a slow server then shows up as latency
    instead of silently lowering the sending rate (coordinated omission).
    Connections open as the queue needs them, up to ``max_connections``.
    """

    def __init__(self, endpoint: Endpoint, request: Requests, timeout_s: float, max_conns: int):
        self.rec = _Recorder()
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._client_args = (endpoint, request, timeout_s)
        self._timeout_s = timeout_s
        self._max_conns = max_conns
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[_Client] = []
        self._idle = 0
        self.done = 0

    @property
    def connections(self) -> int:
        return len(self._clients)

    async def _serve(self, client: _Client) -> None:
        while True:
            scheduled = await self._queue.get()
            self._idle -= 1
            if await client.connect() and await client.send():
                self.rec.latencies.append(perf_counter_ns() - scheduled)
            self.done += 1
            self._idle += 1
            self._queue.task_done()

    def _grow(self) -> None:
        while self._queue.qsize() > self._idle and len(self._tasks) < self._max_conns:
            client = _Client(*self._client_args, self.rec)
            self._clients.append(client)
            self._idle += 1
            self._tasks.append(asyncio.create_task(self._serve(client)))

    async def run(self, rate: float, duration_s: float) -> tuple[int, float]:
        """Send for ``duration_s``; return (requests scheduled, seconds until all settled)."""
        interval = 1e9 / rate
        total = max(1, round(rate * duration_s))
        t0 = perf_counter_ns()
        sent = 0
        while sent < total:
            due = min(total, int((perf_counter_ns() - t0) / interval) + 1)
            for i in range(sent, due):
                self._queue.put_nowait(t0 + int(i * interval))
            sent = due
            self._grow()
            if sent < total:
                await asyncio.sleep(max(0.0, (t0 + sent * interval - perf_counter_ns()) / 1e9))
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._queue.join()
        except TimeoutError:
            pass
        elapsed = (perf_counter_ns() - t0) / 1e9
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            client.close()
        return sent, elapsed


async def open_loop(
    endpoint: Endpoint,
    request: Requests,
    rate: float,
    duration_s: float,
    timeout_s: float,
    max_connections: int,
) -> LoadResult:
    """Requests sent at ``rate`` per second for ``duration_s``, whatever the server's pace."""
    loop = _OpenLoop(endpoint, request, timeout_s, max_connections)
    sent, elapsed = await loop.run(rate, duration_s)
    # Requests still queued or in flight when the drain timed out never got an answer.
    loop.rec.errors["timeout"] += sent - loop.done
    return _result("open", loop.connections, rate, elapsed, loop.rec)


def _result(
    mode: str, conns: int, rate: float | None, elapsed: float, rec: _Recorder
) -> LoadResult:
    return LoadResult(
        engine="python",
        mode=mode,
        connections=conns,
        rate=rate,
        elapsed_s=elapsed,
        requests=len(rec.latencies),
        errors=rec.errors,
        latency=LatencySummary.from_ns(rec.latencies),
    )
