"""A job and its partitions as read back from the database."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servion.jobs.spec import InputSource, JobOptions, JobPlan, dead_letter_name, part_name

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
"""``interrupted``: stopped by Ctrl-C, or its runner is gone (killed): resumable."""
FINAL = frozenset({"succeeded", "failed", "cancelled"})
STALE_S = 10.0
"""A runner not heard from for this long is taken for gone."""


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """One partition as stored."""

    index: int
    input: int
    start_row: int
    rows: int
    byte_start: int | None
    byte_end: int | None
    skip_rows: int
    state: str
    """``pending``, ``running`` (a worker began it), ``succeeded`` or ``failed`` (its last
    attempt failed)."""
    attempts: int
    rows_out: int | None
    failed_rows: int | None
    sha256: str | None
    dead_letter_sha256: str | None
    error: str | None
    worker_pid: int | None
    rss_start_bytes: int | None
    peak_rss_bytes: int | None
    seconds: float | None
    started_at: str | None
    finished_at: str | None

    def file(self, fmt: str) -> str:
        return part_name(self.index, fmt)

    @property
    def dead_letter(self) -> str | None:
        return dead_letter_name(self.index) if self.dead_letter_sha256 else None

    def to_dict(self, fmt: str) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.file(fmt),
            "input": self.input,
            "start_row": self.start_row,
            "rows": self.rows,
            "state": self.state,
            "attempts": self.attempts,
            "rows_out": self.rows_out,
            "failed_rows": self.failed_rows,
            "sha256": self.sha256,
            "dead_letter": self.dead_letter,
            "dead_letter_sha256": self.dead_letter_sha256,
            "error": self.error,
            "worker_pid": self.worker_pid,
            "rss_start_bytes": self.rss_start_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "seconds": self.seconds,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, slots=True)
class Job:
    """One batch job as stored."""

    id: str
    given: str
    """The --input as given."""
    model: str
    version: str
    model_sha256: str
    output_dir: str
    format: str
    options: JobOptions
    plan: JobPlan
    state: str
    error: str | None
    rows_total: int
    partitions_total: int
    runs: int
    active_seconds: float
    worker_seconds: float
    workers: int
    runner_pid: int | None
    runner_host: str | None
    heartbeat: float | None
    cancel_requested: bool
    created_at: str
    created_by: str
    started_at: str | None
    finished_at: str | None

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"

    @property
    def inputs(self) -> tuple[InputSource, ...]:
        return self.plan.inputs

    @property
    def output(self) -> Path:
        return Path(self.output_dir)

    def runner_alive(self, now: float | None = None) -> bool:
        """Whether the process running the job is still there: heard from recently and,
        on this machine, still alive."""
        if self.state != "running" or self.heartbeat is None:
            return False
        if (now or time.time()) - self.heartbeat > STALE_S:
            return False
        if self.runner_host == socket.gethostname() and self.runner_pid is not None:
            return _pid_alive(self.runner_pid)
        return True

    @property
    def shown_state(self) -> str:
        """The state to show: a running job whose runner is gone is ``interrupted``."""
        if self.state == "running" and not self.runner_alive():
            return "interrupted"
        return self.state

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.shown_state,
            "stored_state": self.state,
            "input": self.given,
            "model": self.model,
            "version": self.version,
            "model_sha256": self.model_sha256,
            "inputs": [s.to_dict() for s in self.inputs],
            "output_dir": self.output_dir,
            "format": self.format,
            "options": self.options.to_dict(),
            "error": self.error,
            "rows_total": self.rows_total,
            "partitions_total": self.partitions_total,
            "runs": self.runs,
            "active_seconds": self.active_seconds,
            "worker_seconds": self.worker_seconds,
            "workers": self.workers,
            "runner_pid": self.runner_pid,
            "runner_host": self.runner_host,
            "heartbeat": self.heartbeat,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process of that number: cannot tell, trust the beat
    try:  # a killed runner not yet reaped by its parent is a zombie: gone all the same
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def job_from_row(row: Any) -> Job:
    return Job(
        row.id, str(row.inputs.get("given", "")), row.model, row.version, row.model_sha256,
        row.output_dir, row.format,
        JobOptions.from_dict(row.options), JobPlan.from_dict(row.plan), row.state, row.error,
        int(row.rows_total), int(row.partitions_total), int(row.runs),
        float(row.active_seconds), float(row.worker_seconds), int(row.workers), row.runner_pid,
        row.runner_host, row.heartbeat, bool(row.cancel_requested), row.created_at,
        row.created_by, row.started_at, row.finished_at,
    )  # fmt: skip


def partition_from_row(row: Any) -> PartitionRecord:
    return PartitionRecord(
        int(row.idx), int(row.input), int(row.start_row), int(row.rows), row.byte_start,
        row.byte_end, int(row.skip_rows), row.state, int(row.attempts), row.rows_out,
        row.failed_rows, row.sha256, row.dead_letter_sha256, row.error, row.worker_pid,
        row.rss_start_bytes, row.peak_rss_bytes, row.seconds, row.started_at, row.finished_at,
    )  # fmt: skip
