"""``servion serve``: one listening socket, several worker processes, graceful stop.

The parent binds the socket (port 0 works: the bound port is written to
``port_file``), starts one worker process per core, restarts a worker that
dies, and on SIGTERM or SIGINT tells every worker to drain: readiness turns
false, the listener closes, in-flight requests finish within the deadline.

The parent stays small: once the command line has validated the settings, the
CLI process replaces itself (``exec``) with ``python -m servion.server.supervisor``,
which reads them as plain JSON and imports neither pydantic, the registry nor
any runtime (12 MB instead of the CLI's 36 MB).
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from subprocess import PIPE, Popen, TimeoutExpired
from typing import TYPE_CHECKING, Any

from servion.errors import ConfigError

if TYPE_CHECKING:
    from servion.config import Settings

log = logging.getLogger("servion.server")

MAX_RAPID_RESTARTS = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_safety(host: str, admin_token: str | None) -> bool:
    """Refuse a non-loopback listener without an admin token; return whether one is required."""
    if is_loopback(host):
        return admin_token is not None
    if not admin_token:
        raise ConfigError(
            f"refusing to listen on {host} without an admin token: "
            "pass --admin-token or set SERVION_SERVER_ADMIN_TOKEN (control operations "
            "must not be open to the network)"
        )
    return True


REUSE_PORT = hasattr(socket, "SO_REUSEPORT")
"""With SO_REUSEPORT each worker listens on its own socket and the kernel spreads
connections evenly; one shared socket lets whichever worker wakes first take
them all (measured: 64 connections on one of two workers, half the machine idle)."""


def bind(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket bound to host:port (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _reserve(host: str, port: int) -> socket.socket:
    """The supervisor's socket: the listener itself, or under SO_REUSEPORT a holder of the port."""
    if not REUSE_PORT:
        return bind(host, port)
    # A plain bind first, so a port another program already uses is refused
    # (a SO_REUSEPORT bind would silently share it with that program).
    probe = bind(host, port, listen=False)
    port = probe.getsockname()[1]
    # Two servion servers started together could both pass that probe before either
    # holds the port: a lock per port, kept for the supervisor's life, decides.
    try:
        _claim(port)
    finally:
        probe.close()
    # This socket never listens, so it gets no connections; it holds the port
    # while workers come and go.
    return bind(host, port, reuse_port=True, listen=False)


_claims: list[Any] = []
"""Open lock files: a port stays claimed while its file is open and locked."""


