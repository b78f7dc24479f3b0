"""What a job did, in numbers: rows in and out, failed rows, time, throughput, cost; and
the manifest that lists every file of a finished job's output with its checksum."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from servion.jobs.records import Job, PartitionRecord

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands, for a progress display."""

    rows_done: int
    rows_total: int
    partitions_done: int
    partitions_total: int
    failed_rows: int
    rows_per_s: float
    """Over this run so far."""
    eta_s: float | None


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A job's totals over all its runs.

    ``cost`` is the price of a replica-hour (``SERVION_COST_REPLICA_HOUR``) for every
    worker process for the hours the job ran: None without a price.
    """

    job: str
    state: str
    model: str
    rows_total: int
    rows_in: int
    rows_out: int
    failed_rows: int
    partitions_done: int
    partitions_total: int
    duration_s: float
    rows_per_s: float
    workers: int
    engine: str
    """``local`` or ``ray``: what ran the job's last run."""
    runs: int
    peak_rss_bytes: int | None
    cost: float | None
    currency: str
    output_dir: str
    manifest: str | None
    error: str | None

    @classmethod
    def of(
        cls,
        job: Job,
        partitions: Sequence[PartitionRecord],
        price: float | None,
        currency: str,
    ) -> JobSummary:
        done = [p for p in partitions if p.state == "succeeded"]
        rows_in = sum(p.rows for p in done)
        duration = job.active_seconds
        peaks = [p.peak_rss_bytes for p in done if p.peak_rss_bytes is not None]
        manifest = job.output / MANIFEST
        return cls(
            job.id, job.shown_state, job.label, job.rows_total, rows_in,
            sum(p.rows_out or 0 for p in done), sum(p.failed_rows or 0 for p in done),
            len(done), job.partitions_total, duration,
            rows_in / duration if duration > 0 else 0.0, job.workers, job.options.engine,
            job.runs,
            max(peaks) if peaks else None,
            None if price is None else price * job.worker_seconds / 3600, currency,
            job.output_dir, str(manifest) if job.state == "succeeded" else None, job.error,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_manifest(job: Job, partitions: Sequence[PartitionRecord]) -> Path:
    """Write ``manifest.json``: every partition's file, rows and checksums. It holds no
    time of day, so two runs of the same job over the same files agree but for the id."""
    plan = job.plan
    columns = ([plan.id_column] if plan.id_column else []) + [c.name for c in plan.outputs]
    body = {
        "job": job.id,
        "model": {"name": job.model, "version": job.version, "sha256": job.model_sha256},
        "format": job.format,
        "id_column": plan.id_column,
        "columns": columns,
        "inputs": [
            {"path": s.path, "format": s.format, "rows": s.rows, "size_bytes": s.size}
            for s in plan.inputs
        ],
        "rows_in": sum(p.rows for p in partitions),
        "rows_out": sum(p.rows_out or 0 for p in partitions),
        "failed_rows": sum(p.failed_rows or 0 for p in partitions),
        "partitions": [
            {
                "index": p.index,
                "file": p.file(job.format),
                "input": p.input,
                "start_row": p.start_row,
                "rows_in": p.rows,
                "rows_out": p.rows_out,
                "failed_rows": p.failed_rows,
                "sha256": p.sha256,
                "dead_letter": p.dead_letter,
                "dead_letter_sha256": p.dead_letter_sha256,
            }
            for p in partitions
        ],
    }
    path = job.output / MANIFEST
    temporary = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    temporary.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(temporary, path)
    return path
