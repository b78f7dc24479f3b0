"""Two-sample statistics for canary gates: binned latencies and error counts of two arms.

A few lines of numpy and the standard library rather than scipy, which the core install
does not carry. The latency histograms are the per-request samples, binned 25 % wide, so
every function here takes counts per bin; ties within a bin are accounted for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from servion.routing import BUCKETS_MS

# The overflow bucket (over ~100 s) has no upper bound: one more 25 % step stands for it.
VALUES_MS: npt.NDArray[np.float64] = np.array([*BUCKETS_MS, BUCKETS_MS[-1] * 1.25])
RESAMPLES = 1000
"""Bootstrap resamples: enough for a 1 % bound, and a few milliseconds of numpy once a step."""


def z_score(alpha: float) -> float:
    """The standard normal quantile with a share ``alpha`` above it (2.33 for 0.01)."""
    return NormalDist().inv_cdf(1.0 - alpha)


def mann_whitney_p(slower: Sequence[int], than: Sequence[int]) -> float:
    """One-sided p-value that the sample binned as ``slower`` tends to be larger than ``than``.

    Mann-Whitney U with the normal approximation, tie and continuity corrections. Unlike a
    quantile, it reads every request, so a few slow outliers in either arm move it little.
    1.0 when it cannot tell (an empty arm, or every request in one bin).
    """
    x = np.asarray(slower, np.float64)
    y = np.asarray(than, np.float64)
    n1, n2 = float(x.sum()), float(y.sum())
    if n1 == 0 or n2 == 0:
        return 1.0
    # A canary request beats every stable one in a lower bin and ties with half of its own.
    u = float(np.dot(x, np.cumsum(y) - y / 2))
    n = n1 + n2
    ties = x + y
    variance = n1 * n2 / 12 * (n + 1 - float(np.sum(ties**3 - ties)) / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    # erfc keeps its precision far in the tail, where 1 - cdf would round to 0.
    return 0.5 * math.erfc(z / math.sqrt(2))


def wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (n > 0): sound at 0 and n successes."""
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def rate_increase_bound(k1: int, n1: int, k2: int, n2: int, alpha: float) -> float:
    """Lower confidence bound (level ``1 - alpha``) on ``k1/n1 - k2/n2`` (n1 > 0).

    Newcombe's hybrid score interval: unlike the textbook normal interval it stays sound at
    0 % and 100 % and on small samples. Without a second sample (n2 = 0) the first rate is
    bounded against 0, as if the baseline never failed.
    """
    z = z_score(alpha)
    p1 = k1 / n1
    low1, _ = wilson(k1, n1, z)
    if n2 == 0:
        return low1
    p2 = k2 / n2
    _, high2 = wilson(k2, n2, z)
    return p1 - p2 - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)


def quantile(histogram: Sequence[int], q: float) -> float:
    """The bin value under which a share ``q`` of a non-empty histogram's samples fall."""
    counts = np.asarray(histogram, np.int64)
    rank = max(1, math.ceil(q * int(counts.sum())))
    return float(VALUES_MS[int(np.argmax(np.cumsum(counts) >= rank))])


class Resampled:
    """Multinomial bootstrap resamples of one histogram: the same number of requests drawn
    again from its bins. A fixed seed makes a step's verdict reproducible from its counts."""

    def __init__(self, histogram: Sequence[int], rng: np.random.Generator) -> None:
        counts = np.asarray(histogram, np.int64)
        self.n = int(counts.sum())
        draws = rng.multinomial(self.n, counts / self.n, size=RESAMPLES)
        self._cumulative = np.cumsum(draws, axis=1)

    def quantile(self, q: float) -> npt.NDArray[np.float64]:
        """The ``q`` quantile of each resample."""
        rank = max(1, math.ceil(q * self.n))
        values: npt.NDArray[np.float64] = VALUES_MS[np.argmax(self._cumulative >= rank, axis=1)]
        return values
