"""The real Triton HTTP client's bodies decode, and our bodies parse in it.

Requests come from ``InferenceServerClient.generate_request_body`` (what
``client.infer`` sends) and responses are read back with
``InferResult.from_response_body`` (what ``client.infer`` returns).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from protocol_samples import DATATYPES, same_tensor, sample_array

from servion.protocol import (
    InferOutput,
    InferRequest,
    InferResponse,
    decode_infer_request,
    encode_infer_response,
)

httpclient = pytest.importorskip("tritonclient.http")


def client_request(
    tensors: dict[str, tuple[str, npt.NDArray[Any]]],
    binary_inputs: bool,
    outputs: list[Any] | None = None,
    **kwargs: Any,
) -> InferRequest:
    inputs = []
    for name, (datatype, arr) in tensors.items():
        infer_input = httpclient.InferInput(name, list(arr.shape), datatype)
        infer_input.set_data_from_numpy(arr, binary_data=binary_inputs)
        inputs.append(infer_input)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, **kwargs
    )
    return decode_infer_request(body, header_length)


def echo(request: InferRequest, version: str | None = "1") -> Any:
    """Send every input back as an output of the same name, then parse as the client."""
    outs = [InferOutput(i.name, i.datatype, i.shape, i.data) for i in request.inputs]
    body, header_length = encode_infer_response(
        InferResponse("echo", version, request.id, outs),
        request.outputs,
        request.binary_output_default,
    )
    return httpclient.InferResult.from_response_body(body, False, header_length)


def client_view(arr: npt.NDArray[Any], datatype: str, binary: bool) -> npt.NDArray[Any]:
    """What the client hands back: JSON BYTES arrive as str, binary BYTES as bytes."""
    if datatype == "BYTES" and not binary:
        texts = np.empty(arr.size, dtype=object)
        texts[:] = [v.decode() for v in arr.ravel().tolist()]
        return texts.reshape(arr.shape)
    return arr


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_client_request_decodes_exactly(datatype: str, binary: bool) -> None:
    arr = sample_array(datatype, (2, 3))

    request = client_request({"INPUT0": (datatype, arr)}, binary, request_id="id-1")

    (decoded,) = request.inputs
    assert (decoded.name, decoded.datatype, decoded.shape) == ("INPUT0", datatype, (2, 3))
    assert same_tensor(decoded.data, arr, datatype)
    assert request.id == "id-1"


@pytest.mark.parametrize("out_binary", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("in_binary", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_client_reads_our_response_exactly(
    datatype: str, in_binary: bool, out_binary: bool
) -> None:
    arr = sample_array(datatype, (3, 2))
    outputs = [httpclient.InferRequestedOutput("INPUT0", binary_data=out_binary)]

    result = echo(client_request({"INPUT0": (datatype, arr)}, in_binary, outputs))

    got = result.as_numpy("INPUT0")
    assert same_tensor(got, client_view(arr, datatype, out_binary), datatype)
    assert result.get_response()["model_version"] == "1"


def test_client_default_asks_for_every_output_in_binary() -> None:
    tensors = {
        "a": ("FP32", sample_array("FP32", (1, 4))),
        "b": ("BYTES", sample_array("BYTES", (2,))),
        "c": ("BOOL", sample_array("BOOL", (3,))),
    }

    request = client_request(tensors, binary_inputs=True)
    result = echo(request)

    assert request.outputs is None and request.binary_output_default is True
    for name, (datatype, arr) in tensors.items():
        assert result.get_output(name)["parameters"]["binary_data_size"] > 0
        assert same_tensor(result.as_numpy(name), arr, datatype)


def test_client_mixed_outputs_classification_and_sequence_parameters() -> None:
    tensors = {
        "a": ("INT64", sample_array("INT64", (2, 2))),
        "b": ("FP16", sample_array("FP16", (2,))),
    }
    outputs = [
        httpclient.InferRequestedOutput("b", binary_data=False),
        httpclient.InferRequestedOutput("a", binary_data=True, class_count=2),
    ]

    request = client_request(
        tensors, False, outputs, sequence_id=9, sequence_start=True, priority=1, timeout=500
    )
    result = echo(request, version=None)

    assert request.parameters == {
        "sequence_id": 9,
        "sequence_start": True,
        "sequence_end": False,
        "priority": 1,
        "timeout": 500,
    }
    assert request.outputs is not None
    assert [(o.name, o.binary, o.classification) for o in request.outputs] == [
        ("b", False, 0),
        ("a", True, 2),
    ]
    assert [o["name"] for o in result.get_response()["outputs"]] == ["b", "a"]
    assert "model_version" not in result.get_response()
    assert same_tensor(result.as_numpy("a"), tensors["a"][1], "INT64")
    assert same_tensor(result.as_numpy("b"), tensors["b"][1], "FP16")


def test_client_custom_parameters_pass_through() -> None:
    request = client_request(
        {"x": ("UINT8", np.array([1, 2], np.uint8))}, True, parameters={"temperature": 0.5}
    )
    assert request.parameters == {"temperature": 0.5}
