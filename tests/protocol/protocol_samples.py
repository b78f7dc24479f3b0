"""Sample tensors and hand-built request bodies for the protocol tests.

The bodies are built here independently of the codec (plain orjson, struct),
so a bug in the codec cannot hide behind the same bug in the test's encoder.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from servion.datatypes import NUMPY_OF

DATATYPES = tuple(NUMPY_OF)
"""Every datatype servion speaks: BOOL, UINT8..UINT64, INT8..INT64, FP16/32/64, BYTES."""

_BYTES_VALUES = [b"", b"a", "é€".encode(), b"three", b'{"json": 1}', b"x" * 70]


def sample_array(datatype: str, shape: tuple[int, ...] = (2, 3)) -> npt.NDArray[Any]:
    """A tensor of ``shape`` holding edge values of ``datatype`` (extremes, -0.0, tiny)."""
    count = math.prod(shape)
    dtype = NUMPY_OF[datatype]
    if datatype == "BOOL":
        flags: npt.NDArray[np.bool_] = np.arange(count) % 3 == 0
        return flags.reshape(shape)
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = [_BYTES_VALUES[i % len(_BYTES_VALUES)] for i in range(count)]
        return out.reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype.str)
        pool: list[Any] = [int(info.min), int(info.max), 0, 1, int(info.max) - 1, 7]
    else:
        finfo = np.finfo(dtype.str)
        pool = [0.0, -0.0, 1.5, -2.25, float(finfo.max), float(finfo.tiny), 0.1, -1e-3]
    return np.array([pool[i % len(pool)] for i in range(count)], dtype=dtype).reshape(shape)


def json_data(arr: npt.NDArray[Any], datatype: str, nested: bool = False) -> Any:
    """The JSON ``data`` a client would send for ``arr``."""
    values = arr.tolist() if nested else arr.ravel().tolist()
    if datatype == "BYTES":
        return _decode_nested(values)
    return values


def _decode_nested(values: Any) -> Any:
    if isinstance(values, list):
        return [_decode_nested(v) for v in values]
    assert isinstance(values, bytes)
    return values.decode()


def binary_data(arr: npt.NDArray[Any], datatype: str) -> bytes:
    """The binary-section bytes of ``arr``: raw little-endian or length-prefixed."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in arr.ravel().tolist())
    return arr.astype(NUMPY_OF[datatype]).tobytes()


def json_request(*inputs: dict[str, Any], **fields: Any) -> bytes:
    """A JSON-only request body with the given input objects."""
    return orjson.dumps({**fields, "inputs": list(inputs)})


def tensor(name: str, datatype: str, shape: list[Any], data: Any) -> dict[str, Any]:
    """One JSON input object."""
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def binary_request(
    named: list[tuple[str, str, npt.NDArray[Any]]], **fields: Any
) -> tuple[bytes, int]:
    """A request whose inputs all travel binary; returns (body, header length)."""
    inputs = []
    chunks = []
    for name, datatype, arr in named:
        raw = binary_data(arr, datatype)
        chunks.append(raw)
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    header = orjson.dumps({**fields, "inputs": inputs})
    return header + b"".join(chunks), len(header)


def same_tensor(got: npt.NDArray[Any], want: npt.NDArray[Any], datatype: str) -> bool:
    """Exact equality: same shape, dtype and bytes (so -0.0 and NaN payloads count)."""
    if got.shape != want.shape:
        return False
    if datatype == "BYTES":
        return [_as_bytes(v) for v in got.ravel().tolist()] == [
            _as_bytes(v) for v in want.ravel().tolist()
        ]
    dtype = NUMPY_OF[datatype]
    return got.dtype == dtype and got.tobytes() == want.astype(dtype).tobytes()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    assert isinstance(value, bytes)
    return value
