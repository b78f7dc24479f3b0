"""Plain value objects for one inference call, shared by the REST and gRPC adapters.

These are deliberately not pydantic models: they are built once per request on
the hot path, so they are slotted dataclasses whose fields are already
validated by the codec that builds them (``protocol/codec.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy.typing as npt

from servion.datatypes import datatype_of

Parameters: TypeAlias = dict[str, Any]
"""A flat ``parameters`` object: each value is a str, int, float or bool."""

Shape: TypeAlias = tuple[int, ...]


@dataclass(slots=True, eq=False)
class InferInput:
    """One decoded input tensor.

    ``data`` already has ``shape`` and the numpy dtype of ``datatype``
    (``servion.datatypes.NUMPY_OF``); BYTES tensors are ``object`` arrays of
    ``bytes``. Tensors that arrived in the binary section are read-only views
    into the request body (no copy); copy them if the runtime must write.
    ``parameters`` no longer holds ``binary_data_size``, which the codec consumed.

    >>> import numpy as np
    >>> InferInput("x", "FP32", (1,), np.zeros(1, np.float32), {}).shape
    (1,)
    """

    name: str
    datatype: str
    shape: Shape
    data: npt.NDArray[Any]
    parameters: Parameters = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, data: npt.NDArray[Any]) -> InferInput:
        """Build an input whose datatype and shape are taken from ``data``."""
        return cls(name, datatype_of(data.dtype), data.shape, data)


@dataclass(slots=True, eq=False)
class RequestedOutput:
    """One entry of the request's ``outputs`` list.

    ``binary`` is the output's own ``binary_data`` flag, or None when the
    request did not say (then the request-level default applies).
    ``classification`` is the requested top-N count (0 = plain tensor).
    ``parameters`` holds any other output parameters, untouched.

    >>> RequestedOutput("y", binary=True).binary
    True
    """

    name: str
    binary: bool | None = None
    parameters: Parameters = field(default_factory=dict)
    classification: int = 0


@dataclass(slots=True, eq=False)
class InferRequest:
    """A decoded, structurally valid inference request.

    Whether the inputs match a model's signature is checked by the server, not
    here. ``outputs`` is None when the client did not restrict the outputs.
    ``binary_output_default`` is the request's ``binary_data_output`` parameter
    (False when absent), already removed from ``parameters``.

    >>> InferRequest(None, [], None, {}, False).outputs is None
    True
    """

    id: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None
    parameters: Parameters
    binary_output_default: bool = False


@dataclass(slots=True, eq=False)
class InferOutput:
    """One output tensor produced by a model.

    ``datatype`` decides the wire form; ``data`` is converted to that
    datatype's little-endian dtype when it differs. Use :meth:`of` to derive
    ``datatype`` and ``shape`` from the array.

    >>> import numpy as np
    >>> InferOutput.of("y", np.zeros((2, 3), np.float32)).datatype
    'FP32'
    """

    name: str
    datatype: str
    shape: Shape
    data: npt.NDArray[Any]
    parameters: Parameters | None = None

    @classmethod
    def of(cls, name: str, data: npt.NDArray[Any]) -> InferOutput:
        """Build an output whose datatype and shape are taken from ``data``."""
        return cls(name, datatype_of(data.dtype), data.shape, data)


@dataclass(slots=True, eq=False)
class InferResponse:
    """A model's answer, ready for ``encode_infer_response``.

    ``model_version`` and ``id`` are omitted from the JSON when None.

    >>> InferResponse("m", "1", None, []).model_name
    'm'
    """

    model_name: str
    model_version: str | None
    id: str | None
    outputs: list[InferOutput]
    parameters: Parameters | None = None


__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "Parameters",
    "RequestedOutput",
    "Shape",
]
