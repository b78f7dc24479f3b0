"""Dynamic batching of one model version, on the worker's event loop.

Requests are queued, and a flush scheduled with ``call_soon`` runs once every
request that arrived in the same loop turn has been queued. So batches form by
themselves under load (while one execution runs, the next requests pile up in
the sockets) and cost nothing but one loop turn at concurrency 1. A queue delay,
when configured, is only spent when recent batches were larger than what is
queued, i.e. when more requests are likely on their way.

Execution is inline: the models this serves take microseconds to a
millisecond, and handing them to a thread would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from servion.batching.config import BatchingConfig
from servion.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    RuntimeFailure,
    ServionError,
)
from servion.types import Arrays

Predict = Callable[[Arrays, Sequence[str] | None], Arrays]
EWMA = 0.2
INLINE_BELOW_ROWS = 1.1
"""Recent rows per execution under which requests run without queueing."""


class _Pending:
    """One queued request."""

    __slots__ = ("arrays", "deadline", "enqueued", "future", "key", "outputs", "rows")

    def __init__(
        self,
        arrays: Arrays,
        rows: int,
        outputs: Sequence[str] | None,
        future: asyncio.Future[tuple[Arrays, int, int]],
        enqueued: float,
        deadline: float,
    ) -> None:
        self.arrays = arrays
        self.rows = rows
        self.outputs = outputs
        self.future = future
        self.enqueued = enqueued
        self.deadline = deadline
        # Requests batch together only when everything but the first dimension agrees.
        self.key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in arrays.items())


class DynamicBatcher:
    """Merges concurrent requests to one model into batched executions.

    ``submit`` answers each caller with exactly its own rows, in order, plus
    the nanoseconds it spent queued and executing.

    >>> batcher = DynamicBatcher(runtime.predict, BatchingConfig(), "demo:v1.0.0")  # doctest: +SKIP
    >>> outputs, queue_ns, run_ns = await batcher.submit({"x": x}, len(x), None)  # doctest: +SKIP
    """

    def __init__(
        self,
        predict: Predict,
        config: BatchingConfig,
        label: str,
        on_execution: Callable[[int, int], None] | None = None,
    ) -> None:
        self._predict = predict
        self._on_execution = on_execution
        self.config = config
        self.label = label
        self._queue: list[tuple[int, int, _Pending]] = []
        self._queued_rows = 0
        self._seq = itertools.count()
        self._scheduled = False
        self._closed = False
        self._splittable = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self.avg_batch_rows = 1.0
        """Recent rows per execution: the load signal for the queue delay."""
        self.avg_ns_per_row = 100_000.0
        """Recent execution cost per row: the basis of Retry-After."""
        self.executions = 0
        self._inline = True
        self._turn_arrivals = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(
        self,
        arrays: Arrays,
        rows: int,
        outputs: Sequence[str] | None,
        priority: int = 0,
        timeout_us: int = 0,
    ) -> tuple[Arrays, int, int]:
        """Queue one validated request; return (outputs, queue ns, execution ns)."""
        if self._closed:
            raise ModelNotReady(self.label.split(":")[0], None, "unloading")
        if len(self._queue) >= self.config.max_queue_size:
            retry = max(0.001, self._queued_rows * self.avg_ns_per_row / 1e9)
            raise Overloaded(
                f"model '{self.label}' has {len(self._queue)} requests queued (the limit)",
                retry_after=retry,
            )
        now = time.perf_counter()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if not self._queue and (self._inline or not self.config.enabled):
            # Low load: nothing to merge with, so run now and skip the loop turn a
            # queued request pays; count arrivals per turn to notice load rising.
            if self._turn_arrivals == 0:
                loop.call_soon(self._end_turn)
            self._turn_arrivals += 1
            return self._run_now(arrays, rows, outputs)
        timeout_us = timeout_us or self.config.default_timeout_us
        deadline = now + timeout_us / 1e6 if timeout_us else math.inf
        future: asyncio.Future[tuple[Arrays, int, int]] = loop.create_future()
        pending = _Pending(arrays, rows, outputs, future, now, deadline)
        level = priority if priority > 0 else self.config.default_priority
        heapq.heappush(self._queue, (level, next(self._seq), pending))
        self._queued_rows += rows
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    # -- scheduling ----------------------------------------------------------------

    def _end_turn(self) -> None:
        # Several requests in one loop turn: they could have shared an execution.
        if self._turn_arrivals > 1:
            self._inline = False
        self._turn_arrivals = 0

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        now = time.perf_counter()
        wait = self._wait_for_more(now)
        if wait > 0:
            assert self._loop is not None
            self._scheduled = True
            self._loop.call_later(wait, self._flush)
            return
        batch = self._take(now)
        if batch:
            self._execute(batch, now)
        if self._queue and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _wait_for_more(self, now: float) -> float:
        """Seconds worth waiting for a fuller batch; 0 when load is too low to pay."""
        delay_us = self.config.max_queue_delay_us
        if delay_us == 0 or not self._splittable:
            return 0.0
        target = max(self.config.preferred_batch_sizes or (self.config.max_batch_size,))
        if self._queued_rows >= target or self.avg_batch_rows <= self._queued_rows + 0.5:
            return 0.0
        if self.config.latency_budget_us:
            expected_run_us = self.avg_ns_per_row * self.avg_batch_rows / 1e3
            delay_us = min(delay_us, int(self.config.latency_budget_us - expected_run_us))
        oldest = min(p.enqueued for _, _, p in self._queue)
        return max(0.0, delay_us / 1e6 - (now - oldest))

    def _row_target(self) -> int:
        if not self.config.enabled:
            return 1
        limit = self.config.max_batch_size
        preferred = [p for p in self.config.preferred_batch_sizes if p <= self._queued_rows]
        return max(preferred) if preferred else limit

    def _take(self, now: float) -> list[_Pending]:
        """Pop the next batch: highest priority first, compatible shapes, up to the row target."""
        target = self._row_target() if self._splittable else 1
        batch: list[_Pending] = []
        skipped: list[tuple[int, int, _Pending]] = []
        rows = 0
        while self._queue:
            entry = heapq.heappop(self._queue)
            pending = entry[2]
            self._queued_rows -= pending.rows
            if pending.future.done():  # the caller went away
                continue
            if pending.deadline <= now:
                waited = now - pending.enqueued
                pending.future.set_exception(
                    DeadlineExceeded(
                        f"request to '{self.label}' waited {waited * 1e3:.1f} ms in the queue, "
                        "past its timeout; it was not run",
                        waited_s=waited,
                    )
                )
                continue
            if batch and (pending.key != batch[0].key or rows + pending.rows > target):
                skipped.append(entry)
                self._queued_rows += pending.rows
                if rows + pending.rows > target:
                    break
                continue
            batch.append(pending)
            rows += pending.rows
            if rows >= target:
                break
        for entry in skipped:
            heapq.heappush(self._queue, entry)
        return batch

    # -- execution -------------------------------------------------------------------

    def _execute(self, batch: list[_Pending], now: float) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0], now)
            return
        names = batch[0].arrays.keys()
        arrays = {n: np.concatenate([p.arrays[n] for p in batch]) for n in names}
        outputs = _union(batch)
        total = sum(p.rows for p in batch)
        t0 = time.perf_counter_ns()
        try:
            results = self._predict(arrays, outputs)
        except Exception:
            # One bad request must not fail its neighbours: run each on its own.
            for pending in batch:
                self._run_alone(pending, now)
            return
        infer_ns = time.perf_counter_ns() - t0
        if any(np.ndim(v) == 0 or len(v) != total for v in results.values()):
            self._splittable = False  # outputs without a batch dimension: never batch again
            for pending in batch:
                self._run_alone(pending, now)
            return
        self._observe(total, infer_ns)
        offset = 0
        for pending in batch:
            end = offset + pending.rows
            if not pending.future.done():
                mine = {k: v[offset:end] for k, v in results.items()}
                queue_ns = int((now - pending.enqueued) * 1e9)
                pending.future.set_result((mine, queue_ns, infer_ns))
            offset = end

    def _run_alone(self, pending: _Pending, now: float) -> None:
        if pending.future.done():
            return
        try:
            results, _, infer_ns = self._run_now(pending.arrays, pending.rows, pending.outputs)
        except ServionError as exc:
            pending.future.set_exception(exc)
            return
        queue_ns = int((now - pending.enqueued) * 1e9)
        pending.future.set_result((results, queue_ns, infer_ns))

    def _run_now(
        self, arrays: Arrays, rows: int, outputs: Sequence[str] | None
    ) -> tuple[Arrays, int, int]:
        t0 = time.perf_counter_ns()
        try:
            results = self._predict(arrays, outputs)
        except ServionError:
            raise
        except Exception as exc:
            raise RuntimeFailure(f"model '{self.label}' failed on this input: {exc}") from exc
        infer_ns = time.perf_counter_ns() - t0
        self._observe(rows, infer_ns)
        return results, 0, infer_ns

    def _observe(self, rows: int, infer_ns: int) -> None:
        self.executions += 1
        if self._on_execution is not None:
            self._on_execution(rows, infer_ns)
        self.avg_batch_rows += EWMA * (rows - self.avg_batch_rows)
        if not self._inline and self.avg_batch_rows < INLINE_BELOW_ROWS:
            self._inline = True  # load fell: batches are singletons again
        self.avg_ns_per_row += EWMA * (infer_ns / max(rows, 1) - self.avg_ns_per_row)

    # -- lifecycle -------------------------------------------------------------------

    def drain(self) -> None:
        """Run everything queued now, then refuse new requests (before an unload)."""
        self._closed = True
        now = time.perf_counter()
        while self._queue:
            batch = self._take(now)
            if batch:
                self._execute(batch, now)


def _union(batch: list[_Pending]) -> list[str] | None:
    if any(p.outputs is None for p in batch):
        return None
    names: dict[str, None] = {}
    for pending in batch:
        names.update(dict.fromkeys(pending.outputs or ()))
    return list(names)


def request_scheduling(parameters: dict[str, Any]) -> tuple[int, int]:
    """The ``priority`` and ``timeout`` (µs) request parameters, checked."""
    priority = parameters.get("priority", 0)
    timeout = parameters.get("timeout", 0)
    for key, value in (("priority", priority), ("timeout", timeout)):
        if type(value) is not int or not 0 <= value <= 2**40:
            raise InvalidInput(f"request parameter '{key}' must be a non-negative integer")
    return priority, timeout
