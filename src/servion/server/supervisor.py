"""``servion serve``: one listening socket, several worker processes, graceful stop.

The parent binds the socket (port 0 works: the bound port is written to
``port_file``), starts one worker process per core, restarts a worker that
dies, and on SIGTERM or SIGINT tells every worker to drain: readiness turns
false, the listener closes, in-flight requests finish within the deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from servion.config import Settings
from servion.errors import ConfigError

log = logging.getLogger("servion.server")

MAX_RAPID_RESTARTS = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_safety(settings: Settings) -> bool:
    """Refuse a non-loopback listener without an admin token; return whether one is required."""
    if is_loopback(settings.server.host):
        return settings.server.admin_token is not None
    if not settings.server.admin_token:
        raise ConfigError(
            f"refusing to listen on {settings.server.host} without an admin token: "
            "pass --admin-token or set SERVION_SERVER_ADMIN_TOKEN (control operations "
            "must not be open to the network)"
        )
    return True


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a half-written number


def serve(settings: Settings, port_file: Path | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; return the exit code."""
    admin_required = check_bind_safety(settings)
    from servion.registry import ModelRegistry

    ModelRegistry(settings).close()  # create or migrate the database once, before workers race
    sock = bind(settings.server.host, settings.server.port)
    port = sock.getsockname()[1]
    if port_file is not None:
        _write_port_file(port_file, port)
    log.info(
        "server_listening",
        extra={"url": f"http://{settings.server.host}:{port}", "workers": settings.server.workers},
    )
    ctx = mp.get_context("spawn")
    stopping = False

    def start(index: int) -> Any:
        proc = ctx.Process(
            target=_worker_main,
            args=(settings, sock, admin_required, os.getpid()),
            name=f"servion-worker-{index}",
        )
        proc.start()
        return proc

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers = [start(i) for i in range(max(1, settings.server.workers))]
    restarts: list[float] = []
    exit_code = 0
    while not stopping:
        time.sleep(0.1)
        for i, proc in enumerate(workers):
            if proc.is_alive() or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 30] + [now]
            log.error("worker_died", extra={"worker": i, "exitcode": proc.exitcode})
            if len(restarts) > MAX_RAPID_RESTARTS:
                log.error("server_giving_up", extra={"reason": "workers keep dying"})
                stopping, exit_code = True, 1
                break
            workers[i] = start(i)
    _stop(workers, settings.server.graceful_timeout_s)
    sock.close()
    log.info("server_stopped", extra={"exit_code": exit_code})
    return exit_code


def _stop(workers: list[Any], graceful_timeout_s: float) -> None:
    for proc in workers:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + graceful_timeout_s + 5
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _worker_main(
    settings: Settings, sock: socket.socket, admin_required: bool, supervisor_pid: int
) -> None:
    from servion.server.worker import run_worker

    run_worker(settings, sock, admin_required, supervisor_pid)
