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
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from servion.server.cost_export import Pricing, cost_series
from servion.server.drift_export import drift_series, quality_series
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
        yield from _endpoints(self.all, self.live)
        yield from _payload_logs(self.all)
        yield from drift_series(self.live)
        yield from quality_series(self.all)
        yield from cost_series(self.pricing, self.live)
        yield from _process(self.all, self.live)
        yield from _gpus()


class _Sums:
    """Values of one series family added up by label values."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], float] = {}
        self.histograms: dict[tuple[str, ...], list[int]] = {}

    def add(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = self.values.get(labels, 0) + value

    def add_histogram(self, labels: tuple[str, ...], counts: list[int]) -> None:
        mine = self.histograms.get(labels)
        self.histograms[labels] = (
            list(counts) if mine is None else [a + b for a, b in zip(mine, counts, strict=True)]
        )


def _counter(name: str, doc: str, labels: list[str], sums: _Sums) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in sorted(sums.values.items()):
        family.add_metric(list(values), value)
    return family


def _gauge(name: str, doc: str, labels: list[str], sums: _Sums) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in sorted(sums.values.items()):
        family.add_metric(list(values), value)
    return family


def _histogram(
    name: str, doc: str, labels: list[str], sums: _Sums, bounds: tuple[int, ...], scale: float
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, counts in sorted(sums.histograms.items()):
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, counts, strict=False):
            cumulative += count
            buckets.append((_number(bound * scale), cumulative))
        cumulative += counts[len(bounds)]
        buckets.append(("+Inf", cumulative))
        family.add_metric(list(values), buckets, counts[-1] * scale)
    return family


def _number(value: float) -> str:
    return f"{value:.6g}"


def _requests(snapshots: list[dict[str, Any]]) -> Iterable[Metric]:
    total, latency = _Sums(), _Sums()
    for snap in snapshots:
        for protocol, target, code, count in snap.get("requests", []):
            total.add((protocol, target, code), count)
        for protocol, target, counts in snap.get("latency", []):
            latency.add_histogram((protocol, target), counts)
    yield _counter(
        "servion_requests",
        "Inference requests answered, by protocol, model or endpoint, and status class.",
        ["protocol", "target", "code"],
        total,
    )
    yield _histogram(
        "servion_request_duration_seconds",
        "Inference request latency in the server, from the parsed request to the answer.",
        ["protocol", "target"],
        latency,
        LATENCY_BUCKETS_NS,
        1e-9,
    )


_REJECTED: Final = frozenset({"queue_full", "deadline", "limits"})


def _models(snapshots: list[dict[str, Any]], live: list[dict[str, Any]]) -> Iterable[Metric]:
    requests, failures, rows, executions, rejected = _Sums(), _Sums(), _Sums(), _Sums(), _Sums()
    hist = {kind: _Sums() for kind in ("queue", "compute", "batch")}
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
    yield _counter(
        "servion_model_requests", "Requests a model version was asked.", labels, requests
    )
    yield _counter(
        "servion_model_failures",
        "Requests a model version did not answer, by reason (invalid_input, queue_full,"
        " deadline, limits, model_error).",
        [*labels, "reason"],
        failures,
    )
    yield _counter(
        "servion_model_inferences", "Rows (inferences) a model version answered.", labels, rows
    )
    yield _counter(
        "servion_model_executions",
        "Model executions (a batch of one or more requests is one).",
        labels,
        executions,
    )
    yield _counter(
        "servion_rejected_requests",
        "Requests refused before running: a full queue, a passed deadline, a limit.",
        ["target", "reason"],
        rejected,
    )
    for kind, doc in (
        ("queue", "Time a request waited for its batch to start."),
        ("compute", "Execution time of the batch that answered a request."),
    ):
        yield _histogram(
            f"servion_model_{kind}_duration_seconds",
            doc,
            labels,
            hist[kind],
            LATENCY_BUCKETS_NS,
            1e-9,
        )
    yield _histogram(
        "servion_model_batch_size",
        "Rows per model execution.",
        labels,
        hist["batch"],
        BATCH_BUCKETS,
        1.0,
    )
    queued, loaded, load_s, warmup_s, memory = _Sums(), _Sums(), _Sums(), _Sums(), _Sums()
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
    yield _gauge("servion_queue_depth", "Requests waiting in a model's queues.", labels, queued)
    yield _gauge("servion_models_loaded", "Model versions loaded in a worker.", ["worker"], loaded)
    per = [*labels, "worker"]
    yield _gauge("servion_model_load_seconds", "How long loading took.", per, load_s)
    yield _gauge("servion_model_warmup_seconds", "How long the warm-up took.", per, warmup_s)
    yield _gauge(
        "servion_model_memory_bytes",
        "Resident memory the worker grew by while loading the model (approximate).",
        per,
        memory,
    )


def _payload_logs(snapshots: list[dict[str, Any]]) -> Iterable[Metric]:
    sums = {"written": _Sums(), "dropped": _Sums(), "failed": _Sums()}
    for snap in snapshots:
        for endpoint, stats in snap.get("endpoints", {}).items():
            for key, value in (stats.get("payload_log") or {}).items():
                if key in sums:
                    sums[key].add((endpoint,), value)
    labels = ["endpoint"]
    yield _counter(
        "servion_payload_log_events", "Payload log events written.", labels, sums["written"]
    )
    yield _counter(
        "servion_payload_log_dropped",
        "Payload log events dropped: the endpoint's buffer was full.",
        labels,
        sums["dropped"],
    )
    yield _counter(
        "servion_payload_log_failed",
        "Payload log events the sink did not take (a failed write or POST).",
        labels,
        sums["failed"],
    )


def _endpoints(snapshots: list[dict[str, Any]], live: list[dict[str, Any]]) -> Iterable[Metric]:
    arms, arm_errors, hits, misses, fallbacks = _Sums(), _Sums(), _Sums(), _Sums(), _Sums()
    shadows, disagreed, dropped, opened, refused = _Sums(), _Sums(), _Sums(), _Sums(), _Sums()
    gates = _Sums()
    for snap in snapshots:
        for endpoint, stats in snap.get("endpoints", {}).items():
            for arm, value in stats.get("arms", {}).items():
                arms.add((endpoint, arm), value["requests"])
                arm_errors.add((endpoint, arm), value["errors"])
            for shadow, value in stats.get("shadows", {}).items():
                shadows.add((endpoint, shadow), value["requests"])
                disagreed.add((endpoint, shadow), value["requests"] - value["agreed"])
                dropped.add((endpoint, shadow), value["dropped"])
            cache = stats.get("cache")
            if cache:
                hits.add((endpoint,), cache["hits"])
                misses.add((endpoint,), cache["misses"])
            for reason, count in stats.get("fallbacks", {}).items():
                fallbacks.add((endpoint, reason), count)
            for arm, breaker in stats.get("breakers", {}).items():
                opened.add((endpoint, arm), breaker["opened"])
                refused.add((endpoint, "circuit_open"), breaker["rejected"])
            bulkhead = stats.get("bulkhead")
            if bulkhead:
                refused.add((endpoint, "bulkhead"), bulkhead["rejected"])
        for endpoint, canary in snap.get("canary", {}).items():
            for result, count in canary.get("gates", {}).items():
                gates.add((endpoint, result), count)
    both = ["endpoint", "arm"]
    yield _counter("servion_arm_requests", "Requests an endpoint's arm answered.", both, arms)
    yield _counter("servion_arm_errors", "Requests an endpoint's arm failed.", both, arm_errors)
    yield _counter("servion_cache_hits", "Answers from the response cache.", ["endpoint"], hits)
    yield _counter(
        "servion_cache_misses", "Requests the response cache did not hold.", ["endpoint"], misses
    )
    yield _counter(
        "servion_fallbacks",
        "Answers from a fallback, by reason.",
        ["endpoint", "reason"],
        fallbacks,
    )
    pair = ["endpoint", "shadow"]
    yield _counter("servion_shadow_requests", "Copies a shadow answered.", pair, shadows)
    yield _counter(
        "servion_shadow_disagreements", "Shadow answers unlike the primary's.", pair, disagreed
    )
    yield _counter("servion_shadow_dropped", "Copies not sent (too many in flight).", pair, dropped)
    yield _counter(
        "servion_circuit_breaker_opened", "Times an arm's circuit breaker opened.", both, opened
    )
    yield _counter(
        "servion_endpoint_rejected_requests",
        "Requests an endpoint refused: a full bulkhead, an open circuit.",
        ["endpoint", "reason"],
        refused,
    )
    yield _counter(
        "servion_canary_gate_results",
        "Canary steps judged, by result (passed, failed).",
        ["endpoint", "result"],
        gates,
    )
    state, step = _Sums(), _Sums()
    for snap in live:
        for endpoint, stats in snap.get("endpoints", {}).items():
            for arm, breaker in stats.get("breakers", {}).items():
                for name in ("closed", "open", "half_open"):
                    key = (endpoint, arm, name)
                    state.values[key] = max(
                        state.values.get(key, 0), float(breaker["state"] == name)
                    )
        for endpoint, canary in snap.get("canary", {}).items():
            if "percent" in canary:
                step.values[(endpoint,)] = canary["percent"]
    yield _gauge(
        "servion_circuit_breaker_state",
        "1 for an arm's breaker state in any worker (closed, open, half_open).",
        [*both, "state"],
        state,
    )
    yield _gauge(
        "servion_canary_step_percent",
        "Share of traffic the canary of a running rollout gets.",
        ["endpoint"],
        step,
    )


def _process(snapshots: list[dict[str, Any]], live: list[dict[str, Any]]) -> Iterable[Metric]:
    cpu, rss, inflight, started = _Sums(), _Sums(), _Sums(), _Sums()
    for snap in snapshots:
        cpu.add((snap["worker"],), snap["process"]["cpu_seconds"])
    for snap in live:
        worker = (snap["worker"],)
        rss.add(worker, snap["process"]["resident_bytes"])
        started.add(worker, snap["process"]["started"])
        inflight.add(worker, snap.get("inflight", 0))
    yield _counter("servion_process_cpu_seconds", "CPU time of a worker.", ["worker"], cpu)
    yield _gauge(
        "servion_process_resident_memory_bytes", "Resident memory of a worker.", ["worker"], rss
    )
    yield _gauge(
        "servion_process_start_time_seconds",
        "When a worker started (Unix time).",
        ["worker"],
        started,
    )
    yield _gauge(
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
    util, used, total, power = _Sums(), _Sums(), _Sums(), _Sums()
    for d in devices:
        key = (str(d.index), d.name)
        util.add(key, d.utilization)
        used.add(key, d.memory_used)
        total.add(key, d.memory_total)
        if d.power_watts is not None:
            power.add(key, d.power_watts)
    yield _gauge("servion_gpu_utilization_ratio", "Share of time the GPU was busy.", labels, util)
    yield _gauge("servion_gpu_memory_used_bytes", "GPU memory in use.", labels, used)
    yield _gauge("servion_gpu_memory_total_bytes", "GPU memory in all.", labels, total)
    if power.values:
        yield _gauge("servion_gpu_power_watts", "GPU power draw.", labels, power)
