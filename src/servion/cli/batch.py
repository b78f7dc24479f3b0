"""``servion batch run | status | list | cancel``: a registered model over files.

Exit codes of ``run``: 0 the job succeeded; 1 it failed (more failed rows than
--max-failed-rows allows, a partition out of retries) or was cancelled; 2 refused input,
before any work and with no job created (unknown model, missing or unreadable input,
columns that do not fit the signature, a bad option); 130 Ctrl-C, the job left to
``--resume``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from servion.cli.batch_resume import (
    MARKER,
    listed_columns,
    own_output,
    resumable,
    resumed_options,
)
from servion.cli.batch_target import target_version
from servion.cli.common import Context, echo_json, open_registry, refusals_exit_2
from servion.errors import InvalidInput, quoted

if TYPE_CHECKING:  # pyarrow, the registry and the runtimes load only once a command runs
    from servion.jobs import Job, JobOptions, JobStore, Planned
    from servion.registry import ModelRegistry, ModelVersion

FORMATS = ("parquet", "csv", "jsonl")
ENGINES = ("local", "ray")
DEFAULTS: dict[str, Any] = {
    "partition_rows": 100_000,
    "batch_size": 4096,
    "max_failed_rows": "0.01",
    "retries": 2,
    "engine": "local",
}


@dataclass(frozen=True)
class _NewJob:
    model: ModelVersion
    planned: Planned
    output: Path
    given: str
    fmt: str


class JobNotSucceeded(Exception):
    """The job ended failed or cancelled: exit 1, after its summary."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.error or job.state)
        self.job = job


@click.group()
def batch() -> None:
    """Batch prediction over Parquet, CSV and JSON Lines files."""


