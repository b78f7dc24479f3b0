"""Tensor ``data`` in JSON form: list (flat or nested) → numpy, and back.

The common case, a flat list of numbers, costs one ``set(map(type, ...))`` and
one ``struct.pack_into`` straight into a fresh array; the element-by-element
search for *what* is wrong runs only after a cheap check has already failed.
Element types are strict, as in Triton: integers only for INT/UINT, numbers
(not booleans, not strings) for FP, booleans for BOOL, strings for BYTES.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput
from servion.protocol._fields import describe, json_text
from servion.protocol.limits import Limits
from servion.protocol.types import Shape

_NUMBERS: Final = frozenset({int, float})
_ALLOWED: Final[dict[str, frozenset[type]]] = {
    **{dt: frozenset({int}) for dt in NUMPY_OF if dt[0] in "IU"},
    "FP16": _NUMBERS,
    "FP32": _NUMBERS,
    "FP64": _NUMBERS,
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
}
_WANTED: Final[dict[str, str]] = {
    **{dt: "integers" for dt in NUMPY_OF if dt[0] in "IU"},
    "FP16": "numbers",
    "FP32": "numbers",
    "FP64": "numbers",
    "BOOL": "booleans",
    "BYTES": "strings",
}
# struct packs little-endian standard sizes and refuses what does not fit:
# integers out of range and, since JSON has no Infinity, floats that would
# round to inf (a value that rounds down to the type's max is accepted). That
# is the whole range check, at numpy's speed and without numpy's warnings.
_STRUCT_CODE: Final[dict[str, str]] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
_OBJECT: Final = np.dtype(object)


def decode_json_data(
    data: object, datatype: str, shape: Shape, count: int, name: str, limits: Limits
) -> npt.NDArray[Any]:
    """Turn an input's JSON ``data`` into an array of ``shape`` and ``datatype``."""
    if type(data) is not list:
        raise InvalidInput(f"input '{name}': data must be an array, got {describe(data)}")
    flat: list[Any] = data
    types = set(map(type, flat))
    if list in types:
        flat = _flatten_nested(flat, shape, name, limits)
        types = set(map(type, flat))
        if list in types:
            raise InvalidInput(f"input '{name}': data is nested deeper than shape {list(shape)}")
    elif len(flat) != count:
        raise InvalidInput(
            f"input '{name}': data has {len(flat)} elements but shape {list(shape)} needs {count}"
        )
    if not _ALLOWED[datatype].issuperset(types):
        _raise_bad_element(flat, datatype, name)
    return _convert(flat, datatype, name).reshape(shape)


def _flatten_nested(data: list[Any], shape: Shape, name: str, limits: Limits) -> list[Any]:
    """Check nested ``data`` is rectangular with exactly ``shape``; return it flat."""
    if 3 + len(shape) > limits.max_json_depth:
        raise InvalidInput(
            f"input '{name}': nested data is deeper than {limits.max_json_depth} levels"
        )
    if not shape:
        raise InvalidInput(f"input '{name}': data for shape [] must be a flat array of 1 element")
    if len(data) != shape[0]:
        raise _shape_mismatch(name, shape, 0, len(data))
    level = data
    for axis in range(1, len(shape)):
        dim = shape[axis]
        for item in level:
            if type(item) is not list or len(item) != dim:
                got = len(item) if type(item) is list else describe(item)
                raise _shape_mismatch(name, shape, axis, got)
        level = list(chain.from_iterable(level))
    return level


def _shape_mismatch(name: str, shape: Shape, axis: int, got: object) -> InvalidInput:
    return InvalidInput(
        f"input '{name}': nested data does not match shape {list(shape)}: dimension {axis}"
        f" should have length {shape[axis]}, got {got}"
    )


def _raise_bad_element(flat: list[Any], datatype: str, name: str) -> None:
    allowed = _ALLOWED[datatype]
    for value in flat:
        if type(value) not in allowed:
            if datatype[0] in "IU" and type(value) is float and abs(value) >= 2.0**63:
                # orjson parses integers past the 64-bit range as floats.
                raise InvalidInput(
                    f"input '{name}': {json_text(value)} is out of range for {datatype}"
                )
            raise InvalidInput(
                f"input '{name}': {datatype} data must hold {_WANTED[datatype]},"
                f" got {describe(value)}"
            )


def _convert(flat: list[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    """Elements already have the right Python types; pack them into an array."""
    if datatype == "BYTES":
        out = np.empty(len(flat), _OBJECT)
        out[:] = [text.encode() for text in flat]
        return out
    code = _STRUCT_CODE[datatype]
    # Positional numpy arguments: keyword parsing costs more than the call.
    out = np.empty(len(flat), NUMPY_OF[datatype])
    try:
        struct.pack_into(f"<{len(flat)}{code}", out.data, 0, *flat)
    except (OverflowError, struct.error):
        raise InvalidInput(
            f"input '{name}': {json_text(_first_unpackable(flat, code))} is out of range"
            f" for {datatype}"
        ) from None
    return out


def _first_unpackable(flat: list[Any], code: str) -> object:
    single = struct.Struct("<" + code)
    for value in flat:
        try:
            single.pack(value)
        except (OverflowError, struct.error):
            return value
    return None


def encode_json_data(arr: npt.NDArray[Any], datatype: str, name: str) -> Any:
    """Flat, row-major JSON form of an output tensor (an array orjson can dump).

    Non-finite floats come out as ``null``: JSON has no NaN or Infinity, so
    clients that need them must ask for binary output.
    """
    if datatype == "BYTES":
        return [_to_text(value, name) for value in arr.ravel().tolist()]
    dtype = NUMPY_OF[datatype]
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    # ravel() is a view when arr is C-contiguous and a contiguous copy
    # otherwise; orjson needs contiguous, native-order arrays.
    return arr.ravel()


def _to_text(value: object, name: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output '{name}' holds bytes that are not valid UTF-8 and cannot be returned"
                " as JSON; request it with binary_data=true"
            ) from None
    return value if isinstance(value, str) else str(value)
