"""A model version loaded in this worker, with its request checks precomputed, and
the reference count that keeps its runtime alive while anything still uses it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from servion.batching import BatchingConfig, DynamicBatcher, model_failure, request_scheduling
from servion.drift.quality import QualityCheck
from servion.errors import InvalidInput, PayloadTooLarge, RuntimeFailure, quoted
from servion.protocol import InferOutput, InferRequest
from servion.registry import ModelVersion
from servion.runtime import Runtime, Signature
from servion.serving.stats import ModelStats
from servion.types import Arrays

log = logging.getLogger("servion.serving")


class RuntimeHandle:
    """One loaded runtime and the executions that hold it.

    Every view of a model version (its own batching, an endpoint's) shares the
    handle. A replaced or unloaded version is *retired*; its runtime is unloaded
    when the last execution holding it (a queued request, a batch running in a
    thread, a shadow copy) lets go. Counted on the event loop's thread only.
    """

    __slots__ = (
        "execution_ns",
        "label",
        "load_s",
        "memory_bytes",
        "on_unloaded",
        "refs",
        "released",
        "retired",
        "runtime",
        "warmup_s",
    )

    def __init__(self, runtime: Runtime, label: str, execution_ns: float = 0.0) -> None:
        self.runtime = runtime
        self.label = label
        self.execution_ns = execution_ns
        """One execution's cost, measured at warm-up: where the model runs starts from it."""
        self.load_s = 0.0
        self.warmup_s = 0.0
        self.memory_bytes = 0
        """How much the worker's resident memory grew while the model loaded (approximate:
        other threads allocate meanwhile too)."""
        self.refs = 0
        self.retired = False
        self.released = False
        self.on_unloaded: Callable[[float], None] | None = None
        """Told how many seconds the unload took (the metrics count them)."""

    def acquire(self) -> None:
        self.refs += 1

    def release(self) -> None:
        self.refs -= 1
        if self.retired and self.refs == 0:
            self._unload()

    def retire(self) -> None:
        """No new execution will start; unload once the running ones end."""
        self.retired = True
        if self.refs == 0:
            self._unload()

    def _unload(self) -> None:
        if self.released:
            return
        self.released = True
        started = time.perf_counter()
        try:
            self.runtime.unload()
        except Exception:  # a model's own code may raise anything
            log.exception("model_unload_failed", extra={"model": self.label})
        unload_s = time.perf_counter() - started
        log.info("model_unloaded", extra={"model": self.label, "unload_s": round(unload_s, 4)})
        if self.on_unloaded is not None:
            self.on_unloaded(unload_s)


@dataclass(frozen=True, slots=True)
class _InputCheck:
    datatype: str
    ndim: int
    fixed: tuple[tuple[int, int], ...]
    """(axis, size) of every dimension the signature fixes."""


def _checks(signature: Signature) -> dict[str, _InputCheck]:
    return {
        s.name: _InputCheck(
            s.datatype, len(s.shape), tuple((i, d) for i, d in enumerate(s.shape) if d >= 0)
        )
        for s in signature.inputs
    }


@dataclass
class LoadedModel:
    """What the hot path needs about one served model version."""

    meta: ModelVersion
    handle: RuntimeHandle
    config: BatchingConfig
    stats: ModelStats = field(default_factory=ModelStats)

    def __post_init__(self) -> None:
        self.runtime = self.handle.runtime
        self.name = self.meta.name
        self.version = self.meta.version
        self.signature = self.runtime.signature()
        self.batched = self.signature.batched
        effective = self.config
        if not self.batched:  # no batch dimension: nothing to merge along
            effective = replace(effective, dynamic=False)
        if effective.execution == "auto" and not self.runtime.runs_on_loop:
            effective = replace(effective, execution="thread")
        self.max_batch_size = effective.max_batch_size
        self.batcher = DynamicBatcher(
            self.runtime.predict,
            effective,
            self.meta.label,
            self.stats.record_execution,
            hold=(self.handle.acquire, self.handle.release),
            expected_ns=self.handle.execution_ns,
        )
        self._checks = _checks(self.signature)
        self._finite = self.runtime.finite_inputs
        self._expected = sorted(self._checks)
        self.output_order = [s.name for s in self.signature.outputs]
        self.per_row = frozenset(
            s.name for s in self.signature.outputs if self.batched and s.shape and s.shape[0] < 0
        )
        """Outputs with a row per input row: their first dimension is the batch."""
        self.output_names = frozenset(self.output_order)
        self.answered = 0
        """Answers counted for drift sampling (each view counts its own)."""
        self.quality: QualityCheck | None = None
        """The version's data quality ranges and policy (set by the manager from the
        registry; None: nothing to check)."""

    def validate(self, inputs: Sequence[Any]) -> tuple[Arrays, int]:
        """Check decoded inputs against the signature; return them by name and the batch size."""
        arrays: Arrays = {}
        batch = -1
        for tensor in inputs:
            check = self._checks.get(tensor.name)
            if check is None:
                self._refused("*", "extra")  # the client's name is no label value
                raise InvalidInput(
                    f"unknown input {quoted(tensor.name)} for model '{self.name}': "
                    f"expected {self._expected}"
                )
            shape = tensor.shape
            if tensor.datatype != check.datatype:
                self._refused(tensor.name, "type")
                raise InvalidInput(
                    f"input '{tensor.name}' has datatype {tensor.datatype}, "
                    f"model '{self.name}' expects {check.datatype}"
                )
            if len(shape) != check.ndim or any(shape[i] != d for i, d in check.fixed):
                want = next(s.shape for s in self.signature.inputs if s.name == tensor.name)
                self._refused(tensor.name, "shape")
                raise InvalidInput(
                    f"input '{tensor.name}' has shape {list(shape)}, "
                    f"model '{self.name}' expects {list(want)} (-1: any size)"
                )
            if self.batched:
                if batch >= 0 and shape[0] != batch:
                    self._refused(tensor.name, "shape")
                    raise InvalidInput("all inputs must have the same batch size (first dimension)")
                batch = shape[0]
            if (
                self._finite
                and tensor.data.dtype.kind in "fc"
                and not np.isfinite(tensor.data).all()
            ):
                self._refused(tensor.name, "nan" if np.isnan(tensor.data).any() else "inf")
                raise InvalidInput(
                    f"input '{tensor.name}' holds NaN or infinite values;"
                    f" model '{self.name}' takes finite numbers only"
                )
            arrays[tensor.name] = tensor.data
        if len(arrays) != len(self._checks):
            missing = sorted(set(self._checks) - set(arrays))
            if missing:  # else a name came twice: a malformed request, not a data problem
                self.stats.record_quality([(m, "missing", 1) for m in missing], "refused")
            raise InvalidInput(f"missing input(s) {missing} for model '{self.name}'")
        if self.batched and batch > self.max_batch_size:
            raise PayloadTooLarge(
                f"batch size {batch} exceeds the limit of {self.max_batch_size} "
                f"for model '{self.name}'",
                limit=self.max_batch_size,
            )
        return arrays, max(batch, 1)

    def _refused(self, feature: str, check: str) -> None:
        """Count a request the signature refuses as a data quality finding too."""
        self.stats.record_quality([(feature, check, 1)], "refused")

    def check_outputs(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.output_names:
                raise InvalidInput(
                    f"unknown output {quoted(name)} for model '{self.name}': "
                    f"it has {sorted(self.output_names)}"
                )

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.runtime.platform,
            "inputs": [s.to_dict() for s in self.signature.inputs],
            "outputs": [s.to_dict() for s in self.signature.outputs],
        }

    def rebatched(self, config: BatchingConfig) -> LoadedModel:
        """The same loaded runtime under other batching settings (its statistics shared)."""
        return LoadedModel(self.meta, self.handle, config, self.stats)


def _finite(data: Any) -> bool:
    return data.dtype.kind not in "fc" or bool(np.isfinite(data).all())


class Admitted(NamedTuple):
    """A request checked against its model, ready for the batcher."""

    arrays: Arrays
    rows: int
    wanted: list[str] | None
    priority: int
    timeout_us: int


def admit(model: LoadedModel, request: InferRequest) -> Admitted:
    """Check ``request`` against the model's signature and scheduling rules."""
    arrays, rows = model.validate(request.inputs)
    wanted = None
    if request.outputs:
        wanted = [o.name for o in request.outputs]
        model.check_outputs(wanted)
    priority, timeout = request_scheduling(request.parameters) if request.parameters else (0, 0)
    return Admitted(arrays, rows, wanted, priority, timeout)


def outputs_of(
    model: LoadedModel, wanted: list[str] | None, rows: int, results: Arrays
) -> list[InferOutput]:
    """The outputs to answer with, in the order asked for (the signature's by default).

    A model that leaves out an output it declares, or answers a batch with another
    number of rows than it was given, has failed: the caller never sees such an answer.
    """
    outputs = []
    for name in wanted or model.output_order:
        value = results.get(name)
        if value is None:
            raise model_failure(model.meta.label, RuntimeFailure(f"no output {name!r}"))
        array = np.asarray(value)
        if name in model.per_row and (array.ndim == 0 or len(array) != rows):
            shape = list(array.shape)
            problem = RuntimeFailure(f"output {name!r} has shape {shape} for {rows} input rows")
            raise model_failure(model.meta.label, problem)
        outputs.append(InferOutput.of(name, array))
    return outputs


def timed_warmup(runtime: Runtime) -> int:
    """Warm the runtime up, then time one more warm-up: what one execution costs."""
    runtime.warmup()
    started = time.perf_counter_ns()
    runtime.warmup()
    return time.perf_counter_ns() - started
