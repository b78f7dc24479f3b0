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
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from servion.errors import InvalidInput, quoted
from servion.routing.guards import Bulkhead, CircuitBreaker, ResponseCache, RetryBudget
from servion.routing.policies import EndpointPolicy, ModelRef
from servion.routing.shadow import ShadowRoute
from servion.routing.stats import ArmStats, PayloadLogStats, ShadowStats


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

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.model, self.version)


class EndpointRouter:
    """One endpoint's revision in one worker: its policy and the live state that goes
    with it (arm counters, breakers, bulkhead, retry budget, cache).

    Built from the policy and the router of the revision before, so that counters,
    breaker states and a bulkhead's running count carry over a new revision whose
    settings for them did not change.
    """

    def __init__(
        self,
        policy: EndpointPolicy,
        previous: EndpointRouter | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.name = policy.name
        self.revision = policy.revision
        old = previous
        kept = {r.label: r.stats for r in old.routes} if old else {}
        if policy.ensemble is not None:  # its steps, counted like arms but never drawn
            refs = [(s.ref, 0.0) for s in policy.ensemble.steps]
        else:
            refs = [(a.ref, a.weight) for a in policy.arms]
        self.routes: list[Route] = [
            Route(r.model, r.version, w, kept.get(r.label) or ArmStats()) for r, w in refs
        ]
        kept_shadows = {s.label: s.stats for s in old.shadows} if old else {}
        self.shadows: list[ShadowRoute] = [
            ShadowRoute(
                s.ref.model, s.ref.version, s.sample, kept_shadows.get(s.ref.label) or ShadowStats()
            )
            for s in policy.shadows
        ]
        self.cache: ResponseCache[Any] | None = None
        if policy.cache is not None:
            # Kept (entries and counts) while its settings hold: keys name the arm, so an
            # answer stays right for as long as that arm's version serves.
            same = old is not None and old.cache is not None and old.policy.cache == policy.cache
            self.cache = (
                old.cache
                if same and old is not None
                else ResponseCache(policy.cache.max_entries, policy.cache.ttl_s)
            )
        self.bulkhead = _bulkhead(policy, old)
        self.breakers = _breakers(policy, old, self.routes)
        """Per arm label."""
        self.retries = _retries(policy, old)
        self.fallback = policy.fallback
        self.timeout_s = policy.timeout_s
        self.cascade = policy.cascade
        self.ensemble = policy.ensemble
        self.models: dict[str, Any] = {}
        """Per arm label: the endpoint's own batching of that version, when the policy sets one."""
        self.cascade_rows: dict[str, int] = dict(old.cascade_rows) if old else {}
        """Rows answered by each cascade stage (the arms count as the first)."""
        self.fallbacks: dict[str, int] = dict(old.fallbacks) if old else {}
        """Answers given by the fallback, by reason (error, timeout, circuit_open)."""
        self.payload_log = policy.payload_log
        # Counters, never reset while the endpoint lives: Prometheus counters only go up.
        self.payload_stats: PayloadLogStats = old.payload_stats if old else PayloadLogStats()
        self.sticky_header = policy.sticky_header.encode() if policy.sticky_header else None
        self._draw = draw
        total = sum(r.weight for r in self.routes)
        bounds, acc = [], 0.0
        for route in self.routes:
            acc += route.weight / total if total else 0.0
            bounds.append(acc)
        bounds[-1] = 1.0  # no point may fall past the last arm through rounding
        self._bounds = bounds
        self._by_version = {r.version: r for r in self.routes}
        self._by_label = {r.label: r for r in self.routes}

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
            "payload_log": self.payload_stats.to_dict() if self.payload_log is not None else None,
        }


def _bulkhead(policy: EndpointPolicy, old: EndpointRouter | None) -> Bulkhead | None:
    if policy.bulkhead is None:
        return None
    limit, queue = policy.bulkhead.limit, policy.bulkhead.queue
    kept = old.bulkhead if old is not None else None
    # Keep the one in use (its running count) unless its limits changed.
    if kept is not None and (kept.limit, kept.queue) == (limit, queue):
        return kept
    return Bulkhead(policy.name, limit, queue)


def _breakers(
    policy: EndpointPolicy, old: EndpointRouter | None, routes: list[Route]
) -> dict[str, CircuitBreaker]:
    if policy.breaker is None:
        return {}
    b = policy.breaker
    wanted = (b.error_rate, b.window_s, b.min_requests, b.open_s)
    breakers = {}
    for route in routes:
        found = old.breakers.get(route.label) if old is not None else None
        # An arm keeps its breaker (and its state) across revisions.
        same = found is not None and found.settings == wanted
        breakers[route.label] = found if same and found else CircuitBreaker(*wanted)
    return breakers


def _retries(policy: EndpointPolicy, old: EndpointRouter | None) -> RetryBudget | None:
    if policy.retries is None:
        return None
    settings = (policy.retries.attempts, policy.retries.budget)
    kept = old.retries if old is not None else None
    # The budget carries over a new revision with the same settings.
    if kept is not None and (kept.attempts, kept.share) == settings:
        return kept
    return RetryBudget(*settings)
