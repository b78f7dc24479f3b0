"""``servion serve``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import click

from servion.cli.common import Context, refusals_exit_2
from servion.config import BatchingSettings, CostSettings, ServerSettings, Settings
from servion.errors import ConfigError
from servion.logs import configure_logging
from servion.server import serve as run_server


def _finite(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    """FloatRange lets ``inf`` and ``nan`` through; neither is a price."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a price (a finite number, 0 or more)")
    return value


class ByteSize(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """A size: bytes, or a number with KB, MB, GB (powers of 1000) or KiB, MiB, GiB."""

    name = "size"
    UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        text = str(value).strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number) :]
        try:
            size = float(number) * self.UNITS[unit]
        except (KeyError, ValueError):
            size = math.nan
        if not math.isfinite(size):
            self.fail(f"{value!r} is not a size: give bytes, or 512MiB, 4GB...", param, ctx)
        if size < 2**20:
            self.fail(f"{value!r} is less than 1 MiB", param, ctx)
        return int(size)


def server_options(func: Any) -> Any:
    options = [
        click.option("--host", default=None, help="Address to listen on (default 127.0.0.1)."),
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=None,
            help="Port (default 8080; 0 = any free, and then gRPC's default is any free too).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(1, 256),
            default=None,
            help="Worker processes (default: one per core).",
        ),
        click.option(
            "--admin-token",
            default=None,
            help="Token for control operations; required off loopback.",
        ),
        click.option(
            "--port-file",
            type=click.Path(path_type=Path),
            default=None,
            help="Write the bound port here once listening.",
        ),
        click.option(
            "--grpc-port",
            type=click.IntRange(0, 65535),
            default=None,
            help="gRPC port (default 8081; 0 = any free).",
        ),
        click.option(
            "--grpc/--no-grpc",
            "grpc",
            default=None,
            help="Serve the Open Inference Protocol over gRPC too (default on).",
        ),
        click.option(
            "--grpc-max-message-bytes",
            type=click.IntRange(1024, 2**31 - 1),
            default=None,
            help="Largest gRPC message either way (default 64 MiB).",
        ),
        click.option(
            "--grpc-port-file",
            type=click.Path(path_type=Path),
            default=None,
            help="Write the bound gRPC port here once listening.",
        ),
        click.option(
            "--max-batch-size",
            type=click.IntRange(1, 65_536),
            default=None,
            help="Most rows per request and per batched execution (default 128).",
        ),
        click.option(
            "--batching/--no-batching",
            "dynamic",
            default=None,
            help="Merge concurrent requests into one execution (default on).",
        ),
        click.option(
            "--max-queue-delay-us",
            type=click.IntRange(0, 10_000_000),
            default=None,
            help="Longest wait for a fuller batch, spent only under load (default 0).",
        ),
        click.option(
            "--max-queue-size",
            type=click.IntRange(1),
            default=None,
            help="Requests queued per model before 503 + Retry-After (default 1024).",
        ),
        click.option(
            "--drain-delay",
            "drain_delay_s",
            type=click.FloatRange(0, 600),
            default=None,
            help="On SIGTERM: seconds to keep serving, not ready, before closing (default 5).",
        ),
        click.option(
            "--scale-to-zero-after",
            "scale_to_zero_after_s",
            type=click.FloatRange(min=0, min_open=True, max=30 * 86_400),
            default=None,
            metavar="SECONDS",
            help="Unload a model idle this long; its next request loads it (default never).",
        ),
        click.option(
            "--model-memory",
            "model_memory_bytes",
            type=ByteSize(),
            default=None,
            metavar="SIZE",
            help="Model cache: load on first request, keep at most SIZE (512MiB, 4GB).",
        ),
        click.option(
            "--log-level",
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            default=None,
            help="Lowest level of the JSON log lines (default INFO).",
        ),
        click.option(
            "--access-log/--no-access-log",
            "access_log",
            default=None,
            help="Log every REST answer as a JSON line (default off).",
        ),
        click.option(
            "--access-log-sample",
            type=click.FloatRange(0, 1),
            default=None,
            help="Share of answers the access log writes (5xx and slow ones always).",
        ),
        click.option(
            "--slow-request-ms",
            type=click.FloatRange(0),
            default=None,
            help="Log answers slower than this as slow_request (default 1000; 0: never).",
        ),
        click.option(
            "--metrics/--no-metrics",
            "metrics",
            default=None,
            help="Count for GET /metrics (default on).",
        ),
        click.option(
            "--metrics-port",
            type=click.IntRange(1, 65535),
            default=None,
            help="Also serve GET /metrics on this port.",
        ),
        click.option(
            "--allowed-hosts",
            default=None,
            metavar="NAME,NAME,...",
            help="Host names answered besides the loopback ones ('*': any); see the README.",
        ),
        click.option(
            "--tracing/--no-tracing",
            "tracing",
            default=None,
            help="OpenTelemetry spans over OTLP/HTTP (default off; needs servion[otel]).",
        ),
        click.option(
            "--otlp-endpoint",
            default=None,
            metavar="URL",
            help="OTLP/HTTP collector for the spans (default: OTEL_EXPORTER_OTLP_* variables).",
        ),
        click.option(
            "--max-body-bytes",
            type=click.IntRange(1024),
            default=None,
            help="Largest request body (default 10 MiB).",
        ),
        click.option(
            "--cost-per-replica-hour",
            type=click.FloatRange(min=0),
            callback=_finite,
            default=None,
            help="Price of this server's machine or pod per hour, for the cost series.",
        ),
        click.option(
            "--cost-per-gpu-hour",
            type=click.FloatRange(min=0),
            callback=_finite,
            default=None,
            help="Price of one GPU per hour, times the GPUs NVML sees.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


BATCHING_OPTIONS = ("dynamic", "max_batch_size", "max_queue_delay_us", "max_queue_size")
COST_OPTIONS = {"cost_per_replica_hour": "replica_hour", "cost_per_gpu_hour": "gpu_hour"}


def with_server_overrides(settings: Settings, **overrides: Any) -> Settings:
    """Settings with the command-line options laid over the environment's."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "log_level" in given:
        given["log_level"] = given["log_level"].upper()
    if "allowed_hosts" in given:
        given["allowed_hosts"] = tuple(h.strip() for h in given["allowed_hosts"].split(","))
    if given.get("port") == 0 and "grpc_port" not in given:
        given["grpc_port"] = 0  # "any free port" holds for both protocols
    batching = {k: given.pop(k) for k in BATCHING_OPTIONS if k in given}
    cost = {field: given.pop(k) for k, field in COST_OPTIONS.items() if k in given}
    return settings.model_copy(
        update={
            "server": ServerSettings(**{**settings.server.model_dump(), **given}),
            "batching": BatchingSettings(**{**settings.batching.model_dump(), **batching}),
            "cost": CostSettings(**{**settings.cost.model_dump(), **cost}),
        }
    )


@click.command()
@server_options
@click.pass_obj
@refusals_exit_2
def serve(
    ctx: Context,
    /,
    port_file: Path | None,
    grpc_port_file: Path | None,
    **overrides: Any,
) -> None:
    """Serve every registered model over the Open Inference Protocol (REST and gRPC)."""
    settings = with_server_overrides(ctx.settings, **overrides)
    if settings.server.tracing:
        require_tracing()
    configure_logging(settings.server.log_level)
    sys.exit(run_server(settings, port_file, grpc_port_file))


def require_tracing() -> None:
    """Refuse ``--tracing`` up front when the extra is missing, not in every worker."""
    # find_spec on a submodule imports its parents: a missing parent raises.
    try:
        found = all(
            importlib.util.find_spec(name) is not None
            for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
        )
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ConfigError(
            "tracing needs OpenTelemetry: pip install 'servion[otel]' "
            "(or turn tracing off: --no-tracing, SERVION_SERVER_TRACING=false)"
        )
