"""Tensor datatypes of the Open Inference Protocol and their numpy equivalents.

Shared by ``runtime/`` (signatures) and ``protocol/`` (codecs) so the two can
never disagree about what ``FP32`` means. BYTES tensors are numpy ``object``
arrays of ``bytes``.
"""

from __future__ import annotations

from typing import Final

import numpy as np

# Binary forms are little-endian, whatever the host, so the dtypes say so.
NUMPY_OF: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

DATATYPES: Final[frozenset[str]] = frozenset(NUMPY_OF)

_DATATYPE_OF_KIND: Final[dict[tuple[str, int], str]] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


def datatype_of(dtype: np.dtype[np.generic]) -> str:
    """Return the protocol datatype for a numpy dtype.

    >>> datatype_of(np.dtype("float32"))
    'FP32'
    """
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _DATATYPE_OF_KIND[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


__all__ = ["DATATYPES", "NUMPY_OF", "datatype_of"]
