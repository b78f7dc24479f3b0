"""``servion profile``: sweep batch sizes in-process and recommend batching settings."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import click

from servion.bench import ProfileReport, profile_version
from servion.cli.common import Context, echo_json, refusals_exit_2, table
from servion.cli.progress import bar
from servion.registry import ModelRegistry, parse_ref


@click.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 65_536),
    help="Largest size tried (default: the request limit, 128).",
)
@click.option(
    "--latency-budget-ms",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    show_default=True,
    help="p99 execution time a batch may take.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds per batch size.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def profile(
    ctx: Context,
    ref: str,
    max_batch_size: int | None,
    latency_budget_ms: float,
    duration: float,
    as_json: bool,
) -> None:
    """Profile a registered model at batch sizes 1, 2, 4, ... and recommend batching."""
    name, version = parse_ref(ref)
    registry = ModelRegistry(ctx.settings)
    try:
        mv = registry.get(name, version)
        with ExitStack() as shown:

            def on_sizes(sizes: list[int]) -> Callable[[int], None]:
                title = f"profiling {mv.label} at {len(sizes)} batch sizes"
                return shown.enter_context(bar(title, len(sizes)))

            report = profile_version(
                registry, mv, max_batch_size, latency_budget_ms, duration, on_sizes
            )
    finally:
        registry.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report)


def _print(report: ProfileReport) -> None:
    click.echo(f"{report.model}:{report.version}, in-process, one execution at a time")
    rows = [
        (p.batch_size, p.runs, f"{p.p50_ms:.3f}", f"{p.p99_ms:.3f}", f"{p.rows_per_s:,.0f}")
        for p in report.points
    ]
    click.echo(table(("BATCH", "RUNS", "P50 MS", "P99 MS", "ROWS/S"), rows))
    if not report.batched:
        click.echo("the model's inputs have no batch dimension: batch size 1 only")
    rec = report.recommendation
    click.echo(
        f"recommended: max_batch_size {rec.max_batch_size}, max_queue_delay_us"
        f" {rec.max_queue_delay_us} (budget {report.latency_budget_ms:g} ms)"
    )
    click.echo(f"  why: {rec.reason}")
    click.echo(f"apply: {report.apply_command()}")
