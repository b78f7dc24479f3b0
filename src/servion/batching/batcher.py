"""Dynamic batching of one model version, on the worker's event loop.

Requests are queued, and a flush scheduled with ``call_soon`` runs once every
request that arrived in the same loop turn has been queued. So batches form by
themselves under load (while one execution runs, the next requests pile up in
the sockets) and cost nothing but one loop turn at concurrency 1. A queue delay,
when configured, is only spent when recent batches were larger than what is
queued, i.e. when more requests are likely on their way.

Fast models (an execution under a millisecond, like most tabular models) run
inline on the loop: a thread hop would cost more than the model. Slower ones
run in one thread per model version, so the loop keeps parsing, queueing and
answering health checks while they compute; the queue that builds up meanwhile
is what the next batch is made of.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from servion.batching.config import BatchingConfig
from servion.batching.execution import Job, Predict, Report, Trace, model_failure, run_batch
from servion.errors import DeadlineExceeded, InvalidInput, ModelNotReady, Overloaded, ServionError
from servion.types import Arrays

EWMA = 0.2
INLINE_BELOW_ROWS = 1.1
"""Recent rows per execution under which requests run without queueing."""
THREAD_ABOVE_NS = 1_000_000
"""Executions slower than this (on average) run in the model's thread, off the loop."""


