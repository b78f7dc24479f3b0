"""Routing of endpoint requests to model versions, and shadow copies of them."""

from servion.routing.guards import Bulkhead, CircuitBreaker, ResponseCache, RetryBudget
from servion.routing.router import ArmStats, EndpointRouter, Route, merge_arm_stats, sticky_point
from servion.routing.shadow import ShadowRoute, ShadowStats, compare, merge_shadow_stats

__all__ = [
    "ArmStats",
    "Bulkhead",
    "CircuitBreaker",
    "EndpointRouter",
    "ResponseCache",
    "RetryBudget",
    "Route",
    "ShadowRoute",
    "ShadowStats",
    "compare",
    "merge_arm_stats",
    "merge_shadow_stats",
    "sticky_point",
]
