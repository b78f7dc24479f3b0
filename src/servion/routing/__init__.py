"""Endpoint behaviour over protocol-neutral answers: splits, sticky keys and pins,
shadows, cache, bulkhead, circuit breakers, timeouts, retries, fallbacks,
cascades and ensembles. Deploy builds the frozen policies; the data plane runs
the models."""

from servion.routing.context import (
    PIN_HEADER,
    PROBE_HEADER,
    TIMEOUT_HEADER,
    RequestContext,
    parse_timeout_ms,
    request_context,
)
from servion.routing.endpoint import ModelRunner, cache_key, infer_endpoint
from servion.routing.guards import Bulkhead, CircuitBreaker, ResponseCache, RetryBudget
from servion.routing.policies import (
    ArmPolicy,
    BreakerPolicy,
    BulkheadPolicy,
    CachePolicy,
    CascadePolicy,
    CascadeStage,
    EndpointPolicy,
    EnsemblePolicy,
    EnsembleStepPolicy,
    FallbackPolicy,
    ModelRef,
    RetryPolicy,
    ShadowPolicy,
)
from servion.routing.router import EndpointRouter, Route, sticky_point
from servion.routing.shadow import ShadowRoute, compare
from servion.routing.stats import (
    BUCKETS_MS,
    ArmStats,
    ShadowStats,
    add_histograms,
    merge_arm_stats,
    merge_shadow_stats,
    percentile,
)

__all__ = [
    "BUCKETS_MS",
    "PIN_HEADER",
    "PROBE_HEADER",
    "TIMEOUT_HEADER",
    "ArmPolicy",
    "ArmStats",
    "BreakerPolicy",
    "Bulkhead",
    "BulkheadPolicy",
    "CachePolicy",
    "CascadePolicy",
    "CascadeStage",
    "CircuitBreaker",
    "EndpointPolicy",
    "EndpointRouter",
    "EnsemblePolicy",
    "EnsembleStepPolicy",
    "FallbackPolicy",
    "ModelRef",
    "ModelRunner",
    "RequestContext",
    "ResponseCache",
    "RetryBudget",
    "RetryPolicy",
    "Route",
    "ShadowPolicy",
    "ShadowRoute",
    "ShadowStats",
    "add_histograms",
    "cache_key",
    "compare",
    "infer_endpoint",
    "merge_arm_stats",
    "merge_shadow_stats",
    "parse_timeout_ms",
    "percentile",
    "request_context",
    "sticky_point",
]
