"""Tensor ``data`` in JSON form: list (flat or nested) → numpy, and back.

The common case, a flat list of numbers, costs one ``set(map(type, ...))`` and
one ``np.array``; the element-by-element search for *what* is wrong runs only
after a cheap check has already failed. Element types are strict, as in
Triton: integers only for INT/UINT, numbers (not booleans, not strings) for
FP, booleans for BOOL, strings for BYTES.
"""

from __future__ import annotations

import math
from array import array
from itertools import chain
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput
from servion.protocol._fields import describe, json_type
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
# JSON cannot carry Infinity, so a value past the type's range is refused
# rather than silently turned into inf.
_FP16_MAX: Final = float(np.finfo(np.float16).max)
_FP32_MAX: Final = float(np.finfo(np.float32).max)
_INT_RANGE: Final[dict[str, tuple[int, int]]] = {
    dt: (int(np.iinfo(dtype.str).min), int(np.iinfo(dtype.str).max))
    for dt, dtype in NUMPY_OF.items()
    if dtype.kind in "iu"
}
# numpy >= 2 raises OverflowError for an out-of-range Python int; 1.26 wraps it.
_NUMPY_CHECKS_INT_RANGE: Final = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def decode_json_data(
    data: object, datatype: str, shape: Shape, count: int, name: str, limits: Limits
) -> npt.NDArray[Any]:
    """Turn an input's JSON ``data`` into an array of ``shape`` and ``datatype``."""
    if type(data) is not list:
        raise InvalidInput(f"input '{name}': data must be an array, got {json_type(data)}")
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
    return _CONVERT[datatype](flat, datatype, name).reshape(shape)


def _flatten_nested(data: list[Any], shape: Shape, name: str, limits: Limits) -> list[Any]:
    """Check nested ``data`` is rectangular with exactly ``shape``; return it flat."""
    if 3 + len(shape) > limits.max_json_depth:
        raise InvalidInput(
            f"input '{name}': nested data is deeper than {limits.max_json_depth} levels"
        )
    if not shape or len(data) != shape[0]:
        raise _shape_mismatch(name, shape, 0, len(data))
    level = data
    for axis in range(1, len(shape)):
        dim = shape[axis]
        for item in level:
            if type(item) is not list or len(item) != dim:
                got = len(item) if type(item) is list else json_type(item)
                raise _shape_mismatch(name, shape, axis, got)
        level = list(chain.from_iterable(level))
    return level


def _shape_mismatch(name: str, shape: Shape, axis: int, got: object) -> InvalidInput:
    return InvalidInput(
        f"input '{name}': nested data does not match shape {list(shape)}: dimension {axis}"
        f" should have length {shape[axis] if axis < len(shape) else 'none'}, got {got}"
    )


def _raise_bad_element(flat: list[Any], datatype: str, name: str) -> None:
    allowed = _ALLOWED[datatype]
    for value in flat:
        if type(value) not in allowed:
            if datatype in _INT_RANGE and type(value) is float and value.is_integer():
                # orjson parses integers past the 64-bit range as floats.
                raise _out_of_range(name, datatype, value)
            raise InvalidInput(
                f"input '{name}': {datatype} data must hold {_WANTED[datatype]},"
                f" got {json_type(value)} {describe(value)}"
            )


def _out_of_range(name: str, datatype: str, value: object) -> InvalidInput:
    return InvalidInput(f"input '{name}': value {describe(value)} is out of range for {datatype}")


def _to_float32(flat: list[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    # array("f") packs in C without numpy's overflow warning; a value past
    # float32's range becomes inf. JSON has no inf, so any inf means "out of
    # range". The dot product is a cheap all-finite test, but it can overflow
    # on large valid values too, so a non-finite result is confirmed per element.
    try:
        arr = np.frombuffer(array("f", flat), dtype=np.float32)
    except OverflowError:  # an integer too large even for a double
        raise _out_of_range(name, "FP32", _first_overflow(flat)) from None
    if not math.isfinite(arr.dot(arr)) and not np.isfinite(arr).all():
        raise _out_of_range(name, "FP32", next(v for v in flat if abs(v) > _FP32_MAX))
    return arr


def _to_float(flat: list[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    if datatype == "FP16" and flat and (max(flat) > _FP16_MAX or min(flat) < -_FP16_MAX):
        raise _out_of_range(name, datatype, next(v for v in flat if abs(v) > _FP16_MAX))
    try:
        return np.array(flat, dtype=NUMPY_OF[datatype])
    except OverflowError:
        raise _out_of_range(name, datatype, _first_overflow(flat)) from None


def _to_int(flat: list[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    if not _NUMPY_CHECKS_INT_RANGE:
        _check_int_range(flat, datatype, name)
    try:
        return np.array(flat, dtype=NUMPY_OF[datatype])
    except OverflowError:
        _check_int_range(flat, datatype, name)
        raise  # unreachable: the range check names the value numpy refused


def _check_int_range(flat: list[Any], datatype: str, name: str) -> None:
    low, high = _INT_RANGE[datatype]
    for value in flat:
        if not low <= value <= high:
            raise _out_of_range(name, datatype, value)


def _first_overflow(flat: list[Any]) -> object:
    """The first element too large for a double (only huge integers are)."""
    for value in flat:
        try:
            float(value)
        except OverflowError:
            return value
    return None


def _to_bytes(flat: list[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    out = np.empty(len(flat), dtype=object)
    out[:] = [text.encode() for text in flat]
    return out


def _to_bool(flat: list[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    return np.array(flat, dtype=np.bool_)


_Converter: TypeAlias = Callable[[list[Any], str, str], npt.NDArray[Any]]
_CONVERT: Final[dict[str, _Converter]] = {
    **{dt: _to_int for dt in _INT_RANGE},
    "FP16": _to_float,
    "FP32": _to_float32,
    "FP64": _to_float,
    "BOOL": _to_bool,
    "BYTES": _to_bytes,
}


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
