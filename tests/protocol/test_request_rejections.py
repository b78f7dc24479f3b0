"""decode_infer_request refuses every malformed request with InvalidInput and a precise message."""

# The case tables keep one case, with its exact message, per line.
# ruff: noqa: E501

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from protocol_samples import binary_request, json_request, tensor

from servion.errors import InvalidInput, PayloadTooLarge
from servion.protocol import Limits, decode_infer_request, parse_header_length

NOT_JSON = "request body is not valid JSON: "
DATATYPE_LIST = (
    "BOOL, BYTES, FP16, FP32, FP64, INT16, INT32, INT64, INT8, UINT16, UINT32, UINT64, UINT8"
)


def x(datatype: str = "FP32", shape: list[Any] | None = None, data: Any = None) -> bytes:
    """A one-input request; the defaults make a valid FP32 [2] tensor."""
    return json_request(
        tensor("x", datatype, [2] if shape is None else shape, [1, 2] if data is None else data)
    )


def rejected(
    body: bytes,
    header_length: int | None = None,
    limits: Limits | None = None,
    error: type[InvalidInput] = InvalidInput,
) -> str:
    with pytest.raises(error) as info:
        decode_infer_request(body, header_length, limits or Limits())
    assert type(info.value) is error
    return str(info.value)


# (body, expected message) for JSON-only requests. A message ending in ": " is
# orjson's prefix; the rest is orjson's own wording, checked loosely.
JSON_CASES: dict[str, tuple[bytes, str]] = {
    "truncated JSON": (b'{"inputs": [', NOT_JSON + "unexpected end of data"),
    "empty body": (b"", NOT_JSON),
    "trailing garbage": (x() + b"xx", NOT_JSON + "unexpected content after document"),
    "non-UTF-8 bytes": (b'{"id": "\xff\xfe"}', NOT_JSON + "str is not valid UTF-8"),
    "NaN literal": (x(data=[1]).replace(b"[1]", b"[NaN]"), NOT_JSON + "unexpected character"),
    "Infinity literal": (x(data=[1]).replace(b"[1]", b"[-Infinity]"), NOT_JSON),
    "number overflowing a double": (x(data=[1]).replace(b"[1]", b"[1e400]"), NOT_JSON + "number is infinity"),
    "JSON deeper than orjson allows": (b"[" * 2000 + b"]" * 2000, "request JSON is nested deeper than 32 levels"),
    "top level is an array": (b"[]", "inference request must be a JSON object, got an array"),
    "no inputs": (b'{"id": "a"}', "request has no inputs"),
    "inputs is an object": (b'{"inputs": {}}', "request inputs must be a non-empty array of tensors, got an object"),
    "inputs is empty": (b'{"inputs": []}', "request inputs must be a non-empty array of tensors, got an empty array"),
    "input is a number": (b'{"inputs": [3]}', "inputs[0] must be an object, got integer 3"),
    "input without name": (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', "inputs[0] has no name"),
    "input name not a string": (json_request(tensor(7, "FP32", [1], [1])), "inputs[0].name must be a non-empty string, got integer 7"),  # type: ignore[arg-type]
    "empty input name": (json_request(tensor("", "FP32", [1], [1])), 'inputs[0].name must be a non-empty string, got string ""'),
    "id not a string": (json_request(tensor("x", "FP32", [1], [1]), id=5), "request id must be a string, got integer 5"),
    "unknown datatype": (x("BF16"), f"input 'x': unknown datatype \"BF16\"; expected one of {DATATYPE_LIST}"),
    "lowercase datatype": (x("fp32"), "input 'x': unknown datatype \"fp32\" (datatypes are case-sensitive: did you mean \"FP32\"?); expected one of " + DATATYPE_LIST),
    "no datatype": (x(None), "input 'x' has no datatype"),  # type: ignore[arg-type]
    "datatype not a string": (x(32), "input 'x': datatype must be a string, got integer 32"),  # type: ignore[arg-type]
    "no shape": (json_request({"name": "x", "datatype": "FP32", "data": [1]}), "input 'x' has no shape"),
    "shape not an array": (x(shape="2"), 'input \'x\': shape must be an array of integers, got string "2"'),  # type: ignore[arg-type]
    "negative dimension": (x(shape=[-1]), "input 'x': shape dimensions must be non-negative integers, got integer -1"),
    "float dimension": (x(shape=[2.0]), "input 'x': shape dimensions must be non-negative integers, got number 2.0"),
    "bool dimension": (x(shape=[True]), "input 'x': shape dimensions must be non-negative integers, got boolean true"),
    "string dimension": (x(shape=["2"]), 'input \'x\': shape dimensions must be non-negative integers, got string "2"'),
    "too many dimensions": (x(shape=[1] * 17, data=[1]), "input 'x': shape has 17 dimensions, more than the limit of 16"),
    "no data": (json_request({"name": "x", "datatype": "FP32", "shape": [1]}), "input 'x' has neither data nor binary_data_size"),
    "data is a scalar": (x(shape=[], data=5), "input 'x': data must be an array, got integer 5"),
    "data is an object": (x(data={"a": 1}), "input 'x': data must be an array, got an object"),
    "too few elements": (x(shape=[2, 2], data=[1, 2, 3]), "input 'x': data has 3 elements but shape [2, 2] needs 4"),
    "too many elements": (x(shape=[1], data=[1, 2]), "input 'x': data has 2 elements but shape [1] needs 1"),
    "data for an empty shape": (x(shape=[0], data=[1]), "input 'x': data has 1 elements but shape [0] needs 0"),
    "ragged nested data": (x(shape=[2, 2], data=[[1, 2], [3]]), "input 'x': nested data does not match shape [2, 2]: dimension 1 should have length 2, got 1"),
    "nested rows of the wrong count": (x(shape=[3, 1], data=[[1], [2]]), "input 'x': nested data does not match shape [3, 1]: dimension 0 should have length 3, got 2"),
    "mixed flat and nested": (x(shape=[2, 2], data=[[1, 2], 3, 4]), "input 'x': nested data does not match shape [2, 2]: dimension 0 should have length 2, got 3"),
    "nested rows that are scalars": (x(shape=[2, 2], data=[[1, 2], 3]), "input 'x': nested data does not match shape [2, 2]: dimension 1 should have length 2, got integer 3"),
    "nested deeper than the shape": (x(shape=[2], data=[[1], [2]]), "input 'x': data is nested deeper than shape [2]"),
    "nested data for a scalar": (x(shape=[], data=[[1]]), "input 'x': data for shape [] must be a flat array of 1 element"),
    "string in FP32": (x(data=["1.5", 2]), 'input \'x\': FP32 data must hold numbers, got string "1.5"'),
    "bool in FP32": (x(data=[1.5, True]), "input 'x': FP32 data must hold numbers, got boolean true"),
    "null in FP64": (x("FP64", data=[None, 1]), "input 'x': FP64 data must hold numbers, got null"),
    "object in FP32": (x(data=[{}, 1]), "input 'x': FP32 data must hold numbers, got an object"),
    "float in INT32": (x("INT32", data=[1.0, 2]), "input 'x': INT32 data must hold integers, got number 1.0"),
    "bool in INT8": (x("INT8", data=[1, False]), "input 'x': INT8 data must hold integers, got boolean false"),
    "int in BOOL": (x("BOOL", data=[True, 1]), "input 'x': BOOL data must hold booleans, got integer 1"),
    "number in BYTES": (x("BYTES", data=["a", 1]), "input 'x': BYTES data must hold strings, got integer 1"),
    "INT8 too large": (x("INT8", data=[127, 128]), "input 'x': 128 is out of range for INT8"),
    "INT8 too small": (x("INT8", data=[-129, 0]), "input 'x': -129 is out of range for INT8"),
    "UINT8 negative": (x("UINT8", data=[0, -1]), "input 'x': -1 is out of range for UINT8"),
    "UINT8 too large": (x("UINT8", data=[256, 0]), "input 'x': 256 is out of range for UINT8"),
    "INT16 too large": (x("INT16", data=[2**15, 0]), "input 'x': 32768 is out of range for INT16"),
    "UINT32 too large": (x("UINT32", data=[2**32, 0]), "input 'x': 4294967296 is out of range for UINT32"),
    "INT64 too large": (x("INT64", data=[2**63, 0]), "input 'x': 9223372036854775808 is out of range for INT64"),
    "UINT64 negative": (x("UINT64", data=[-1, 0]), "input 'x': -1 is out of range for UINT64"),
    "UINT64 past 64 bits": (x("UINT64", shape=[1], data=[1]).replace(b"[1]}", b"[18446744073709551616]}"), "input 'x': 1.8446744073709552e+19 is out of range for UINT64"),
    "FP32 past its range": (x(data=[1.0, 1e39]), "input 'x': 1e+39 is out of range for FP32"),
    "FP16 past its range": (x("FP16", data=[1, -70000]), "input 'x': -70000 is out of range for FP16"),
    "duplicate input names": (json_request(tensor("x", "FP32", [1], [1]), tensor("x", "INT8", [1], [1])), "input 'x' appears more than once"),
    "parameters not an object": (json_request(tensor("x", "FP32", [1], [1]), parameters=[1]), "request: parameters must be an object, got an array"),
    "nested request parameter": (json_request(tensor("x", "FP32", [1], [1]), parameters={"a": {"b": 1}}), "request: parameter 'a' must be a string, number or boolean, got an object"),
    "null input parameter": (json_request({**tensor("x", "FP32", [1], [1]), "parameters": {"p": None}}), "input 'x': parameter 'p' must be a string, number or boolean, got null"),
    "binary_data_output not a bool": (json_request(tensor("x", "FP32", [1], [1]), parameters={"binary_data_output": 1}), "request: parameter 'binary_data_output' must be a boolean, got integer 1"),
    "shared memory input": (json_request({**tensor("x", "FP32", [1], [1]), "parameters": {"shared_memory_region": "r"}}), "input 'x': shared memory inputs are not supported"),
    "binary data without the header": (json_request({"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}), "input 'x' has binary_data_size but the request has no Inference-Header-Content-Length header"),
    "deep nesting in an unknown field": (json_request(tensor("x", "FP32", [1], [1]), extra=orjson.loads(b"[" * 40 + b"]" * 40)), "request field 'extra' is nested deeper than 32 levels"),
    "deep nesting in an unknown input field": (json_request({**tensor("x", "FP32", [1], [1]), "note": orjson.loads(b"[" * 30 + b"]" * 30)}), "input 'x' field 'note' is nested deeper than 32 levels"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "message"), JSON_CASES.values(), ids=JSON_CASES.keys())
def test_malformed_json_request_is_rejected(body: bytes, message: str) -> None:
    if message.endswith(": ") or message.startswith(NOT_JSON):
        assert rejected(body).startswith(message)
    else:
        assert rejected(body) == message


OUTPUT_CASES: dict[str, tuple[Any, str]] = {
    "outputs not an array": ({"name": "y"}, "request outputs must be an array, got an object"),
    "output not an object": (["y"], 'outputs[0] must be an object, got string "y"'),
    "output without name": ([{"parameters": {}}], "outputs[0] has no name"),
    "duplicate outputs": ([{"name": "y"}, {"name": "y"}], "output 'y' is requested more than once"),
    "binary_data not a bool": ([{"name": "y", "parameters": {"binary_data": "yes"}}], "output 'y': parameter 'binary_data' must be a boolean, got string \"yes\""),
    "negative classification": ([{"name": "y", "parameters": {"classification": -1}}], "output 'y': classification must be a non-negative integer, got integer -1"),
    "bool classification": ([{"name": "y", "parameters": {"classification": True}}], "output 'y': classification must be a non-negative integer, got boolean true"),
    "shared memory output": ([{"name": "y", "parameters": {"shared_memory_region": "r"}}], "output 'y': shared memory outputs are not supported"),
    "output parameters not an object": ([{"name": "y", "parameters": 1}], "output 'y': parameters must be an object, got integer 1"),
}  # fmt: skip


@pytest.mark.parametrize(("outputs", "message"), OUTPUT_CASES.values(), ids=OUTPUT_CASES.keys())
def test_malformed_requested_outputs_are_rejected(outputs: Any, message: str) -> None:
    assert rejected(json_request(tensor("x", "FP32", [1], [1]), outputs=outputs)) == message


def test_shape_with_an_absurd_element_count_is_too_large() -> None:
    body = x(shape=[10**9, 10**9], data=[1])
    message = rejected(body, error=PayloadTooLarge)
    assert (
        message
        == "input 'x': shape dimension 1000000000 is more than the limit of 67108864 elements"
    )
    body = x(shape=[10_000, 10_000, 10_000], data=[1])
    assert rejected(body, error=PayloadTooLarge) == (
        "input 'x': shape [10000, 10000, 10000] has 1000000000000 elements,"
        " more than the limit of 67108864"
    )


def test_body_over_the_limit_is_too_large() -> None:
    body = x(data=[1.5] * 2)
    message = rejected(body, limits=Limits(max_body_bytes=20), error=PayloadTooLarge)
    assert message == f"request body is {len(body)} bytes, more than the limit of 20"


def test_too_many_inputs_or_outputs_are_too_large() -> None:
    many = [tensor(f"x{i}", "FP32", [1], [1]) for i in range(3)]
    limits = Limits(max_inputs=2, max_outputs=2)
    assert rejected(json_request(*many), limits=limits, error=PayloadTooLarge) == (
        "request has 3 inputs, more than the limit of 2"
    )
    outputs = [{"name": f"y{i}"} for i in range(3)]
    body = json_request(many[0], outputs=outputs)
    assert rejected(body, limits=limits, error=PayloadTooLarge) == (
        "request asks for 3 outputs, more than the limit of 2"
    )


def test_nested_data_deeper_than_the_depth_limit_is_rejected() -> None:
    body = x(shape=[1, 1, 1], data=[[[1]]])
    assert rejected(body, limits=Limits(max_json_depth=5)) == (
        "input 'x': nested data is deeper than 5 levels"
    )


# --- binary section -------------------------------------------------------------


def binary_x(
    size: Any, shape: list[int], datatype: str = "FP32", data: bytes = b""
) -> tuple[bytes, int]:
    header = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                     "parameters": {"binary_data_size": size}}]}
    )  # fmt: skip
    return header + data, len(header)


