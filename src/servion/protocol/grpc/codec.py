"""Open Inference Protocol gRPC codec: ``ModelInferRequest`` ⇄ ``InferRequest`` and
``InferResponse`` → ``ModelInferResponse``.

The same value objects as the REST codec, so validation, batching and the
runtimes are shared; only the wire differs. Inputs arrive either typed
(``contents``, one repeated field per datatype) or raw (``raw_input_contents``:
little-endian bytes, BYTES elements length-prefixed as in the binary REST
extension); raw inputs become ``np.frombuffer`` views, no copy. Outputs always
leave raw, as Triton sends them: one ``raw_output_contents`` entry per output.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, PayloadTooLarge, RuntimeFailure
from servion.protocol._binary import decode_binary_tensor, encode_binary_tensor
from servion.protocol._fields import parse_shape
from servion.protocol.grpc import grpc_service_pb2 as pb
from servion.protocol.limits import Limits
from servion.protocol.types import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
)

CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed ``contents`` field that carries each datatype (FP16 has none: send it raw)."""

_ALL_FIELDS: Final = tuple(sorted(set(CONTENTS_FIELD.values())))
_SORTED_DATATYPES: Final = ", ".join(sorted(NUMPY_OF))


def decode_model_infer(request: pb.ModelInferRequest, limits: Limits) -> InferRequest:
    """Check a ``ModelInferRequest`` and decode its tensors.

    Raises ``InvalidInput`` (INVALID_ARGUMENT) or ``PayloadTooLarge``
    (RESOURCE_EXHAUSTED) with the same messages as the REST codec where the
    two protocols agree.
    """
    count = len(request.inputs)
    if count == 0:
        raise InvalidInput("request has no inputs")
    if count > limits.max_inputs:
        raise PayloadTooLarge(
            f"request has {count} inputs, more than the limit of {limits.max_inputs}",
            limit=limits.max_inputs,
        )
    raw = request.raw_input_contents
    if raw and len(raw) != count:
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has {count} inputs:"
            " send every input raw, or none"
        )
    inputs: list[InferInput] = []
    seen: set[str] = set()
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{index}] has no name")
        if name in seen:
            raise InvalidInput(f"input '{name}' appears more than once")
        seen.add(name)
        datatype = tensor.datatype
        if datatype not in NUMPY_OF:
            raise InvalidInput(
                f"input '{name}': unknown datatype '{datatype}';"
                f" expected one of {_SORTED_DATATYPES}"
            )
        shape, elements = parse_shape(list(tensor.shape), name, limits)
        params = _parameters(tensor.parameters)
        if "shared_memory_region" in params:
            raise InvalidInput(f"input '{name}': shared memory inputs are not supported")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{name}' has both contents and raw_input_contents: send one"
                )
            data = raw[index]
            arr = decode_binary_tensor(data, 0, len(data), datatype, shape, elements, name)
        else:
            arr = _from_contents(tensor.contents, datatype, shape, elements, name)
        inputs.append(InferInput(name, datatype, shape, arr, params))
    outputs = _requested_outputs(request, limits)
    params = _parameters(request.parameters)
    params.pop("binary_data_output", None)  # a REST matter: gRPC outputs are always raw
    return InferRequest(request.id or None, inputs, outputs, params)


def _from_contents(
    contents: pb.InferTensorContents, datatype: str, shape: tuple[int, ...], count: int, name: str
) -> npt.NDArray[Any]:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
        )
    for other in _ALL_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidInput(f"input '{name}': {datatype} data goes in {field}, not {other}")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements but {field} has"
            f" {len(values)}"
        )
    if datatype == "BYTES":
        out = np.empty(count, object)
        out[:] = list(values)
        return out.reshape(shape)
    dtype = NUMPY_OF[datatype]
    if datatype in ("INT8", "INT16", "UINT8", "UINT16"):
        # Carried widened in 32-bit fields: every value must fit the narrow type.
        wide = np.array(values, np.int64)
        info = np.iinfo(dtype.type)  # type: ignore[type-var]
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(
                f"input '{name}': a value in {field} is outside the range of {datatype}"
            )
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype).reshape(shape)


def _requested_outputs(
    request: pb.ModelInferRequest, limits: Limits
) -> list[RequestedOutput] | None:
    if not request.outputs:
        return None
    if len(request.outputs) > limits.max_outputs:
        raise PayloadTooLarge(
            f"request asks for {len(request.outputs)} outputs, more than the limit of"
            f" {limits.max_outputs}",
            limit=limits.max_outputs,
        )
    seen: set[str] = set()
    outputs = []
    for index, wanted in enumerate(request.outputs):
        if not wanted.name:
            raise InvalidInput(f"outputs[{index}] has no name")
        if wanted.name in seen:
            raise InvalidInput(f"output '{wanted.name}' is requested more than once")
        seen.add(wanted.name)
        params = _parameters(wanted.parameters)
        params.pop("binary_data", None)
        if "shared_memory_region" in params:
            raise InvalidInput(f"output '{wanted.name}': shared memory outputs are not supported")
        if params.get("classification"):
            raise InvalidInput(f"output '{wanted.name}': classification is not supported")
        outputs.append(RequestedOutput(wanted.name, None, params))
    return outputs


def _parameters(raw: Any) -> Parameters:
    """A protobuf ``map<string, InferParameter>`` as plain Python scalars."""
    if not raw:
        return {}
    params: Parameters = {}
    for key, value in raw.items():
        which = value.WhichOneof("parameter_choice")
        params[key] = getattr(value, which) if which is not None else None
    return params


def encode_model_infer(
    response: InferResponse, requested: list[RequestedOutput] | None
) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` for ``response``, outputs raw, in requested order."""
    out = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    for key, value in (response.parameters or {}).items():
        out.parameters[key].CopyFrom(parameter(value))
    by_name = {o.name: o for o in response.outputs}
    names = [r.name for r in requested] if requested is not None else list(by_name)
    raw: list[bytes] = []
    for name in names:
        output = by_name.get(name)
        if output is None:
            raise RuntimeFailure(f"the model did not produce requested output '{name}'")
        if output.data.size != math.prod(output.shape):
            raise RuntimeFailure(
                f"output '{name}' declares shape {list(output.shape)} but holds"
                f" {output.data.size} elements"
            )
        out.outputs.add(name=name, datatype=output.datatype, shape=output.shape)
        raw.append(bytes(encode_binary_tensor(output.data, output.datatype)))
    out.raw_output_contents.extend(raw)
    return out


def parameter(value: bool | int | float | str) -> pb.InferParameter:
    """One ``InferParameter`` from a Python scalar."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    return pb.InferParameter(string_param=value)
