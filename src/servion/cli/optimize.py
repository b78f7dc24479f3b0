"""``servion optimize NAME:VERSION --to-version vX.Y.Z --validate FILE``: a faster version
derived from a registered one, registered only if it keeps its accuracy.

Exit codes: 0 registered; 2 refused input (unknown model or step, a version already
taken, a validation file that does not fit, a model a converter cannot handle); 1 a
step failed its checks (the answers moved more than the equivalence thresholds allow,
or the accuracy dropped more than --max-accuracy-drop): nothing is registered.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from servion.cli.common import Context, echo_json, human_bytes, open_registry, refusals_exit_2

if TYPE_CHECKING:  # numpy, sqlalchemy and the converters: only once the command runs
    from rich.table import Table

    from servion.optimize import OptimizeRequest, OptimizeResult, Report


class StepFailed(Exception):
    """A step failed its checks: the command fails (exit 1) and registers nothing."""

    def __init__(self, result: OptimizeResult) -> None:
        self.message = result.report.failure or "a step failed its checks"
        super().__init__(self.message)
        self.result = result


@click.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--to-version", required=True, help="Version of the result, e.g. v1.1.0.")
@click.option(
    "--validate",
    "validate",
    required=True,
    type=click.Path(path_type=Path),
    help="Validation data: .npz (an array per input), .csv or .parquet (a column per feature).",
)
@click.option(
    "--target",
    default=None,
    metavar="COLUMN",
    help="Column (or .npz array) of expected outputs; without it, agreement with the source.",
)
@click.option(
    "--steps",
    "steps",
    multiple=True,
    metavar="STEP[,STEP...]",
    help="Steps in order (onnx, graph, int8-dynamic, int8-static, fp16, prune,"
    " prune-structured, tensorrt, distill-mlp, distill-trees); repeatable. Default: onnx"
    " (graph for an ONNX model).",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Most accuracy (or agreement, or R²) any step may cost against the source.",
)
@click.option(
    "--max-score-diff",
    type=click.FloatRange(min=0),
    default=1e-3,
    show_default=True,
    help="Faithful steps (onnx, graph): most a score may move (relative above 1).",
)
@click.option(
    "--min-label-agreement",
    type=click.FloatRange(0, 1),
    default=0.999,
    show_default=True,
    help="Faithful steps: least share of rows whose label stays the same.",
)
@click.option(
    "--calibration-rows",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Validation rows int8-static calibrates on.",
)
@click.option(
    "--sparsity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="Share of weights prune zeroes, and of hidden units prune-structured removes.",
)
@click.option(
    "--measure-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Time spent timing each model (batch 1 and 32 share it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report and the version as JSON.")
@click.pass_obj
@refusals_exit_2
def optimize(
    ctx: Context,
    ref: str,
    to_version: str,
    validate: Path,
    target: str | None,
    steps: tuple[str, ...],
    max_accuracy_drop: float,
    max_score_diff: float,
    min_label_agreement: float,
    calibration_rows: int,
    sparsity: float,
    measure_seconds: float,
    as_json: bool,
) -> None:
    """Derive --to-version from NAME:VERSION by a recipe of steps, check every step on
    --validate data, and register the result (with its lineage) only if it keeps its
    accuracy."""
    from servion.optimize import OptimizeRequest, parse_recipe
    from servion.registry import parse_ref

    parse_ref(ref)  # a malformed name is refused before anything is audited
    request = OptimizeRequest(
        ref,
        to_version,
        validate,
        tuple(parse_recipe(steps)),
        target,
        max_accuracy_drop,
        max_score_diff,
        min_label_agreement,
        calibration_rows,
        sparsity,
        measure_seconds,
    )
    try:
        result = _run(ctx, request)
    except StepFailed as failed:
        if as_json:
            echo_json({"registered": None, "report": failed.result.report.to_dict()})
        else:
            _print_report(failed.result.report)
        click.echo(f"error: {failed.message}; nothing registered", err=True)
        sys.exit(1)
    _print_result(result, as_json)


def _run(ctx: Context, request: OptimizeRequest) -> OptimizeResult:
    from servion.audit import Auditor
    from servion.cli.progress import steps
    from servion.optimize import optimize as run_optimize

    name = request.source.partition(":")[0]
    resources = {
        "source": request.source,
        "steps": list(request.steps),
        "validation": request.validate.name,
        "max_accuracy_drop": request.max_accuracy_drop,
    }
    registry = open_registry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(
            "optimize",
            model_name=name,
            model_version=request.to_version,
            resources=resources,
            rollback_available=False,
        ) as op:
            with steps(f"optimizing {request.source} into {request.to_version}") as step:
                result = run_optimize(registry, request, on_step=step)
            op.performance_metrics = _metrics(result.report)
            if result.registered is None:
                raise StepFailed(result)
            mv = result.registered
            op.resources_affected = [f"model:{mv.label}", f"artifact:{mv.sha256}"]
    finally:
        registry.close()
        audit.close()
    return result


def _metrics(report: Report) -> dict[str, float | None]:
    first, last = report.stages[0], report.stages[-1]
    return {
        "score_source": first.score,
        "score_result": last.score,
        "drop": last.drop,
        "rows_per_s_source": first.rows_per_s,
        "rows_per_s_result": last.rows_per_s,
        "size_bytes_source": first.size_bytes,
        "size_bytes_result": last.size_bytes,
    }


def _print_result(result: OptimizeResult, as_json: bool) -> None:
    mv = result.registered
    assert mv is not None
    if as_json:
        echo_json({"registered": mv.to_dict(), "report": result.report.to_dict()})
    else:
        _print_report(result.report)
        click.echo(
            f"registered {mv.label} ({mv.format}, {human_bytes(mv.size_bytes)},"
            f" sha256 {mv.sha256}) from {result.report.source}: {result.report.summary()}"
        )
    for stage in result.report.stages:
        for note in stage.notes:
            click.echo(f"warning: {stage.step}: {note}", err=True)
    if mv.held:
        click.echo(
            f"warning: {mv.label} is registered but not served yet: {mv.held}. Serve it with:"
            f" servion models confirm {mv.label}",
            err=True,
        )


def _print_report(report: Report) -> None:
    from servion.cli.common import table
    from servion.optimize.report import HEADERS

    click.echo(f"{report.source} -> {report.target}: {report.metric} against {report.against}")
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(_rich_table(report))
    else:
        click.echo(table(HEADERS, report.rows()))


def _rich_table(report: Report) -> Table:
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    from servion.optimize.report import HEADERS

    view = Table(box=SIMPLE_HEAD)
    for i, header in enumerate(HEADERS):
        view.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
    for stage, row in zip(report.stages, report.rows(), strict=True):
        view.add_row(*row, style="red" if stage.failure else None)
    return view
