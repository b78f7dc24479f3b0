"""The part of an inference call that does not depend on the wire: REST and gRPC
both decode into an ``InferRequest``, pass it through ``admit``, submit it to the
model's batcher, and build their response from ``outputs_of``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from servion.batching import request_scheduling
from servion.protocol import InferOutput, InferRequest
from servion.server.loaded import LoadedModel
from servion.types import Arrays


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


def outputs_of(model: LoadedModel, wanted: list[str] | None, results: Arrays) -> list[InferOutput]:
    """The outputs to answer with, in the order asked for (the signature's by default)."""
    names = wanted or model.output_order
    return [InferOutput.of(n, np.asarray(results[n])) for n in names]
