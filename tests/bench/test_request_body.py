"""Request bodies built from metadata decode, with servion's own codec, to the expected tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servion.bench import build_body
from servion.bench.body import body_from_file
from servion.errors import InvalidInput
from servion.protocol import decode_infer_request
from servion.types import JSON

META: JSON = {
    "name": "m",
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
    ],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_one_row_of_every_input(binary: bool) -> None:
    body = build_body(META, binary)
    assert body == build_body(META, binary), "values must be deterministic"
    request = decode_infer_request(body.content, body.header_length)
    arrays = {i.name: i.data for i in request.inputs}
    assert arrays["x"].shape == (1, 3) and arrays["x"].dtype == np.float32
    assert arrays["ids"].shape == (1, 1) and arrays["ids"].dtype == np.int64
    assert list(arrays["text"]) == [b"sample"]
    assert np.allclose(arrays["x"], build_and_decode(META, not binary)["x"])
    if binary:
        assert body.content_type == "application/octet-stream"
        assert ("Inference-Header-Content-Length", str(body.header_length)) in body.headers
    else:
        assert body.header_length is None and body.content_type == "application/json"


def build_and_decode(meta: JSON, binary: bool) -> dict[str, np.ndarray]:
    body = build_body(meta, binary)
    return {i.name: i.data for i in decode_infer_request(body.content, body.header_length).inputs}


def test_fp16_needs_binary_and_metadata_must_describe_inputs() -> None:
    half: JSON = {"inputs": [{"name": "h", "datatype": "FP16", "shape": [-1, 2]}]}
    with pytest.raises(InvalidInput, match="use --binary"):
        build_body(half, binary=False)
    assert build_and_decode(half, binary=True)["h"].dtype == np.float16
    with pytest.raises(InvalidInput, match="does not describe"):
        build_body({"name": "m"}, binary=False)


def test_body_files(tmp_path: Path) -> None:
    binary = build_body(META, binary=True)
    path = tmp_path / "body.bin"
    path.write_bytes(binary.content)
    assert body_from_file(path, binary=True) == binary
    with pytest.raises(InvalidInput, match="use --binary"):
        body_from_file(path, binary=False)
    path.write_bytes(b"not json")
    with pytest.raises(InvalidInput, match="does not start with JSON"):
        body_from_file(path, binary=False)
