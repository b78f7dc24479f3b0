"""KServe V1 (TensorFlow Serving style) REST codec.

V1 has no datatypes or shapes: a request is a list of instances that the
model interprets itself, so this codec checks only the envelope, the body
size and the nesting depth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from servion.errors import InvalidInput, RuntimeFailure
from servion.protocol._fields import check_body_size, check_depth, describe, load_json
from servion.protocol.limits import DEFAULT_LIMITS, Limits


def decode_v1_request(body: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Return the instances of a ``:predict`` body.

    Accepts ``{"instances": [...]}``, the TF row form ``{"inputs": [...]}``
    and the TF columnar form ``{"inputs": {"a": [...], "b": [...]}}``, which
    becomes one ``{"a": ..., "b": ...}`` instance per row.

    >>> decode_v1_request(b'{"inputs": {"a": [1, 2], "b": [3, 4]}}')
    [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
    """
    check_body_size(body, limits)
    doc = load_json(body, limits)
    if type(doc) is not dict:
        raise InvalidInput(f"V1 request must be a JSON object, got {describe(doc)}")
    if ("instances" in doc) == ("inputs" in doc):
        raise InvalidInput('V1 request must have exactly one of "instances" or "inputs"')
    key = "instances" if "instances" in doc else "inputs"
    payload = doc[key]
    check_depth(payload, 2, limits, f"V1 request {key}")
    if type(payload) is dict and key == "inputs":
        return _columns_to_rows(payload)
    if type(payload) is not list or not payload:
        raise InvalidInput(f'V1 request "{key}" must be a non-empty array')
    return payload


def _columns_to_rows(columns: dict[str, Any]) -> list[Any]:
    lengths = {len(v) if type(v) is list else -1 for v in columns.values()}
    if not columns or len(lengths) != 1 or -1 in lengths or 0 in lengths:
        raise InvalidInput(
            'V1 columnar "inputs" must map each name to a non-empty array, all of the same length'
        )
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def encode_v1_response(predictions: Any) -> bytes:
    """Encode ``{"predictions": ...}``; numpy arrays and scalars are allowed.

    >>> encode_v1_response(np.array([[1, 2]]))
    b'{"predictions":[[1,2]]}'
    """
    doc = {"predictions": predictions}
    try:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_to_json)
    except orjson.JSONEncodeError:
        pass  # e.g. a non-native byte order, which orjson refuses without asking default
    try:
        return orjson.dumps(doc, default=_to_json)  # every array through .tolist()
    except orjson.JSONEncodeError as exc:
        raise RuntimeFailure(f"predictions cannot be encoded as JSON: {exc}") from None


def _to_json(value: Any) -> Any:
    """orjson's fallback for what it cannot write natively."""
    if isinstance(value, np.ndarray):  # non-contiguous, non-native order, object
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["decode_v1_request", "encode_v1_response"]
