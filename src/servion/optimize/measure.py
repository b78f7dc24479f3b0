"""Latency and throughput of a loaded runtime, in process, on real validation rows.

What is timed is ``Runtime.predict`` of the runtime servion serves the format with, at
the worker's thread settings: the floor a server adds HTTP and batching to. Each batch
size gets a bounded time (and a bounded number of runs), so an optimization takes
seconds, not minutes, whatever the model.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter, perf_counter_ns
from typing import Any, Final

from servion.datatypes import NUMPY_OF
from servion.errors import RuntimeFailure, quoted
from servion.optimize.data import ValidationSet
from servion.runtime import BatchPoint, Signature, batch_point
from servion.types import Arrays

BATCH_SIZES: Final = (1, 32)
THROUGHPUT_BATCH: Final = 32
_WARMUP_RUNS: Final = 3
_MIN_RUNS: Final = 10
_MAX_RUNS: Final = 5000
_DISTINCT_BATCHES: Final = 16


Latency = BatchPoint
"""One batch size's latency percentiles and single-stream rows/s."""


def time_batches(
    predict: Callable[[Arrays], Any], batches: list[Arrays], batch_size: int, budget_s: float
) -> Latency:
    """Run ``batches`` in turn for about ``budget_s`` (at least a few runs) after a
    warm-up: first runs pay for lazy allocation."""
    for batch in batches[:_WARMUP_RUNS]:
        predict(batch)
    times: list[int] = []
    deadline = perf_counter() + budget_s
    while len(times) < _MAX_RUNS and (len(times) < _MIN_RUNS or perf_counter() < deadline):
        batch = batches[len(times) % len(batches)]
        started = perf_counter_ns()
        predict(batch)
        times.append(perf_counter_ns() - started)
    return batch_point(batch_size, times)


def time_model(
    predict: Callable[[Arrays], Any],
    data: ValidationSet,
    feed: Callable[[Arrays], Arrays],
    budget_s: float,
) -> tuple[Latency, ...]:
    """Latency at each of ``BATCH_SIZES``, ``budget_s`` shared between them."""
    share = budget_s / len(BATCH_SIZES)
    return tuple(
        time_batches(predict, [feed(b) for b in data.batches(size, _DISTINCT_BATCHES)], size, share)
        for size in BATCH_SIZES
    )


def feeder(source: Signature, model: Signature) -> Callable[[Arrays], Arrays]:
    """Turn inputs made for ``source`` into the inputs ``model`` takes: the same names
    (or the one input of each, renamed), cast to ``model``'s datatypes."""
    theirs = {spec.name: spec for spec in model.inputs}
    names = {spec.name: spec.name for spec in source.inputs}
    if set(names) != set(theirs):
        if len(source.inputs) != 1 or len(model.inputs) != 1:
            raise RuntimeFailure(
                f"the model takes inputs {', '.join(map(quoted, theirs))}, not the source's"
                f" {', '.join(map(quoted, names))}: the validation data cannot be fed to it"
            )
        names = {source.inputs[0].name: model.inputs[0].name}
    dtypes = {theirs[new].name: NUMPY_OF[theirs[new].datatype] for new in names.values()}

    def feed(inputs: Arrays) -> Arrays:
        return {names[k]: v.astype(dtypes[names[k]], copy=False) for k, v in inputs.items()}

    return feed