@batch.command()
@click.argument("ref", metavar="NAME[:VERSION]", required=False)
@click.option("--input", "given", metavar="PATH|GLOB", help="A file, a folder or a glob.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), help="A new folder.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Output format [parquet].")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes [cores].")
@click.option("--partition-rows", type=click.IntRange(min=1), help="Rows per partition [100000].")
@click.option("--columns", metavar="C1,C2,...", help="The model's single input, in order.")
@click.option("--id-column", metavar="COLUMN", help="Carried to the output, not to the model.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per model call [4096].")
@click.option(
    "--max-failed-rows",
    metavar="N|FRACTION",
    help="Rows that may fail before the job does: a count, or a share below 1 [0.01].",
)
@click.option("--retries", type=click.IntRange(min=0), help="Retries of a failed partition [2].")
@click.option("--engine", type=click.Choice(ENGINES), help="Worker processes here, or Ray [local].")
@click.option("--ray-address", metavar="HOST:PORT", help="A Ray cluster to join [a local one].")
@click.option("--resume", metavar="JOB", help="Finish an interrupted, failed or cancelled job.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
@refusals_exit_2
def run(
    ctx: Context,
    ref: str | None,
    given: str | None,
    output: Path | None,
    fmt: str | None,
    workers: int | None,
    partition_rows: int | None,
    columns: str | None,
    id_column: str | None,
    batch_size: int | None,
    max_failed_rows: str | None,
    retries: int | None,
    engine: str | None,
    ray_address: str | None,
    resume: str | None,
    as_json: bool,
) -> None:
    """Predict every row of --input with NAME[:VERSION] (its latest version without one; an
    endpoint's name: the one version it answers with) into --output, one file per
    partition; or finish a job with --resume JOB."""
    options = {
        "fmt": fmt, "workers": workers, "partition_rows": partition_rows, "columns": columns,
        "id_column": id_column, "batch_size": batch_size, "max_failed_rows": max_failed_rows,
        "retries": retries, "engine": engine, "ray_address": ray_address,
    }  # fmt: skip
    if importlib.util.find_spec("pyarrow") is None:
        raise InvalidInput("batch jobs need pyarrow: pip install 'servion[batch]'")
    from servion.jobs import JobStore

    registry = open_registry(ctx.settings)
    try:
        store = JobStore(registry)
        target: _NewJob | Job
        if resume is not None:
            target = resumable(store, resume, ref, given, output, options)
            chosen = resumed_options(target, options)
        elif ref is None or given is None or output is None:
            raise InvalidInput("give NAME[:VERSION], --input and --output (or --resume JOB)")
        else:
            chosen = _options(options)
            target = _plan(registry, ref, given, output, fmt or "parquet", chosen)
        chosen = _engine(chosen)
        if not isinstance(target, _NewJob) and target.state == "succeeded":
            final = target  # nothing left to do: say so, as a finished run would
        else:
            final = _audited_run(ctx, store, target, chosen)
        _report(ctx, store, final, as_json)
    finally:
        registry.close()
    if final.state == "cancelled":
        click.echo(f"error: {final.id} was cancelled", err=True)
        sys.exit(1)
    if final.state != "succeeded":
        click.echo(f"error: {final.id} failed: {final.error}", err=True)
        sys.exit(1)


def _options(given: dict[str, Any]) -> JobOptions:
    from servion.jobs import Budget, JobOptions

    values: dict[str, Any] = {k: DEFAULTS.get(k) if v is None else v for k, v in given.items()}
    Budget.parse(values["max_failed_rows"])
    return JobOptions(
        int(values["workers"] or os.cpu_count() or 1),
        int(values["partition_rows"]),
        int(values["batch_size"]),
        str(values["max_failed_rows"]),
        int(values["retries"]),
        listed_columns(values["columns"]),
        values["id_column"],
        values["engine"],
        values["ray_address"],
    )


def _engine(options: JobOptions) -> JobOptions:
    """Ray joined (or started) before the job is created or resumed: an address that does
    not answer is refused with nothing done."""
    if options.engine != "ray":
        if options.ray_address is not None:
            raise InvalidInput("--ray-address needs --engine ray")
        return options
    from dataclasses import replace

    from servion.jobs.ray_engine import connect

    workers, where = connect(options.ray_address, options.workers)
    click.echo(where, err=True)
    return replace(options, workers=workers)


def _plan(
    registry: ModelRegistry, ref: str, given: str, output: Path, fmt: str, options: JobOptions
) -> _NewJob:
    """The model version, the plan and the output folder; refused before anything exists."""
    from servion.cli.progress import steps
    from servion.jobs import find_inputs, plan_job
    from servion.registry import parse_ref

    name, version = parse_ref(ref)
    mv = target_version(registry, name, version)
    out = output.expanduser().absolute()
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"the output folder {quoted(str(out))} is not empty: give a new one")
    files = find_inputs(given)
    inside = [f for f in files if f.is_relative_to(out)]
    if inside:
        raise InvalidInput(f"{quoted(str(inside[0]))} is inside the output folder")
    with steps(f"planning a batch job of {mv.label}") as step:
        planned = plan_job(files, mv.signature, options, on_step=step)
    return _NewJob(mv, planned, out, given, fmt)


def _audited_run(ctx: Context, store: JobStore, target: _NewJob | Job, options: JobOptions) -> Job:
    from servion.audit import Auditor, os_user
    from servion.cli.batch_view import progress
    from servion.jobs import JobSummary, runner_for

    if isinstance(target, _NewJob):
        name, version, job = target.model.name, target.model.version, None
    else:
        name, version, job = target.model, target.version, target
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(
            "batch_run", model_name=name, model_version=version, rollback_available=False
        ) as op:
            if isinstance(target, _NewJob):
                job = _create(store, target, options, os_user())
            else:
                job = own_output(target)
            op.resources_affected = [f"job:{job.id}", f"output:{job.output_dir}"]
            op.set(
                resources={
                    "job": job.id, "resumed": job.runs > 0, "workers": options.workers,
                    "engine": options.engine,
                }
            )  # fmt: skip
            job = store.claim(job, options)
            with progress(job) as report:
                final = runner_for(store, job, ctx.settings, report).run()
            summary = JobSummary.of(final, store.partitions(final.id), None, "")
            op.performance_metrics = {
                "rows_in": summary.rows_in,
                "rows_out": summary.rows_out,
                "failed_rows": summary.failed_rows,
                "duration_s": round(summary.duration_s, 3),
                "rows_per_s": round(summary.rows_per_s, 1),
            }
            if final.state != "succeeded":
                raise JobNotSucceeded(final)
    except JobNotSucceeded as stopped:
        final = stopped.job
    except KeyboardInterrupt:
        label = job.id if job is not None else "JOB"
        click.echo(f"interrupted: finish it with servion batch run --resume {label}", err=True)
        sys.exit(130)
    finally:
        audit.close()
    return final