class _Pending:
    """One queued request."""

    __slots__ = ("deadline", "enqueued", "future", "job", "key")

    def __init__(
        self,
        job: Job,
        future: asyncio.Future[tuple[Arrays, int, int]],
        enqueued: float,
        deadline: float,
    ) -> None:
        self.job = job
        self.future = future
        self.enqueued = enqueued
        self.deadline = deadline
        # Requests batch together only when everything but the first dimension agrees.
        self.key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in job.arrays.items())


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
        hold: tuple[Callable[[], None], Callable[[], None]] | None = None,
        expected_ns: float = 0.0,
    ) -> None:
        self._predict = predict
        self._on_execution = on_execution
        # Called as a queued request starts and stops needing the model, so that
        # whoever owns the model keeps it loaded until the last one is done.
        self._hold, self._let_go = hold or (_nothing, _nothing)
        self.config = config
        self.label = label
        self._queue: list[tuple[int, int, _Pending]] = []
        self._queued_rows = 0
        self._seq = itertools.count()
        self._scheduled = False
        self._closed = False
        self._busy = False
        self._splittable = True
        self._inline = True
        self._turn_arrivals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.avg_batch_rows = 1.0
        """Recent rows per execution: the load signal for inline runs and the queue delay."""
        self.avg_ns_per_row = 100_000.0
        """Recent execution cost per row: the basis of Retry-After."""
        self.avg_ns_per_execution = expected_ns
        """Recent cost of one execution: decides inline or threaded execution. It starts at
        what the model's warm-up measured, so a slow model never runs on the loop."""
        self.executions = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def threaded(self) -> bool:
        mode = self.config.execution
        return mode == "thread" or (mode == "auto" and self.avg_ns_per_execution > THREAD_ABOVE_NS)

    async def submit(
        self,
        arrays: Arrays,
        rows: int,
        outputs: Sequence[str] | None,
        priority: int = 0,
        timeout_us: int = 0,
        trace: Trace | None = None,
    ) -> tuple[Arrays, int, int]:
        """Queue one validated request; return (outputs, queue ns, execution ns)."""
        answer = self.submit_nowait(arrays, rows, outputs, priority, timeout_us, trace)
        if isinstance(answer, tuple):
            return answer
        return await answer

    def submit_nowait(
        self,
        arrays: Arrays,
        rows: int,
        outputs: Sequence[str] | None,
        priority: int = 0,
        timeout_us: int = 0,
        trace: Trace | None = None,
    ) -> tuple[Arrays, int, int] | asyncio.Future[tuple[Arrays, int, int]]:
        """``submit`` without a coroutine: the answer itself when the request ran
        inline, otherwise a future of it (cancel it to withdraw the request).

        Must be called from the event loop's thread while it runs.
        """
        if self._closed:
            raise ModelNotReady(self.label.split(":")[0], None, "unloading")
        if len(self._queue) >= self.config.max_queue_size:
            retry = max(0.001, self._queued_rows * self.avg_ns_per_row / 1e9)
            raise Overloaded(
                f"model '{self.label}' has {len(self._queue)} requests queued (the limit)",
                retry_after=retry,
            )
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        idle = not self._queue and not self._busy
        if idle and (self._inline or not self.config.enabled) and not self.threaded:
            # Low load and a fast model: run now and skip the loop turn a queued
            # request pays; count arrivals per turn to notice load rising.
            if self._turn_arrivals == 0:
                loop.call_soon(self._end_turn)
            self._turn_arrivals += 1
            if trace is not None:
                return self._run_traced(arrays, rows, outputs, trace)
            return self._run_inline(arrays, rows, outputs)
        job = Job(arrays, rows, outputs, trace)
        now = time.perf_counter()
        timeout_us = timeout_us or self.config.default_timeout_us
        deadline = now + timeout_us / 1e6 if timeout_us else math.inf
        future: asyncio.Future[tuple[Arrays, int, int]] = loop.create_future()
        level = priority if priority > 0 else self.config.default_priority
        heapq.heappush(self._queue, (level, next(self._seq), _Pending(job, future, now, deadline)))
        self._hold()
        self._queued_rows += rows
        self._schedule()
        if timeout_us:
            # The caller hears of its deadline when it passes, not when a running
            # execution ends and the queue is looked at again.
            loop.call_later(timeout_us / 1e6, self._expire_due)
        return future

    def _run_inline(
        self, arrays: Arrays, rows: int, outputs: Sequence[str] | None
    ) -> tuple[Arrays, int, int]:
        # The hot path at low load: no job objects, one clock pair, errors as raised.
        t0 = time.perf_counter_ns()
        try:
            results = self._predict(arrays, outputs)
        except InvalidInput:  # the runtime says the input is wrong: the caller's fault
            raise
        except Exception as exc:  # the model's own code may raise anything
            raise model_failure(self.label, exc) from None
        spent = time.perf_counter_ns() - t0
        self._observe_one(rows, spent)
        return results, 0, spent

    def _run_traced(
        self, arrays: Arrays, rows: int, outputs: Sequence[str] | None, trace: Trace
    ) -> tuple[Arrays, int, int]:
        # Apart from _run_inline so that an untraced request pays nothing for tracing.
        t0 = time.perf_counter_ns()
        trace.queued(t0, t0)
        try:
            ran = self._run_inline(arrays, rows, outputs)
        except ServionError as exc:
            spent = time.perf_counter_ns() - t0
            trace.executed(self.label, (trace,), t0, ((rows, spent),), exc)
            raise
        trace.executed(self.label, (trace,), t0, ((rows, ran[2]),), None)
        return ran

    # -- scheduling ----------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self._busy and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _end_turn(self) -> None:
        # Several requests in one loop turn: they could have shared an execution.
        if self._turn_arrivals > 1:
            self._inline = False
        self._turn_arrivals = 0

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue or self._busy:
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
        if self._queue:
            self._schedule()
        self._stop_when_done()

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
        if not self.config.enabled or not self._splittable:
            return 1
        preferred = [p for p in self.config.preferred_batch_sizes if p <= self._queued_rows]
        return max(preferred) if preferred else self.config.max_batch_size

    def _take(self, now: float) -> list[_Pending]:
        """Pop the next batch: highest priority first, compatible shapes, up to the row target."""
        target = self._row_target()
        batch: list[_Pending] = []
        skipped: list[tuple[int, int, _Pending]] = []
        rows = 0
        while self._queue:
            entry = heapq.heappop(self._queue)
            pending = entry[2]
            self._queued_rows -= pending.job.rows
            if pending.future.done():  # the caller went away
                self._let_go()
                continue
            if pending.deadline <= now:
                self._expire(pending, now)
                self._let_go()
                continue
            fits = rows + pending.job.rows <= target
            if batch and (pending.key != batch[0].key or not fits):
                skipped.append(entry)
                self._queued_rows += pending.job.rows
                if not fits:
                    break
                continue
            batch.append(pending)
            rows += pending.job.rows
            if rows >= target:
                break
        for entry in skipped:
            heapq.heappush(self._queue, entry)
        return batch

    def _expire_due(self) -> None:
        now = time.perf_counter()
        due = [e for e in self._queue if e[2].deadline <= now or e[2].future.done()]
        if not due:
            return
        self._queue = [e for e in self._queue if not (e[2].deadline <= now or e[2].future.done())]
        heapq.heapify(self._queue)
        for _, _, pending in due:
            self._queued_rows -= pending.job.rows
            if not pending.future.done():
                self._expire(pending, now)
            self._let_go()
        self._stop_when_done()

    def _expire(self, pending: _Pending, now: float) -> None:
        waited = now - pending.enqueued
        pending.future.set_exception(
            DeadlineExceeded(
                f"request to '{self.label}' waited {waited * 1e3:.1f} ms in the queue, "
                "past its timeout; it was not run",
                waited_s=waited,
            )
        )

    # -- execution -------------------------------------------------------------------

    def _execute(self, batch: list[_Pending], now: float) -> None:
        jobs = [p.job for p in batch]
        if not self.threaded:
            self._deliver(batch, run_batch(self._predict, jobs, self.label), now)
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"servion-{self.label}")
        self._busy = True
        done = self._thread.submit(run_batch, self._predict, jobs, self.label)
        loop = self._loop
        assert loop is not None
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, batch, f, now))

    def _finished(self, batch: list[_Pending], done: Future[Report], now: float) -> None:
        self._busy = False
        self._deliver(batch, done.result(), now)
        self._schedule()
        self._stop_when_done()

    def _deliver(self, batch: list[_Pending], report: Report, now: float) -> None:
        self._splittable = self._splittable and report.splittable
        self._observe(report.executions)
        traced: list[Trace] = []
        for pending, outcome in zip(batch, report.outcomes, strict=True):
            self._let_go()
            if pending.job.trace is not None:
                pending.job.trace.queued(int(pending.enqueued * 1e9), int(now * 1e9))
                traced.append(pending.job.trace)
            if pending.future.done():
                continue
            if outcome.error is not None:
                pending.future.set_exception(outcome.error)
            else:
                assert outcome.results is not None
                queue_ns = int((now - pending.enqueued) * 1e9)
                pending.future.set_result((outcome.results, queue_ns, outcome.infer_ns))
        if traced:
            error = next((o.error for o in report.outcomes if o.error is not None), None)
            traced[0].executed(self.label, traced, int(now * 1e9), report.executions, error)

    def _observe(self, executions: list[tuple[int, int]]) -> None:
        for rows, spent in executions:
            self._observe_one(rows, spent)

    def _observe_one(self, rows: int, spent: int) -> None:
        self.executions += 1
        self.avg_batch_rows += EWMA * (rows - self.avg_batch_rows)
        self.avg_ns_per_row += EWMA * (spent / (rows or 1) - self.avg_ns_per_row)
        self.avg_ns_per_execution += EWMA * (spent - self.avg_ns_per_execution)
        if self._on_execution is not None:
            self._on_execution(rows, spent)
        if not self._inline and self.avg_batch_rows < INLINE_BELOW_ROWS:
            self._inline = True  # load fell: batches are singletons again

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new requests; what is queued still runs, in its turn, as usual."""
        self._closed = True
        self._stop_when_done()

    def _stop_when_done(self) -> None:
        if self._closed and not self._queue and not self._busy and self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    def drain(self) -> None:
        """Run everything queued now, then refuse new requests."""
        self._closed = True
        now = time.perf_counter()
        while self._queue:
            batch = self._take(now)
            if batch:
                self._deliver(
                    batch, run_batch(self._predict, [p.job for p in batch], self.label), now
                )
        if self._thread is not None:
            self._thread.shutdown(wait=False)


def _nothing() -> None:
    pass
