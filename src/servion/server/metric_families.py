"""Series families added up over workers' snapshots: the sums by label values, and the
prometheus-client families they become."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class Sums:
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


def counter(name: str, doc: str, labels: list[str], sums: Sums) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in sorted(sums.values.items()):
        family.add_metric(list(values), value)
    return family


def gauge(name: str, doc: str, labels: list[str], sums: Sums) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in sorted(sums.values.items()):
        family.add_metric(list(values), value)
    return family


def histogram(
    name: str, doc: str, labels: list[str], sums: Sums, bounds: tuple[int, ...], scale: float
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, counts in sorted(sums.histograms.items()):
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, counts, strict=False):
            cumulative += count
            buckets.append((number(bound * scale), cumulative))
        cumulative += counts[len(bounds)]
        buckets.append(("+Inf", cumulative))
        family.add_metric(list(values), buckets, counts[-1] * scale)
    return family


def number(value: float) -> str:
    return f"{value:.6g}"
