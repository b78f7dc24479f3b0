"""Open Inference Protocol (KServe V2) REST codec: bytes ⇄ ``InferRequest``/``InferResponse``.

This is the server's hot path. The body is parsed once by orjson, binary
tensors become ``np.frombuffer`` views of the body, and every check is a type
test or a C-level set/len operation until one fails; only then is the slower
search for a precise error message run. Whether a request fits a model's
signature is checked by the server, not here: this module checks structure.
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, PayloadTooLarge, RuntimeFailure
from servion.protocol._binary import decode_binary_tensor, encode_binary_tensor
from servion.protocol._fields import (
    body_too_large,
    check_depth,
    describe,
    json_text,
    load_json,
    parse_header_length,
    parse_parameters,
    parse_shape,
    pop_bool,
)
from servion.protocol._json_tensor import decode_json_data, encode_json_data
from servion.protocol.limits import DEFAULT_LIMITS, Limits
from servion.protocol.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

_REQUEST_KEYS: Final = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS: Final = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS: Final = frozenset({"name", "parameters"})
_SORTED_DATATYPES: Final = ", ".join(sorted(NUMPY_OF))
_DUMPS_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY


def decode_infer_request(
    body: bytes, header_length: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> InferRequest:
    """Decode a V2 ``/infer`` body into an :class:`InferRequest`.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (see
    ``parse_header_length``): the size of the JSON part, the rest of the body
    being the binary section. Raises ``InvalidInput`` (400) or
    ``PayloadTooLarge`` (413) with a message that names the offending field.

    >>> decode_infer_request(b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32",'
    ...                      b'"data":[1,2]}]}').inputs[0].data
    array([1, 2], dtype=int32)
    """
    if len(body) > limits.max_body_bytes:
        raise body_too_large(len(body), limits)
    if header_length is None:
        doc = load_json(body, limits)
        binary_start = len(body)
    else:
        if not 0 < header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length} but must be between 1"
                f" and the body length {len(body)}"
            )
        # Slicing copies the JSON part only, which is small; tensors stay in place.
        doc = load_json(body[:header_length], limits)
        binary_start = header_length
    if type(doc) is not dict:
        raise InvalidInput(f"inference request must be a JSON object, got {describe(doc)}")
    if not _REQUEST_KEYS.issuperset(doc):
        _check_extra_keys(doc, _REQUEST_KEYS, 2, limits, "request")

    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput(f"request id must be a string, got {describe(request_id)}")
    parameters = doc.get("parameters")
    binary_default = False
    if parameters is None:
        parameters = {}
    else:
        parameters = parse_parameters(parameters, "request")
        binary_default = pop_bool(parameters, "binary_data_output", "request") or False
    inputs = _decode_inputs(doc.get("inputs"), body, binary_start, header_length, limits)
    outputs = _decode_outputs(doc.get("outputs"), limits)
    return InferRequest(request_id, inputs, outputs, parameters, binary_default)


def _check_extra_keys(
    obj: dict[str, Any], known: frozenset[str], depth: int, limits: Limits, where: str
) -> None:
    """Unknown keys are ignored (clients add their own), but not their nesting."""
    for key in obj.keys() - known:
        check_depth(obj[key], depth, limits, f"{where} field '{key}'")


def _decode_inputs(
    raw: object, body: bytes, binary_start: int, header_length: int | None, limits: Limits
) -> list[InferInput]:
    if type(raw) is not list or not raw:
        if raw is None:
            raise InvalidInput("request has no inputs")
        got = "an empty array" if raw == [] else describe(raw)
        raise InvalidInput(f"request inputs must be a non-empty array of tensors, got {got}")
    if len(raw) > limits.max_inputs:
        raise PayloadTooLarge(
            f"request has {len(raw)} inputs, more than the limit of {limits.max_inputs}",
            limit=limits.max_inputs,
        )
    binary_size = len(body) - binary_start
    offset = 0  # next unread byte of the binary section
    seen: set[str] = set()
    inputs: list[InferInput] = []
    for index, obj in enumerate(raw):
        name, datatype, shape, count, params = _decode_input_header(obj, index, limits)
        if name in seen:
            raise InvalidInput(f"input '{name}' appears more than once")
        seen.add(name)
        size = params.pop("binary_data_size", None)
        if size is None:
            data = obj.get("data")
            if data is None:
                raise InvalidInput(f"input '{name}' has neither data nor binary_data_size")
            arr = decode_json_data(data, datatype, shape, count, name, limits)
        else:
            if "data" in obj:
                raise InvalidInput(f"input '{name}' has both data and binary_data_size")
            if header_length is None:
                raise InvalidInput(
                    f"input '{name}' has binary_data_size but the request has no"
                    " Inference-Header-Content-Length header"
                )
            if type(size) is not int or size < 0:
                raise InvalidInput(
                    f"input '{name}': binary_data_size must be a non-negative integer,"
                    f" got {describe(size)}"
                )
            if offset + size > binary_size:
                raise InvalidInput(
                    f"input '{name}': binary_data_size values add up to at least"
                    f" {offset + size} bytes but the binary section has {binary_size}"
                )
            arr = decode_binary_tensor(
                body, binary_start + offset, size, datatype, shape, count, name
            )
            offset += size
        inputs.append(InferInput(name, datatype, shape, arr, params))
    if offset != binary_size:
        raise InvalidInput(
            f"binary section has {binary_size} bytes but the inputs' binary_data_size"
            f" values add up to {offset}"
        )
    return inputs


def _decode_input_header(
    obj: object, index: int, limits: Limits
) -> tuple[str, str, tuple[int, ...], int, dict[str, Any]]:
    if type(obj) is not dict:
        raise InvalidInput(f"inputs[{index}] must be an object, got {describe(obj)}")
    name = obj.get("name")
    if type(name) is not str or not name:
        raise InvalidInput(_bad_name("inputs", index, obj))
    datatype = obj.get("datatype")
    if type(datatype) is not str or datatype not in NUMPY_OF:
        raise InvalidInput(_unknown_datatype(name, datatype))
    shape, count = parse_shape(obj.get("shape"), name, limits)
    params = obj.get("parameters")
    params = {} if params is None else parse_parameters(params, "input", name)
    if "shared_memory_region" in params:
        raise InvalidInput(f"input '{name}': shared memory inputs are not supported")
    if not _INPUT_KEYS.issuperset(obj):
        _check_extra_keys(obj, _INPUT_KEYS, 4, limits, f"input '{name}'")
    return name, datatype, shape, count, params


def _bad_name(field: str, index: int, obj: dict[str, Any]) -> str:
    if "name" not in obj:
        return f"{field}[{index}] has no name"
    return f"{field}[{index}].name must be a non-empty string, got {describe(obj['name'])}"


def _unknown_datatype(name: str, datatype: object) -> str:
    if datatype is None:
        return f"input '{name}' has no datatype"
    if type(datatype) is not str:
        return f"input '{name}': datatype must be a string, got {describe(datatype)}"
    hint = ""
    if datatype.upper() in NUMPY_OF:
        hint = f" (datatypes are case-sensitive: did you mean {json_text(datatype.upper())}?)"
    return (
        f"input '{name}': unknown datatype {json_text(datatype)}{hint};"
        f" expected one of {_SORTED_DATATYPES}"
    )


def _decode_outputs(raw: object, limits: Limits) -> list[RequestedOutput] | None:
    # An empty list asks for nothing in particular, like an absent one: all outputs.
    if raw is None or raw == []:
        return None
    if type(raw) is not list:
        raise InvalidInput(f"request outputs must be an array, got {describe(raw)}")
    if len(raw) > limits.max_outputs:
        raise PayloadTooLarge(
            f"request asks for {len(raw)} outputs, more than the limit of {limits.max_outputs}",
            limit=limits.max_outputs,
        )
    seen: set[str] = set()
    outputs: list[RequestedOutput] = []
    for index, obj in enumerate(raw):
        if type(obj) is not dict:
            raise InvalidInput(f"outputs[{index}] must be an object, got {describe(obj)}")
        name = obj.get("name")
        if type(name) is not str or not name:
            raise InvalidInput(_bad_name("outputs", index, obj))
        if name in seen:
            raise InvalidInput(f"output '{name}' is requested more than once")
        seen.add(name)
        where = f"output '{name}'"
        params = parse_parameters(obj.get("parameters"), "output", name)
        binary = pop_bool(params, "binary_data", where)
        classification = params.pop("classification", 0)
        if type(classification) is not int or classification < 0:
            raise InvalidInput(
                f"{where}: classification must be a non-negative integer,"
                f" got {describe(classification)}"
            )
        if "shared_memory_region" in params:
            raise InvalidInput(f"{where}: shared memory outputs are not supported")
        if not _OUTPUT_KEYS.issuperset(obj):
            _check_extra_keys(obj, _OUTPUT_KEYS, 4, limits, where)
        outputs.append(RequestedOutput(name, binary, params, classification))
    return outputs


def encode_infer_response(
    response: InferResponse,
    requested: list[RequestedOutput] | None = None,
    binary_default: bool = False,
) -> tuple[bytes, int | None]:
    """Encode a V2 response body; return it with its JSON header length.

    ``requested`` (the request's ``outputs``) selects and orders the outputs
    and may mark each binary; unmarked ones use ``binary_default`` (the
    request's ``binary_data_output``). The header length is None when no
    output is binary; otherwise send it as ``Inference-Header-Content-Length``.
    Raises ``RuntimeFailure`` if a requested output is missing, and
    ``InvalidInput`` if a BYTES output that is not UTF-8 was asked for as JSON.

    >>> import numpy as np
    >>> out = InferOutput.of("y", np.array([1.5], np.float32))
    >>> encode_infer_response(InferResponse("m", "1", None, [out]))
    (b'{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[1.5]}]}', None)
    """  # noqa: E501
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        doc["model_version"] = response.model_version
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for output, binary in _select_outputs(response.outputs, requested, binary_default):
        _check_output(output)
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if binary:
            raw = encode_binary_tensor(output.data, output.datatype)
            chunks.append(raw)
            entry["parameters"] = {**(output.parameters or {}), "binary_data_size": len(raw)}
        else:
            if output.parameters:
                entry["parameters"] = output.parameters
            entry["data"] = encode_json_data(output.data, output.datatype, output.name)
        entries.append(entry)
    doc["outputs"] = entries
    try:
        header = orjson.dumps(doc, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:  # e.g. a parameter value orjson cannot write
        raise RuntimeFailure(f"response cannot be encoded as JSON: {exc}") from None
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _select_outputs(
    outputs: list[InferOutput], requested: list[RequestedOutput] | None, binary_default: bool
) -> list[tuple[InferOutput, bool]]:
    if requested is None:
        return [(output, binary_default) for output in outputs]
    by_name = {output.name: output for output in outputs}
    selected = []
    for wanted in requested:
        output = by_name.get(wanted.name)
        if output is None:
            raise RuntimeFailure(f"the model did not produce requested output '{wanted.name}'")
        selected.append((output, binary_default if wanted.binary is None else wanted.binary))
    return selected


def _check_output(output: InferOutput) -> None:
    """A runtime bug must become a 500, not a response the client misreads."""
    if output.datatype not in NUMPY_OF:
        raise RuntimeFailure(f"output '{output.name}' has unknown datatype {output.datatype!r}")
    if output.data.size != math.prod(output.shape):
        raise RuntimeFailure(
            f"output '{output.name}' declares shape {list(output.shape)} but holds"
            f" {output.data.size} elements"
        )


def encode_error(message: str) -> bytes:
    """The protocol's error body.

    >>> encode_error("unknown model 'm'")
    b'{"error":"unknown model \\'m\\'"}'
    """
    return orjson.dumps({"error": message})


__all__ = [
    "decode_infer_request",
    "encode_error",
    "encode_infer_response",
    "parse_header_length",
]
