"""``servion bench``: load a running server and check an SLO.

Exit codes: 0 the SLO was met, 1 it was missed or the server could not be
probed, 2 refused arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from servion.bench import (
    ENGINES,
    Engine,
    LoadResult,
    LoadSpec,
    Slo,
    SloVerdict,
    check_slo,
    prepare_target,
    run_load,
)
from servion.cli.common import echo_json, refusals_exit_2, table
from servion.cli.progress import timed
from servion.errors import RuntimeFailure

_POSITIVE = click.FloatRange(0, min_open=True)


@click.command()
@click.argument("url")
@click.option("--model", required=True, help="Model to load (its /v2/models/NAME/infer).")
@click.option("--concurrency", type=click.IntRange(1, 10_000), help="Closed loop (default 64).")
@click.option("--rate", type=_POSITIVE, help="Open loop: requests per second, on schedule.")
@click.option("--duration", type=_POSITIVE, default=10.0, show_default=True, help="Seconds.")
@click.option("--binary", is_flag=True, help="Send tensors with the binary extension.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=1,
    show_default=True,
    help="Rows per request (the body built from the model's metadata).",
)
@click.option(
    "--body",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Send this body instead of one built from the model's metadata.",
)
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True)
@click.option("--timeout", type=_POSITIVE, default=10.0, show_default=True, help="Per request, s.")
@click.option("--slo-p99-ms", type=_POSITIVE, help="p99 objective (default 100 ms).")
@click.option(
    "--slo-rps",
    type=click.FloatRange(0),
    help="Throughput objective (default 1000; with --rate, 95% of the rate).",
)
@click.option("--slo-error-rate", type=click.FloatRange(0, 1), help="Default 0: no errors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@refusals_exit_2
def bench(
    url: str,
    model: str,
    concurrency: int | None,
    rate: float | None,
    duration: float,
    binary: bool,
    batch_size: int,
    body: Path | None,
    engine: Engine,
    timeout: float,
    slo_p99_ms: float | None,
    slo_rps: float | None,
    slo_error_rate: float | None,
    as_json: bool,
) -> None:
    """Load URL (http://127.0.0.1:8080, or grpc://127.0.0.1:8081 for gRPC) with
    inference requests; check the SLO."""
    if concurrency is not None and rate is not None:
        raise click.UsageError("give --concurrency or --rate, not both")
    spec = LoadSpec(concurrency, rate, duration, timeout, engine)
    slo = Slo.for_run(rate, slo_p99_ms, slo_rps, slo_error_rate)
    grpc = url.startswith("grpc://")
    if grpc and (rate is not None or binary or body is not None or engine != "auto"):
        raise click.UsageError(
            "gRPC runs closed loop with raw tensors: drop --rate, --binary, --body, --engine"
        )
    try:
        with timed(f"bench {model}", duration):
            result, where = _run(url, model, grpc, spec, binary, body, timeout, batch_size)
    except RuntimeFailure as exc:  # the server failed, not the arguments
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    verdict = check_slo(result, slo)
    if as_json:
        echo_json({"model": model, "url": where, **result.to_dict(), "slo": verdict.to_dict()})
    else:
        _print(result, verdict)
    sys.exit(0 if verdict.met else 1)


def _run(
    url: str,
    model: str,
    grpc: bool,
    spec: LoadSpec,
    binary: bool,
    body: Path | None,
    timeout: float,
    batch_size: int,
) -> tuple[LoadResult, str]:
    if grpc:
        from servion.bench import _grpc_engine

        grpc_target = _grpc_engine.prepare_grpc_target(url, model, batch_size, timeout)
        result = _grpc_engine.run(grpc_target, spec.connections, spec.duration_s, timeout)
        return result, grpc_target.url
    target = prepare_target(url, model, binary, body, timeout, batch_size)
    return run_load(target, spec), target.url


def _print(result: LoadResult, verdict: SloVerdict) -> None:
    lat = result.latency
    load = f"rate {result.rate:g}/s" if result.rate else f"concurrency {result.connections}"
    click.echo(f"{result.engine} engine, {result.mode} loop, {load}, {result.elapsed_s:.1f} s")
    row = (
        result.requests,
        f"{result.rps:,.0f}",
        f"{lat.p50_ms:.2f}",
        f"{lat.p95_ms:.2f}",
        f"{lat.p99_ms:.2f}",
        result.error_count,
    )
    click.echo(table(("REQUESTS", "REQ/S", "P50 MS", "P95 MS", "P99 MS", "ERRORS"), [row]))
    if result.error_count:
        click.echo("errors: " + ", ".join(f"{k} {v}" for k, v in result.errors.items() if v))
    for note in result.notes:
        click.echo(f"note: {note}")
    for check in verdict.checks:
        status = "met" if check.met else "MISSED"
        click.echo(f"SLO {check.name} {check.objective}: {check.measured:,.3f} {status}")
    click.echo("SLO met" if verdict.met else "SLO missed")
