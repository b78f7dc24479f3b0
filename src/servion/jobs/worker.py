"""A batch job's worker process: it loads the model once through the registry (checksum
verified, the runtime the server uses), then runs the partitions it is handed, one at
a time, until told to quit or its parent is gone.

A partition streams its rows from its input, predicts them in batches, writes its
output file and its dead-letter rows, and reports its counts, checksums and the
process's peak memory while it ran. The job's stop event ends a partition between two
batches, leaving nothing under a final name.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from servion.config import Settings
from servion.errors import RuntimeFailure, printable, quoted
from servion.jobs.outputs import PartWriter, output_schema, output_table, write_dead_letter
from servion.jobs.predict import REFUSED, BatchPredictor, Predicted, Stopped
from servion.jobs.readers import ParquetCursor, PartitionReader
from servion.jobs.spec import (
    InputSource,
    JobPlan,
    Task,
    TaskResult,
    dead_letter_name,
    part_name,
)
from servion.runtime import sample_inputs

PARENT_CHECK_S = 0.5
"""How often a worker in a partition makes sure its runner is still there."""


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker of a job needs, sent once when it starts."""

    settings: Settings
    model: str
    version: str
    sha256: str
    plan: JobPlan
    output_dir: str
    format: str
    batch_size: int


def main(
    wid: int,
    setup: WorkerSetup,
    tasks: Any,
    results: Any,
    stop: Any,
    progress: Any,
) -> None:
    """A worker's life: load, then run tasks until a ``None`` (or an orphaned wait).

    It reports on ``results`` as (kind, worker, partition, payload): ``ready``,
    ``init_failed`` (the reason), ``started``, then ``done`` (a ``TaskResult``), ``failed``
    (the reason) or ``stopped``; a partition it was handed after the job began stopping is
    ``stopped`` without being started."""
    # Ctrl-C reaches the whole process group: the runner decides how the job stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def count(rows: int) -> None:
        with progress.get_lock():
            progress.value += rows

    try:
        partitions = Partitions(setup, stop, count)
    except BaseException as exc:
        results.put(("init_failed", wid, None, reason(exc)))
        return
    results.put(("ready", wid, None, None))
    while (task := _next(tasks)) is not None:
        if partitions.stopping():
            results.put(("stopped", wid, task.index, None))
            continue
        results.put(("started", wid, task.index, None))
        try:
            result = partitions.run(task)
        except Stopped:
            results.put(("stopped", wid, task.index, None))
        except Exception as exc:
            results.put(("failed", wid, task.index, reason(exc)))
        else:
            results.put(("done", wid, task.index, result))
    # Its files are closed and its reports flushed: tearing the interpreter down (every
    # module, the model, pyarrow's pools) would take longer than a partition of work.
    results.close()
    results.join_thread()
    os._exit(0)


def _next(tasks: Any) -> Task | None:
    while True:
        try:
            task: Task | None = tasks.get(timeout=0.5)
            return task
        except queue.Empty:
            if not _parent_alive():
                return None


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def reason(exc: BaseException) -> str:
    """An exception as one printable line: its type and message."""
    text = getattr(exc, "message", None) or str(exc)
    return printable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 500)