def _claim(port: int) -> None:
    """Lock ``port`` for this process, or refuse naming the server that holds it."""
    folder = Path(tempfile.gettempdir()) / "servion-ports"
    try:
        folder.mkdir(mode=0o1777, exist_ok=True)
        fd = os.open(folder / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # a folder this user may not write: the probe bind is all there is
        return
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(
            f"port {port} is in use by another servion server (pid {holder})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _claims.append(handle)


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a half-written number


MAX_SETTINGS_BYTES = 60_000
"""Settings travel to the supervisor through a pipe written before it starts."""


def serve(
    settings: Settings,
    port_file: Path | None = None,
    grpc_port_file: Path | None = None,
    announce: str | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT: refuse unsafe settings here, then
    replace this process with the supervisor (the call returns only on error).

    ``announce`` is printed on stdout once the server answers ready, with ``{PORT}``
    replaced by the port it listens on: text that tells a user to call the server
    must not come before the server can answer.
    """
    check_bind_safety(settings.server.host, settings.server.admin_token)
    config = settings.model_dump_json().encode()
    if announce is not None:  # through the pipe, not the command line that ps shows
        config = json.dumps({**json.loads(config), "announce": announce}).encode()
    if len(config) > MAX_SETTINGS_BYTES:
        raise ConfigError(f"settings are larger than {MAX_SETTINGS_BYTES} bytes")
    read_end, write_end = os.pipe()
    os.write(write_end, config)
    os.close(write_end)
    os.set_inheritable(read_end, True)
    argv = [sys.executable, "-m", "servion.server.supervisor", "--settings-fd", str(read_end)]
    if port_file is not None:
        argv += ["--port-file", str(port_file)]
    if grpc_port_file is not None:
        argv += ["--grpc-port-file", str(grpc_port_file)]
    _reap_children()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _reap_children() -> None:
    """Leave no child behind for the supervisor to inherit as a zombie: the process that
    execs has run registry probes, whose multiprocessing resource tracker would exit
    (its pipe closes at exec) with nobody left to wait for it."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _announce_when_ready(host: str, port: int, text: str | None) -> None:
    """Log ``server_ready``, and print ``text`` if any, once ``/v2/health/ready`` answers
    200 (polled from a thread)."""
    import urllib.request

    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if ":" in target:
        target = f"[{target}]"
    url = f"http://{target}:{port}/v2/health/ready"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        return
    log.info("server_ready", extra={"url": f"http://{host}:{port}"})
    if text is not None:
        sys.stdout.write(text.replace("{PORT}", str(port)))
        sys.stdout.flush()


def supervise(
    config: dict[str, Any],
    port_file: Path | None = None,
    grpc_port_file: Path | None = None,
    announce: str | None = None,
) -> int:
    """The supervisor's loop over validated settings (``Settings.model_dump()``)."""
    server = config["server"]
    host = server["host"]
    admin_required = check_bind_safety(host, server["admin_token"])
    sock = _reserve(host, server["port"])
    port = sock.getsockname()[1]
    grpc_sock: socket.socket | None = None
    if server["grpc"]:
        if not REUSE_PORT:
            sock.close()
            raise ConfigError("gRPC needs SO_REUSEPORT on this platform: pass --no-grpc")
        try:
            grpc_sock = _reserve(host, server["grpc_port"])
        except ConfigError as exc:
            sock.close()
            raise ConfigError(f"gRPC: {exc} (choose another with --grpc-port)") from None
        # Workers learn the port actually reserved (it was 0 when any would do).
        server["grpc_port"] = grpc_sock.getsockname()[1]
        if grpc_port_file is not None:
            _write_port_file(grpc_port_file, server["grpc_port"])
    if port_file is not None:
        _write_port_file(port_file, port)
    log.info(
        "server_listening",
        extra={
            "url": f"http://{host}:{port}",
            "grpc": f"{host}:{server['grpc_port']}" if grpc_sock else None,
            "workers": server["workers"],
        },
    )
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # One folder per run for the workers' metrics: a killed worker's counts stay in it.
    metrics_dir = tempfile.mkdtemp(prefix=f"servion-metrics-{port}-")
    server["metrics_dir"] = metrics_dir
    if server.get("metrics") and server.get("metrics_port"):
        from servion.server.cost_export import Pricing
        from servion.server.metrics_files import serve_folder

        pricing = Pricing.from_config(config.get("cost", {}))
        try:
            serve_folder(host, server["metrics_port"], Path(metrics_dir), pricing)
        except OSError as exc:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            raise ConfigError(
                f"cannot serve metrics on port {server['metrics_port']}: {exc.strerror}"
            ) from None
    worker_config = json.dumps(config).encode()
    workers = [_start_worker(worker_config, sock, admin_required) for _ in range(server["workers"])]
    import threading

    # Logs server_ready (and prints the quickstart's examples) once the server answers.
    threading.Thread(target=_announce_when_ready, args=(host, port, announce), daemon=True).start()
    restarts: list[float] = []
    exit_code = 0
    while not stopping:
        time.sleep(0.1)
        for i, proc in enumerate(workers):
            if proc.poll() is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 30] + [now]
            log.error("worker_died", extra={"worker": i, "exitcode": proc.returncode})
            if len(restarts) > MAX_RAPID_RESTARTS:
                log.error("server_giving_up", extra={"reason": "workers keep dying"})
                stopping, exit_code = True, 1
                break
            workers[i] = _start_worker(worker_config, sock, admin_required)
            log.info("worker_restarted", extra={"worker": i, "pid": workers[i].pid})
    _stop(workers, server["graceful_timeout_s"] + server["drain_delay_s"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    sock.close()
    if grpc_sock is not None:
        grpc_sock.close()
    log.info("server_stopped", extra={"exit_code": exit_code})
    return exit_code


def _start_worker(config: bytes, sock: socket.socket, admin_required: bool) -> Popen[bytes]:
    """A fresh interpreter that listens on the port and reads its settings on stdin.

    A plain subprocess rather than multiprocessing: no resource-tracker process,
    and nothing of the supervisor's memory is carried over.
    """
    command = [
        sys.executable, "-m", "servion.server.worker",
        "--supervisor", str(os.getpid()), "--admin-required", "1" if admin_required else "0",
    ]  # fmt: skip
    if REUSE_PORT:
        command += ["--port", str(sock.getsockname()[1])]
        proc = Popen(command, stdin=PIPE)
    else:
        command += ["--fd", str(sock.fileno())]
        proc = Popen(command, stdin=PIPE, pass_fds=(sock.fileno(),))
    assert proc.stdin is not None
    proc.stdin.write(config)
    proc.stdin.close()
    log.info("worker_started", extra={"pid": proc.pid})
    return proc


def _stop(workers: list[Popen[bytes]], graceful_timeout_s: float) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + graceful_timeout_s + 5
    for proc in workers:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the supervisor process that ``serve`` execs."""
    parser = argparse.ArgumentParser(prog="servion-supervisor")
    parser.add_argument("--settings-fd", type=int, required=True)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--grpc-port-file", type=Path)
    args = parser.parse_args(argv)
    with os.fdopen(args.settings_fd, "rb") as pipe:
        config = json.loads(pipe.read())
    announce = config.pop("announce", None)
    from servion.logs import configure_logging

    configure_logging(config.get("server", {}).get("log_level", "INFO"))
    try:
        code = supervise(config, args.port_file, args.grpc_port_file, announce)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
