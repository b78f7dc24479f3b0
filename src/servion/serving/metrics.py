"""One worker's metrics: what its requests, models and endpoints did, as a snapshot.

Counting happens where the work is, in plain ints and lists (``ModelStats`` for model
versions, the routers' counters for endpoints, ``RequestCounts`` here for what the
transports answered), never through a metrics library on the hot path: a request costs a
few list increments, not a lock. A snapshot gathers them, once a second for the other
workers to read and at every scrape for the answering one; ``server/metrics_export``
adds the snapshots of every worker up into the Prometheus exposition format.

A snapshot is cumulative since the worker started, and keeps the counts of versions it
no longer serves, so no counter of a worker ever goes down.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, Final

from servion.serving.loaded import LoadedModel
from servion.serving.manager import ModelManager
from servion.serving.process import cpu_seconds, resident_bytes
from servion.serving.stats import LATENCY_BUCKETS_NS, new_histogram

PROTOCOLS: Final = ("rest", "grpc", "v1")

Labels = tuple[str, ...]


class RequestCounts:
    """Inference requests as the transports answered them: by protocol, target (a served
    model or endpoint; anything else is counted as ``""`` so that a client cannot make up
    label values) and status class, with their latency."""

    __slots__ = ("inflight", "slots")

    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], list[int]] = {}
        """(protocol, target) -> counts of 1xx..5xx answers, then the latency histogram."""
        self.inflight = 0

    def start(self, protocol: str, target: str) -> Callable[[int], None]:
        """Count a request in flight; the function returned records its status once known."""
        self.inflight += 1
        t0 = perf_counter_ns()

        def done(status: int) -> None:
            self.record(protocol, target, status, perf_counter_ns() - t0)

        return done

    def record(self, protocol: str, target: str, status: int, elapsed_ns: int) -> None:
        """One answered request (it was counted in flight when it started)."""
        self.inflight -= 1
        slot = self.slots.get((protocol, target))
        if slot is None:
            slot = self.slots[(protocol, target)] = [0] * 5 + new_histogram(LATENCY_BUCKETS_NS)
        slot[min(max(status // 100, 1), 5) - 1] += 1
        slot[5 + bisect_left(LATENCY_BUCKETS_NS, elapsed_ns)] += 1
        slot[-1] += elapsed_ns

    @property
    def total(self) -> dict[tuple[str, str, str], int]:
        return {
            (protocol, target, f"{i + 1}xx"): slot[i]
            for (protocol, target), slot in self.slots.items()
            for i in range(5)
            if slot[i]
        }

    @property
    def latency(self) -> dict[tuple[str, str], list[int]]:
        return {key: slot[5:] for key, slot in self.slots.items()}

    @property
    def answered(self) -> int:
        """Requests answered so far, whatever their status."""
        return sum(sum(slot[:5]) for slot in self.slots.values())


class RecentAnswers:
    """How many requests a worker answered over about the last ``window_s`` seconds, from
    samples of its cumulative count, at most one a second (each snapshot offers one).

    Each worker reports its own window and the reader adds the rates up: a history kept by
    whichever worker answers a scrape would start empty in each worker and see other
    workers' counts a second late.

    >>> recent = RecentAnswers(60.0, now=0.0)
    >>> recent.observe(30.0, 600)
    {'requests': 600, 'seconds': 30.0}
    """

    __slots__ = ("samples", "window_s")

    def __init__(self, window_s: float, now: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque([(now, 0)])
        """(monotonic time, cumulative count), oldest first; (start, 0) at first."""

    def observe(self, now: float, total: int) -> dict[str, float]:
        """Take ``total`` (the count at ``now``) and give the requests answered in the window
        and its length: the window, once the worker is old enough, else the worker's life."""
        if now - self.samples[-1][0] >= 1.0:
            self.samples.append((now, total))
        # Keep the last sample at or before the window's start, so the window is whole.
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window_s:
            self.samples.popleft()
        since, before = self.samples[0]
        return {"requests": total - before, "seconds": now - since}


