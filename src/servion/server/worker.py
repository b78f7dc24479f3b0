"""One worker process: the app, its models, and its HTTP front end on the shared socket."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from servion._version import __version__
from servion.batching import BatchingConfig
from servion.config import Settings
from servion.deploy import Deployments
from servion.logs import configure_logging
from servion.protocol import Limits
from servion.registry import ModelRegistry
from servion.server import native_serve
from servion.server.app import ServionApp
from servion.server.control import Control
from servion.server.cost_export import Pricing
from servion.server.gate import Gate
from servion.server.metrics_files import MetricsFolder
from servion.server.request_log import AccessLog
from servion.server.supervisor import bind, is_loopback
from servion.serving import ModelManager
from servion.serving.drift import DriftMonitor
from servion.serving.metrics import WorkerMetrics
from servion.serving.sleep import Sleep

if TYPE_CHECKING:
    from servion.server.tracing import Tracing


def build_app(
    settings: Settings, admin_required: bool, tracing: Tracing | None = None
) -> ServionApp:
    """Compose registry, manager and control into the ASGI app of one worker; ``tracing``
    (a test's in-memory exporter) replaces the OTLP export ``settings`` would configure."""
    registry = ModelRegistry(settings)
    deployments = Deployments(registry)
    batching = BatchingConfig(**settings.batching.model_dump())
    manager = ModelManager(registry, batching, deployments.plans)
    control = Control(
        registry,
        manager,
        deployments,
        sync_interval_s=settings.server.sync_interval_s,
        admin_token=settings.server.admin_token,
        admin_required=admin_required,
    )
    limits = Limits(
        max_body_bytes=settings.server.max_body_bytes,
        max_json_depth=settings.server.max_json_depth,
    )
    control.inference_auth = settings.server.inference_auth
    idle_s, budget = settings.server.scale_to_zero_after_s, settings.server.model_memory_bytes
    if idle_s is not None or budget is not None:
        manager.sleep = Sleep(manager, idle_s, budget)
        control.every_second.append(manager.sleep.sweep)
    metrics = None
    if settings.server.metrics:
        metrics = WorkerMetrics(manager, control.worker_id, settings.cost.window_s)
    folder = None
    if metrics is not None and settings.server.metrics_dir:
        folder = MetricsFolder(Path(settings.server.metrics_dir), control.worker_id)
    if tracing is None and settings.server.tracing:
        # Imported only when on: a server without tracing never loads OpenTelemetry.
        from servion.server.tracing import Tracing

        tracing = Tracing.from_settings(settings.server, control.worker_id)
    app = ServionApp(
        manager,
        control,
        limits,
        __version__,
        graceful_timeout_s=settings.server.graceful_timeout_s,
        gate=Gate(is_loopback(settings.server.host), settings.server.allowed_hosts),
        metrics=metrics,
        metrics_folder=folder,
        tracing=tracing,
        drift=DriftMonitor(registry, settings.drift) if settings.drift.enabled else None,
        pricing=Pricing.from_config(settings.cost.model_dump()),
    )
    if settings.server.grpc:
        # Imported only when served: grpc costs each worker about 14 MB.
        from servion.server.grpc_server import GrpcFrontEnd

        app.front_ends.append(
            GrpcFrontEnd(
                app,
                settings.server.host,
                settings.server.grpc_port,
                settings.server.grpc_max_message_bytes,
            )
        )
    return app


def run_worker(
    settings: Settings, sock: socket.socket, admin_required: bool, supervisor_pid: int
) -> None:
    configure_logging(settings.server.log_level)
    app = build_app(settings, admin_required)
    app.control.supervisor_pid = supervisor_pid
    if settings.server.http == "native":
        code = native_serve.run(
            app,
            sock,
            graceful_timeout_s=settings.server.graceful_timeout_s,
            keep_alive_s=settings.server.keep_alive_s,
            drain_delay_s=settings.server.drain_delay_s,
            access=AccessLog(
                settings.server.access_log,
                settings.server.access_log_sample,
                settings.server.slow_request_ms / 1000,
            ),
        )
        sys.exit(code)
    _run_uvicorn(app, settings, sock)


def _run_uvicorn(app: ServionApp, settings: Settings, sock: socket.socket) -> None:
    # Imported only when chosen: uvicorn costs each worker about 3 MB.
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """Turns readiness false the moment a stop is asked for, before the listener closes."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        # servion reads no client address; the proxy-headers middleware would
        # cost a call and a header scan on every request.
        proxy_headers=False,
        date_header=True,
        timeout_graceful_shutdown=int(settings.server.graceful_timeout_s),
        timeout_keep_alive=int(max(1, settings.server.keep_alive_s)),
        h11_max_incomplete_event_size=64 * 1024,
    )
    DrainingServer(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process started by the supervisor."""
    parser = argparse.ArgumentParser(prog="servion-worker")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited listening socket")
    where.add_argument("--port", type=int, help="listen on this port with SO_REUSEPORT")
    parser.add_argument("--supervisor", type=int, required=True)
    parser.add_argument("--admin-required", choices=("0", "1"), required=True)
    args = parser.parse_args(argv)
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = bind(settings.server.host, args.port, reuse_port=True)
    run_worker(settings, sock, args.admin_required == "1", args.supervisor)


if __name__ == "__main__":
    main()
