"""Shadow traffic: copies of live requests to other model versions, compared, never answered.

The comparison is per output the primary and the shadow both produce: floating
outputs agree when they are close (``rtol=1e-5, atol=1e-6``), other outputs when
they are equal. A request's shadow agrees when every shared output does.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servion.routing.router import BUCKETS_MS, add_histograms, percentile
from servion.types import Arrays


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
            "latency": self.latency,
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
class ShadowRoute:
    model: str
    version: str
    sample: float
    stats: ShadowStats = field(default_factory=ShadowStats)

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


def compare(primary: Arrays, shadow: Arrays) -> tuple[bool, float]:
    """(every shared output agrees, the largest absolute difference among numeric ones)."""
    agree = True
    worst = 0.0
    shared = [name for name in primary if name in shadow]
    if not shared:
        return False, math.nan
    for name in shared:
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape:
            agree, worst = False, math.inf
            continue
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
            worst = max(worst, diff)
            agree = agree and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))
        elif a.dtype.kind in "iub" and b.dtype.kind in "iub":
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
            worst = max(worst, diff)
            agree = agree and diff == 0
        else:
            agree = agree and bool(np.array_equal(a, b))
    return agree, worst
