"""Resuming a batch job: what a resume may change and what it may not, inputs unchanged
since the job was planned, and its output folder still its own."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from servion.errors import InvalidInput, quoted

if TYPE_CHECKING:
    from servion.jobs import Job, JobOptions, JobStore

MARKER = ".servion-job"
"""In an output folder: the id of the job writing there (no second job may)."""


def listed_columns(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    listed = tuple(c.strip() for c in text.split(","))
    if not all(listed) or len(set(listed)) != len(listed):
        raise InvalidInput(f"--columns {quoted(text)}: name each column once, comma-separated")
    return listed


def resumable(
    store: JobStore,
    ref: str,
    model: str | None,
    given: str | None,
    output: Path | None,
    options: dict[str, Any],
) -> Job:
    """The job to resume, refused when what was given differs from what it was created
    with, or when its inputs changed since."""
    job = store.get(ref)
    stored = job.options
    kept = {
        "fmt": job.format,
        "partition_rows": stored.partition_rows,
        "batch_size": stored.batch_size,
        "id_column": stored.id_column,
    }
    differ = [f"--{k.replace('_', '-')}" for k, v in kept.items() if options[k] not in (None, v)]
    if options["columns"] is not None and listed_columns(options["columns"]) != stored.columns:
        differ.append("--columns")
    if model is not None and model not in (job.model, job.label):
        differ.append("NAME[:VERSION]")
    if given is not None and given != job.given:
        differ.append("--input")
    if output is not None and str(output.expanduser().absolute()) != job.output_dir:
        differ.append("--output")
    if differ:
        raise InvalidInput(
            f"{job.id} was created with other {', '.join(sorted(differ))}: resume it with its"
            " own, or with --resume alone"
        )
    for source in job.inputs:
        _unchanged(Path(source.path), source.size, source.mtime_ns)
    return job


def resumed_options(job: Job, options: dict[str, Any]) -> JobOptions:
    """The job's options, but for those a resume may change: they decide nothing written
    (the engine among them: both write the same bytes)."""
    from dataclasses import replace

    from servion.jobs import Budget

    budget = options["max_failed_rows"]
    if budget is not None:
        Budget.parse(budget)
    stored = job.options
    engine = options["engine"] or stored.engine
    address = options["ray_address"]
    if address is None and engine == stored.engine:
        address = stored.ray_address  # the cluster it ran on, unless the engine changes
    return replace(
        stored,
        workers=options["workers"] or stored.workers,
        retries=stored.retries if options["retries"] is None else options["retries"],
        max_failed_rows=budget or stored.max_failed_rows,
        engine=engine,
        ray_address=address,
    )


def _unchanged(path: Path, size: int, mtime_ns: int) -> None:
    try:
        stat = path.stat()
    except OSError:
        raise InvalidInput(f"input {quoted(str(path))} is gone: the job cannot resume") from None
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
        raise InvalidInput(
            f"input {quoted(str(path))} changed since the job was planned: its output would"
            " not be one run's; start a new job"
        )


def own_output(job: Job) -> Job:
    """The job's output folder, still its own (made again if it was removed)."""
    job.output.mkdir(parents=True, exist_ok=True)
    marker = job.output / MARKER
    if marker.exists() and marker.read_text().strip() != job.id:
        raise InvalidInput(f"{quoted(job.output_dir)} is another job's output now")
    marker.write_text(job.id)
    return job
