"""A model version loaded in this worker, with its request checks precomputed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from servion.batching import BatchingConfig, DynamicBatcher
from servion.errors import InvalidInput, PayloadTooLarge, quoted
from servion.registry import ModelVersion
from servion.runtime import Runtime, Signature
from servion.server.stats import ModelStats
from servion.types import Arrays


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
    runtime: Runtime
    config: BatchingConfig
    stats: ModelStats = field(default_factory=ModelStats)

    def __post_init__(self) -> None:
        self.name = self.meta.name
        self.version = self.meta.version
        self.signature = self.runtime.signature()
        self.batched = self.signature.batched
        effective = self.config
        if not self.batched:  # no batch dimension: nothing to merge along
            effective = replace(effective, dynamic=False)
        self.max_batch_size = effective.max_batch_size
        self.batcher = DynamicBatcher(
            self.runtime.predict, effective, self.meta.label, self.stats.record_execution
        )
        self._checks = _checks(self.signature)
        self._expected = sorted(self._checks)
        self.output_order = [s.name for s in self.signature.outputs]
        self.output_names = frozenset(self.output_order)

    def validate(self, inputs: Sequence[Any]) -> tuple[Arrays, int]:
        """Check decoded inputs against the signature; return them by name and the batch size."""
        arrays: Arrays = {}
        batch = -1
        for tensor in inputs:
            check = self._checks.get(tensor.name)
            if check is None:
                raise InvalidInput(
                    f"unknown input {quoted(tensor.name)} for model '{self.name}': "
                    f"expected {self._expected}"
                )
            shape = tensor.shape
            if tensor.datatype != check.datatype:
                raise InvalidInput(
                    f"input '{tensor.name}' has datatype {tensor.datatype}, "
                    f"model '{self.name}' expects {check.datatype}"
                )
            if len(shape) != check.ndim or any(shape[i] != d for i, d in check.fixed):
                want = next(s.shape for s in self.signature.inputs if s.name == tensor.name)
                raise InvalidInput(
                    f"input '{tensor.name}' has shape {list(shape)}, "
                    f"model '{self.name}' expects {list(want)} (-1: any size)"
                )
            if self.batched:
                if batch >= 0 and shape[0] != batch:
                    raise InvalidInput("all inputs must have the same batch size (first dimension)")
                batch = shape[0]
            arrays[tensor.name] = tensor.data
        if len(arrays) != len(self._checks):
            missing = sorted(set(self._checks) - set(arrays))
            raise InvalidInput(f"missing input(s) {missing} for model '{self.name}'")
        if self.batched and batch > self.max_batch_size:
            raise PayloadTooLarge(
                f"batch size {batch} exceeds the limit of {self.max_batch_size} "
                f"for model '{self.name}'",
                limit=self.max_batch_size,
            )
        return arrays, max(batch, 1)

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
        """The same loaded runtime under new batching settings; the old queue is run first."""
        self.batcher.drain()
        return LoadedModel(self.meta, self.runtime, config, self.stats)
