"""KServe V1 ``:predict``: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

A V1 call is decoded into the same ``InferRequest`` as a V2 one and answered by
the data plane; only the two ends differ.
"""

from __future__ import annotations

import numpy as np
import orjson

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput
from servion.protocol import (
    InferInput,
    InferRequest,
    InferResponse,
    Limits,
    decode_v1_request,
    encode_v1_response,
)
from servion.serving import LoadedModel


def v1_request(model: LoadedModel, body: bytes, limits: Limits) -> InferRequest:
    """V1 instances as a request to a single-input model: one row per instance."""
    instances = decode_v1_request(body, limits)
    if len(model.signature.inputs) != 1:
        raise InvalidInput(f"model '{model.name}' has several inputs: use the V2 protocol")
    spec = model.signature.inputs[0]
    if spec.datatype == "BYTES":
        raise InvalidInput(f"model '{model.name}' takes BYTES: use the V2 protocol")
    try:
        array = np.asarray(instances, dtype=NUMPY_OF[spec.datatype])
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"instances are not a rectangular array of numbers: {exc}") from None
    return InferRequest(None, [InferInput(spec.name, spec.datatype, array.shape, array)], None, {})


def v1_answer(response: InferResponse) -> bytes:
    """One prediction per instance: the value of a single output, else a dict of all."""
    names = [o.name for o in response.outputs]
    columns = [np.asarray(o.data) for o in response.outputs]
    if len(columns) == 1:
        predictions = _plain(columns[0])
    else:
        plain = [_plain(c) for c in columns]
        predictions = [dict(zip(names, values, strict=True)) for values in zip(*plain, strict=True)]
    return encode_v1_response(predictions)


def _plain(array: np.ndarray) -> list[object]:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return list(orjson.loads(orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)))
