"""``GET /metrics``: every worker's snapshot added up, in the Prometheus text format.

Each worker writes its cumulative snapshot (``serving/metrics``) to a file of its own in
the server's metrics folder once a second; the worker that answers a scrape reads the
others' files and adds its own live snapshot. A worker killed with ``kill -9`` leaves its
last file behind, so its counts stay in the totals and no counter goes down (up to a
second of its counting is lost); its gauges, which describe the present, are left out
once its file is older than ``LIVE_S``. The folder belongs to one server run: the
supervisor makes it and removes it.

prometheus-client renders the text (names, escaping, cumulative buckets); the series and
their help texts are this module's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client.core import (
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from servion.server.cost_export import Pricing, cost_series
from servion.server.drift_export import drift_series, quality_series
from servion.server.endpoint_export import endpoint_series, payload_log_series
from servion.server.metric_families import Sums, counter, gauge, histogram
from servion.serving.stats import BATCH_BUCKETS, LATENCY_BUCKETS_NS

LIVE_S: Final = 3.0
CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"


def render(
    snapshots: list[dict[str, Any]], now: float | None = None, pricing: Pricing | None = None
) -> bytes:
    """The exposition text for the snapshots of every worker."""
    registry = CollectorRegistry(auto_describe=False)
    collector = _Snapshots(snapshots, time.time() if now is None else now, pricing or Pricing())
    registry.register(collector)
    return bytes(generate_latest(registry))


def live(snapshots: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The snapshots of workers alive at ``now``: their gauges describe the present."""
    return [s for s in snapshots if now - s.get("time", 0) <= LIVE_S]


class _Snapshots(Collector):
    def __init__(self, snapshots: list[dict[str, Any]], now: float, pricing: Pricing) -> None:
        self.all = snapshots
        self.live = live(snapshots, now)
        self.pricing = pricing

    def collect(self) -> Iterator[Metric]:
        yield from _requests(self.all)
        yield from _models(self.all, self.live)
        yield from _unloads(self.all)
        yield from endpoint_series(self.all, self.live)
        yield from payload_log_series(self.all)
        yield from drift_series(self.live)
        yield from quality_series(self.all)
        yield from cost_series(self.pricing, self.live)
        yield from _process(self.all, self.live)
        yield from _gpus()


def _requests(snapshots: list[dict[str, Any]]) -> Iterable[Metric]:
    total, latency = Sums(), Sums()
    for snap in snapshots:
        for protocol, target, code, count in snap.get("requests", []):
            total.add((protocol, target, code), count)
        for protocol, target, counts in snap.get("latency", []):
            latency.add_histogram((protocol, target), counts)
    yield counter(
        "servion_requests",
        "Inference requests answered, by protocol, model or endpoint, and status class.",
        ["protocol", "target", "code"],
        total,
    )
    yield histogram(
        "servion_request_duration_seconds",
        "Inference request latency in the server, from the parsed request to the answer.",
        ["protocol", "target"],
        latency,
        LATENCY_BUCKETS_NS,
        1e-9,
    )


_REJECTED: Final = frozenset({"queue_full", "deadline", "limits"})


def _models(snapshots: list[dict[str, Any]], live: list[dict[str, Any]]) -> Iterable[Metric]:
    requests, failures, rows, executions, rejected = Sums(), Sums(), Sums(), Sums(), Sums()
    hist = {kind: Sums() for kind in ("queue", "compute", "batch")}
    for snap in snapshots:
        for m in snap.get("models", []):
            key = (m["model"], m["version"])
            failed = sum(m["failures"].values())
            requests.add(key, m["success"] + failed)
            rows.add(key, m["rows"])
            executions.add(key, m["executions"])
            for reason, count in m["failures"].items():
                failures.add((*key, reason), count)
                if reason in _REJECTED:
                    rejected.add((m["model"], reason), count)
            for kind, sums in hist.items():
                sums.add_histogram(key, m[kind])
    labels = ["model", "version"]
    yield counter("servion_model_requests", "Requests a model version was asked.", labels, requests)
    yield counter(
        "servion_model_failures",
        "Requests a model version did not answer, by reason (invalid_input, queue_full,"
        " deadline, limits, model_error).",
        [*labels, "reason"],
        failures,
    )
    yield counter(
        "servion_model_inferences", "Rows (inferences) a model version answered.", labels, rows
    )
    yield counter(
        "servion_model_executions",
        "Model executions (a batch of one or more requests is one).",
        labels,
        executions,
    )
    yield counter(
        "servion_rejected_requests",
        "Requests refused before running: a full queue, a passed deadline, a limit.",
        ["target", "reason"],
        rejected,
    )
    for kind, doc in (
        ("queue", "Time a request waited for its batch to start."),
        ("compute", "Execution time of the batch that answered a request."),
    ):
        yield histogram(
            f"servion_model_{kind}_duration_seconds",
            doc,
            labels,
            hist[kind],
            LATENCY_BUCKETS_NS,
            1e-9,
        )
    yield histogram(
        "servion_model_batch_size",
        "Rows per model execution.",
        labels,
        hist["batch"],
        BATCH_BUCKETS,
        1.0,
    )
    queued, loaded, load_s, warmup_s, memory = Sums(), Sums(), Sums(), Sums(), Sums()
    for snap in live:
        worker = snap["worker"]
        for m in snap.get("models", []):
            queued.add((m["model"], m["version"]), m.get("queued", 0))
        loaded.add((worker,), len(snap.get("loaded", [])))
        for m in snap.get("loaded", []):
            per_worker = (m["model"], m["version"], worker)
            load_s.add(per_worker, m["load_s"])
            warmup_s.add(per_worker, m["warmup_s"])
            memory.add(per_worker, m["memory_bytes"])
    yield gauge("servion_queue_depth", "Requests waiting in a model's queues.", labels, queued)
    yield gauge("servion_models_loaded", "Model versions loaded in a worker.", ["worker"], loaded)
    per = [*labels, "worker"]
    yield gauge("servion_model_load_seconds", "How long loading took.", per, load_s)
    yield gauge("servion_model_warmup_seconds", "How long the warm-up took.", per, warmup_s)
    yield gauge(
        "servion_model_memory_bytes",
        "Resident memory the worker grew by while loading the model (approximate).",
        per,
        memory,
    )


