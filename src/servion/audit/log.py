"""Audit events: a JSON record before and after every operation that changes what is served.

``Auditor.operation`` writes an event with ``outcome: "started"``, runs the
operation, and writes ``"success"`` or ``"failure"`` (with the error and its stack
trace) under the same ``operation_id``. Events are handed to a writer thread, so
an operation (and never the inference path) waits on no disk. Files are JSON lines,
one per UTC day (``audit-YYYY-MM-DD.jsonl``); files older than the retention are
deleted as days turn over.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from servion.config import Settings

FIELDS = (
    "timestamp",
    "operation_id",
    "operation",
    "outcome",
    "user",
    "change_ticket",
    "environment",
    "endpoint",
    "model_name",
    "model_version",
    "previous_version",
    "deployment_strategy",
    "resources",
    "command",
    "resources_affected",
    "rollback_available",
    "duration_seconds",
    "performance_metrics",
    "error_detail",
    "policy",
    "service",
    "team",
)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid:{os.getuid()}"


@dataclass
class Operation:
    """What an operation reports about itself while it runs."""

    operation_id: str
    fields: dict[str, Any]
    resources_affected: list[str] = field(default_factory=list)
    performance_metrics: dict[str, Any] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        """Fill in what is learnt during the operation (a version, the previous version...)."""
        self.fields.update(values)


class AuditFile:
    """Daily JSON-lines files with retention."""

    def __init__(self, directory: Path, retention_days: int) -> None:
        self.directory = directory
        self.retention_days = retention_days
        self._day = ""

    def write(self, line: bytes, day: str) -> None:
        if day != self._day:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._day = day
            self.prune()
        with (self.directory / f"audit-{day}.jsonl").open("ab") as out:
            out.write(line)

    def prune(self) -> None:
        cutoff = (datetime.now(UTC) - timedelta(days=self.retention_days)).strftime("%Y-%m-%d")
        for path in self.directory.glob("audit-*.jsonl"):
            day = path.name[len("audit-") : -len(".jsonl")]
            if day < cutoff:
                with contextlib.suppress(OSError):
                    path.unlink()


class Auditor:
    """Writes audit events through a background thread to the configured sinks."""

    def __init__(self, settings: Settings, command: str | None = None) -> None:
        self.settings = settings.audit
        self.file = AuditFile(settings.audit_dir, settings.audit.retention_days)
        self.command = command if command is not None else " ".join(sys.argv)
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event; never blocks on I/O."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="servion-audit", daemon=True)
                self._thread.start()
        self._queue.put(event)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            line = orjson.dumps(event) + b"\n"
            try:
                self.file.write(line, event["timestamp"][:10])
            except OSError as exc:  # a full or read-only disk must not take serving down
                sys.stderr.write(f"audit: cannot write {self.file.directory}: {exc}\n")
            if self.settings.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)

    # -- operations ----------------------------------------------------------------------

    @contextlib.contextmanager
    def operation(
        self,
        operation: str,
        *,
        user: str | None = None,
        change_ticket: str | None = None,
        environment: str | None = None,
        command: str | None = None,
        **fields: Any,
    ) -> Iterator[Operation]:
        """Audit ``operation``: a started event now, success or failure when the block ends."""
        op = self._operation(user, change_ticket, environment, command, fields)
        started = time.perf_counter()
        self.emit(self._event(op, operation, "started", None, None))
        try:
            yield op
        except BaseException as exc:
            detail = {
                "type": type(exc).__name__,
                "message": getattr(exc, "message", None) or str(exc),
                "stack_trace": "".join(traceback.format_exception(exc)),
            }
            self.emit(self._event(op, operation, "failure", time.perf_counter() - started, detail))
            raise
        self.emit(self._event(op, operation, "success", time.perf_counter() - started, None))

    def record(
        self,
        operation: str,
        *,
        user: str | None = None,
        resources_affected: list[str] | None = None,
        **fields: Any,
    ) -> None:
        """One event for something servion observed rather than did (a model version found
        drifting): outcome ``success`` with no ``started`` event, as nothing ran."""
        op = self._operation(user, None, None, None, fields)
        op.resources_affected = list(resources_affected or [])
        self.emit(self._event(op, operation, "success", None, None))

    def _operation(
        self,
        user: str | None,
        change_ticket: str | None,
        environment: str | None,
        command: str | None,
        fields: dict[str, Any],
    ) -> Operation:
        return Operation(
            uuid.uuid4().hex,
            {
                "user": user or os_user(),
                "change_ticket": change_ticket,
                "environment": environment or "dev",
                "command": command or self.command,
                "endpoint": None,
                "model_name": None,
                "model_version": None,
                "previous_version": None,
                "deployment_strategy": None,
                "resources": None,
                "rollback_available": None,
                "policy": None,
                **fields,
            },
        )

    def _event(
        self,
        op: Operation,
        operation: str,
        outcome: str,
        duration: float | None,
        error: dict[str, Any] | None,
    ) -> dict[str, Any]:
        event = {
            "timestamp": utc_now(),
            "operation_id": op.operation_id,
            "operation": operation,
            "outcome": outcome,
            **op.fields,
            "resources_affected": list(op.resources_affected),
            "duration_seconds": None if duration is None else round(duration, 6),
            "performance_metrics": dict(op.performance_metrics) or None,
            "error_detail": error,
            "service": self.settings.service,
            "team": self.settings.team,
        }
        return {key: event.get(key) for key in FIELDS}


def read_events(directory: Path) -> Iterator[dict[str, Any]]:
    """Every event in the audit files under ``directory``, oldest first."""
    for path in sorted(directory.glob("audit-*.jsonl")):
        with path.open("rb") as lines:
            for line in lines:
                if line.strip():
                    with contextlib.suppress(orjson.JSONDecodeError):
                        yield orjson.loads(line)
