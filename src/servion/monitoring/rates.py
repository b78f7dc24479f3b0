"""What ``servion top`` shows, from two scrapes of ``GET /metrics``: rates and ratios over
the interval between them, and latency quantiles from the histogram buckets that filled in
it, interpolated linearly inside a bucket as Prometheus' ``histogram_quantile`` does.

servion's counters never go down while one server runs; a server restarted between two
scrapes makes a difference negative, and that reads as no traffic, not a negative rate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]

SERVER_FAULTS = frozenset({"queue_full", "deadline", "model_error"})
"""Failure reasons a client sees as a 5xx; invalid input and limits are the caller's (4xx)."""


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape by name and labels, and when (monotonic seconds) it was taken.

    >>> Scrape.parse('x_total{a="1"} 3\\n', at=0.0).total("x_total", a="1")
    3.0
    """

    at: float
    samples: Mapping[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return cls(at, samples)

    def series(self, name: str, **match: str) -> Iterator[tuple[dict[str, str], float]]:
        """The labels and value of each series of ``name`` whose labels include ``match``."""
        for (found, labels), value in self.samples.items():
            if found == name:
                have = dict(labels)
                if all(have.get(k) == v for k, v in match.items()):
                    yield have, value

    def total(self, name: str, **match: str) -> float:
        return sum(value for _, value in self.series(name, **match))

    def values(self, name: str, label: str, **match: str) -> set[str]:
        """The values ``label`` takes in the series of ``name``."""
        return {labels[label] for labels, _ in self.series(name, **match) if label in labels}


@dataclass(frozen=True)
class Row:
    """One line of ``servion top``: a model or endpoint (``version`` empty), or one of its
    versions or arms (``target`` empty). None where the interval says nothing."""

    target: str
    version: str
    rps: float
    error_ratio: float | None
    p50_s: float | None
    p99_s: float | None
    batch: float | None
    queue: float | None
    drifted: int | None = None
    """Features of the model (version) its last drift window flagged; None without one."""


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets ending at +Inf, as
    ``histogram_quantile`` computes it: linear inside the bucket that holds the rank, the
    highest finite bound when the rank falls past it, None without observations.

    >>> quantile(0.5, [(1.0, 0), (2.0, 10), (math.inf, 10)])
    1.5
    """
    if len(buckets) < 2 or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    below, lower = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == math.inf:
                return buckets[-2][0]
            if count == below:  # an empty bucket holds a rank of 0 only at its lower end
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        below, lower = count, upper
    return None


def between(before: Scrape, after: Scrape) -> list[Row]:
    """Each model and endpoint ``after`` knows, then its versions or arms, sorted by name."""
    window = _Window(before, after)
    endpoints = after.values("servion_arm_requests_total", "endpoint")
    models = after.values("servion_model_requests_total", "model")
    targets = (after.values("servion_requests_total", "target") | models | endpoints) - {""}
    rows: list[Row] = []
    for target in sorted(targets):
        rows.append(window.target(target, target in models))
        if target in models:
            versions = after.values("servion_model_requests_total", "version", model=target)
            rows += [window.version(target, v) for v in sorted(versions)]
        if target in endpoints:
            arms = after.values("servion_arm_requests_total", "arm", endpoint=target)
            rows += [window.arm(target, arm) for arm in sorted(arms)]
    return rows


class _Window:
    def __init__(self, before: Scrape, after: Scrape) -> None:
        self.before, self.after = before, after
        self.seconds = max(after.at - before.at, 1e-9)

    def delta(self, name: str, **match: str) -> float:
        return max(self.after.total(name, **match) - self.before.total(name, **match), 0.0)

    def ratio(self, part: float, whole: float) -> float | None:
        return part / whole if whole > 0 else None

    def latency(self, target: str) -> tuple[float | None, float | None]:
        name = "servion_request_duration_seconds_bucket"
        bounds = self.after.values(name, "le", target=target)
        found = sorted((float(le), self.delta(name, target=target, le=le)) for le in bounds)
        # A restart between the scrapes clamps some differences to zero, which can break
        # their order: keep them non-decreasing, as histogram_quantile does.
        counts = itertools.accumulate((c for _, c in found), max)
        buckets = [(le, c) for (le, _), c in zip(found, counts, strict=True)]
        return quantile(0.5, buckets), quantile(0.99, buckets)

    def batch(self, **match: str) -> float | None:
        count = self.delta("servion_model_batch_size_count", **match)
        return self.ratio(self.delta("servion_model_batch_size_sum", **match), count)

    def drifted(self, **match: str) -> int | None:
        # A gauge of the last window, not a counter: read as it stands in the latest scrape.
        found = [v for _, v in self.after.series("servion_drift_features_drifted", **match)]
        return round(sum(found)) if found else None

    def target(self, target: str, is_model: bool) -> Row:
        answered = self.delta("servion_requests_total", target=target)
        failed = self.delta("servion_requests_total", target=target, code="5xx")
        p50, p99 = self.latency(target)
        return Row(
            target,
            "",
            answered / self.seconds,
            self.ratio(failed, answered),
            p50,
            p99,
            self.batch(model=target) if is_model else None,
            self.after.total("servion_queue_depth", model=target) if is_model else None,
            self.drifted(model=target) if is_model else None,
        )

    def version(self, model: str, version: str) -> Row:
        asked = self.delta("servion_model_requests_total", model=model, version=version)
        failed = sum(
            self.delta("servion_model_failures_total", model=model, version=version, reason=r)
            for r in SERVER_FAULTS
        )
        queue = self.after.total("servion_queue_depth", model=model, version=version)
        batch = self.batch(model=model, version=version)
        drifted = self.drifted(model=model, version=version)
        return Row(
            "",
            version,
            asked / self.seconds,
            self.ratio(failed, asked),
            None,
            None,
            batch,
            queue,
            drifted,
        )

    def arm(self, endpoint: str, arm: str) -> Row:
        asked = self.delta("servion_arm_requests_total", endpoint=endpoint, arm=arm)
        failed = self.delta("servion_arm_errors_total", endpoint=endpoint, arm=arm)
        return Row("", arm, asked / self.seconds, self.ratio(failed, asked), None, None, None, None)
