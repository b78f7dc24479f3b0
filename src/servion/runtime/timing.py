"""What timing a runtime at one batch size found: latency percentiles and the rows a
second one caller gets. Shared by ``servion profile`` and ``servion optimize``'s report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class BatchPoint:
    """One batch size: execution latency percentiles and single-stream throughput."""

    batch_size: int
    runs: int
    p50_ms: float
    p99_ms: float
    rows_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "runs": self.runs,
            "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "rows_per_s": round(self.rows_per_s, 1),
        }


def batch_point(batch_size: int, times_ns: Sequence[int]) -> BatchPoint:
    """The point of ``times_ns``, one execution of ``batch_size`` rows each.

    >>> batch_point(4, [1_000_000, 3_000_000]).rows_per_s
    2000.0
    """
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p99 = (float(v) for v in np.percentile(ms, [50, 99]))
    return BatchPoint(batch_size, len(times_ns), p50, p99, batch_size * 1e3 / float(ms.mean()))
