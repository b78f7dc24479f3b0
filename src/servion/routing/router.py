"""Endpoints over model versions: weighted splits, sticky assignment, pinned arms.

A request to an endpoint is given a point in [0, 1): a hash of its sticky
header's value when the spec names one (the same caller always gets the same
point), otherwise a random draw. The arms own consecutive slices of [0, 1) in
spec order, sized by weight, and the slice holding the point answers. When the
weights change a little, the slice boundaries move a little, and only callers
whose points lie between the old and new boundaries change arms.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from servion.errors import InvalidInput, quoted

if TYPE_CHECKING:
    from servion.deploy.spec import Cascade, Ensemble, Fallback
    from servion.routing.guards import Bulkhead, CircuitBreaker, ResponseCache, RetryBudget
    from servion.routing.shadow import ShadowRoute

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
        return {"requests": self.requests, "errors": self.errors, "latency": self.latency}


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


def sticky_point(value: bytes) -> float:
    """A caller's fixed point in [0, 1)."""
    digest = hashlib.blake2b(value, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(slots=True)
class Route:
    """One arm of an endpoint: the model version and its live counters."""

    model: str
    version: str
    weight: float
    stats: ArmStats = field(default_factory=ArmStats)

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


class EndpointRouter:
    """Chooses the arm that answers each request to one endpoint."""

    def __init__(
        self,
        name: str,
        revision: int,
        routes: list[Route],
        sticky_header: str | None,
        draw: Callable[[], float] = random.random,
        shadows: Sequence[ShadowRoute] = (),
        cache: ResponseCache[Any] | None = None,
        bulkhead: Bulkhead | None = None,
        breakers: dict[str, CircuitBreaker] | None = None,
        fallback: Fallback | None = None,
        timeout_s: float | None = None,
        cascade: Cascade | None = None,
        retries: RetryBudget | None = None,
        ensemble: Ensemble | None = None,
        models: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.shadows = list(shadows)
        self.cache = cache
        self.bulkhead = bulkhead
        self.breakers = breakers or {}
        """Per arm label."""
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.cascade = cascade
        self.retries = retries
        self.ensemble = ensemble
        self.models: dict[str, Any] = models or {}
        """Per arm label: the endpoint's own batching of that version, when the spec sets one."""
        self.cascade_rows: dict[str, int] = {}
        """Rows answered by each cascade stage (the arms count as the first)."""
        self.fallbacks: dict[str, int] = {}
        """Answers given by the fallback, by reason (error, timeout, circuit_open)."""
        self.revision = revision
        self.routes = routes
        self.sticky_header = sticky_header.encode() if sticky_header else None
        self._draw = draw
        total = sum(r.weight for r in routes)
        bounds, acc = [], 0.0
        for route in routes:
            acc += route.weight / total if total else 0.0
            bounds.append(acc)
        bounds[-1] = 1.0  # no point may fall past the last arm through rounding
        self._bounds = bounds
        self._by_version = {r.version: r for r in routes}
        self._by_label = {r.label: r for r in routes}

    def choose(self, header: Callable[[bytes], bytes | None], pin: bytes | None) -> Route:
        """The arm for one request; ``pin`` is the pin header's value, if sent."""
        if pin is not None:
            return self._pinned(pin)
        point = -1.0
        if self.sticky_header is not None:
            value = header(self.sticky_header)
            if value is not None:
                point = sticky_point(value)
        if point < 0:
            point = self._draw()
        index = bisect.bisect_right(self._bounds, point)
        return self.routes[min(index, len(self.routes) - 1)]

    def _pinned(self, pin: bytes) -> Route:
        text = pin.decode("latin-1").strip()
        route = self._by_label.get(text) or self._by_version.get(text)
        if route is None:
            arms = ", ".join(r.label for r in self.routes)
            raise InvalidInput(
                f"endpoint {quoted(self.name)} has no arm {quoted(text)} to pin: it serves {arms}"
            )
        return route

    def stats(self) -> dict[str, Any]:
        return {
            "arms": {r.label: r.stats.to_dict() for r in self.routes},
            "shadows": {s.label: s.stats.to_dict() for s in self.shadows},
            "cache": self.cache.to_dict() if self.cache is not None else None,
            "bulkhead": self.bulkhead.to_dict() if self.bulkhead is not None else None,
            "breakers": {label: b.to_dict() for label, b in self.breakers.items()},
            "fallbacks": dict(self.fallbacks),
            "cascade": dict(self.cascade_rows),
            "retries": self.retries.to_dict() if self.retries is not None else None,
        }