def test_header_length_past_the_body_is_rejected() -> None:
    body, _ = binary_request([("x", "FP32", np.zeros(2, np.float32))])
    assert rejected(body, len(body) + 1) == (
        f"Inference-Header-Content-Length is {len(body) + 1} but must be between 1 and"
        f" the body length {len(body)}"
    )


@pytest.mark.parametrize("header_length", [-1, 0])
def test_header_length_below_one_is_rejected(header_length: int) -> None:
    body, _ = binary_request([("x", "FP32", np.zeros(2, np.float32))])
    assert rejected(body, header_length) == (
        f"Inference-Header-Content-Length is {header_length} but must be between 1 and"
        f" the body length {len(body)}"
    )


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "\uff11\uff12", "9" * 30])
def test_header_length_that_is_not_a_count_is_rejected(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_header_length(value)
    assert str(info.value) == (
        f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
    )


def test_header_length_that_cuts_the_json_is_rejected() -> None:
    body, header_length = binary_request([("x", "FP32", np.zeros(2, np.float32))])
    assert rejected(body, header_length - 1).startswith(NOT_JSON)


def test_binary_section_longer_than_the_sizes_is_rejected() -> None:
    body, header_length = binary_x(8, [2], data=bytes(12))
    assert rejected(body, header_length) == (
        "binary section has 12 bytes but the inputs' binary_data_size values add up to 8"
    )


def test_binary_section_shorter_than_the_sizes_is_rejected() -> None:
    body, header_length = binary_x(8, [2], data=bytes(6))
    assert rejected(body, header_length) == (
        "input 'x': binary_data_size values add up to at least 8 bytes but the binary section has 6"
    )


def test_binary_size_that_does_not_fit_the_shape_is_rejected() -> None:
    body, header_length = binary_x(12, [4], data=bytes(12))
    assert rejected(body, header_length) == (
        "input 'x': binary_data_size is 12 bytes but shape [4] of FP32 needs 16"
    )


def test_binary_section_without_binary_inputs_is_rejected() -> None:
    header = x()
    assert rejected(header + b"\0\0", len(header)) == (
        "binary section has 2 bytes but the inputs' binary_data_size values add up to 0"
    )


@pytest.mark.parametrize("size", [-4, 4.0, "4", True])
def test_binary_size_that_is_not_a_byte_count_is_rejected(size: Any) -> None:
    body, header_length = binary_x(size, [1], data=bytes(4))
    message = rejected(body, header_length)
    assert message.startswith("input 'x': binary_data_size must be a non-negative integer, got ")


def test_input_with_both_data_and_binary_size_is_rejected() -> None:
    header = json_request({**tensor("x", "FP32", [1], [1]), "parameters": {"binary_data_size": 4}})
    assert rejected(header + bytes(4), len(header)) == (
        "input 'x' has both data and binary_data_size"
    )


def test_bool_binary_bytes_other_than_0_and_1_are_rejected() -> None:
    body, header_length = binary_x(3, [3], "BOOL", b"\x00\x01\x02")
    assert rejected(body, header_length) == (
        "input 'x': BOOL binary data must hold only bytes 0 and 1"
    )


def prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


BYTES_CASES: dict[str, tuple[bytes, list[int], str]] = {
    "fewer elements than the shape": (prefixed(b"a"), [2], "input 'x': BYTES binary data ends inside the length of element 1 (2 elements expected)"),
    "truncated length prefix": (prefixed(b"a") + b"\x01\x00", [2], "input 'x': BYTES binary data ends inside the length of element 1 (2 elements expected)"),
    "element past the end": (struct.pack("<I", 10) + b"abc", [1], "input 'x': BYTES element 0 claims 10 bytes, past the end of its binary data"),
    "more elements than the shape": (prefixed(b"a", b"b"), [1], "input 'x': BYTES binary data has 5 bytes left over after 1 elements"),
}  # fmt: skip


@pytest.mark.parametrize(("data", "shape", "message"), BYTES_CASES.values(), ids=BYTES_CASES.keys())
def test_malformed_bytes_binary_data_is_rejected(
    data: bytes, shape: list[int], message: str
) -> None:
    body, header_length = binary_x(len(data), shape, "BYTES", data)
    assert rejected(body, header_length) == message


def test_bytes_element_running_into_the_next_input_is_rejected() -> None:
    first = struct.pack("<I", 6) + b"ab"  # claims 6 bytes but its input has only 2 after it
    second = np.zeros(1, np.float32).tobytes()
    header = orjson.dumps(
        {"inputs": [
            {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(first)}},
            {"name": "f", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
        ]}
    )  # fmt: skip
    assert rejected(header + first + second, len(header)) == (
        "input 's': BYTES element 0 claims 6 bytes, past the end of its binary data"
    )
