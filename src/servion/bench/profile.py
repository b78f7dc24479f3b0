"""The in-process profiler: a batch-size sweep on one loaded model, and the
batching settings it suggests (what Triton's Model Analyzer does offline).

Only the runtime is measured (no HTTP, no queue), with the same runtime
settings a server worker uses, so the numbers are the floor a server adds to.

The recommendation rule:

- ``max_batch_size``: among sizes whose p99 execution time is within the
  latency budget, the one with the most rows/s; a size within 5% of the best
  throughput but smaller wins, as it buys the same throughput with less latency.
- ``max_queue_delay_us``: how long gathering that batch takes when rows arrive
  as fast as the model serves them one at a time (``(B - 1) / rows_per_s(1)``):
  waiting longer than that rarely fills the batch more. It is capped at the
  budget minus the batch's p99, so waiting plus executing stays within budget,
  and at one execution of that batch (its p50): under load a batch forms while
  the previous one runs, so a wait longer than the run it saves only adds latency
  (a 10 us model is never told to wait 2 ms).
  In-process throughput is more than a server can receive over HTTP, so this
  delay is a lower bound: a server whose requests arrive slower gains from more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from time import perf_counter_ns
from typing import Any, Final

from servion.registry import ModelRegistry, ModelVersion
from servion.runtime import BatchPoint, Runtime, batch_point, sample_inputs

DEFAULT_BUDGET_MS: Final = 10.0
_WARMUP_RUNS: Final = 3
_WARMUP_SHARE: Final = 0.1
"""Share of each size's time spent warming up: first runs pay for lazy allocation."""
_MIN_RUNS: Final = 10
_SAME_THROUGHPUT: Final = 0.95


@dataclass(frozen=True, slots=True)
class Recommendation:
    max_batch_size: int
    max_queue_delay_us: int
    within_budget: bool
    """False when even one row misses the budget (the advice is then 1 and 0)."""
    reason: str


@dataclass(frozen=True, slots=True)
class ProfileReport:
    """A sweep and its recommendation.

    >>> report.apply_command()  # doctest: +SKIP
    'servion models batching tabular --max-batch-size 32 --max-queue-delay-us 180'
    """

    model: str
    version: str
    batched: bool
    latency_budget_ms: float
    points: tuple[BatchPoint, ...]
    recommendation: Recommendation

    def apply_command(self) -> str:
        rec = self.recommendation
        return (
            f"servion models batching {self.model} --max-batch-size {rec.max_batch_size}"
            f" --max-queue-delay-us {rec.max_queue_delay_us}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "batched": self.batched,
            "latency_budget_ms": self.latency_budget_ms,
            "points": [p.to_dict() for p in self.points],
            "recommendation": asdict(self.recommendation),
            "apply": self.apply_command(),
        }


def batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to ``max_batch_size``, which is always included.

    >>> batch_sizes(100)
    [1, 2, 4, 8, 16, 32, 64, 100]
    """
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return [*sizes, max_batch_size]


def measure_batch(runtime: Runtime, batch_size: int, duration_s: float) -> BatchPoint:
    """Run one batch size for ``duration_s`` (and at least a few runs), after a warm-up."""
    inputs = sample_inputs(runtime.signature(), batch_size)
    warm_until = perf_counter_ns() + int(duration_s * _WARMUP_SHARE * 1e9)
    for _ in range(_WARMUP_RUNS):
        runtime.predict(inputs)
    while perf_counter_ns() < warm_until:
        runtime.predict(inputs)
    times: list[int] = []
    deadline = perf_counter_ns() + int(duration_s * 1e9)
    while len(times) < _MIN_RUNS or perf_counter_ns() < deadline:
        start = perf_counter_ns()
        runtime.predict(inputs)
        times.append(perf_counter_ns() - start)
    return batch_point(batch_size, times)


def recommend(points: Sequence[BatchPoint], budget_ms: float) -> Recommendation:
    """Batching settings from a sweep (the rule is in the module docstring)."""
    fitting = [p for p in points if p.p99_ms <= budget_ms]
    if not fitting:
        one = min(points, key=lambda p: p.batch_size)
        reason = (
            f"one row already takes {one.p99_ms:.3f} ms at p99, over the {budget_ms:g} ms budget"
        )
        return Recommendation(1, 0, False, reason)
    best = max(p.rows_per_s for p in fitting)
    chosen = min(
        (p for p in fitting if p.rows_per_s >= _SAME_THROUGHPUT * best), key=lambda p: p.batch_size
    )
    single = min(points, key=lambda p: p.batch_size)
    gather_us = (chosen.batch_size - 1) / single.rows_per_s * 1e6
    slack_us = (budget_ms - chosen.p99_ms) * 1000
    run_us = chosen.p50_ms * 1000
    delay_us = max(0, round(min(gather_us, slack_us, run_us)))
    reason = (
        f"batch {chosen.batch_size}: {chosen.rows_per_s:,.0f} rows/s at p99"
        f" {chosen.p99_ms:.3f} ms; gathering it at {single.rows_per_s:,.0f} rows/s takes"
        f" {gather_us:,.0f} us, the budget leaves {slack_us:,.0f} us, and one execution"
        f" of it takes {run_us:,.0f} us"
    )
    return Recommendation(chosen.batch_size, delay_us, True, reason)


def profile_runtime(
    runtime: Runtime,
    sizes: Sequence[int],
    duration_s: float,
    on_point: Callable[[int], None] | None = None,
) -> list[BatchPoint]:
    """Measure each size in turn; ``on_point`` hears how many are done (for progress)."""
    points = []
    for size in sizes:
        points.append(measure_batch(runtime, size, duration_s))
        if on_point is not None:
            on_point(len(points))
    return points


def profile_version(
    registry: ModelRegistry,
    mv: ModelVersion,
    max_batch_size: int | None = None,
    latency_budget_ms: float = DEFAULT_BUDGET_MS,
    duration_s: float = 1.0,
    on_sizes: Callable[[list[int]], Callable[[int], None]] | None = None,
) -> ProfileReport:
    """Load ``mv`` (checksum verified), sweep batch sizes, recommend, unload.

    The sweep stops at ``max_batch_size``, by default the largest batch a
    request may carry (``settings.batching.max_batch_size``); a model whose
    inputs have no batch dimension is profiled at size 1 only. ``on_sizes`` is told
    the sizes to measure and returns the function that hears each one done.
    """
    runtime = registry.open_runtime(mv)
    try:
        batched = runtime.signature().batched
        limit = max_batch_size or registry.settings.batching.max_batch_size
        sizes = batch_sizes(limit) if batched else [1]
        on_point = on_sizes(sizes) if on_sizes is not None else None
        points = profile_runtime(runtime, sizes, duration_s, on_point)
    finally:
        runtime.unload()
    return ProfileReport(
        mv.name,
        mv.version,
        batched,
        latency_budget_ms,
        tuple(points),
        recommend(points, latency_budget_ms),
    )