class WorkerMetrics:
    """Snapshots of one worker (see the module docstring)."""

    def __init__(self, manager: ModelManager, worker_id: str, window_s: float = 60.0) -> None:
        self.manager = manager
        self.worker_id = worker_id
        self.requests = RequestCounts()
        self.started = time.time()
        self.recent = RecentAnswers(window_s, time.monotonic())
        self._retired: dict[tuple[str, str], dict[str, Any]] = {}
        self.canary: dict[str, dict[str, Any]] = {}
        """Per endpoint: the rollout step and how its gates judged (set by the driver)."""
        self.drift: Callable[[], dict[str, Any]] = dict
        """Per ``model:version``: the worker's last judged drift window (set by the app)."""
        manager.on_retire.append(self._keep)
        self.unloads: dict[tuple[str, str], list[float]] = {}
        """(model, version) -> [unloads, seconds they took]."""
        manager.on_unloaded.append(self._unloaded)

    def _unloaded(self, name: str, version: str, unload_s: float) -> None:
        slot = self.unloads.setdefault((name, version), [0, 0.0])
        slot[0] += 1
        slot[1] += unload_s

    def _keep(self, model: LoadedModel) -> None:
        key = (model.name, model.version)
        self._retired[key] = _add(self._retired.get(key), model.stats.metrics())

    def snapshot(self) -> dict[str, Any]:
        """Everything this worker counted, as plain JSON (cumulative)."""
        models: dict[tuple[str, str], dict[str, Any]] = dict(self._retired)
        seen: set[int] = set()
        queued: dict[tuple[str, str], int] = {}
        for model in self._views():
            key = (model.name, model.version)
            queued[key] = queued.get(key, 0) + model.batcher.queued
            if id(model.stats) in seen:
                continue
            seen.add(id(model.stats))
            models[key] = _add(models.get(key), model.stats.metrics())
        sleep = self.manager.sleep
        loaded = [
            {
                "model": m.name,
                "version": m.version,
                "load_s": m.handle.load_s,
                "warmup_s": m.handle.warmup_s,
                "memory_bytes": m.handle.memory_bytes,
            }
            for m in self.manager.models.values()
        ]
        return {
            "worker": self.worker_id,
            "pid": os.getpid(),
            "time": time.time(),
            "models": [
                {"model": k[0], "version": k[1], **v, "queued": queued.get(k, 0)}
                for k, v in sorted(models.items())
            ],
            "loaded": loaded,
            "unloads": [[*k, *v] for k, v in sorted(self.unloads.items())],
            "wakes": [[*k, *v] for k, v in sorted(sleep.wakes.items())] if sleep else [],
            "requests": [[*k, v] for k, v in sorted(self.requests.total.items())],
            "latency": [[*k, list(v)] for k, v in sorted(self.requests.latency.items())],
            "inflight": self.requests.inflight,
            "recent": self.recent.observe(time.monotonic(), self.requests.answered),
            "endpoints": {name: router.stats() for name, router in self.manager.endpoints.items()},
            "canary": self.canary,
            "drift": self.drift(),
            "process": {
                "cpu_seconds": cpu_seconds(),
                "resident_bytes": resident_bytes(),
                "started": self.started,
            },
        }

    def _views(self) -> list[LoadedModel]:
        views = list(self.manager.models.values())
        views += [m for r in self.manager.endpoints.values() for m in r.models.values()]
        return views


def _add(total: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """Two ``ModelStats.metrics()`` added up."""
    if total is None:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in part.items()}
    out: dict[str, Any] = {}
    for key, value in part.items():
        mine = total.get(key)
        if isinstance(value, list):
            out[key] = [a + b for a, b in zip(mine or [0] * len(value), value, strict=True)]
        elif isinstance(value, dict):
            merged = dict(mine or {})
            for k, v in value.items():
                merged[k] = merged.get(k, 0) + v
            out[key] = merged
        else:
            out[key] = (mine or 0) + value
    return out