def _unloads(snapshots: list[dict[str, Any]]) -> Iterable[Metric]:
    unloads, unload_s, wakes, wake_s = Sums(), Sums(), Sums(), Sums()
    for snap in snapshots:
        for model, version, count, seconds in snap.get("unloads", []):
            unloads.add((model, version), count)
            unload_s.add((model, version), seconds)
        for model, version, count, seconds in snap.get("wakes", []):
            wakes.add((model, version), count)
            wake_s.add((model, version), seconds)
    yield counter(
        "servion_model_wakes",
        "Times a version scaled to zero was loaded again by a request.",
        ["model", "version"],
        wakes,
    )
    yield counter(
        "servion_model_wake_seconds",
        "Time requests waited for those loads (over servion_model_wakes_total: the mean).",
        ["model", "version"],
        wake_s,
    )
    yield counter(
        "servion_model_unloads",
        "Times a version's runtime was unloaded.",
        ["model", "version"],
        unloads,
    )
    yield counter(
        "servion_model_unload_seconds",
        "Time spent unloading a version's runtime (over servion_model_unloads_total: the mean).",
        ["model", "version"],
        unload_s,
    )


def _process(snapshots: list[dict[str, Any]], live: list[dict[str, Any]]) -> Iterable[Metric]:
    cpu, rss, inflight, started = Sums(), Sums(), Sums(), Sums()
    for snap in snapshots:
        cpu.add((snap["worker"],), snap["process"]["cpu_seconds"])
    for snap in live:
        worker = (snap["worker"],)
        rss.add(worker, snap["process"]["resident_bytes"])
        started.add(worker, snap["process"]["started"])
        inflight.add(worker, snap.get("inflight", 0))
    yield counter("servion_process_cpu_seconds", "CPU time of a worker.", ["worker"], cpu)
    yield gauge(
        "servion_process_resident_memory_bytes", "Resident memory of a worker.", ["worker"], rss
    )
    yield gauge(
        "servion_process_start_time_seconds",
        "When a worker started (Unix time).",
        ["worker"],
        started,
    )
    yield gauge(
        "servion_inflight_requests", "Inference requests being answered.", ["worker"], inflight
    )


def _gpus() -> Iterable[Metric]:
    """Per-device utilisation, memory and power through NVML; nothing at all without a GPU
    (absent series, not zeros, so an alert can tell "no GPU" from "idle GPU")."""
    from servion.server import gpu

    devices = gpu.read()
    if not devices:
        return
    labels = ["gpu", "name"]
    util, used, total, power = Sums(), Sums(), Sums(), Sums()
    for d in devices:
        key = (str(d.index), d.name)
        util.add(key, d.utilization)
        used.add(key, d.memory_used)
        total.add(key, d.memory_total)
        if d.power_watts is not None:
            power.add(key, d.power_watts)
    yield gauge("servion_gpu_utilization_ratio", "Share of time the GPU was busy.", labels, util)
    yield gauge("servion_gpu_memory_used_bytes", "GPU memory in use.", labels, used)
    yield gauge("servion_gpu_memory_total_bytes", "GPU memory in all.", labels, total)
    if power.values:
        yield gauge("servion_gpu_power_watts", "GPU power draw.", labels, power)