class Partitions:
    """The loaded model and what running a partition needs: ``stop.is_set()`` says the job
    is stopping, ``count(rows)`` hears of rows predicted (for progress)."""

    def __init__(self, setup: WorkerSetup, stop: Any, count: Callable[[int], None]) -> None:
        from servion.registry import ModelRegistry

        self.setup = setup
        self.stop = stop
        self.count = count
        self._parent_checked = time.monotonic()
        self._cursor: ParquetCursor | None = None
        registry = ModelRegistry(setup.settings)
        try:
            mv = registry.get(setup.model, setup.version)
            if mv.sha256 != setup.sha256:
                raise RuntimeFailure(
                    f"{mv.label} is not the model the job was planned with (its sha256 is"
                    f" {mv.sha256}, the job's {setup.sha256})"
                )
            self.runtime = registry.open_runtime(mv)
        finally:
            registry.close()
        plan = setup.plan
        self.id_type = plan.id_type()
        self.schema = output_schema(plan.outputs, plan.id_column, self.id_type)
        outputs = list(dict.fromkeys(c.output for c in plan.outputs))
        self.predictor = BatchPredictor(self.runtime, outputs, setup.batch_size, self.stopping)
        self.directory = Path(setup.output_dir)
        self._warm()

    def stopping(self) -> bool:
        """Whether the job is stopping, or the runner is gone."""
        if self.stop.is_set():
            return True
        now = time.monotonic()
        if now - self._parent_checked > PARENT_CHECK_S:
            self._parent_checked = now
            return not _parent_alive()
        return False

    def _warm(self) -> None:
        """Pay for lazy initialisation (the model's first run, pyarrow's kernels, a Parquet
        writer) before the first partition, so each partition's time and memory are its
        own. A model that refuses the sample is met by the partitions instead."""
        try:
            sample = self.predictor.run_arrays(sample_inputs(self.runtime.signature(), 1))
        except REFUSED:
            return
        plan = self.setup.plan
        ids = pa.nulls(1, self.id_type) if plan.id_column else None
        table = output_table(self.schema, plan.outputs, ids, sample)
        pc.cast(pa.array([1]), pa.float32())
        with pq.ParquetWriter(pa.BufferOutputStream(), self.schema) as writer:
            writer.write_table(table)

    def run(self, task: Task) -> TaskResult:
        started = time.perf_counter()
        rss_start = _reset_peak()
        plan = self.setup.plan
        source = plan.inputs[task.input]
        id_column = plan.id_column
        columns = source.used_columns + ([id_column] if id_column else [])
        reader = PartitionReader(
            source, task.start_row, task.rows, task.byte_start, task.byte_end,
            columns, self.setup.batch_size, id_column, self._cursor,
        )  # fmt: skip
        self._cursor = None  # kept again only if this partition ends where it should
        fmt = self.setup.format
        writer = PartWriter(self.directory / part_name(task.index, fmt), fmt, self.schema)
        dead: list[dict[str, Any]] = []
        try:
            for batch, rows in reader:
                if self.stopping():
                    raise Stopped
                self._batch(batch, rows, source, writer, dead)
                self.count(batch.num_rows)
            if reader.read != task.rows:
                raise RuntimeFailure(
                    f"read {reader.read} rows where the plan counted {task.rows}: the file"
                    " changed, or a value spans lines"
                )
            sha256 = writer.commit()
            self._cursor = reader.cursor
        except BaseException:
            writer.abort()
            raise
        dead += [
            {"file": source.path, "row": u.row, "text": u.text, "error": u.error}
            for u in reader.unreadable
        ]
        dead_sha = write_dead_letter(self.directory / dead_letter_name(task.index), dead)
        errors = tuple(dict.fromkeys(str(e["error"]) for e in dead))[:3]
        _, peak = _memory()
        return TaskResult(
            task.index, task.rows, writer.rows, task.rows - writer.rows, sha256, dead_sha,
            errors, time.perf_counter() - started, rss_start, peak, os.getpid(),
        )  # fmt: skip

    def _batch(
        self,
        batch: pa.RecordBatch,
        rows: Any,
        source: InputSource,
        writer: PartWriter,
        dead: list[dict[str, Any]],
    ) -> None:
        id_column = self.setup.plan.id_column
        ids = None
        if id_column is not None:
            ids, bad = _ids(batch.column(id_column), self.id_type)
            for o in bad:
                value = batch.column(id_column)[o].as_py()
                error = f"id {quoted(str(value))} is not {self.id_type}"
                dead.append(_entry(batch, rows, o, source, id_column, error))
            if ids is None:
                keep = np.ones(batch.num_rows, bool)
                keep[bad] = False
                batch, rows = batch.filter(pa.array(keep)), rows[keep]
                ids = pc.cast(batch.column(id_column), self.id_type)
        predicted: Predicted = self.predictor.run(batch, source.feeds)
        for refused in predicted.refused:
            dead.append(_entry(batch, rows, refused.ordinal, source, id_column, refused.error))
        if len(predicted.ordinals):
            picked = ids
            if ids is not None and len(predicted.ordinals) < batch.num_rows:
                picked = ids.take(pa.array(predicted.ordinals))
            outputs = self.setup.plan.outputs
            writer.write(output_table(self.schema, outputs, picked, predicted.outputs))


def _ids(values: pa.Array, target: Any) -> tuple[pa.Array | None, list[int]]:
    """The id values as the job's id type; else (None, the rows whose id does not convert)."""
    if values.type == target:
        return values, []
    try:
        return pc.cast(values, target), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None, [o for o in range(len(values)) if not _converts(values.slice(o, 1), target)]


def _converts(value: pa.Array, target: Any) -> bool:
    try:
        pc.cast(value, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _entry(
    batch: pa.RecordBatch,
    rows: Any,
    ordinal: int,
    source: InputSource,
    id_column: str | None,
    error: str,
) -> dict[str, Any]:
    values = batch.slice(ordinal, 1).to_pylist()[0]
    entry: dict[str, Any] = {"file": source.path, "row": int(rows[ordinal])}
    if id_column is not None:
        entry["id"] = values.pop(id_column)
    entry["input"] = values
    entry["error"] = error
    return entry


def _memory() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process; the peak since the last reset."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak


def _reset_peak() -> int:
    """Start counting the peak afresh (Linux: clear_refs 5), so each partition reports its
    own; returns the resident bytes now."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass  # elsewhere the peak is the process's since it started
    return _memory()[0]
