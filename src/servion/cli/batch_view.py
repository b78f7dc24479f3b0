"""What ``servion batch`` prints: a job's progress (a live bar on a terminal, a plain line
every few seconds otherwise, on stderr), its summary, its status and the list of jobs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from servion.cli.client import when
from servion.cli.common import human_bytes, table

if TYPE_CHECKING:  # pyarrow and the runtimes load only once a job runs
    from servion.jobs import Job, JobSummary, PartitionRecord, Progress

PLAIN_EVERY_S = 5.0
"""Off a terminal, a progress line this often: enough to follow a log, not to flood it."""


def _count(n: int) -> str:
    return f"{n:,}"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextmanager
def progress(job: Job) -> Iterator[Callable[[Progress], None]]:
    """Yields the function a runner reports its progress to."""
    if sys.stderr.isatty():
        with _bar(job) as update:
            yield update
        return
    last = [time.monotonic()]

    def line(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= PLAIN_EVERY_S:
            last[0] = now
            click.echo(
                f"{job.id}: {_count(p.rows_done)}/{_count(p.rows_total)} rows,"
                f" {p.partitions_done}/{p.partitions_total} partitions,"
                f" {p.failed_rows:,} failed, {p.rows_per_s:,.0f} rows/s, ETA {_eta(p.eta_s)}",
                err=True,
            )

    yield line


@contextmanager
def _bar(job: Job) -> Iterator[Callable[[Progress], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    with Progress(
        TextColumn(f"{job.id} {job.label}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(job.id, total=max(job.rows_total, 1), detail="starting workers")

        def update(p: Any) -> None:
            detail = (
                f"{_count(p.rows_done)}/{_count(p.rows_total)} rows"
                f"  {p.partitions_done}/{p.partitions_total} partitions"
                f"  {p.rows_per_s:,.0f} rows/s  ETA {_eta(p.eta_s)}"
            )
            if p.failed_rows:
                detail += f"  {p.failed_rows:,} failed"
            bar.update(task, completed=p.rows_done, detail=detail)

        yield update


def summary_rows(summary: JobSummary) -> list[tuple[str, str]]:
    rows = [
        ("job", summary.job),
        ("state", summary.state),
        ("model", summary.model),
        ("rows in", _count(summary.rows_in)),
        ("rows out", _count(summary.rows_out)),
        ("failed rows", _count(summary.failed_rows)),
        ("partitions", f"{summary.partitions_done}/{summary.partitions_total}"),
        (
            "duration",
            f"{summary.duration_s:.1f} s"
            + (f" over {summary.runs} runs" if summary.runs > 1 else ""),
        ),
        ("throughput", f"{summary.rows_per_s:,.0f} rows/s"),
        ("workers", str(summary.workers) + (" Ray actors" if summary.engine == "ray" else "")),
    ]
    if summary.peak_rss_bytes is not None:
        rows.append(("worker peak RSS", human_bytes(summary.peak_rss_bytes)))
    cost = "not configured" if summary.cost is None else f"{summary.cost:.4f} {summary.currency}"
    rows.append(("cost", cost))
    rows.append(("output", summary.output_dir))
    if summary.manifest:
        rows.append(("manifest", summary.manifest))
    return rows


def print_summary(summary: JobSummary) -> None:
    rows = summary_rows(summary)
    if sys.stdout.isatty():
        from rich.box import SIMPLE
        from rich.console import Console
        from rich.table import Table

        view = Table(box=SIMPLE, show_header=False)
        view.add_column(style="bold")
        view.add_column()
        for key, value in rows:
            view.add_row(
                key, value, style="red" if key == "state" and value != "succeeded" else None
            )
        Console().print(view)
    else:
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            click.echo(f"{key.ljust(width)}  {value}")


def print_status(
    job: Job, summary: JobSummary, partitions: Sequence[PartitionRecord], everything: bool
) -> None:
    print_summary(summary)
    if job.error:
        click.echo(f"error: {job.error}")
    shown = [p for p in partitions if everything or p.state != "succeeded"]
    if not shown:
        return
    headers = (
        "PARTITION",
        "INPUT",
        "FIRST ROW",
        "ROWS",
        "STATE",
        "ATTEMPTS",
        "FAILED",
        "SECONDS",
        "PEAK RSS",
        "ERROR",
    )
    rows = [
        (
            p.file(job.format),
            job.inputs[p.input].path.rsplit("/", 1)[-1],
            _count(p.start_row),
            _count(p.rows),
            p.state,
            p.attempts,
            "" if p.failed_rows is None else _count(p.failed_rows),
            "" if p.seconds is None else f"{p.seconds:.1f}",
            "" if p.peak_rss_bytes is None else human_bytes(p.peak_rss_bytes),
            (p.error or "")[:80],
        )
        for p in shown
    ]
    click.echo()
    click.echo(table(headers, rows))
    if not everything and len(shown) < len(partitions):
        click.echo(f"({len(partitions) - len(shown)} succeeded partitions not shown: --all)")


def print_jobs(jobs: Sequence[Job]) -> None:
    if not jobs:
        click.echo("no batch jobs (servion batch run NAME --input PATH --output DIR)")
        return
    rows = [
        (
            j.id,
            j.shown_state,
            j.label,
            _count(j.rows_total),
            j.partitions_total,
            j.format,
            when(j.created_at),
            j.output_dir,
        )
        for j in jobs
    ]
    headers = ("JOB", "STATE", "MODEL", "ROWS", "PARTITIONS", "FORMAT", "CREATED (UTC)", "OUTPUT")
    click.echo(table(headers, rows))
