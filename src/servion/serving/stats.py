"""Per model-version inference statistics in the shape of Triton's statistics extension.

Counters are plain ints updated on the event loop (one thread), so no locks.
Durations are nanoseconds, as the extension reports them.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Final

from servion.errors import DeadlineExceeded, InvalidInput, Overloaded, PayloadTooLarge

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")

LATENCY_BUCKETS_NS: Final = (
    *(25_000, 50_000, 100_000, 250_000, 500_000),
    *(1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000),
    *(100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 10_000_000_000),
)
"""Histogram bounds from 25 µs: servion answers in well under a millisecond, so the usual
5 ms first bucket would put every request in one bin."""
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def new_histogram(bounds: tuple[int, ...]) -> list[int]:
    """Counts per bucket (the last one past every bound), then the sum of observations."""
    return [0] * (len(bounds) + 2)


def observe(histogram: list[int], bounds: tuple[int, ...], value: int) -> None:
    histogram[bisect_left(bounds, value)] += 1
    histogram[-1] += value


def failure_reason(error: BaseException | None) -> str:
    """A bounded label for why a request failed."""
    if isinstance(error, Overloaded):
        return "queue_full"
    if isinstance(error, DeadlineExceeded):
        return "deadline"
    if isinstance(error, PayloadTooLarge):
        return "limits"
    if isinstance(error, InvalidInput):
        return "invalid_input"
    return "model_error"


class ModelStats:
    """Counts and total durations for one model version in one worker."""

    __slots__ = (
        "batch",
        "counts",
        "execution_count",
        "failures",
        "h_batch",
        "h_compute",
        "h_queue",
        "inference_count",
        "last_inference",
        "ns",
        "quality",
        "screened",
    )

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_DURATIONS, 0)
        self.ns = dict.fromkeys(_DURATIONS, 0)
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference = 0
        self.batch: dict[int, list[int]] = {}
        """batch size -> [count, input ns, infer ns, output ns]"""
        self.failures: dict[str, int] = {}
        """Failed requests by ``failure_reason``."""
        self.h_queue = new_histogram(LATENCY_BUCKETS_NS)
        self.h_compute = new_histogram(LATENCY_BUCKETS_NS)
        self.h_batch = new_histogram(BATCH_BUCKETS)
        self.quality: dict[str, int] = {}
        """``feature\tcheck`` -> values that failed a data quality check."""
        self.screened: dict[str, int] = {}
        """Requests with data quality findings, by what was done: accepted, flagged, refused."""

    def record_request(self, rows: int, t_queue: int, t_in: int, t_infer: int, t_out: int) -> None:
        """One successful request: its rows and where its time went (ns)."""
        c, n = self.counts, self.ns
        c["success"] += 1
        n["success"] += t_queue + t_in + t_infer + t_out
        # Inlined rather than observe(): this runs for every request.
        h = self.h_queue
        h[bisect_left(LATENCY_BUCKETS_NS, t_queue)] += 1
        h[-1] += t_queue
        h = self.h_compute
        h[bisect_left(LATENCY_BUCKETS_NS, t_infer)] += 1
        h[-1] += t_infer
        for key, value in (
            ("queue", t_queue),
            ("compute_input", t_in),
            ("compute_infer", t_infer),
            ("compute_output", t_out),
        ):
            c[key] += 1
            n[key] += value
        self.inference_count += rows
        self.last_inference = time.time_ns() // 1_000_000

    def record_execution(self, batch_size: int, t_infer: int) -> None:
        """One model execution, of ``batch_size`` rows (several requests when batched)."""
        self.execution_count += 1
        observe(self.h_batch, BATCH_BUCKETS, batch_size)
        row = self.batch.get(batch_size)
        if row is None:
            row = self.batch[batch_size] = [0, 0, 0, 0]
        row[0] += 1
        row[2] += t_infer

    def record_failure(self, elapsed_ns: int, error: BaseException | None = None) -> None:
        self.counts["fail"] += 1
        self.ns["fail"] += elapsed_ns
        reason = failure_reason(error)
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def record_quality(self, findings: Iterable[tuple[str, str, int]], action: str) -> None:
        """One request's data quality findings (off the hot path: only requests that fail)."""
        quality = self.quality
        for feature, check, count in findings:
            key = f"{feature}\t{check}"
            quality[key] = quality.get(key, 0) + count
        self.screened[action] = self.screened.get(action, 0) + 1

    def metrics(self) -> dict[str, Any]:
        """What the metrics export reads: cumulative counts and histograms."""
        return {
            "success": self.counts["success"],
            "failures": dict(self.failures),
            "rows": self.inference_count,
            "executions": self.execution_count,
            "queue": list(self.h_queue),
            "compute": list(self.h_compute),
            "batch": list(self.h_batch),
            "quality": dict(self.quality),
            "screened": dict(self.screened),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "last_inference": self.last_inference,
            "counts": dict(self.counts),
            "ns": dict(self.ns),
            "batch": {str(k): list(v) for k, v in self.batch.items()},
        }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the ``to_dict`` forms of several workers' stats for one model version."""
    total = ModelStats().to_dict()
    for part in parts:
        total["inference_count"] += part["inference_count"]
        total["execution_count"] += part["execution_count"]
        total["last_inference"] = max(total["last_inference"], part["last_inference"])
        for key in _DURATIONS:
            total["counts"][key] += part["counts"][key]
            total["ns"][key] += part["ns"][key]
        for size, row in part["batch"].items():
            acc = total["batch"].setdefault(size, [0, 0, 0, 0])
            for i, value in enumerate(row):
                acc[i] += value
    return total


def to_triton(name: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    """Render merged stats as one entry of Triton's ``model_stats`` list."""

    def duration(key: str) -> dict[str, int]:
        return {"count": data["counts"][key], "ns": data["ns"][key]}

    return {
        "name": name,
        "version": version,
        "last_inference": data["last_inference"],
        "inference_count": data["inference_count"],
        "execution_count": data["execution_count"],
        "inference_stats": {
            **{key: duration(key) for key in _DURATIONS},
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {
                "batch_size": int(size),
                "compute_input": {"count": row[0], "ns": row[1]},
                "compute_infer": {"count": row[0], "ns": row[2]},
                "compute_output": {"count": row[0], "ns": row[3]},
            }
            for size, row in sorted(data["batch"].items(), key=lambda kv: int(kv[0]))
        ],
    }
