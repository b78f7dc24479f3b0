"""Where payload log events go: one thread per sink (a file, or a collector's URL).

The request path only appends to the sink's queue under a lock held for an append; the
sink's thread encodes the events and writes them, so a slow disk or collector can never
slow an answer. Each endpoint may have at most ``buffer`` events queued (its channel's
share of the queue); past that its events are dropped and counted. One thread per file
means one appender per file in this process: whole batches go out in one ``write`` to a
file opened with ``O_APPEND``, so workers sharing a file do not tear each other's lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from servion.routing import PayloadLogPolicy, PayloadLogStats
from servion.serving.payload_events import Payload, encode

log = logging.getLogger("servion.serving")

BATCH = 256
"""Events taken from the queue at once: one file write or one POST."""
LINGER_S = 0.05
"""How long the sink waits for a batch to fill once an event arrives: at a high request rate,
one write or POST per event would cost the serving threads far more than the wait."""
HTTP_TIMEOUT_S = 2.0
"""A collector that takes longer to answer a POST loses the batch (counted as failed)."""
CONTENT_TYPE = "application/cloudevents-batch+json"


class Sink(Protocol):
    def deliver(self, lines: list[bytes]) -> bool:
        """Write encoded events; False when the sink did not take them."""

    def close(self) -> None: ...


@dataclass(slots=True)
class Channel:
    """One endpoint's events on their way to its sink."""

    policy: PayloadLogPolicy
    stats: PayloadLogStats
    sink: SinkWriter
    pending: int = 0
    """Its events in the sink's queue (guarded by the sink's lock)."""


def sink_key(url: str) -> str:
    """The same file (or URL) is one sink, however its path was spelled."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return "file://" + os.path.normpath(unquote(parts.path))
    return url


class SinkWriter:
    """A queue and the thread that drains it into one sink."""

    def __init__(self, url: str, http_timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.key = sink_key(url)
        self.users = 0
        """Channels writing here; the sink closes when the last one goes."""
        self._sink: Sink = (
            FileSink(Path(self.key.removeprefix("file://")))
            if url.startswith("file:")
            else HttpSink(url, http_timeout_s)
        )
        self._queue: deque[tuple[Channel, Payload]] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="servion-payload-log", daemon=True)
        self._thread.start()

    def offer(self, channel: Channel, payload: Payload) -> None:
        """Queue ``payload``, or count it dropped when its endpoint's share is full."""
        with self._ready:
            full = self._closing or channel.pending >= channel.policy.buffer
            if not full:
                channel.pending += 1
                self._queue.append((channel, payload))
                if len(self._queue) in (1, BATCH):  # first of a batch, or a full one
                    self._ready.notify()
        if full:
            channel.stats.add(dropped=1)

    def close(self) -> None:
        """Stop taking events; what is queued is still written. Never blocks."""
        with self._ready:
            self._closing = True
            self._ready.notify()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(max(timeout_s, 0.0))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._closing and len(self._queue) < BATCH:
                    self._ready.wait(LINGER_S)
                if not self._queue:
                    break  # closing, and everything queued is written
                taken = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                for channel, _ in taken:
                    channel.pending -= 1
            self._write(taken)
        self._sink.close()

    def _write(self, taken: list[tuple[Channel, Payload]]) -> None:
        lines: list[bytes] = []
        sent: list[PayloadLogStats] = []
        for channel, payload in taken:
            try:
                lines.append(encode(payload))
                sent.append(channel.stats)
            except Exception:  # an event that cannot be encoded must not stop the sink
                log.exception("payload_log_encode_failed", extra={"endpoint": payload.endpoint})
                channel.stats.add(failed=1)
        if not lines:
            return
        ok = self._sink.deliver(lines)
        per_endpoint: dict[int, tuple[PayloadLogStats, int]] = {}
        for stats in sent:
            per_endpoint[id(stats)] = (stats, per_endpoint.get(id(stats), (stats, 0))[1] + 1)
        for stats, n in per_endpoint.values():
            stats.add(written=n if ok else 0, failed=0 if ok else n)


class FileSink:
    """Appends lines to one file, opened on first use (its folder made if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._healthy = True

    def deliver(self, lines: list[bytes]) -> bool:
        data = memoryview(b"".join(line + b"\n" for line in lines))
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            self.close()  # open it again next time: the file may have been moved or fixed
            self._healthy = _report(self._healthy, "payload_log_write_failed", str(self.path), exc)
            return False
        self._healthy = True
        return True

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class HttpSink:
    """POSTs each batch as a JSON array of events, one connection per batch."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        parts = urlsplit(url)
        self._shown = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"
        """The URL without any credentials in it, for logs."""
        self._healthy = True

    def deliver(self, lines: list[bytes]) -> bool:
        body = b"[" + b",".join(lines) + b"]"
        request = urllib.request.Request(
            self.url, body, {"Content-Type": CONTENT_TYPE}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                reply.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._healthy = _report(self._healthy, "payload_log_post_failed", self._shown, exc)
            return False
        self._healthy = True
        return True

    def close(self) -> None:
        pass


def _report(healthy: bool, event: str, sink: str, exc: Exception) -> bool:
    # Once per outage, not once per batch: a collector down for an hour is one story.
    if healthy:
        log.warning(event, extra={"sink": sink, "error": f"{type(exc).__name__}: {exc}"})
    return False
