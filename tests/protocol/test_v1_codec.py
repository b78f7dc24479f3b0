"""KServe V1 codec: instances in, predictions out."""

# The case table keeps one case, with its exact message, per line.
# ruff: noqa: E501

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from servion.errors import InvalidInput, PayloadTooLarge, RuntimeFailure
from servion.protocol import Limits, decode_v1_request, encode_v1_response


@pytest.mark.parametrize(
    ("doc", "instances"),
    [
        ({"instances": [[1, 2], [3, 4]]}, [[1, 2], [3, 4]]),
        ({"instances": [{"a": 1}, "text", 3]}, [{"a": 1}, "text", 3]),
        ({"instances": [{"b64": "aGk="}]}, [{"b64": "aGk="}]),
        ({"inputs": [[1.5], [2.5]]}, [[1.5], [2.5]]),
        ({"inputs": {"a": [1, 2], "b": [[3], [4]]}}, [{"a": 1, "b": [3]}, {"a": 2, "b": [4]}]),
        ({"instances": [1], "signature_name": "serving_default"}, [1]),
    ],
)
def test_v1_request_yields_its_instances(doc: dict[str, Any], instances: list[Any]) -> None:
    assert decode_v1_request(orjson.dumps(doc)) == instances


BAD: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{", "request body is not valid JSON: "),
    "not an object": (b"[1]", "V1 request must be a JSON object, got an array"),
    "neither key": (b'{"data": [1]}', 'V1 request must have exactly one of "instances" or "inputs"'),
    "both keys": (b'{"instances": [1], "inputs": [1]}', 'V1 request must have exactly one of "instances" or "inputs"'),
    "instances not a list": (b'{"instances": {"a": 1}}', 'V1 request "instances" must be a non-empty array'),
    "empty instances": (b'{"instances": []}', 'V1 request "instances" must be a non-empty array'),
    "scalar inputs": (b'{"inputs": 3}', 'V1 request "inputs" must be a non-empty array'),
    "ragged columns": (b'{"inputs": {"a": [1, 2], "b": [3]}}', 'V1 columnar "inputs" must map each name to a non-empty array, all of the same length'),
    "column not a list": (b'{"inputs": {"a": 1}}', 'V1 columnar "inputs" must map each name to a non-empty array, all of the same length'),
    "no columns": (b'{"inputs": {}}', 'V1 columnar "inputs" must map each name to a non-empty array, all of the same length'),
    "too deep": (b'{"instances": ' + b"[" * 40 + b"]" * 40 + b"}", "V1 request instances is nested deeper than 32 levels"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "message"), BAD.values(), ids=BAD.keys())
def test_malformed_v1_request_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_v1_request(body)
    assert str(info.value).startswith(message)
    assert message.endswith(": ") or str(info.value) == message


def test_v1_body_over_the_limit_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_v1_request(b'{"instances": [1, 2, 3]}', Limits(max_body_bytes=10))


def test_v1_response_encodes_numpy_values() -> None:
    preds = {
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "transposed": np.arange(4.0).reshape(2, 2).T,
        "big_endian": np.array([1.5], dtype=">f8"),
        "scalar": np.float32(0.5),
        "bytes": b"label",
    }
    assert orjson.loads(encode_v1_response([preds])) == {
        "predictions": [
            {
                "array": [[0, 1, 2], [3, 4, 5]],
                "transposed": [[0.0, 2.0], [1.0, 3.0]],
                "big_endian": [1.5],
                "scalar": 0.5,
                "bytes": "label",
            }
        ]
    }
    assert encode_v1_response(np.array([1, 2])) == b'{"predictions":[1,2]}'


def test_v1_response_that_is_not_json_is_a_runtime_failure() -> None:
    with pytest.raises(RuntimeFailure) as info:
        encode_v1_response([object()])
    assert str(info.value).startswith("predictions cannot be encoded as JSON: ")