def _create(store: JobStore, new: _NewJob, options: JobOptions, user: str) -> Job:
    new.output.mkdir(parents=True, exist_ok=True)
    try:
        marker = os.open(new.output / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise InvalidInput(f"another job writes to {quoted(str(new.output))}") from None
    try:
        job = store.create(
            model=new.model.name, version=new.model.version, sha256=new.model.sha256,
            given=new.given, output_dir=str(new.output), fmt=new.fmt, options=options,
            planned=new.planned, user=user,
        )  # fmt: skip
        os.write(marker, job.id.encode())
    finally:
        os.close(marker)
    return job


def _report(ctx: Context, store: JobStore, job: Job, as_json: bool) -> None:
    from servion.cli.batch_view import print_summary
    from servion.jobs import JobSummary

    cost = ctx.settings.cost
    summary = JobSummary.of(job, store.partitions(job.id), cost.replica_hour, cost.currency)
    if as_json:
        echo_json(summary.to_dict())
    else:
        print_summary(summary)


@batch.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--all", "everything", is_flag=True, help="List succeeded partitions too.")
@click.option("--json", "as_json", is_flag=True, help="The job, its summary and partitions.")
@click.pass_obj
@refusals_exit_2
def status(ctx: Context, job_ref: str, everything: bool, as_json: bool) -> None:
    """A job's state, totals and partitions (JOB: its id, or the start of it)."""
    from servion.cli.batch_view import print_status
    from servion.jobs import JobStore, JobSummary

    registry = open_registry(ctx.settings)
    try:
        store = JobStore(registry)
        job = store.get(job_ref)
        partitions = store.partitions(job.id)
    finally:
        registry.close()
    cost = ctx.settings.cost
    summary = JobSummary.of(job, partitions, cost.replica_hour, cost.currency)
    if as_json:
        echo_json(
            {
                "job": job.to_dict(),
                "summary": summary.to_dict(),
                "partitions": [p.to_dict(job.format) for p in partitions],
            }
        )
        return
    print_status(job, summary, partitions, everything)


@batch.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def list_jobs(ctx: Context, limit: int, as_json: bool) -> None:
    """The latest batch jobs, newest first."""
    from servion.cli.batch_view import print_jobs
    from servion.jobs import JobStore

    registry = open_registry(ctx.settings)
    try:
        jobs = JobStore(registry).recent(limit)
    finally:
        registry.close()
    if as_json:
        echo_json([j.to_dict() for j in jobs])
        return
    print_jobs(jobs)


@batch.command()
@click.argument("job_ref", metavar="JOB")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the running job to stop.",
)
@click.pass_obj
@refusals_exit_2
def cancel(ctx: Context, job_ref: str, wait: float) -> None:
    """Stop a job: its running partitions end between two batches, the finished ones
    stay, and it can still be resumed."""
    from servion.audit import Auditor
    from servion.jobs import FINAL, JobStore

    registry = open_registry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        store = JobStore(registry)
        job = store.get(job_ref)
        with audit.operation(
            "batch_cancel", model_name=job.model, model_version=job.version,
            rollback_available=True,
        ) as op:  # fmt: skip
            op.resources_affected = [f"job:{job.id}"]
            job = store.request_cancel(job)
            deadline = time.monotonic() + wait
            while job.state not in FINAL and job.runner_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
                job = store.get(job.id)
    finally:
        registry.close()
        audit.close()
    if job.state == "cancelled":
        click.echo(f"cancelled {job.id} (resume with servion batch run --resume {job.id})")
    else:
        click.echo(f"asked {job.id} to stop; it is {job.shown_state}")
