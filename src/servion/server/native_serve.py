"""Running the native front end: a worker's event loop, its listener and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Any

from servion.server.app import ServionApp
from servion.server.native import SWEEP_EVERY_S, Connections, HttpProtocol
from servion.server.request_log import AccessLog

log = logging.getLogger("servion.server")


async def serve(
    app: ServionApp,
    sock: socket.socket,
    *,
    graceful_timeout_s: float,
    keep_alive_s: float,
    drain_delay_s: float = 0.0,
    access: AccessLog | None = None,
) -> int:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT; return the exit code.

    On SIGTERM readiness turns false at once and everything goes on for
    ``drain_delay_s`` (new connections included), so that whoever routes traffic here
    sees "not ready" and stops sending before any connection closes; SIGINT (Ctrl-C)
    skips the wait. Then the listener closes, requests already read are answered with
    ``Connection: close``, idle connections close and in-flight work finishes.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()
    first: list[int] = []

    def on_signal(signum: int) -> None:
        first.append(signum)
        stop.set()
        if signum == signal.SIGINT or len(first) > 1:
            hurry.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await app.startup()
    except Exception:
        log.exception("worker_start_failed")
        await app.stop_front_ends(0)
        return 3
    shared = Connections(app, keep_alive_s, access)
    server = await loop.create_server(lambda: HttpProtocol(shared), sock=sock, backlog=2048)
    sweeper = asyncio.create_task(_sweep(shared))
    await stop.wait()
    app.draining = True
    log.info("draining", extra={"delay_s": 0 if hurry.is_set() else drain_delay_s})
    if drain_delay_s > 0 and not hurry.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), drain_delay_s)
    # Draining: no new connections, answer what has been read.
    shared.draining = True
    server.close()
    shared.sweep(loop.time())
    others = asyncio.create_task(app.stop_front_ends(graceful_timeout_s))
    if shared.open:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(shared.closed.wait(), graceful_timeout_s)
    for conn in list(shared.open):
        conn.close()
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await others
    await app.shutdown()
    return 0


async def _sweep(shared: Connections) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        shared.sweep(loop.time())


def run(app: ServionApp, sock: socket.socket, **options: Any) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(app, sock, **options))
