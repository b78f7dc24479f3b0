"""Every datatype of the protocol travels through a real server, as JSON and as binary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as tc

from conftest import RunningServer, register, served

DTYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

ECHO = """
import numpy as np

TYPES = {types!r}


class Echo:
    inputs = [{{"name": f"in_{{t}}", "datatype": t, "shape": [-1, 3]}} for t in TYPES]
    outputs = [{{"name": f"out_{{t}}", "datatype": t, "shape": [-1, 3]}} for t in TYPES]

    def load(self):
        pass

    def predict(self, inputs):
        return {{f"out_{{t}}": inputs[f"in_{{t}}"] for t in TYPES}}
"""


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"a", "é".encode(), b"xyz"], [b"", b"1", b"22"]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype: np.dtype[Any] = np.dtype(DTYPES[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dtype)
    return np.array([[-1.5, 0.0, 2.25], [1e-3, 3.0, -7.0]], dtype=dtype)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("dtypes")
    path = Path(tmp / "echo.py")
    path.write_text(ECHO.format(types=list(DTYPES)))
    with served(tmp, lambda r: register(r, "echo", path, trust_code=True)) as srv:
        yield srv


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(server: RunningServer, binary: bool) -> None:
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = []
    for datatype in DTYPES:
        data = sample(datatype)
        inp = tc.InferInput(f"in_{datatype}", list(data.shape), datatype)
        inp.set_data_from_numpy(data, binary_data=binary)
        inputs.append(inp)
    outputs = [tc.InferRequestedOutput(f"out_{t}", binary_data=binary) for t in DTYPES]
    result = client.infer("echo", inputs, outputs=outputs)
    for datatype in DTYPES:
        got = result.as_numpy(f"out_{datatype}")
        want = sample(datatype)
        assert got is not None, datatype
        assert got.shape == want.shape, datatype
        if datatype == "BYTES":
            texts = [v.encode() if isinstance(v, str) else bytes(v) for v in got.ravel()]
            assert texts == list(want.ravel()), datatype
        else:
            assert got.dtype == want.dtype, datatype
            np.testing.assert_array_equal(got, want, err_msg=datatype)
