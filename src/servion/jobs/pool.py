"""The worker processes of one run of a job: started with ``spawn`` (a clean interpreter:
no threads or open database connections copied from the runner), each with its own
task queue so the runner always knows which partition a worker holds, one shared
queue of results, a stop event and a row counter for progress.

Each worker holds up to ``DEPTH`` partitions: the one it runs and the next, so that it
never waits on the runner (which records every partition in the database) between two.
A worker that dies (killed, out of memory) is reported as the failure of the partition
it ran (those queued behind it go back unharmed), and replaced.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from servion.jobs import worker
from servion.jobs.spec import Task
from servion.jobs.worker import WorkerSetup

STOP_WAIT_S = 30.0
"""How long closing waits for a worker to end before killing it."""
DEPTH = 2
"""Partitions a worker holds at once: the one it runs, and the next one queued."""


@dataclass
class Event:
    """Something a worker did: ``ready``, ``init_failed``, ``started``, ``done``,
    ``failed``, ``stopped`` or ``died`` (the process exited while running ``index``)."""

    kind: str
    worker: int
    index: int | None
    payload: Any


@dataclass
class _Slot:
    process: Any
    tasks: Any
    ready: bool = False
    failed: bool = False
    held: list[int] = field(default_factory=list)
    """Partitions handed to it and not reported on yet, oldest first."""
    running: int | None = None
    """The one of them it said it started."""


class WorkerPool:
    """``count`` workers for one run of a job.

    >>> with WorkerPool(2, setup) as pool:          # doctest: +SKIP
    ...     pool.assign(pool.idle()[0], task)
    ...     events = pool.poll(0.2)
    """

    def __init__(self, count: int, setup: WorkerSetup) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._setup = setup
        self.results: Any = self._context.Queue()
        self.stop: Any = self._context.Event()
        self.progress: Any = self._context.Value("q", 0)
        """Rows through the model in this run, all workers together."""
        self._slots: dict[int, _Slot] = {}
        for wid in range(count):
            self._start(wid)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _start(self, wid: int) -> None:
        tasks = self._context.Queue()
        process = self._context.Process(
            target=worker.main,
            args=(wid, self._setup, tasks, self.results, self.stop, self.progress),
            name=f"servion-batch-{wid}",
            daemon=True,
        )
        process.start()
        self._slots[wid] = _Slot(process, tasks)

    def idle(self) -> list[int]:
        """Workers loaded and with room for a partition, the emptiest first."""
        free = [(len(s.held), w) for w, s in self._slots.items() if s.ready and len(s.held) < DEPTH]
        return [w for _, w in sorted(free)]

    def assign(self, wid: int, task: Task) -> None:
        slot = self._slots[wid]
        slot.held.append(task.index)
        slot.tasks.put(task)

    def poll(self, timeout: float) -> list[Event]:
        """What happened since the last poll, waiting up to ``timeout`` for something."""
        events: list[Event] = []
        try:
            events.append(Event(*self.results.get(timeout=timeout)))
            while True:
                events.append(Event(*self.results.get_nowait()))
        except queue.Empty:
            pass
        for event in events:
            slot = self._slots.get(event.worker)
            if slot is None:
                continue
            if event.kind == "ready":
                slot.ready = True
            elif event.kind == "init_failed":
                slot.failed = True
            elif event.kind == "started":
                slot.running = event.index
            elif event.kind in ("done", "failed", "stopped") and event.index in slot.held:
                slot.held.remove(event.index)
                slot.running = None if slot.running == event.index else slot.running
        return events + self._deaths()

    def _deaths(self) -> list[Event]:
        events = []
        for wid, slot in list(self._slots.items()):
            code = slot.process.exitcode
            if code is None:
                continue
            del self._slots[wid]
            if slot.failed:
                continue  # it said why itself
            if not slot.ready:
                reason = f"the worker process exited with code {code} while loading the model"
                events.append(Event("init_failed", wid, None, reason))
                continue
            # The partition it ran failed; those queued behind it were never started.
            reason = f"the worker process exited with code {code}"
            events += [
                Event("died" if index == slot.running else "stopped", wid, index, reason)
                for index in slot.held
            ]
            if not self.stop.is_set():
                self._start(wid)
        return events

    def rows(self) -> int:
        return int(self.progress.value)

    def halt(self) -> None:
        """Ask every partition in flight to stop between two batches; each worker then
        reports it ``stopped`` (or ``done``, if it finished first)."""
        self.stop.set()

    def close(self) -> None:
        """End the workers (halting them first); one that does not end is killed."""
        self.stop.set()
        for slot in self._slots.values():
            slot.tasks.put(None)
        deadline = time.monotonic() + STOP_WAIT_S
        for slot in self._slots.values():
            slot.process.join(max(0.1, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)
        self._slots.clear()
