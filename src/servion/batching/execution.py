"""One execution of a batch: merge the requests, run the model once, split exactly.

Pure computation with no event-loop state, so it runs inline or in a thread alike.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from servion.errors import InvalidInput, ModelFailed, RuntimeFailure, ServionError
from servion.types import Arrays

log = logging.getLogger("servion.batching")

Predict = Callable[[Arrays, Sequence[str] | None], Arrays]


class Trace(Protocol):
    """A traced request as the batcher sees it; times are ``time.perf_counter_ns``.

    The server implements it with OpenTelemetry: batching stays free of it, and an
    untraced request (``None``) costs the batcher one comparison.
    """

    def queued(self, enqueued_ns: int, started_ns: int) -> None:
        """The request waited from ``enqueued_ns`` until its batch started."""

    def executed(
        self,
        label: str,
        batch: Sequence[Trace],
        started_ns: int,
        executions: Sequence[tuple[int, int]],
        error: ServionError | None,
    ) -> None:
        """One batch carrying the traced requests ``batch`` ran: (rows, ns) per execution."""


@dataclass(frozen=True, slots=True)
class Job:
    """What one queued request contributes to a batch."""

    arrays: Arrays
    rows: int
    outputs: Sequence[str] | None
    trace: Trace | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's share of an execution: its rows of every output, or its error."""

    results: Arrays | None
    error: ServionError | None
    infer_ns: int


@dataclass(frozen=True, slots=True)
class Report:
    """What the executions of one batch did, for the batcher's statistics."""

    outcomes: list[Outcome]
    executions: list[tuple[int, int]]
    """(rows, ns) of each model execution it took."""
    splittable: bool
    """False when the model's outputs have no batch dimension."""


def model_failure(label: str, exc: BaseException) -> ModelFailed:
    """What the caller will hear when a model fails: no internals. Not logged yet: which
    request it failed is known where the answer goes back (``reported``)."""
    return ModelFailed(label, exc)


def reported(error: BaseException, request_id: str | None) -> BaseException:
    """``error`` as the caller hears it. A model's failure is logged here, once, with the
    whole story (type, message, trace) under the request's id (a new one when the request
    has none), and the caller hears that id alone."""
    if not isinstance(error, ModelFailed):
        return error
    request_id = request_id or uuid.uuid4().hex[:16]
    log.error(
        "model_failed",
        extra={"model": error.label, "request_id": request_id, "error": type(error.cause).__name__},
        exc_info=error.cause,
    )
    return RuntimeFailure(f"{error.message} (request id {request_id})")


def run_alone(predict: Predict, job: Job, label: str) -> tuple[Outcome, tuple[int, int]]:
    """Run one request by itself; a model error becomes that request's error only."""
    t0 = time.perf_counter_ns()
    try:
        results = predict(job.arrays, job.outputs)
    except InvalidInput as exc:  # the runtime says the input is wrong: the caller's fault
        return Outcome(None, exc, 0), (job.rows, time.perf_counter_ns() - t0)
    except Exception as exc:  # the model's own code may raise anything
        return Outcome(None, model_failure(label, exc), 0), (job.rows, time.perf_counter_ns() - t0)
    spent = time.perf_counter_ns() - t0
    return Outcome(results, None, spent), (job.rows, spent)


def run_batch(predict: Predict, jobs: list[Job], label: str) -> Report:
    """Run ``jobs`` as one execution and give each caller exactly its own rows, in order.

    When the merged execution fails, or its outputs cannot be split by rows,
    each request runs alone, so one bad request never fails its neighbours.
    """
    if len(jobs) == 1:
        outcome, execution = run_alone(predict, jobs[0], label)
        return Report([outcome], [execution], True)
    arrays = {n: np.concatenate([j.arrays[n] for j in jobs]) for n in jobs[0].arrays}
    total = sum(j.rows for j in jobs)
    t0 = time.perf_counter_ns()
    try:
        results = predict(arrays, _union(jobs))
    except Exception:
        return _each_alone(predict, jobs, label, splittable=True)
    spent = time.perf_counter_ns() - t0
    if any(np.ndim(v) == 0 or len(v) != total for v in results.values()):
        return _each_alone(predict, jobs, label, splittable=False)
    outcomes = []
    offset = 0
    for job in jobs:
        end = offset + job.rows
        outcomes.append(Outcome({k: v[offset:end] for k, v in results.items()}, None, spent))
        offset = end
    return Report(outcomes, [(total, spent)], True)


def _each_alone(predict: Predict, jobs: list[Job], label: str, splittable: bool) -> Report:
    pairs = [run_alone(predict, job, label) for job in jobs]
    return Report([p[0] for p in pairs], [p[1] for p in pairs], splittable)


def _union(jobs: list[Job]) -> list[str] | None:
    if any(j.outputs is None for j in jobs):
        return None
    names: dict[str, None] = {}
    for job in jobs:
        names.update(dict.fromkeys(job.outputs or ()))
    return list(names)
