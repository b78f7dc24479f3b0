"""The Ray side of ``--engine ray``: the actors that run a job's partitions (each holding the
model through the same ``Partitions`` code as a local worker) and the signal actor they and
the runner share: rows predicted, partitions begun and ended, and the order to stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from servion.jobs.predict import Stopped
from servion.jobs.spec import Task
from servion.jobs.worker import Partitions, WorkerSetup, reason

SIGNAL_S = 0.25
"""How often an actor reports its rows and looks for the order to stop."""
Report = dict[str, Any]
"""A partition's end: ``index``, ``kind`` (done, failed, stopped or init_failed),
``begun`` and ``payload`` (the ``TaskResult`` as JSON, or why it failed)."""


class Signal:
    """The actors' and the runner's go-between for one run (a Ray actor): rows predicted,
    partitions begun and ended, and the order to stop. A partition's report comes through
    here as soon as it ends (a Dataset's output waits for whole blocks)."""

    def __init__(self) -> None:
        self.stopping = False
        self.rows = 0
        self.begun: list[int] = []
        self.reports: list[Report] = []

    def stop(self) -> None:
        self.stopping = True

    def stopped(self) -> bool:
        return self.stopping

    def add(self, rows: int, begun: list[int], reports: list[Report]) -> None:
        self.rows += rows
        self.begun += begun
        self.reports += reports

    def take(self) -> tuple[int, list[int], list[Report]]:
        """Rows so far, and the partitions begun and ended since the last call."""
        begun, reports = self.begun, self.reports
        self.begun, self.reports = [], []
        return self.rows, begun, reports


class _RemoteStop:
    """``is_set()`` over the signal actor, asked at most every ``SIGNAL_S``."""

    def __init__(self, signal: Any) -> None:
        self.signal = signal
        self.set = False
        self.asked = 0.0

    def is_set(self) -> bool:
        import ray

        now = time.monotonic()
        if not self.set and now - self.asked >= SIGNAL_S:
            self.asked = now
            self.set = bool(ray.get(self.signal.stopped.remote()))
        return self.set


class PartitionActor:
    """One worker: the model loaded once, then a partition per row of its batches. A model
    that fails to load is reported on each partition handed over, not raised (Ray would
    restart the actor over and over)."""

    def __init__(self, setup: WorkerSetup, signal: Any) -> None:
        self.signal = signal
        self.rows = 0
        self.sent = time.monotonic()
        self.error: str | None = None
        try:
            self.partitions = Partitions(setup, _RemoteStop(signal), self._count)
        except Exception as exc:
            self.error = reason(exc)

    def _count(self, rows: int) -> None:
        self.rows += rows
        if time.monotonic() - self.sent >= SIGNAL_S:
            self._send()

    def _send(self, begun: int | None = None, report: Report | None = None) -> None:
        self.signal.add.remote(
            self.rows, [] if begun is None else [begun], [] if report is None else [report]
        )
        self.rows, self.sent = 0, time.monotonic()

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, list[Any]]]:
        """Each run of partitions in the batch, a report per partition as it ends (to the
        signal actor at once, and as the Dataset's output)."""
        for text in batch["tasks"]:
            for fields in json.loads(str(text)):
                report = self._run(Task(**fields))
                self._send(report=report)
                yield {key: [value] for key, value in report.items()}

    def _run(self, task: Task) -> Report:
        index = task.index
        if self.error is not None:
            return _report(index, "init_failed", False, self.error)
        if self.partitions.stopping():
            return _report(index, "stopped", False, "")
        self._send(index)
        try:
            result = self.partitions.run(task)
        except Stopped:
            return _report(index, "stopped", True, "")
        except Exception as exc:
            return _report(index, "failed", True, reason(exc))
        return _report(index, "done", True, json.dumps(asdict(result)))


def _report(index: int, kind: str, begun: bool, payload: str) -> Report:
    return {"index": index, "kind": kind, "begun": begun, "payload": payload}
