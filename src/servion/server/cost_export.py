"""What serving costs: the configured price of a replica (and of its GPUs) per hour, and
that price spread over the requests the replica answers, as ``servion_cost_*`` series of
``GET /metrics`` and as the ``cost`` of ``GET /v2/admin/endpoints`` (``servion status``).

The request rate is the sum of each live worker's own recent rate (``RecentAnswers`` in
``serving/metrics``), so it is the same whichever worker, or the supervisor's metrics port,
answers. Without a price, or without a request in the window, there is no cost per 1,000
requests: the series is absent, not zero or infinite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric


@dataclass(frozen=True, slots=True)
class Pricing:
    """The ``cost`` settings as plain values: the supervisor reads them from JSON.

    >>> Pricing.from_config({"replica_hour": 2.0, "gpu_hour": None}).configured
    True
    """

    replica_hour: float | None = None
    gpu_hour: float | None = None
    currency: str = "USD"
    window_s: float = 60.0

    @classmethod
    def from_config(cls, cost: Mapping[str, Any]) -> Pricing:
        """From ``CostSettings.model_dump()`` (already validated)."""
        return cls(
            cost.get("replica_hour"),
            cost.get("gpu_hour"),
            cost.get("currency", "USD"),
            cost.get("window_s", 60.0),
        )

    @property
    def configured(self) -> bool:
        return self.replica_hour is not None or self.gpu_hour is not None


@dataclass(frozen=True, slots=True)
class Cost:
    """The price per hour of what runs, by resource, and the request rate it is spread over.

    >>> cost = Cost({"replica": 3.6}, requests_per_s=10.0)
    >>> round(cost.per_1000_requests, 6)
    0.1
    """

    per_hour: dict[str, float] = field(default_factory=dict)
    """``replica`` and ``gpu`` (every GPU together), those with a configured price."""
    requests_per_s: float | None = None
    """Requests answered per second over the window; None when no worker reports one."""
    gpus: int = 0

    @property
    def total_per_hour(self) -> float | None:
        return sum(self.per_hour.values()) if self.per_hour else None

    @property
    def per_1000_requests(self) -> float | None:
        total, rate = self.total_per_hour, self.requests_per_s
        if total is None or not rate:  # no request: no cost per request, not infinity
            return None
        return total / (rate * 3600) * 1000


def request_rate(live: list[dict[str, Any]]) -> float | None:
    """Requests per second the live workers answered over their windows, added up; None when
    none of them reports a window (metrics off, or no live worker)."""
    windows = [s["recent"] for s in live if s.get("recent", {}).get("seconds", 0) > 0]
    if not windows:
        return None
    return float(sum(w["requests"] / w["seconds"] for w in windows))


def cost_of(pricing: Pricing, live: list[dict[str, Any]], gpus: int | None = None) -> Cost:
    """The cost of this replica now; ``gpus`` defaults to the GPUs NVML sees."""
    if gpus is None:
        from servion.server import gpu

        gpus = gpu.count() if pricing.gpu_hour is not None else 0
    per_hour = {}
    if pricing.replica_hour is not None:
        per_hour["replica"] = pricing.replica_hour
    if pricing.gpu_hour is not None:
        per_hour["gpu"] = pricing.gpu_hour * gpus
    return Cost(per_hour, request_rate(live), gpus)


def cost_summary(pricing: Pricing, live: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``cost`` object of the admin API's endpoint list."""
    cost = cost_of(pricing, live)
    return {
        "configured": pricing.configured,
        "currency": pricing.currency,
        "per_hour": cost.total_per_hour,
        "per_hour_by_resource": cost.per_hour,
        "gpus": cost.gpus,
        "requests_per_s": cost.requests_per_s,
        "per_1000_requests": cost.per_1000_requests,
        "window_s": pricing.window_s,
    }


def cost_series(pricing: Pricing, live: list[dict[str, Any]]) -> Iterable[Metric]:
    """``servion_cost_per_hour`` and ``servion_cost_per_1000_requests``; nothing unpriced."""
    if not pricing.configured:
        return []
    cost = cost_of(pricing, live)
    per_hour = GaugeMetricFamily(
        "servion_cost_per_hour",
        "Configured price of what this replica runs for an hour, by resource (replica; gpu:"
        " every GPU NVML sees), in the configured currency.",
        labels=["resource"],
    )
    for resource, value in sorted(cost.per_hour.items()):
        per_hour.add_metric([resource], value)
    families: list[Metric] = [per_hour]
    per_1000 = cost.per_1000_requests
    if per_1000 is not None:
        families.append(
            GaugeMetricFamily(
                "servion_cost_per_1000_requests",
                "The price per hour spread over the requests this replica answered (every"
                " status) in its recent window (SERVION_COST_WINDOW_S), per 1,000 requests.",
                value=per_1000,
            )
        )
    return families
