"""Benchmarks: a load generator for a running server and an in-process profiler.

``prepare_target`` builds and probes a request, ``run_load`` drives it (wrk or
the asyncio generator) and ``check_slo`` judges the result; ``profile_version``
sweeps batch sizes on a loaded runtime and recommends batching settings.
"""

from servion.bench.body import InferTarget, RequestBody, build_body, prepare_target
from servion.bench.load import ENGINES, Engine, LoadSpec, choose_engine, run_load
from servion.bench.profile import (
    ProfileReport,
    Recommendation,
    batch_sizes,
    profile_version,
    recommend,
)
from servion.bench.slo import Slo, SloCheck, SloVerdict, check_slo
from servion.bench.stats import LatencySummary, LoadResult
from servion.runtime import BatchPoint

__all__ = [
    "ENGINES",
    "BatchPoint",
    "Engine",
    "InferTarget",
    "LatencySummary",
    "LoadResult",
    "LoadSpec",
    "ProfileReport",
    "Recommendation",
    "RequestBody",
    "Slo",
    "SloCheck",
    "SloVerdict",
    "batch_sizes",
    "build_body",
    "check_slo",
    "choose_engine",
    "prepare_target",
    "profile_version",
    "recommend",
    "run_load",
]
