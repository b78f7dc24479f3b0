"""From a deployment spec to the frozen policy routing serves it by."""

from __future__ import annotations

from typing import Any

import numpy as np

from servion.datatypes import NUMPY_OF
from servion.deploy.spec import DeploymentSpec, StaticOutput
from servion.errors import InvalidInput
from servion.protocol import InferOutput
from servion.routing import (
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
    PayloadLogPolicy,
    RetryPolicy,
    ShadowPolicy,
)


def policy_of(spec: DeploymentSpec, revision: int = 0) -> EndpointPolicy:
    """The policy of ``spec`` at ``revision``; InvalidInput when fixed outputs do not
    fit their datatype and shape."""
    return EndpointPolicy(
        name=spec.endpoint,
        revision=revision,
        arms=tuple(ArmPolicy(ModelRef(a.model, a.version), a.weight) for a in spec.models),
        sticky_header=spec.sticky.header if spec.sticky else None,
        shadows=tuple(ShadowPolicy(ModelRef(s.model, s.version), s.sample) for s in spec.shadows),
        cache=CachePolicy(spec.cache.max_entries, spec.cache.ttl_s) if spec.cache else None,
        bulkhead=(
            BulkheadPolicy(spec.concurrency.limit, spec.concurrency.queue)
            if spec.concurrency
            else None
        ),
        breaker=_breaker(spec),
        timeout_s=spec.timeout_ms / 1e3 if spec.timeout_ms else None,
        retries=RetryPolicy(spec.retries.attempts, spec.retries.budget) if spec.retries else None,
        fallback=_fallback(spec),
        cascade=_cascade(spec),
        ensemble=_ensemble(spec),
        payload_log=_payload_log(spec),
        batching=spec.batching.settings() if spec.batching else None,
    )


def _payload_log(spec: DeploymentSpec) -> PayloadLogPolicy | None:
    log = spec.payload_log
    if log is None:
        return None
    return PayloadLogPolicy(log.sample, log.sink, log.max_elements, log.buffer)


def _breaker(spec: DeploymentSpec) -> BreakerPolicy | None:
    cb = spec.circuit_breaker
    if cb is None:
        return None
    return BreakerPolicy(cb.error_rate, cb.window_s, cb.min_requests, cb.open_s)


def _fallback(spec: DeploymentSpec) -> FallbackPolicy | None:
    fallback = spec.fallback
    if fallback is None:
        return None
    if fallback.outputs is not None:
        return FallbackPolicy(outputs=tuple(_static(o) for o in fallback.outputs))
    assert fallback.model is not None and fallback.version is not None
    return FallbackPolicy(ref=ModelRef(fallback.model, fallback.version))


def _static(output: StaticOutput) -> InferOutput:
    """A fixed output as a tensor, checked against its datatype and shape."""
    where = f"fallback.outputs.{output.name}"
    data: list[Any] = output.data
    try:
        if output.datatype == "BYTES":
            values = [v.encode() if isinstance(v, str) else v for v in data]
            if not all(isinstance(v, bytes) for v in values):
                raise ValueError("BYTES data must be strings")
            array = np.array(values, dtype=object)
        else:
            array = np.asarray(data, dtype=NUMPY_OF[output.datatype])
        array = array.reshape(output.shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"{where}: {len(data)} values do not fit {output.datatype} {output.shape}: {exc}"
        ) from None
    return InferOutput(output.name, output.datatype, tuple(output.shape), array)


def _cascade(spec: DeploymentSpec) -> CascadePolicy | None:
    cascade = spec.cascade
    if cascade is None:
        return None
    stages = tuple(
        CascadeStage(ModelRef(s.model, s.version), s.min_confidence) for s in cascade.then
    )
    return CascadePolicy(cascade.output, cascade.min_confidence, stages)


def _ensemble(spec: DeploymentSpec) -> EnsemblePolicy | None:
    ensemble = spec.ensemble
    if ensemble is None:
        return None
    steps = tuple(
        EnsembleStepPolicy(s.name, ModelRef(s.model, s.version), tuple(s.inputs.items()))
        for s in ensemble.steps
    )
    return EnsemblePolicy(steps, tuple(ensemble.outputs.items()))
