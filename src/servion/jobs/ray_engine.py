"""The Ray engine of batch jobs (``--engine ray``): the job's partitions as a Ray Dataset,
``map_batches`` over them with a pool of actors, one per worker, each holding the model
through the same ``Partitions`` code as a local worker process. Every file a partition
writes is therefore the same bytes on either engine, and a job started on one can be
resumed on the other.

The runner stays in this process: it records every partition in the job's database, keeps
the error budget, retries a failed partition in a later round after its backoff, and
notices a cancel. A small signal actor carries what the actors and the runner tell each
other while a round runs: rows predicted, partitions begun, and the order to stop.

On a cluster, the registry's artifact folder, the inputs and the output folder must be at
the same paths on every node (a shared file system), and servion installed there.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import warnings
from dataclasses import asdict
from typing import Any

from servion.errors import InvalidInput, quoted
from servion.jobs.ray_actors import SIGNAL_S, PartitionActor, Signal
from servion.jobs.records import Job
from servion.jobs.runner import BEAT_S, POLL_S, JobRunner, RunState, Stop
from servion.jobs.spec import Task, TaskResult
from servion.jobs.worker import reason

MISSING = "--engine ray needs Ray Data: pip install 'servion[ray]'"
REACH_TIMEOUT_S = 5.0
"""How long the Ray head's port may take to answer before the address is refused (Ray's
own connect retries for minutes)."""
STRETCHES = 3
"""Runs of partitions per actor in a round: enough for the last ones to even out."""


def connect(address: str | None, workers: int) -> tuple[int, str]:
    """Joins the Ray cluster at ``address`` (``host:port``, ``ray://host:port`` or
    ``auto``), or starts a Ray instance on this machine without one. Returns how many
    workers the job gets (no more than the cluster's CPUs) and a line saying where it
    runs. An address that does not answer, or Ray missing, is refused."""
    try:
        import ray
    except ImportError:
        raise InvalidInput(MISSING) from None
    if address is not None:
        _reachable(address)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"num_cpus": max(workers, os.cpu_count() or 1)}
        if address is not None:
            kwargs = {"address": address}
        try:
            ray.init(
                include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                **kwargs,
            )  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = quoted(address) if address else "on this machine"
            raise InvalidInput(f"could not start Ray {where}: {reason(exc)}") from None
    _quiet()
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = int(resources.get("CPU", 0))
    if cpus < 1:
        raise InvalidInput(f"the Ray cluster at {quoted(str(address))} has no CPU to run on")
    where = f"the Ray cluster at {address}" if address else "a Ray instance on this machine"
    given = min(workers, cpus)
    capped = f" (of {workers} asked: the cluster has {cpus} CPUs)" if given < workers else ""
    return given, f"running on {where}: {given} actors{capped}"


def _reachable(address: str) -> None:
    """``host:port`` answers on TCP, else the address is refused now."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(
            f"--ray-address {quoted(address)}: give host:port, ray://host:port or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise InvalidInput(f"no Ray cluster answers at {quoted(address)}: {exc}") from None


def _quiet() -> None:
    """Ray Data's progress bars and per-run log lines would interleave with the job's own
    progress; a round that fails (an actor lost) is the runner's to report, in a line, not
    Ray Data's, in a traceback."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


class RayRunner(JobRunner):
    """A ``JobRunner`` whose partitions run in rounds of a Ray Dataset: the pending ones in
    the first, those that failed and wait for a retry in the next ones."""

    def _execute(self, run: RunState, workers: int) -> Job:
        import ray

        self._last_beat = time.monotonic()
        self._begun: set[int] = set()
        signal: Any = ray.remote(num_cpus=0)(Signal).remote()
        try:
            while run.pending and run.stop is None:
                ready = self._ready(run, workers)
                if ready:
                    self._round(ready, run, workers, signal)
        finally:
            ray.kill(signal)
        self.store.beat(self.job.id, time.monotonic() - self._last_beat, workers)
        return self._finish(run)

    def _ready(self, run: RunState, workers: int) -> list[int]:
        """The pending partitions whose backoff is over, once there are any (or the job
        stops)."""
        while run.stop is None:
            now = time.monotonic()
            ready = [i for i in run.pending if run.retry_at.get(i, 0.0) <= now]
            if ready:
                return ready
            try:
                time.sleep(POLL_S)
            except KeyboardInterrupt:  # between rounds: recorded as a stop, as within one
                run.stop = Stop("interrupted")
                break
            self._beat(run, workers, None)
        return []

    def _stretches(self, ready: list[int], workers: int) -> list[list[int]]:
        """The partitions as runs of consecutive ones in one file, each run given to one
        actor, which reads on where its last partition ended (a Parquet partition that
        starts inside a row group would otherwise read that group's rows before it again).
        The longest runs are cut until each actor has about ``STRETCHES`` of them, at the
        row group start nearest the middle, else at the middle; longest first, so that no
        actor is left with a long one at the end."""
        stretches: list[list[int]] = []
        for index in sorted(ready):
            if stretches and index == stretches[-1][-1] + 1 and self._follows(index):
                stretches[-1].append(index)
            else:
                stretches.append([index])
        while len(stretches) < STRETCHES * workers:
            longest = max(stretches, key=len)
            if len(longest) < 2:
                break
            half = len(longest) // 2
            starts = [k for k in range(1, len(longest)) if self._records[longest[k]].skip_rows == 0]
            cut = min(starts, key=lambda k: abs(k - half)) if starts else half
            at = stretches.index(longest)
            stretches[at : at + 1] = [longest[:cut], longest[cut:]]
        return sorted(stretches, key=lambda s: -sum(self._records[i].rows for i in s))

    def _beat(self, run: RunState, workers: int, signal: Any) -> None:
        now = time.monotonic()
        if now - self._last_beat < BEAT_S:
            return
        cancel = self.store.beat(self.job.id, now - self._last_beat, workers)
        self._last_beat = now
        if cancel and run.stop is None:
            self._stop(run, Stop("cancelled"), signal)

    def _stop(self, run: RunState, stop: Stop, signal: Any) -> None:
        if run.stop is None:
            run.stop = stop
        if signal is not None:
            signal.stop.remote()

    def _round(self, ready: list[int], run: RunState, workers: int, signal: Any) -> None:
        import ray
        from ray.data import ActorPoolStrategy

        items = []
        for stretch in self._stretches(ready, workers):
            tasks = []
            for index in stretch:
                run.pending.remove(index)
                run.running[index] = 0
                record = self._records[index]
                task = Task(
                    index, record.input, record.start_row, record.rows, record.byte_start,
                    record.byte_end,
                )  # fmt: skip
                tasks.append(asdict(task))
            items.append({"tasks": json.dumps(tasks)})
        with warnings.catch_warnings():
            # Ray Data documents max_restarts=0 as the way to turn actor restarts off, and
            # also flags every extra remote argument as deprecated.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                PartitionActor,
                fn_constructor_args=(self._setup(), signal),
                # One stretch at a time: an actor with a second one queued could hold it
                # while another actor idles.
                compute=ActorPoolStrategy(
                    size=min(workers, len(items)), max_tasks_in_flight_per_actor=1
                ),
                batch_size=1,
                batch_format="numpy",
                num_cpus=1,
                max_restarts=0,  # a lost actor fails its round; the runner retries its partitions
            )
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=_drain, args=(dataset, events), daemon=True).start()
        self._follow(events, run, workers, signal)
        leftover = list(run.running)  # not reported: run again later
        run.running.clear()
        self._begun.clear()
        self.store.reset(self.job.id, leftover)
        run.pending = sorted(run.pending + leftover)

    def _follow(
        self, events: queue.Queue[tuple[str, Any]], run: RunState, workers: int, signal: Any
    ) -> None:
        """Records what the round's actors report until its dataset is through."""
        import ray

        rows, asked = 0, 0.0
        while True:
            try:
                try:
                    kind, payload = events.get(timeout=POLL_S)
                except queue.Empty:
                    kind, payload = "", None
                if kind in ("end", "error") or time.monotonic() - asked >= SIGNAL_S:
                    asked = time.monotonic()
                    rows, begun, reports = ray.get(signal.take.remote())
                    for index in begun:
                        self._begin(index, run)
                    for report in reports:
                        self._row(report, run, signal)
                if kind == "end":
                    return
                if kind == "row":
                    self._row(payload, run, signal)  # already heard of, unless a report was lost
                elif kind == "error":
                    for index in list(run.running):
                        del run.running[index]
                        self._begun.discard(index)
                        self._failed(index, f"Ray: {payload}", run)
                self._beat(run, workers, signal)
                self._report(rows, run)
            except KeyboardInterrupt:
                if run.stop is not None and run.stop.state == "interrupted":
                    raise
                self._stop(run, Stop("interrupted"), signal)

    def _begin(self, index: int, run: RunState) -> None:
        """An attempt counts from the partition's start, once."""
        if index in run.running and index not in self._begun:
            self._begun.add(index)
            self.store.started(self.job.id, index)

    def _row(self, row: dict[str, Any], run: RunState, signal: Any) -> None:
        index, kind, payload = int(row["index"]), str(row["kind"]), str(row["payload"])
        if index not in run.running:
            return
        if bool(row["begun"]):
            self._begin(index, run)
        del run.running[index]
        self._begun.discard(index)
        if kind == "done":
            fields = json.loads(payload)
            self._done(TaskResult(**{**fields, "errors": tuple(fields["errors"])}), run)
        elif kind == "failed":
            self._failed(index, payload, run)
        else:  # stopped, or never begun because its actor could not load the model
            self.store.reset(self.job.id, [index])
            run.pending = sorted([*run.pending, index])
            if kind == "init_failed":
                text = f"a worker could not load {self.job.label}: {payload}"
                self._stop(run, Stop("failed", text), signal)
        if run.stop is not None:
            signal.stop.remote()


def _drain(dataset: Any, events: queue.Queue[tuple[str, Any]]) -> None:
    """Runs the dataset, passing each partition's report on as it comes."""
    try:
        for row in dataset.iter_rows():
            events.put(("row", row))
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        events.put(("error", lines[-1] if lines else type(exc).__name__))
    events.put(("end", None))
