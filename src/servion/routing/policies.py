"""What an endpoint does, as frozen values routing reads on every request.

Deploy builds an ``EndpointPolicy`` from a deployment spec; routing never sees
the spec itself, so the two can change apart. ``model_refs`` is the one list
of every model version an endpoint names (arms, shadows, cascade stages,
ensemble steps, the fallback), used by the delete guard, the model manager and
the router alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from servion.protocol import InferOutput

RefRole = Literal["arm", "shadow", "stage", "step", "fallback"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One model version an endpoint names."""

    model: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True, slots=True)
class ArmPolicy:
    ref: ModelRef
    weight: float


@dataclass(frozen=True, slots=True)
class ShadowPolicy:
    ref: ModelRef
    sample: float


@dataclass(frozen=True, slots=True)
class CachePolicy:
    max_entries: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class PayloadLogPolicy:
    """Where sampled copies of requests and answers go, and how much of them."""

    sample: float
    """Share of requests logged, chosen by a hash of the request id (in (0, 1])."""
    sink: str
    """``file:///ABSOLUTE/PATH`` (JSON lines) or ``http(s)://...`` (batches POSTed)."""
    max_elements: int
    """Tensors with more elements are logged as summary statistics."""
    buffer: int
    """Events waiting for the sink, at most; beyond that they are dropped and counted."""


@dataclass(frozen=True, slots=True)
class BulkheadPolicy:
    limit: int
    queue: int


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    error_rate: float
    window_s: float
    min_requests: int
    open_s: float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    budget: float


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """A model version that answers instead, or fixed outputs (exactly one is set)."""

    ref: ModelRef | None = None
    outputs: tuple[InferOutput, ...] | None = None


@dataclass(frozen=True, slots=True)
class CascadeStage:
    ref: ModelRef
    min_confidence: float | None
    """Rows this stage answers less surely go on; None for the last stage."""


@dataclass(frozen=True, slots=True)
class CascadePolicy:
    output: str
    """The output whose largest value in a row is that row's confidence."""
    min_confidence: float
    stages: tuple[CascadeStage, ...]


@dataclass(frozen=True, slots=True)
class EnsembleStepPolicy:
    name: str
    ref: ModelRef
    inputs: tuple[tuple[str, str], ...]
    """(model input, source): ``$request.INPUT`` or ``STEP.OUTPUT`` of an earlier step."""


@dataclass(frozen=True, slots=True)
class EnsemblePolicy:
    steps: tuple[EnsembleStepPolicy, ...]
    outputs: tuple[tuple[str, str], ...]
    """(endpoint output, ``STEP.OUTPUT``)."""

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """Everything routing needs to know about one revision of one endpoint."""

    name: str
    revision: int
    arms: tuple[ArmPolicy, ...]
    sticky_header: str | None = None
    shadows: tuple[ShadowPolicy, ...] = ()
    cache: CachePolicy | None = None
    bulkhead: BulkheadPolicy | None = None
    breaker: BreakerPolicy | None = None
    timeout_s: float | None = None
    retries: RetryPolicy | None = None
    fallback: FallbackPolicy | None = None
    cascade: CascadePolicy | None = None
    ensemble: EnsemblePolicy | None = None
    payload_log: PayloadLogPolicy | None = None
    batching: Mapping[str, Any] | None = field(default=None, hash=False)
    """The endpoint's own batching settings for its arms (over the server's defaults)."""

    def model_refs(self) -> list[tuple[RefRole, ModelRef]]:
        """Every model version this endpoint names, with the part it plays."""
        refs: list[tuple[RefRole, ModelRef]] = [("arm", a.ref) for a in self.arms]
        refs += [("shadow", s.ref) for s in self.shadows]
        if self.cascade is not None:
            refs += [("stage", s.ref) for s in self.cascade.stages]
        if self.ensemble is not None:
            refs += [("step", s.ref) for s in self.ensemble.steps]
        if self.fallback is not None and self.fallback.ref is not None:
            refs.append(("fallback", self.fallback.ref))
        return refs

    @property
    def plain(self) -> bool:
        """True when a request only needs an arm chosen (the short path)."""
        return (
            self.cache is None
            and self.bulkhead is None
            and self.breaker is None
            and self.timeout_s is None
            and self.retries is None
            and self.fallback is None
            and self.cascade is None
            and self.ensemble is None
        )
