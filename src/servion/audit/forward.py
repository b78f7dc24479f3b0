"""Forwarding audit events to a collector speaking Elasticsearch's ``_bulk`` API.

The daily audit files are the spool: the forwarder reads complete lines after
its cursor (``forward.cursor`` beside them), sends them in order in batches, and
moves the cursor only when the collector has accepted a batch. While the
collector is down it retries with backoff (0.5 s doubling to 30 s) and nothing
is lost: the events are on disk. Each document's ``_id`` is its operation id and
outcome, so a batch sent again after a lost acknowledgement overwrites itself
instead of duplicating. One process forwards at a time (a lock file); any
server worker or ``servion audit forward`` may be that process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import urllib.error
import urllib.request
from typing import IO, Any

import orjson

from servion.config import Settings

MAX_BACKOFF_S = 30.0


class Forwarder:
    def __init__(self, settings: Settings) -> None:
        audit = settings.audit
        if not audit.forward_url:
            raise ValueError("no forward URL configured (SERVION_AUDIT_FORWARD_URL)")
        self.url = audit.forward_url
        self.index = audit.forward_index
        self.batch = audit.forward_batch
        self.directory = settings.audit_dir
        self.cursor_path = self.directory / "forward.cursor"
        self.delivered = 0
        self.failures = 0
        self._lock_file: IO[bytes] | None = None

    # -- one process at a time ------------------------------------------------------------

    def acquire(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = (self.directory / "forward.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- delivery -----------------------------------------------------------------------------

    def _cursor(self) -> dict[str, int]:
        try:
            value = json.loads(self.cursor_path.read_text())
            return {str(k): int(v) for k, v in value.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save(self, cursor: dict[str, int]) -> None:
        partial = self.cursor_path.with_suffix(".partial")
        partial.write_text(json.dumps(cursor))
        os.replace(partial, self.cursor_path)  # never half-written

    def pending(self) -> tuple[list[bytes], dict[str, int]]:
        """The next batch of complete lines, and the cursor to save once it is delivered."""
        cursor = self._cursor()
        lines: list[bytes] = []
        for path in sorted(self.directory.glob("audit-*.jsonl")):
            offset = cursor.get(path.name, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # a line still being written
                    offset += len(line)
                    if line.strip():
                        lines.append(line)
                    if len(lines) >= self.batch:
                        break
            cursor[path.name] = offset
            if len(lines) >= self.batch:
                break
        return lines, cursor

    def pump(self) -> int:
        """Send one batch; the number of events delivered (0: nothing to send)."""
        lines, cursor = self.pending()
        if lines:
            self._send(lines)
            self.delivered += len(lines)
        known = {p.name for p in self.directory.glob("audit-*.jsonl")}
        # Cursors of deleted (retention) files go too; a moved cursor is saved once sent.
        self._save({name: offset for name, offset in cursor.items() if name in known})
        return len(lines)

    def _send(self, lines: list[bytes]) -> None:
        body = bytearray()
        for line in lines:
            event: dict[str, Any] = orjson.loads(line)
            doc_id = f"{event.get('operation_id')}:{event.get('outcome')}"
            body += orjson.dumps({"index": {"_index": self.index, "_id": doc_id}}) + b"\n"
            body += line
        request = urllib.request.Request(
            self.url,
            data=bytes(body),
            method="POST",
            headers={"Content-Type": "application/x-ndjson"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer = orjson.loads(reply.read() or b"{}")
        if isinstance(answer, dict) and answer.get("errors"):
            raise OSError("the collector refused some events")

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Forward until ``stop`` is set; retry with backoff while the collector is down."""
        backoff = 0.5
        while not stop.is_set():
            if self._lock_file is None and not self.acquire():
                stop.wait(5.0)  # another process forwards
                continue
            try:
                sent = self.pump()
                backoff = 0.5
            except (OSError, urllib.error.URLError, ValueError):
                self.failures += 1
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            if not sent:
                stop.wait(idle_s)
        self.release()


def start_forwarding(settings: Settings) -> tuple[threading.Event, threading.Thread] | None:
    """A daemon thread forwarding events, when a forward URL is configured."""
    if not settings.audit.forward_url:
        return None
    stop = threading.Event()
    forwarder = Forwarder(settings)
    thread = threading.Thread(
        target=forwarder.run, args=(stop,), name="servion-audit-forward", daemon=True
    )
    thread.start()
    return stop, thread


def stop_forwarding(handle: tuple[threading.Event, threading.Thread] | None) -> None:
    if handle is not None:
        stop, thread = handle
        stop.set()
        with contextlib.suppress(RuntimeError):
            thread.join(5.0)
