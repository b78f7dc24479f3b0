"""Batch jobs in the registry's database: created with their whole plan, claimed by one
runner at a time (a heartbeat tells whether it is still there), updated partition by
partition, and cancelled through a flag the runner reads every half second.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from servion.errors import InvalidInput, ServionError, quoted
from servion.jobs.records import (
    FINAL,
    Job,
    PartitionRecord,
    job_from_row,
    partition_from_row,
)
from servion.jobs.spec import JobOptions, TaskResult
from servion.jobs.tables import JOBS, batch_jobs, batch_partitions
from servion.state import utcnow

if TYPE_CHECKING:  # status, list and cancel import neither pyarrow nor the runtimes
    from servion.jobs.plan import Planned
    from servion.registry import ModelRegistry


class JobNotFound(ServionError):
    """No batch job has that id (or an id starting so)."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"unknown batch job {quoted(ref)} (servion batch list shows them)")


def new_job_id() -> str:
    """``job-`` and 12 hex digits: short to type, and 2^48 ids to draw from."""
    return f"job-{secrets.token_hex(6)}"


class JobStore:
    """The jobs and partitions tables, through the registry's engine."""

    def __init__(self, registry: ModelRegistry) -> None:
        registry.database.migrate(JOBS)
        self.engine = registry.engine

    # -- creating and reading ------------------------------------------------------------

    def create(
        self,
        *,
        model: str,
        version: str,
        sha256: str,
        given: str,
        output_dir: str,
        fmt: str,
        options: JobOptions,
        planned: Planned,
        user: str,
    ) -> Job:
        job_id = new_job_id()
        files = [s.path for s in planned.plan.inputs]
        with self.engine.begin() as conn:
            conn.execute(
                batch_jobs.insert().values(
                    id=job_id, model=model, version=version, model_sha256=sha256,
                    inputs={"given": given, "files": files}, output_dir=output_dir,
                    format=fmt, options=options.to_dict(), plan=planned.plan.to_dict(),
                    state="queued", rows_total=planned.rows,
                    partitions_total=len(planned.partitions), workers=options.workers,
                    created_at=utcnow(), created_by=user,
                )
            )  # fmt: skip
            if planned.partitions:
                conn.execute(
                    batch_partitions.insert(),
                    [
                        {
                            "job_id": job_id, "idx": p.index, "input": p.input,
                            "start_row": p.start_row, "rows": p.rows,
                            "byte_start": p.byte_start, "byte_end": p.byte_end,
                            "skip_rows": p.skip_rows,
                            "state": "pending",
                        }
                        for p in planned.partitions
                    ],
                )  # fmt: skip
        return self.get(job_id)

    def get(self, ref: str) -> Job:
        """A job by its id, or by the start of it when only one id starts so."""
        ref = ref.strip()
        prefix = ref if ref.startswith("job-") else f"job-{ref}"
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(batch_jobs).where(batch_jobs.c.id.startswith(prefix, autoescape=True))
            ).all()
        exact = [r for r in rows if r.id == prefix]
        if exact:
            return job_from_row(exact[0])
        if not rows:
            raise JobNotFound(ref)
        if len(rows) > 1:
            ids = ", ".join(sorted(r.id for r in rows)[:5])
            raise InvalidInput(f"{quoted(ref)} could be {ids}: give more of the id")
        return job_from_row(rows[0])

    def recent(self, limit: int = 50) -> list[Job]:
        """The latest jobs, newest first."""
        query = sa.select(batch_jobs).order_by(batch_jobs.c.created_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [job_from_row(r) for r in conn.execute(query)]

    def partitions(self, job_id: str) -> list[PartitionRecord]:
        query = (
            sa.select(batch_partitions)
            .where(batch_partitions.c.job_id == job_id)
            .order_by(batch_partitions.c.idx)
        )
        with self.engine.connect() as conn:
            return [partition_from_row(r) for r in conn.execute(query)]

    # -- a run ------------------------------------------------------------------------------

    def claim(self, job: Job, options: JobOptions) -> Job:
        """Make this process the job's runner; partitions left running by a runner that is
        gone are pending again. Refused while another runner is alive."""
        if job.runner_alive():
            raise InvalidInput(
                f"{job.id} is running (pid {job.runner_pid} on {job.runner_host}): wait for"
                f" it, or stop it with: servion batch cancel {job.id}"
            )
        values = {
            "state": "running", "runner_pid": _pid(), "runner_host": socket.gethostname(),
            "heartbeat": time.time(), "runs": batch_jobs.c.runs + 1, "cancel_requested": False,
            "error": None, "finished_at": None, "workers": options.workers,
            "options": options.to_dict(), "started_at": job.started_at or utcnow(),
        }  # fmt: skip
        with self.engine.begin() as conn:
            # Compare and set: of two runners resuming at once, one finds it changed.
            claimed = conn.execute(
                batch_jobs.update()
                .where(batch_jobs.c.id == job.id)
                .where(batch_jobs.c.state == job.state)
                .where(_same(batch_jobs.c.heartbeat, job.heartbeat))
                .values(**values)
            )
            if claimed.rowcount != 1:
                raise InvalidInput(f"{job.id} was just claimed by another runner")
            conn.execute(
                _partitions(job.id)
                .where(batch_partitions.c.state == "running")
                .values(state="pending")
            )
        return self.get(job.id)

    def beat(self, job_id: str, elapsed: float, workers: int) -> bool:
        """Say the runner is alive and count ``elapsed`` seconds of running; returns
        whether a cancel was asked for."""
        with self.engine.begin() as conn:
            conn.execute(
                batch_jobs.update()
                .where(batch_jobs.c.id == job_id)
                .values(
                    heartbeat=time.time(),
                    active_seconds=batch_jobs.c.active_seconds + elapsed,
                    worker_seconds=batch_jobs.c.worker_seconds + elapsed * workers,
                )
            )
            flag = conn.execute(
                sa.select(batch_jobs.c.cancel_requested).where(batch_jobs.c.id == job_id)
            ).scalar_one()
        return bool(flag)

    def started(self, job_id: str, index: int) -> None:
        self._update(
            job_id, [index], state="running", attempts=batch_partitions.c.attempts + 1,
            started_at=utcnow(), finished_at=None,
        )  # fmt: skip

    def done(self, job_id: str, result: TaskResult) -> None:
        self._update(
            job_id, [result.index], state="succeeded", rows_out=result.rows_out,
            failed_rows=result.failed_rows, sha256=result.sha256,
            dead_letter_sha256=result.dead_letter_sha256,
            error="; ".join(result.errors) or None, worker_pid=result.pid,
            rss_start_bytes=result.rss_start_bytes, peak_rss_bytes=result.peak_rss_bytes,
            seconds=result.seconds, finished_at=utcnow(),
        )  # fmt: skip

    def attempt_failed(self, job_id: str, index: int, error: str) -> None:
        self._update(job_id, [index], state="failed", error=error, finished_at=utcnow())

    def reset(self, job_id: str, indices: Sequence[int]) -> None:
        """Pending again: stopped before finishing, or its output is gone."""
        if indices:
            self._update(job_id, indices, state="pending", finished_at=None)

    def finish(self, job_id: str, state: str, error: str | None = None) -> Job:
        with self.engine.begin() as conn:
            conn.execute(
                batch_jobs.update()
                .where(batch_jobs.c.id == job_id)
                .values(state=state, error=error, finished_at=utcnow(), cancel_requested=False)
            )
        return self.get(job_id)

    def request_cancel(self, job: Job) -> Job:
        """Ask the job's runner to stop; a job with no runner alive is cancelled here."""
        if job.state in FINAL:
            raise InvalidInput(f"{job.id} has {job.state}: there is nothing to cancel")
        if job.runner_alive():
            with self.engine.begin() as conn:
                conn.execute(
                    batch_jobs.update()
                    .where(batch_jobs.c.id == job.id)
                    .values(cancel_requested=True)
                )
            return self.get(job.id)
        with self.engine.begin() as conn:
            conn.execute(
                _partitions(job.id)
                .where(batch_partitions.c.state == "running")
                .values(state="pending")
            )
        return self.finish(job.id, "cancelled")

    def _update(self, job_id: str, indices: Sequence[int], **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                _partitions(job_id)
                .where(batch_partitions.c.idx.in_(list(indices)))
                .values(**values)
            )


def _partitions(job_id: str) -> Any:
    return batch_partitions.update().where(batch_partitions.c.job_id == job_id)


def _same(column: Any, value: float | None) -> Any:
    return column.is_(None) if value is None else column == value


def _pid() -> int:
    import os

    return os.getpid()
