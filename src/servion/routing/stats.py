"""Per-arm and per-shadow counters of one worker, merged across workers by adding.

Latencies go into a fixed log-spaced histogram so that percentiles of several
workers can be read off the sum of their histograms.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

# Latency histogram: log-spaced upper bounds from 50 µs to ~100 s, so per-arm
# percentiles can be merged across workers by adding counts.
BUCKETS_MS: Final = tuple(round(0.05 * 1.25**i, 6) for i in range(66))


@dataclass(slots=True)
class ArmStats:
    """One arm's counts in one worker; merged across workers by adding."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def record(self, latency_ms: float, ok: bool) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency[bisect.bisect_left(BUCKETS_MS, latency_ms)] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency": list(self.latency)}


def add_histograms(parts: Sequence[dict[str, Any]]) -> list[int]:
    """The sum of the ``latency`` histograms of per-worker counters."""
    latency = [0] * (len(BUCKETS_MS) + 1)
    for p in parts:
        for i, count in enumerate(p["latency"]):
            latency[i] += count
    return latency


def merge_arm_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-worker arm stats and read p50/p99 off the merged histogram."""
    requests = sum(p["requests"] for p in parts)
    errors = sum(p["errors"] for p in parts)
    latency = add_histograms(parts)
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else 0.0,
        "p50_ms": percentile(latency, 0.50),
        "p99_ms": percentile(latency, 0.99),
    }


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The bucket bound under which a share ``q`` of the observations fall."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for i, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return BUCKETS_MS[i] if i < len(BUCKETS_MS) else math.inf
    return math.inf  # pragma: no cover


@dataclass(slots=True)
class ShadowStats:
    """One shadow's counts in one worker; merged across workers by adding."""

    requests: int = 0
    errors: int = 0
    dropped: int = 0
    """Copies not sent because too many were already in flight."""
    agreed: int = 0
    max_abs_diff_sum: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def record(self, latency_ms: float, agree: bool, max_abs_diff: float) -> None:
        self.requests += 1
        self.agreed += agree
        if math.isfinite(max_abs_diff):
            self.max_abs_diff_sum += max_abs_diff
        self.latency[bisect.bisect_left(BUCKETS_MS, latency_ms)] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "dropped": self.dropped,
            "agreed": self.agreed,
            "max_abs_diff_sum": self.max_abs_diff_sum,
            "latency": list(self.latency),
        }


def merge_shadow_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(p["requests"] for p in parts)
    latency = add_histograms(parts)
    agreed = sum(p["agreed"] for p in parts)
    return {
        "requests": requests,
        "errors": sum(p["errors"] for p in parts),
        "dropped": sum(p["dropped"] for p in parts),
        "agreement": agreed / requests if requests else None,
        "mean_max_abs_diff": (
            sum(p["max_abs_diff_sum"] for p in parts) / requests if requests else None
        ),
        "p50_ms": percentile(latency, 0.50),
        "p99_ms": percentile(latency, 0.99),
    }


@dataclass(slots=True)
class PayloadLogStats:
    """One endpoint's payload log counts in one worker; merged across workers by adding.

    Every sampled event ends up in exactly one count. ``dropped`` is counted on the event
    loop, ``written`` and ``failed`` by sink threads, hence the lock.
    """

    written: int = 0
    dropped: int = 0
    """Events not queued because the endpoint's buffer was full (or its sink closing)."""
    failed: int = 0
    """Events the sink refused or could not take (a failed POST or file write)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, written: int = 0, dropped: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.written += written
            self.dropped += dropped
            self.failed += failed

    def to_dict(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed}
