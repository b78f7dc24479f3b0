"""decode_infer_request on valid requests: every datatype, JSON flat and nested, binary."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from protocol_samples import (
    DATATYPES,
    binary_data,
    binary_request,
    json_data,
    json_request,
    same_tensor,
    sample_array,
    tensor,
)

from servion.datatypes import NUMPY_OF
from servion.protocol import decode_infer_request, parse_header_length


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_json_data_decodes_to_the_exact_tensor(datatype: str, nested: bool) -> None:
    arr = sample_array(datatype)
    body = json_request(tensor("x", datatype, [2, 3], json_data(arr, datatype, nested)))

    request = decode_infer_request(body, None)

    (decoded,) = request.inputs
    assert (decoded.name, decoded.datatype, decoded.shape) == ("x", datatype, (2, 3))
    assert decoded.data.dtype == NUMPY_OF[datatype]
    assert same_tensor(decoded.data, arr, datatype)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_data_decodes_to_the_exact_tensor(datatype: str) -> None:
    arr = sample_array(datatype, (3, 2, 1))
    body, header_length = binary_request([("x", datatype, arr)])

    (decoded,) = decode_infer_request(body, header_length).inputs

    assert decoded.shape == (3, 2, 1)
    assert same_tensor(decoded.data, arr, datatype)
    assert decoded.parameters == {}  # binary_data_size is consumed


@pytest.mark.parametrize("datatype", [dt for dt in DATATYPES if dt != "BYTES"])
def test_binary_tensors_are_read_only_views_of_the_body(datatype: str) -> None:
    body, header_length = binary_request([("x", datatype, sample_array(datatype))])

    (decoded,) = decode_infer_request(body, header_length).inputs

    base: object = decoded.data.base
    assert base is body
    assert not decoded.data.flags.writeable


@pytest.mark.parametrize("shape", [[], [0], [2, 0], [0, 3, 4], [1, 1, 1, 1]])
@pytest.mark.parametrize("datatype", ["FP32", "BYTES", "BOOL"])
def test_scalar_and_empty_shapes_decode_in_both_forms(datatype: str, shape: list[int]) -> None:
    arr = sample_array(datatype, tuple(shape))
    json_body = json_request(tensor("x", datatype, shape, json_data(arr, datatype)))
    body, header_length = binary_request([("x", datatype, arr)])

    from_json = decode_infer_request(json_body, None).inputs[0].data
    from_binary = decode_infer_request(body, header_length).inputs[0].data

    assert same_tensor(from_json, arr, datatype)
    assert same_tensor(from_binary, arr, datatype)


def test_json_and_binary_inputs_mix_and_keep_their_order() -> None:
    first = sample_array("INT16", (2, 2))
    third = sample_array("BYTES", (3,))
    raw_first, raw_third = binary_data(first, "INT16"), binary_data(third, "BYTES")
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "INT16", "shape": [2, 2],
                 "parameters": {"binary_data_size": len(raw_first)}},
                tensor("b", "FP64", [2], [1, 2.5]),
                {"name": "c", "datatype": "BYTES", "shape": [3],
                 "parameters": {"binary_data_size": len(raw_third), "content_type": "str"}},
            ]
        }
    )  # fmt: skip

    request = decode_infer_request(header + raw_first + raw_third, len(header))

    assert [i.name for i in request.inputs] == ["a", "b", "c"]
    assert same_tensor(request.inputs[0].data, first, "INT16")
    assert request.inputs[1].data.tolist() == [1.0, 2.5]
    assert same_tensor(request.inputs[2].data, third, "BYTES")
    assert request.inputs[2].parameters == {"content_type": "str"}


def test_request_id_parameters_and_requested_outputs_are_decoded() -> None:
    body = json_request(
        tensor("x", "FP32", [1], [1]),
        id="req-7",
        parameters={"binary_data_output": True, "priority": 2, "tag": "a", "f": 0.5},
        outputs=[
            {"name": "y", "parameters": {"binary_data": False, "classification": 3}},
            {"name": "z"},
            {"name": "w", "parameters": {"custom": "v"}},
        ],
    )

    request = decode_infer_request(body)

    assert request.id == "req-7"
    assert request.binary_output_default is True
    assert request.parameters == {"priority": 2, "tag": "a", "f": 0.5}
    assert request.outputs is not None
    y, z, w = request.outputs
    assert (y.name, y.binary, y.classification, y.parameters) == ("y", False, 3, {})
    assert (z.name, z.binary, z.classification, z.parameters) == ("z", None, 0, {})
    assert (w.binary, w.parameters) == (None, {"custom": "v"})


@pytest.mark.parametrize("outputs", [None, []])
def test_absent_or_empty_outputs_mean_all_outputs(outputs: list[object] | None) -> None:
    fields = {} if outputs is None else {"outputs": outputs}
    request = decode_infer_request(json_request(tensor("x", "INT8", [1], [1]), **fields))
    assert request.outputs is None
    assert request.id is None
    assert request.binary_output_default is False


def test_unknown_fields_are_ignored() -> None:
    body = orjson.dumps(
        {
            "inputs": [{**tensor("x", "INT8", [1], [1]), "note": {"a": [1]}}],
            "model_name": "m",
            "outputs": [{"name": "y", "extra": [[1]]}],
        }
    )
    assert decode_infer_request(body).inputs[0].data.tolist() == [1]


def test_fp_datatypes_accept_integers_and_fp16_accepts_json_numbers() -> None:
    body = json_request(
        tensor("a", "FP32", [3], [1, -2, 3.5]),
        tensor("b", "FP16", [3], [0.5, 65504, -1]),
        tensor("c", "FP64", [2], [2**60, 1e300]),
    )
    a, b, c = decode_infer_request(body).inputs
    assert a.data.tolist() == [1.0, -2.0, 3.5]
    assert b.data.dtype == np.float16 and b.data.tolist() == [0.5, 65504.0, -1.0]
    assert c.data.tolist() == [float(2**60), 1e300]


def test_json_tensors_are_writable_arrays() -> None:
    (decoded,) = decode_infer_request(json_request(tensor("x", "FP32", [2], [1, 2]))).inputs
    decoded.data[0] = 5
    assert decoded.data.tolist() == [5.0, 2.0]


def test_header_length_equal_to_body_means_an_empty_binary_section() -> None:
    body = json_request(tensor("x", "INT32", [1], [4]))
    assert decode_infer_request(body, len(body)).inputs[0].data.tolist() == [4]


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("0", 0), ("123", 123), (" 42 ", 42)]
)
def test_parse_header_length_reads_the_header_value(value: str | None, expected: int) -> None:
    assert parse_header_length(value) == expected
