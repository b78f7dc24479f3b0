"""Tensors in the binary section (Triton's binary tensor data extension).

Fixed-size tensors are ``np.frombuffer`` views into the request body: no copy,
read-only. BYTES tensors are 4-byte little-endian length-prefixed elements and
must be copied out into an ``object`` array of ``bytes``.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput
from servion.protocol.types import Shape

_LENGTH: Final = struct.Struct("<I")
_BOOL_BYTES: Final = np.dtype(np.uint8)


def decode_binary_tensor(
    body: bytes, offset: int, size: int, datatype: str, shape: Shape, count: int, name: str
) -> npt.NDArray[Any]:
    """Read one input of ``size`` bytes starting at ``body[offset]``."""
    if datatype == "BYTES":
        return _decode_bytes(body, offset, size, count, name).reshape(shape)
    dtype = NUMPY_OF[datatype]
    expected = count * dtype.itemsize
    if size != expected:
        raise InvalidInput(
            f"input '{name}': binary_data_size is {size} bytes but shape {list(shape)} of"
            f" {datatype} needs {expected}"
        )
    if count == 0:
        return np.empty(shape, dtype)
    # A read-only view of the body, already shaped: no copy. (Positional
    # arguments: numpy's keyword parsing costs more than the call itself.)
    arr: npt.NDArray[Any] = np.ndarray(shape, dtype, body, offset)
    # Any byte other than 0/1 would make a BOOL that is neither True nor False.
    if datatype == "BOOL" and arr.view(_BOOL_BYTES).max() > 1:
        raise InvalidInput(f"input '{name}': BOOL binary data must hold only bytes 0 and 1")
    return arr


def _decode_bytes(body: bytes, offset: int, size: int, count: int, name: str) -> npt.NDArray[Any]:
    view = memoryview(body)
    end = offset + size
    pos = offset
    items: list[bytes] = []
    unpack = _LENGTH.unpack_from
    for index in range(count):
        if pos + 4 > end:
            raise InvalidInput(
                f"input '{name}': BYTES binary data ends inside the length of element {index}"
                f" ({count} elements expected)"
            )
        (length,) = unpack(view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInput(
                f"input '{name}': BYTES element {index} claims {length} bytes, past the end of"
                " its binary data"
            )
        items.append(bytes(view[pos : pos + length]))
        pos += length
    if pos != end:
        raise InvalidInput(
            f"input '{name}': BYTES binary data has {end - pos} bytes left over after"
            f" {count} elements"
        )
    out = np.empty(count, object)
    out[:] = items
    return out


def encode_binary_tensor(arr: npt.NDArray[Any], datatype: str) -> bytes | memoryview:
    """Raw little-endian, row-major bytes of an output tensor.

    Returns a memoryview over the array when it is already contiguous and of
    the right dtype, so the one copy is the final ``b"".join`` of the body.
    """
    if datatype == "BYTES":
        return serialize_bytes_elements(arr)
    dtype = NUMPY_OF[datatype]
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr).reshape(-1).data.cast("B")


def serialize_bytes_elements(arr: npt.NDArray[Any]) -> bytes:
    """Length-prefix each element (str is UTF-8 encoded) in row-major order."""
    pack = _LENGTH.pack
    parts: list[bytes] = []
    for value in arr.ravel().tolist():
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, str):
            raw = value.encode()
        elif isinstance(value, bytearray | memoryview):
            raw = bytes(value)
        else:  # same rule as the JSON form: anything else goes by its str()
            raw = str(value).encode()
        parts.append(pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
