"""Property: any tensor survives request decoding and response encoding exactly.

A random datatype, shape and values go client → ``decode_infer_request`` →
``encode_infer_response`` → Triton's ``InferResult``, in JSON (flat or nested)
and binary form, and must come back bit for bit (JSON cannot carry NaN or
Infinity, so those values are only drawn for binary transfers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from protocol_samples import (
    DATATYPES,
    binary_request,
    json_data,
    json_request,
    same_tensor,
    tensor,
)

from servion.datatypes import NUMPY_OF
from servion.protocol import InferOutput, InferResponse, decode_infer_request, encode_infer_response

httpclient = pytest.importorskip("tritonclient.http")

SHAPES = st.lists(st.integers(0, 4), max_size=4).map(tuple)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


@st.composite
def tensors(draw: st.DrawFn, json_safe: bool) -> tuple[str, npt.NDArray[Any]]:
    """A datatype and an array of it; ``json_safe`` leaves out NaN, inf and non-UTF-8."""
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(SHAPES)
    if datatype == "BYTES":
        elements = TEXT.map(str.encode) if json_safe else st.binary(max_size=12)
        return datatype, draw(hnp.arrays(np.dtype(object), shape, elements=elements))
    dtype = NUMPY_OF[datatype]
    if dtype.kind == "f" and json_safe:
        elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
        return datatype, draw(hnp.arrays(dtype, shape, elements=elements))
    return datatype, draw(hnp.arrays(dtype, shape))


def through_server(
    datatype: str, arr: npt.NDArray[Any], body: bytes, header_length: int | None, binary_out: bool
) -> npt.NDArray[Any]:
    (decoded,) = decode_infer_request(body, header_length).inputs
    assert same_tensor(decoded.data, arr, datatype)
    out = InferOutput(decoded.name, decoded.datatype, decoded.shape, decoded.data)
    body, header_length = encode_infer_response(
        InferResponse("m", "1", None, [out]), binary_default=binary_out
    )
    result = httpclient.InferResult.from_response_body(body, False, header_length)
    got: npt.NDArray[Any] = result.as_numpy(decoded.name)
    return got


@settings(max_examples=300, deadline=None)
@given(tensors(json_safe=False))
def test_any_tensor_round_trips_in_binary(drawn: tuple[str, npt.NDArray[Any]]) -> None:
    datatype, arr = drawn
    body, header_length = binary_request([("x", datatype, arr)])

    got = through_server(datatype, arr, body, header_length, binary_out=True)

    assert same_tensor(got, arr, datatype)


@settings(max_examples=300, deadline=None)
@given(tensors(json_safe=True), st.booleans(), st.booleans())
def test_any_json_safe_tensor_round_trips_in_json(
    drawn: tuple[str, npt.NDArray[Any]], nested: bool, binary_out: bool
) -> None:
    datatype, arr = drawn
    data = json_data(arr, datatype, nested=nested and arr.ndim > 0)
    body = json_request(tensor("x", datatype, list(arr.shape), data))

    got = through_server(datatype, arr, body, None, binary_out)

    if datatype == "BYTES" and not binary_out:  # the client returns JSON strings as str
        got = np.array([v.encode() for v in got.ravel().tolist()] or [], dtype=object)
        got = got.reshape(arr.shape)
    assert same_tensor(got, arr, datatype)
