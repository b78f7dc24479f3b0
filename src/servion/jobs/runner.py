"""Running a claimed job to its end: partitions handed to idle workers in order, a failed
attempt retried after an exponential backoff, the error budget checked as partitions
finish, a cancel noticed within half a second, and the outcome recorded.

Ctrl-C stops the workers between two batches, records the job ``interrupted`` and
re-raises: the partitions finished stay finished, and ``--resume`` does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from servion.config import Settings
from servion.jobs.pool import Event, WorkerPool
from servion.jobs.records import Job, PartitionRecord
from servion.jobs.spec import Task, TaskResult, part_name
from servion.jobs.store import JobStore
from servion.jobs.summary import Progress, write_manifest
from servion.jobs.worker import WorkerSetup

BEAT_S = 0.5
"""Heartbeat, and how often a cancel is looked for."""
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
POLL_S = 0.1


@dataclass
class Stop:
    """Why a run ends early: ``cancelled``, ``interrupted``, or ``failed`` and why."""

    state: str
    error: str | None = None


@dataclass
class RunState:
    """The mutable state of one run."""

    pending: list[int]
    rows_done: int
    failed_rows: int
    budget: int
    running: dict[int, int] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)
    """The partition each worker was given last."""
    retry_at: dict[int, float] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    stop: Stop | None = None


class JobRunner:
    """Runs (or resumes) one job; ``on_progress`` hears where it stands a few times a
    second.

    >>> JobRunner(store, store.claim(job, options), settings).run()   # doctest: +SKIP
    """

    def __init__(
        self,
        store: JobStore,
        job: Job,
        settings: Settings,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.store = store
        self.job = job
        self.settings = settings
        self.on_progress = on_progress or (lambda _: None)
        self._started = time.monotonic()

    def run(self) -> Job:
        job = self.job
        records = {p.index: p for p in self.store.partitions(job.id)}
        self._forget_missing(records)
        done = [p for p in records.values() if p.state == "succeeded"]
        run = RunState(
            sorted(i for i, p in records.items() if p.state != "succeeded"),
            sum(p.rows for p in done),
            sum(p.failed_rows or 0 for p in done),
            job.options.budget.rows(job.rows_total),
        )
        self._records = records
        self._before = run.rows_done
        if not run.pending:
            return self._finish(run)
        return self._execute(run, min(job.options.workers, len(run.pending)))

    def _execute(self, run: RunState, workers: int) -> Job:
        """Runs the pending partitions on ``workers`` workers, and records the outcome."""
        with WorkerPool(workers, self._setup()) as pool:
            self._loop(pool, run, workers)
            return self._finish(run)  # before the workers are waited for: the job is done

    def _setup(self) -> WorkerSetup:
        job = self.job
        return WorkerSetup(
            self.settings, job.model, job.version, job.model_sha256, job.plan,
            job.output_dir, job.format, job.options.batch_size,
        )  # fmt: skip

    def _forget_missing(self, records: dict[int, PartitionRecord]) -> None:
        """A finished partition whose files are gone is done again."""
        gone = [
            p.index
            for p in records.values()
            if p.state == "succeeded"
            and not (
                (self.job.output / p.file(self.job.format)).is_file()
                and (p.dead_letter is None or (self.job.output / p.dead_letter).is_file())
            )
        ]
        if gone:
            self.store.reset(self.job.id, gone)
            records.update((p.index, p) for p in self.store.partitions(self.job.id))

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self, pool: WorkerPool, run: RunState, workers: int) -> None:
        last_beat = time.monotonic()
        halted = False
        while True:
            try:
                for event in pool.poll(POLL_S):
                    self._handle(event, run)
                now = time.monotonic()
                if now - last_beat >= BEAT_S:
                    cancel = self.store.beat(self.job.id, now - last_beat, workers)
                    last_beat = now
                    if cancel and run.stop is None:
                        run.stop = Stop("cancelled")
                if run.stop is None:
                    self._dispatch(pool, run)
                    if not run.pending and not run.running:
                        break
                elif not halted:
                    pool.halt()
                    halted = True
                elif not run.running:
                    break
                self._report(pool.rows(), run)
            except KeyboardInterrupt:
                if run.stop is not None and run.stop.state == "interrupted":
                    raise  # a second Ctrl-C: the pool kills its workers on the way out
                run.stop = Stop("interrupted")
        self.store.beat(self.job.id, time.monotonic() - last_beat, workers)

    def _dispatch(self, pool: WorkerPool, run: RunState) -> None:
        now = time.monotonic()
        handed = True
        while handed:  # a partition to each worker with room, then the next to each
            handed = False
            for wid in pool.idle():
                ready = [i for i in run.pending if run.retry_at.get(i, 0.0) <= now]
                index = self._pick(wid, ready, run)
                if index is not None:
                    self._hand(pool, run, wid, index)
                    handed = True

    def _hand(self, pool: WorkerPool, run: RunState, wid: int, index: int) -> None:
        run.pending.remove(index)
        run.running[index] = wid
        run.last[wid] = index
        record = self._records[index]
        task = Task(
            index, record.input, record.start_row, record.rows, record.byte_start, record.byte_end
        )
        pool.assign(wid, task)

    def _pick(self, wid: int, ready: list[int], run: RunState) -> int | None:
        """The partition after the worker's last one (its reader is already there); else the
        first of a stretch of pending partitions that no worker is about to continue into;
        else half of the longest stretch, when that reads less than it takes off the other
        worker's hands."""
        if not ready:
            return None
        after = run.last.get(wid, -2) + 1
        if after in ready and self._follows(after):
            return after
        reserved = {i + 1 for i in run.running}
        stretches: list[list[int]] = []
        for index in ready:
            if stretches and index == stretches[-1][-1] + 1 and self._follows(index):
                stretches[-1].append(index)
            else:
                stretches.append([index])
        for stretch in stretches:
            if stretch[0] not in reserved:
                return stretch[0]
        return self._split(max(stretches, key=len))

    def _split(self, stretch: list[int]) -> int | None:
        """Where a second worker takes over a stretch another one is reading: at a row
        group's start nearest its middle (nothing to read again), else at its middle if
        the rows read and dropped to get there are fewer than the rows taken over."""
        half = len(stretch) // 2
        starts = [k for k in range(1, len(stretch)) if self._records[stretch[k]].skip_rows == 0]
        if starts:
            return stretch[min(starts, key=lambda k: abs(k - half))]
        if half == 0:
            return None
        taken = sum(self._records[i].rows for i in stretch[half:])
        return stretch[half] if self._records[stretch[half]].skip_rows <= taken else None

    def _follows(self, index: int) -> bool:
        """Whether a partition continues the one before it in the same file."""
        before = self._records.get(index - 1)
        return before is not None and before.input == self._records[index].input

    def _handle(self, event: Event, run: RunState) -> None:
        if event.kind == "init_failed" and run.stop is None:
            run.stop = Stop("failed", f"a worker could not load {self.job.label}: {event.payload}")
            return
        index = event.index
        if index is None or run.running.get(index) != event.worker:
            return  # not a partition this run holds there (already counted, or a late word)
        if event.kind == "started":
            self.store.started(self.job.id, index)  # an attempt is a partition begun
            return
        del run.running[index]
        if event.kind == "done":
            self._done(event.payload, run)
        elif event.kind == "stopped":
            self.store.reset(self.job.id, [index])
            run.pending.append(index)
            run.pending.sort()
        else:
            self._failed(index, str(event.payload), run)

    def _done(self, result: TaskResult, run: RunState) -> None:
        self.store.done(self.job.id, result)
        run.rows_done += result.rows_in
        run.failed_rows += result.failed_rows
        if run.failed_rows > run.budget and run.stop is None:
            run.stop = Stop("failed", self._over_budget(run))

    def _failed(self, index: int, error: str, run: RunState) -> None:
        self.store.attempt_failed(self.job.id, index, error)
        tries = run.tries[index] = run.tries.get(index, 0) + 1
        if tries > self.job.options.retries:
            if run.stop is None:
                attempts = "attempt" if tries == 1 else "attempts"
                text = f"{part_name(index, self.job.format)} failed after {tries} {attempts}"
                run.stop = Stop("failed", f"{text}: {error}")
            return
        delay = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (tries - 1))
        run.retry_at[index] = time.monotonic() + delay
        run.pending.append(index)
        run.pending.sort()

    def _over_budget(self, run: RunState) -> str:
        budget = self.job.options.budget
        given = budget.text
        if budget.share is not None:
            given = f"{budget.text} of {self.job.rows_total:,} rows"
        faulty = [p for p in self.store.partitions(self.job.id) if p.failed_rows]
        named = "; ".join(
            f"{p.file(self.job.format)}: {p.failed_rows} ({p.error})" for p in faulty[:10]
        )
        more = f"; and {len(faulty) - 10} more partitions" if len(faulty) > 10 else ""
        return (
            f"{run.failed_rows:,} rows failed, more than --max-failed-rows allows"
            f" ({run.budget:,}: {given}): {named}{more}"
        )

    def _report(self, live: int, run: RunState) -> None:
        """Where the job stands, ``live`` rows having gone through the model in this run."""
        elapsed = time.monotonic() - self._started
        rows = min(self.job.rows_total, self._before + live)
        rate = live / elapsed if elapsed > 0 else 0.0
        left = self.job.rows_total - rows
        done = self.job.partitions_total - len(run.pending) - len(run.running)
        self.on_progress(
            Progress(
                rows, self.job.rows_total, done, self.job.partitions_total,
                run.failed_rows, rate, left / rate if rate > 0 else None,
            )
        )  # fmt: skip

    # -- the outcome -------------------------------------------------------------------------

    def _finish(self, run: RunState) -> Job:
        partitions = self.store.partitions(self.job.id)
        complete = all(p.state == "succeeded" for p in partitions)
        stop = run.stop
        if complete and (stop is None or stop.state != "failed"):
            write_manifest(self.job, partitions)
            return self.store.finish(self.job.id, "succeeded")
        assert stop is not None
        job = self.store.finish(self.job.id, stop.state, stop.error)
        if stop.state == "interrupted":
            raise KeyboardInterrupt
        return job


def runner_for(
    store: JobStore,
    job: Job,
    settings: Settings,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobRunner:
    """The runner of the job's engine: worker processes here, or Ray (connected to first,
    see ``servion.jobs.ray_engine.connect``)."""
    if job.options.engine == "ray":
        from servion.jobs.ray_engine import RayRunner

        return RayRunner(store, job, settings, on_progress)
    return JobRunner(store, job, settings, on_progress)
