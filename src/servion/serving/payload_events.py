"""Payload log events: one request and its answer as a CloudEvents 1.0 JSON document.

Built in the sink's thread, never on the event loop: summarising a large tensor costs
more than answering a small request. Tensors up to ``max_elements`` elements are logged
whole; larger ones as summary statistics, so one big request cannot fill a disk.

>>> from servion.protocol import InferInput
>>> x = InferInput.of("x", np.array([[1.0, 2.0]], np.float32))
>>> tensor(x.name, x.datatype, x.shape, x.data, 8)["data"]
[[1.0, 2.0]]
>>> tensor(x.name, x.datatype, x.shape, x.data, 1)["summary"]["mean"]
1.5
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from servion.protocol import InferRequest, InferResponse

EVENT_TYPE = "io.servion.inference"


@dataclass(frozen=True, slots=True)
class Payload:
    """What the request path hands over: references only, nothing computed yet."""

    endpoint: str
    request_id: str
    time: float
    """Seconds since the epoch when the answer (or the error) was ready."""
    subject: str | None
    request: InferRequest
    response: InferResponse | None
    error: str | None
    status: int
    cached: bool
    max_elements: int


def encode(payload: Payload) -> bytes:
    """The event as one line of JSON (no newline); NaN and infinities become null."""
    return orjson.dumps(cloud_event(payload), default=str)


def cloud_event(payload: Payload) -> dict[str, Any]:
    """The CloudEvents 1.0 envelope around the request, the answer and the error."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": payload.request_id,
        "source": f"servion/{payload.endpoint}",
        "type": EVENT_TYPE,
        "time": rfc3339(payload.time),
        "datacontenttype": "application/json",
    }
    if payload.subject is not None:
        event["subject"] = payload.subject
    limit = payload.max_elements
    event["data"] = {
        "request": _request(payload.request, limit),
        "response": _response(payload.response, limit) if payload.response else None,
        "error": payload.error,
        "status": payload.status,
        "cached": payload.cached,
    }
    return event


def _request(request: InferRequest, limit: int) -> dict[str, Any]:
    logged: dict[str, Any] = {
        "inputs": [tensor(i.name, i.datatype, i.shape, i.data, limit) for i in request.inputs]
    }
    if request.outputs:
        logged["outputs"] = [o.name for o in request.outputs]
    if request.parameters:
        logged["parameters"] = request.parameters
    return logged


def _response(response: InferResponse, limit: int) -> dict[str, Any]:
    logged: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": [tensor(o.name, o.datatype, o.shape, o.data, limit) for o in response.outputs],
    }
    if response.parameters:
        logged["parameters"] = response.parameters
    return logged


def rfc3339(seconds: float) -> str:
    """UTC with microseconds and a ``Z``: ``2025-01-31T12:00:00.123456Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tensor(
    name: str, datatype: str, shape: Sequence[int], data: npt.NDArray[Any], max_elements: int
) -> dict[str, Any]:
    """``{name, datatype, shape, data}``, or ``summary`` instead of ``data`` past the limit."""
    array = np.asarray(data)
    logged: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape)}
    if array.size <= max_elements:
        logged["data"] = _values(array)
    else:
        logged["summary"] = summary(array)
    return logged


def _values(array: npt.NDArray[Any]) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        # BYTES: text as text; anything else is still readable, with replacement marks.
        return np.vectorize(_text, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def summary(array: npt.NDArray[Any]) -> dict[str, Any]:
    """Count, min, max, mean, std and NaNs (NaNs left out of the others); for BYTES the
    count and the lengths of the elements, never their values."""
    count = int(array.size)
    if array.dtype == object or array.dtype.kind == "S":
        lengths = np.fromiter((len(v) for v in array.ravel()), np.int64, count)
        return {
            "count": count,
            "min_length": int(lengths.min()) if count else None,
            "max_length": int(lengths.max()) if count else None,
            "mean_length": float(lengths.mean()) if count else None,
        }
    values = array.ravel().astype(np.float64)
    nan = np.isnan(values)
    kept = values[~nan]
    stats: dict[str, Any] = {"count": count}
    if kept.size:
        stats.update(
            min=float(kept.min()),
            max=float(kept.max()),
            mean=float(kept.mean()),
            std=float(kept.std()),
        )
    else:
        stats.update(min=None, max=None, mean=None, std=None)
    stats["nan"] = int(nan.sum())
    return stats
