"""The endpoint series of ``GET /metrics``: arms, the response cache, fallbacks, shadows,
circuit breakers, bulkheads, canary rollouts and payload logs, added up over workers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import Metric

from servion.server.metric_families import Sums, counter, gauge


def payload_log_series(snapshots: list[dict[str, Any]]) -> Iterable[Metric]:
    sums = {"written": Sums(), "dropped": Sums(), "failed": Sums()}
    for snap in snapshots:
        for endpoint, stats in snap.get("endpoints", {}).items():
            for key, value in (stats.get("payload_log") or {}).items():
                if key in sums:
                    sums[key].add((endpoint,), value)
    labels = ["endpoint"]
    yield counter(
        "servion_payload_log_events", "Payload log events written.", labels, sums["written"]
    )
    yield counter(
        "servion_payload_log_dropped",
        "Payload log events dropped: the endpoint's buffer was full.",
        labels,
        sums["dropped"],
    )
    yield counter(
        "servion_payload_log_failed",
        "Payload log events the sink did not take (a failed write or POST).",
        labels,
        sums["failed"],
    )


def endpoint_series(
    snapshots: list[dict[str, Any]], live: list[dict[str, Any]]
) -> Iterable[Metric]:
    arms, arm_errors, hits, misses, fallbacks = Sums(), Sums(), Sums(), Sums(), Sums()
    shadows, disagreed, dropped, opened, refused = Sums(), Sums(), Sums(), Sums(), Sums()
    gates = Sums()
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
    yield counter("servion_arm_requests", "Requests an endpoint's arm answered.", both, arms)
    yield counter("servion_arm_errors", "Requests an endpoint's arm failed.", both, arm_errors)
    yield counter("servion_cache_hits", "Answers from the response cache.", ["endpoint"], hits)
    yield counter(
        "servion_cache_misses", "Requests the response cache did not hold.", ["endpoint"], misses
    )
    yield counter(
        "servion_fallbacks",
        "Answers from a fallback, by reason.",
        ["endpoint", "reason"],
        fallbacks,
    )
    pair = ["endpoint", "shadow"]
    yield counter("servion_shadow_requests", "Copies a shadow answered.", pair, shadows)
    yield counter(
        "servion_shadow_disagreements", "Shadow answers unlike the primary's.", pair, disagreed
    )
    yield counter("servion_shadow_dropped", "Copies not sent (too many in flight).", pair, dropped)
    yield counter(
        "servion_circuit_breaker_opened", "Times an arm's circuit breaker opened.", both, opened
    )
    yield counter(
        "servion_endpoint_rejected_requests",
        "Requests an endpoint refused: a full bulkhead, an open circuit.",
        ["endpoint", "reason"],
        refused,
    )
    yield counter(
        "servion_canary_gate_results",
        "Canary steps judged, by result (passed, failed).",
        ["endpoint", "result"],
        gates,
    )
    state, step = Sums(), Sums()
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
    yield gauge(
        "servion_circuit_breaker_state",
        "1 for an arm's breaker state in any worker (closed, open, half_open).",
        [*both, "state"],
        state,
    )
    yield gauge(
        "servion_canary_step_percent",
        "Share of traffic the canary of a running rollout gets.",
        ["endpoint"],
        step,
    )
