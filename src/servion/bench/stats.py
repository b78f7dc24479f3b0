"""What a load run measured: latency percentiles, throughput and errors.

Both engines (wrk and the Python generator) report into the same
``LoadResult``, so the SLO check and the CLI never care which one ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

ERROR_KINDS: Final = ("connect", "read", "write", "timeout", "status")
"""wrk's error classes; the Python engine counts into the same ones."""


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of the answered requests, in milliseconds.

    >>> LatencySummary.from_ns([1_000_000, 3_000_000]).max_ms
    3.0
    """

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> LatencySummary:
        """Percentiles by linear interpolation; all zeros when nothing was answered."""
        if not samples_ns:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0)
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
        return cls(p50, p95, p99, float(ms.mean()), float(ms.max()))

    def to_dict(self) -> dict[str, float]:
        return {
            "p50": round(self.p50_ms, 3),
            "p95": round(self.p95_ms, 3),
            "p99": round(self.p99_ms, 3),
            "mean": round(self.mean_ms, 3),
            "max": round(self.max_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One run of a load generator against one model.

    ``requests`` counts every response received, whatever its status (as wrk
    does); non-2xx responses are also counted in ``errors["status"]``.
    """

    engine: str
    """``wrk`` or ``python``."""
    mode: str
    """``closed`` (fixed concurrency) or ``open`` (fixed arrival rate)."""
    connections: int
    """Concurrency (closed loop) or connections opened (open loop)."""
    rate: float | None
    """Offered requests per second (open loop only)."""
    elapsed_s: float
    requests: int
    errors: Mapping[str, int]
    latency: LatencySummary
    notes: tuple[str, ...] = field(default=())

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        """Failed attempts over all attempts (a request that got no response is an attempt)."""
        unanswered = self.error_count - self.errors.get("status", 0)
        attempts = self.requests + unanswered
        return self.error_count / attempts if attempts else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "mode": self.mode,
            "connections": self.connections,
            "rate": self.rate,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "errors": {kind: int(self.errors.get(kind, 0)) for kind in ERROR_KINDS},
            "error_count": self.error_count,
            "error_rate": round(self.error_rate, 6),
            "latency_ms": self.latency.to_dict(),
            "notes": list(self.notes),
        }
