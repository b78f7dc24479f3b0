"""Where the workers' metrics meet: each worker's snapshot file in the server's metrics
folder, the scrape (and the replica's cost) a worker answers from them, and the
supervisor's ``--metrics-port``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import orjson

from servion.server.cost_export import Pricing, cost_summary
from servion.server.http import Response
from servion.server.metrics_export import CONTENT_TYPE, live, render


class MetricsFolder:
    """The server's metrics folder, seen from one worker."""

    def __init__(self, path: Path, worker_id: str) -> None:
        self.path = path
        self.mine = path / f"{_safe(worker_id)}.json"

    def write(self, snapshot: dict[str, Any]) -> None:
        partial = self.mine.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(snapshot))
        os.replace(partial, self.mine)  # readers see the old file or the new, never half

    def others(self) -> list[dict[str, Any]]:
        found = []
        for path in self.path.glob("*.json"):
            if path == self.mine:
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                found.append(orjson.loads(path.read_bytes()))
        return found


async def gather(own: dict[str, Any], folder: MetricsFolder | None) -> list[dict[str, Any]]:
    """This worker's live snapshot and the others' files."""
    if folder is None:
        return [own]
    return [own, *await asyncio.to_thread(folder.others)]


async def scrape(
    own: dict[str, Any], folder: MetricsFolder | None, pricing: Pricing | None = None
) -> Response:
    """The answer to ``GET /metrics``."""
    body = await asyncio.to_thread(render, await gather(own, folder), None, pricing)
    return 200, body, [(b"content-type", CONTENT_TYPE)]


async def current_cost(
    pricing: Pricing, own: dict[str, Any] | None, folder: MetricsFolder | None
) -> dict[str, Any]:
    """The replica's cost now (``own`` is None when metrics are off: then no rate)."""
    snapshots = [] if own is None else await gather(own, folder)
    return await asyncio.to_thread(cost_summary, pricing, live(snapshots, time.time()))


def serve_folder(host: str, port: int, folder: Path, pricing: Pricing | None = None) -> None:
    """Answer ``GET /metrics`` on a port of its own from a thread of the supervisor (which
    outlives every worker): the workers' files, at most a second old."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    reader = MetricsFolder(folder, "")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render(reader.others(), None, pricing)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE.decode())
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:  # scrapes are not news
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="servion-metrics", daemon=True).start()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
