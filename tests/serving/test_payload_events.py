"""Payload log events on their own: the CloudEvents envelope, whole tensors and summaries."""

from __future__ import annotations

import json

import numpy as np

from servion.protocol import InferInput, InferOutput, InferRequest, InferResponse
from servion.serving.payload_events import Payload, encode, rfc3339, summary, tensor


def test_small_tensors_are_whole_and_large_ones_summarised() -> None:
    x = np.array([[1.0, np.nan], [3.0, 5.0]], np.float32)
    whole = tensor("x", "FP32", x.shape, x, 4)
    assert {k: whole[k] for k in ("name", "datatype", "shape")} == {
        "name": "x",
        "datatype": "FP32",
        "shape": [2, 2],
    }
    np.testing.assert_array_equal(whole["data"], x)
    summarised = tensor("x", "FP32", x.shape, x, 3)
    assert "data" not in summarised
    # NaNs are counted, and kept out of the other statistics.
    assert summarised["summary"] == {
        "count": 4,
        "min": 1.0,
        "max": 5.0,
        "mean": 3.0,
        "std": float(np.std([1.0, 3.0, 5.0])),
        "nan": 1,
    }
    assert summary(np.full(3, np.nan))["mean"] is None
    assert summary(np.array([True, False, True, True]))["mean"] == 0.75
    assert tensor("n", "INT64", (0,), np.zeros(0, np.int64), 0)["data"] == []


def test_bytes_are_text_when_small_and_only_lengths_when_large() -> None:
    words = np.array([b"yes", b"no", b"\xff"], dtype=object)
    assert tensor("w", "BYTES", (3,), words, 3)["data"] == ["yes", "no", "\ufffd"]
    assert tensor("w", "BYTES", (3,), words, 2)["summary"] == {
        "count": 3,
        "min_length": 1,
        "max_length": 3,
        "mean_length": 2.0,
    }


def test_an_event_is_one_json_line_in_the_cloudevents_shape() -> None:
    request = InferRequest("body-id", [InferInput.of("x", np.array([[1.0, np.inf]]))], None, {})
    response = InferResponse("m", "v1.0.0", "body-id", [InferOutput.of("y", np.array([2]))])
    line = encode(Payload("ep", "rid-1", 0.5, "m:v1.0.0", request, response, None, 200, False, 8))
    assert b"\n" not in line
    event = json.loads(line)
    assert event == {
        "specversion": "1.0",
        "id": "rid-1",
        "source": "servion/ep",
        "type": "io.servion.inference",
        "time": "1970-01-01T00:00:00.500000Z",
        "datacontenttype": "application/json",
        "subject": "m:v1.0.0",
        "data": {
            # JSON has no infinity: null, as for NaN.
            "request": {
                "inputs": [
                    {"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [[1.0, None]]}
                ]
            },
            "response": {
                "model_name": "m",
                "model_version": "v1.0.0",
                "outputs": [{"name": "y", "datatype": "INT64", "shape": [1], "data": [2]}],
            },
            "error": None,
            "status": 200,
            "cached": False,
        },
    }
    failed = json.loads(
        encode(Payload("ep", "rid-2", 0.0, None, request, None, "bad", 400, False, 8))
    )
    assert "subject" not in failed and failed["data"]["response"] is None
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
