"""encode_infer_response: JSON and binary outputs, output selection, error bodies."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from protocol_samples import DATATYPES, binary_data, json_data, same_tensor, sample_array

from servion.datatypes import NUMPY_OF
from servion.errors import InvalidInput, RuntimeFailure
from servion.protocol import (
    InferOutput,
    InferResponse,
    RequestedOutput,
    encode_error,
    encode_infer_response,
)


def response(*outputs: InferOutput, **fields: Any) -> InferResponse:
    return InferResponse(
        fields.get("model_name", "m"),
        fields.get("model_version", "3"),
        fields.get("id"),
        list(outputs),
        fields.get("parameters"),
    )


@pytest.mark.parametrize("datatype", DATATYPES)
def test_json_output_is_flat_row_major_data(datatype: str) -> None:
    arr = sample_array(datatype, (2, 3))

    body, header_length = encode_infer_response(response(InferOutput("y", datatype, (2, 3), arr)))

    assert header_length is None
    (out,) = orjson.loads(body)["outputs"]
    assert out == {"name": "y", "datatype": datatype, "shape": [2, 3], "data": out["data"]}
    if datatype.startswith("FP"):
        # Shortest text that parses back to the same FP16/FP32 value, not the
        # widened double's digits: compare after parsing at the tensor's width.
        decoded = np.array(out["data"], dtype=NUMPY_OF[datatype]).reshape(2, 3)
        assert same_tensor(decoded, arr, datatype)
    else:
        assert out["data"] == json_data(arr, datatype)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_output_is_raw_little_endian_bytes_after_the_json(datatype: str) -> None:
    arr = sample_array(datatype, (3, 2))

    body, header_length = encode_infer_response(
        response(InferOutput("y", datatype, (3, 2), arr)), binary_default=True
    )

    assert header_length is not None
    header = orjson.loads(body[:header_length])
    raw = binary_data(arr, datatype)
    (out,) = header["outputs"]
    assert out == {
        "name": "y",
        "datatype": datatype,
        "shape": [3, 2],
        "parameters": {"binary_data_size": len(raw)},
    }
    assert body[header_length:] == raw


def test_response_carries_model_version_id_and_parameters() -> None:
    out = InferOutput.of("y", np.zeros(1, np.int32))
    doc = orjson.loads(encode_infer_response(response(out, id="r-1", parameters={"seq": 4}))[0])
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("m", "3", "r-1")
    assert doc["parameters"] == {"seq": 4}


def test_absent_version_and_id_are_left_out() -> None:
    out = InferOutput.of("y", np.zeros(1, np.int32))
    doc = orjson.loads(encode_infer_response(response(out, model_version=None))[0])
    assert set(doc) == {"model_name", "outputs"}


def test_requested_outputs_select_order_and_form() -> None:
    a = InferOutput.of("a", np.arange(3, dtype=np.int64))
    b = InferOutput.of("b", np.array([1.5, 2.5], np.float32))
    c = InferOutput.of("c", np.array([True]))
    requested = [RequestedOutput("c", binary=True), RequestedOutput("a")]

    body, header_length = encode_infer_response(response(a, b, c), requested, False)

    assert header_length is not None
    outs = orjson.loads(body[:header_length])["outputs"]
    assert [o["name"] for o in outs] == ["c", "a"]
    assert outs[0]["parameters"] == {"binary_data_size": 1}
    assert outs[1]["data"] == [0, 1, 2]
    assert body[header_length:] == b"\x01"


def test_request_level_binary_default_applies_where_an_output_does_not_say() -> None:
    a = InferOutput.of("a", np.array([1, 2], np.int8))
    b = InferOutput.of("b", np.array([3, 4], np.int8))
    requested = [RequestedOutput("a", binary=False), RequestedOutput("b")]

    body, header_length = encode_infer_response(response(a, b), requested, True)

    assert header_length is not None
    outs = orjson.loads(body[:header_length])["outputs"]
    assert outs[0]["data"] == [1, 2]
    assert outs[1]["parameters"] == {"binary_data_size": 2}
    assert body[header_length:] == b"\x03\x04"


def test_missing_requested_output_is_a_runtime_failure() -> None:
    out = InferOutput.of("y", np.zeros(1, np.float32))
    with pytest.raises(RuntimeFailure) as info:
        encode_infer_response(response(out), [RequestedOutput("z")])
    assert str(info.value) == "the model did not produce requested output 'z'"


def test_output_that_contradicts_its_declaration_is_a_runtime_failure() -> None:
    wrong_shape = InferOutput("y", "FP32", (2, 3), np.zeros(5, np.float32))
    with pytest.raises(RuntimeFailure) as info:
        encode_infer_response(response(wrong_shape))
    assert str(info.value) == "output 'y' declares shape [2, 3] but holds 5 elements"
    unknown = InferOutput("y", "BF16", (1,), np.zeros(1, np.float32))
    with pytest.raises(RuntimeFailure) as info:
        encode_infer_response(response(unknown))
    assert str(info.value) == "output 'y' has unknown datatype 'BF16'"


def test_unencodable_response_parameters_are_a_runtime_failure() -> None:
    out = InferOutput.of("y", np.zeros(1, np.float32))
    with pytest.raises(RuntimeFailure) as info:
        encode_infer_response(response(out, parameters={"when": object()}))
    assert str(info.value).startswith("response cannot be encoded as JSON: ")


def test_output_parameters_are_kept_next_to_binary_data_size() -> None:
    out = InferOutput("y", "INT8", (1,), np.array([5], np.int8), {"content_type": "np"})
    body, header_length = encode_infer_response(response(out), binary_default=True)
    assert header_length is not None
    (entry,) = orjson.loads(body[:header_length])["outputs"]
    assert entry["parameters"] == {"content_type": "np", "binary_data_size": 1}
    body, _ = encode_infer_response(response(out))
    assert orjson.loads(body)["outputs"][0]["parameters"] == {"content_type": "np"}


@pytest.mark.parametrize("binary", [False, True])
def test_arrays_are_converted_to_the_declared_datatype_and_layout(binary: bool) -> None:
    base = np.arange(12, dtype=">f8").reshape(3, 4)  # big-endian, wrong width
    transposed = base.T  # not C-contiguous
    out = InferOutput("y", "FP32", (4, 3), transposed)

    body, header_length = encode_infer_response(response(out), binary_default=binary)

    want = np.ascontiguousarray(transposed, dtype="<f4")
    if binary:
        assert header_length is not None
        assert body[header_length:] == want.tobytes()
    else:
        assert orjson.loads(body)["outputs"][0]["data"] == want.ravel().tolist()


def test_zero_dimensional_and_empty_outputs_are_encoded() -> None:
    scalar = InferOutput.of("s", np.array(2.5, np.float64))
    empty = InferOutput.of("e", np.zeros((0, 3), np.int16))
    doc = orjson.loads(encode_infer_response(response(scalar, empty))[0])
    assert doc["outputs"][0]["shape"] == [] and doc["outputs"][0]["data"] == [2.5]
    assert doc["outputs"][1]["shape"] == [0, 3] and doc["outputs"][1]["data"] == []
    body, header_length = encode_infer_response(response(scalar, empty), binary_default=True)
    assert header_length is not None
    assert body[header_length:] == struct.pack("<d", 2.5)


def test_non_finite_floats_are_null_in_json_and_exact_in_binary() -> None:
    arr = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    out = InferOutput.of("y", arr)
    assert orjson.loads(encode_infer_response(response(out))[0])["outputs"][0]["data"] == [
        None,
        None,
        None,
        1.0,
    ]
    body, header_length = encode_infer_response(response(out), binary_default=True)
    assert body[header_length:] == arr.tobytes()


def test_bytes_output_accepts_str_and_bytes_elements() -> None:
    arr = np.array(["text", b"raw", "é"], dtype=object)
    out = InferOutput("y", "BYTES", (3,), arr)
    doc = orjson.loads(encode_infer_response(response(out))[0])
    assert doc["outputs"][0]["data"] == ["text", "raw", "é"]
    body, header_length = encode_infer_response(response(out), binary_default=True)
    assert body[header_length:] == (
        b"\x04\x00\x00\x00text\x03\x00\x00\x00raw\x02\x00\x00\x00" + "é".encode()
    )


def test_non_utf8_bytes_output_requested_as_json_is_rejected() -> None:
    out = InferOutput("y", "BYTES", (1,), np.array([b"\xff\xfe"], dtype=object))
    with pytest.raises(InvalidInput) as info:
        encode_infer_response(response(out))
    assert str(info.value) == (
        "output 'y' holds bytes that are not valid UTF-8 and cannot be returned as JSON;"
        " request it with binary_data=true"
    )
    body, header_length = encode_infer_response(response(out), binary_default=True)
    assert body[header_length:] == b"\x02\x00\x00\x00\xff\xfe"


def test_fixed_width_numpy_string_arrays_encode_as_bytes() -> None:
    out = InferOutput.of("y", np.array([b"ab", b"c"]))  # dtype S2
    assert out.datatype == "BYTES"
    doc = orjson.loads(encode_infer_response(response(out))[0])
    assert doc["outputs"][0]["data"] == ["ab", "c"]


def test_encode_error_is_the_protocol_error_body() -> None:
    assert orjson.loads(encode_error('bad "input" é')) == {"error": 'bad "input" é'}
