"""gRPC against a real server: tritonclient.grpc for everything a client does,
raw protobuf messages for what tritonclient never sends (typed contents,
malformed requests), and the same answers as REST."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from conftest import RunningServer, TabularModels, cli, register, start_server
from servion.config import Settings
from servion.protocol.grpc import grpc_service_pb2 as pb
from servion.registry import ModelRegistry

MESSAGE_LIMIT = 1024 * 1024

ECHO = """
import time


class Echo:
    inputs = [
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "delay", "datatype": "FP32", "shape": [-1]},
    ]
    outputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def load(self):
        pass

    def predict(self, inputs):
        time.sleep(float(inputs["delay"].max()))
        return {"text": inputs["text"]}
"""

TYPED = """
TYPES = {types!r}


class Typed:
    inputs = [{{"name": f"in_{{t}}", "datatype": t, "shape": [-1, 3]}} for t in TYPES]
    outputs = [{{"name": f"out_{{t}}", "datatype": t, "shape": [-1, 3]}} for t in TYPES]

    def load(self):
        pass

    def predict(self, inputs):
        return {{f"out_{{t}}": inputs[f"in_{{t}}"] for t in TYPES}}
"""

TYPED_SAMPLES: dict[str, tuple[str, list[Any], np.dtype[Any]]] = {
    "BOOL": ("bool_contents", [True, False, True, False, False, True], np.dtype(np.bool_)),
    "INT8": ("int_contents", [-128, 0, 127, 1, 2, 3], np.dtype(np.int8)),
    "INT16": ("int_contents", [-32768, 0, 32767, 1, 2, 3], np.dtype(np.int16)),
    "INT32": ("int_contents", [-(2**31), 0, 2**31 - 1, 1, 2, 3], np.dtype(np.int32)),
    "INT64": ("int64_contents", [-(2**63), 0, 2**63 - 1, 1, 2, 3], np.dtype(np.int64)),
    "UINT8": ("uint_contents", [0, 1, 255, 4, 5, 6], np.dtype(np.uint8)),
    "UINT16": ("uint_contents", [0, 1, 65535, 4, 5, 6], np.dtype(np.uint16)),
    "UINT32": ("uint_contents", [0, 1, 2**32 - 1, 4, 5, 6], np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", [0, 1, 2**64 - 1, 4, 5, 6], np.dtype(np.uint64)),
    "FP32": ("fp32_contents", [-1.5, 0.0, 2.25, 1e-3, 3.0, -7.0], np.dtype(np.float32)),
    "FP64": ("fp64_contents", [-1.5, 0.0, 2.25, 1e-3, 3.0, -7.0], np.dtype(np.float64)),
    "BYTES": ("bytes_contents", [b"a", "é".encode(), b"", b"x", b"yz", b"0"], np.dtype(object)),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels) -> Path:
    tmp = tmp_path_factory.mktemp("grpc")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    register(registry, "tabular", tabular.onnx)
    register(registry, "tabsk", tabular.joblib)
    echo = tmp / "echo.py"
    echo.write_text(ECHO)
    register(registry, "echo", echo, trust_code=True)
    typed = tmp / "typed.py"
    typed.write_text(TYPED.format(types=list(TYPED_SAMPLES)))
    register(registry, "typed", typed, trust_code=True)
    registry.close()
    return settings.home


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(
        home,
        tmp_path_factory.mktemp("grpc-run"),
        *("--workers", "2", "--grpc-max-message-bytes", str(MESSAGE_LIMIT)),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_url) as ch:
        yield ch


def raw_infer(channel: grpc.Channel, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    response: pb.ModelInferResponse = call(request, timeout=30)
    return response


def tab_input(x: np.ndarray, name: str = "X") -> tg.InferInput:
    inp = tg.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_health_and_metadata_match_rest(
    client: tg.InferenceServerClient, server: RunningServer
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tabular") and client.is_model_ready("tabular", "v1.0.0")
    assert not client.is_model_ready("nosuch")
    meta = client.get_server_metadata()
    rest = httpx.get(f"{server.url}/v2").json()
    assert meta.name == rest["name"] == "servion"
    assert list(meta.extensions) == rest["extensions"]
    model = client.get_model_metadata("tabular", as_json=True)
    rest_model = httpx.get(f"{server.url}/v2/models/tabular").json()
    assert model["versions"] == rest_model["versions"] == ["v1.0.0"]
    assert model["platform"] == rest_model["platform"]
    assert model["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "32"]}]


@pytest.mark.parametrize("rows", [1, 64])
def test_inference_matches_rest_and_the_framework(
    client: tg.InferenceServerClient, server: RunningServer, tabular: TabularModels, rows: int
) -> None:
    x = np.ascontiguousarray(tabular.x[:rows])
    expected = tabular.pipeline.predict_proba(x)  # type: ignore[attr-defined]
    rest = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    for model, name in (("tabular", "X"), ("tabsk", "input")):
        result = client.infer(model, [tab_input(x, name)], request_id=f"g-{rows}")
        assert result.get_response().id == f"g-{rows}"
        assert result.get_response().model_version == "v1.0.0"
        rest_input = th.InferInput(name, list(x.shape), "FP32")
        rest_input.set_data_from_numpy(x)
        rest_result = rest.infer(model, [rest_input])
        for out in ("label", "probabilities"):
            np.testing.assert_array_equal(result.as_numpy(out), rest_result.as_numpy(out))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)


def test_requested_outputs_subset(client: tg.InferenceServerClient, tabular: TabularModels) -> None:
    x = np.ascontiguousarray(tabular.x[:3])
    outputs = [tg.InferRequestedOutput("probabilities")]
    result = client.infer("tabular", [tab_input(x)], outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    assert result.as_numpy("label") is None


def test_bytes_tensors_round_trip(client: tg.InferenceServerClient) -> None:
    text = np.array([b"hello", "wörld".encode(), b"", b"\x00\xff"], dtype=object)
    a = tg.InferInput("text", [4], "BYTES")
    a.set_data_from_numpy(text)
    b = tg.InferInput("delay", [4], "FP32")
    b.set_data_from_numpy(np.zeros(4, np.float32))
    got = client.infer("echo", [a, b]).as_numpy("text")
    assert got is not None
    assert list(got) == list(text)


def test_typed_contents_for_every_datatype(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="typed", id="typed-1")
    for datatype, (field, values, _) in TYPED_SAMPLES.items():
        tensor = request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=[2, 3])
        getattr(tensor.contents, field).extend(values)
    response = raw_infer(channel, request)
    assert response.id == "typed-1"
    by_name = {
        o.name: (o, raw)
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    for datatype, (_, values, dtype) in TYPED_SAMPLES.items():
        output, raw = by_name[f"out_{datatype}"]
        assert output.datatype == datatype and list(output.shape) == [2, 3]
        if datatype == "BYTES":
            items, pos = [], 0
            while pos < len(raw):
                n = int.from_bytes(raw[pos : pos + 4], "little")
                items.append(raw[pos + 4 : pos + 4 + n])
                pos += 4 + n
            assert items == values
        else:
            want = np.array(values, dtype)  # FP32 values as FP32, as they were sent
            np.testing.assert_array_equal(np.frombuffer(raw, dtype.newbyteorder("<")), want)


def test_statistics_config_and_repository(
    client: tg.InferenceServerClient, server: RunningServer, tabular: TabularModels
) -> None:
    client.infer("tabsk", [tab_input(np.ascontiguousarray(tabular.x[:2]), "input")])
    time.sleep(1.5)  # the other worker's counts arrive within a second
    stats = client.get_inference_statistics("tabsk", as_json=True)["model_stats"][0]
    rest = httpx.get(f"{server.url}/v2/models/tabsk/stats").json()["model_stats"][0]
    assert int(stats["inference_count"]) == rest["inference_count"] >= 2
    config = client.get_model_config("tabular", as_json=True)["config"]
    assert config["max_batch_size"] == 128
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": ["32"]}]
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {("tabular", "READY"), ("echo", "READY")}
    client.unload_model("echo")
    assert not client.is_model_ready("echo")
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        client.infer("echo", [tg.InferInput("text", [1], "BYTES")])
    client.load_model("echo")
    assert client.is_model_ready("echo")


def bad(
    model: str = "tabular", datatype: str = "FP32", shape: tuple[int, ...] = (1, 32)
) -> tuple[pb.ModelInferRequest, pb.ModelInferRequest.InferInputTensor]:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="X", datatype=datatype, shape=list(shape))
    return request, tensor


def _case_count() -> pb.ModelInferRequest:
    request, tensor = bad()
    tensor.contents.fp32_contents.extend([0.0] * 31)
    return request


def _case_wrong_field() -> pb.ModelInferRequest:
    request, tensor = bad()
    tensor.contents.int_contents.extend([0] * 32)
    return request


def _case_both() -> pb.ModelInferRequest:
    request, tensor = bad()
    tensor.contents.fp32_contents.extend([0.0] * 32)
    request.raw_input_contents.append(np.zeros(32, np.float32).tobytes())
    return request


def _case_raw_size() -> pb.ModelInferRequest:
    request, _ = bad()
    request.raw_input_contents.append(np.zeros(31, np.float32).tobytes())
    return request


def _case_raw_count() -> pb.ModelInferRequest:
    request, _ = bad()
    request.raw_input_contents.extend([b"", b""])
    return request


def _case_overflow() -> pb.ModelInferRequest:
    request, tensor = bad("typed", "INT8", (1, 3))
    tensor.name = "in_INT8"
    tensor.contents.int_contents.extend([1, 2, 300])
    return request


def _case_fp16() -> pb.ModelInferRequest:
    request, tensor = bad(datatype="FP16")
    tensor.contents.fp32_contents.extend([0.0] * 32)
    return request


def _case_datatype() -> pb.ModelInferRequest:
    request, _ = bad(datatype="FLOAT")
    return request


def _case_shape() -> pb.ModelInferRequest:
    request, tensor = bad(shape=(1, 31))
    tensor.contents.fp32_contents.extend([0.0] * 31)
    return request


def _case_batch() -> pb.ModelInferRequest:
    request, _ = bad(shape=(129, 32))
    request.raw_input_contents.append(np.zeros((129, 32), np.float32).tobytes())
    return request


def _case_absurd() -> pb.ModelInferRequest:
    request, _ = bad(shape=(1 << 40, 1 << 40))
    return request


def _case_no_inputs() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="tabular")


def _case_unknown_model() -> pb.ModelInferRequest:
    request, tensor = bad("nosuch")
    tensor.contents.fp32_contents.extend([0.0] * 32)
    return request


def _case_unknown_version() -> pb.ModelInferRequest:
    request = _case_unknown_model()
    request.model_name, request.model_version = "tabular", "v9.9.9"
    return request


def _case_unknown_output() -> pb.ModelInferRequest:
    request, tensor = bad()
    tensor.contents.fp32_contents.extend([0.0] * 32)
    request.outputs.add(name="zzz")
    return request


def _case_bad_priority() -> pb.ModelInferRequest:
    request, tensor = bad()
    tensor.contents.fp32_contents.extend([0.0] * 32)
    request.parameters["priority"].string_param = "high"
    return request


def _case_too_big() -> pb.ModelInferRequest:
    request, _ = bad(shape=(128, 4096))
    request.raw_input_contents.append(bytes(128 * 4096 * 4))  # 2 MiB > the 1 MiB limit
    return request


BAD_CASES = [
    ("count mismatch", _case_count, grpc.StatusCode.INVALID_ARGUMENT, "needs 32 elements"),
    ("wrong contents field", _case_wrong_field, grpc.StatusCode.INVALID_ARGUMENT, "fp32_contents"),
    ("contents and raw", _case_both, grpc.StatusCode.INVALID_ARGUMENT, "both contents"),
    ("raw size", _case_raw_size, grpc.StatusCode.INVALID_ARGUMENT, "binary_data_size"),
    ("raw count", _case_raw_count, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2"),
    ("int8 overflow", _case_overflow, grpc.StatusCode.INVALID_ARGUMENT, "outside the range"),
    ("fp16 typed", _case_fp16, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents"),
    ("unknown datatype", _case_datatype, grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype"),
    ("wrong shape", _case_shape, grpc.StatusCode.INVALID_ARGUMENT, "expects [-1, 32]"),
    ("batch too large", _case_batch, grpc.StatusCode.RESOURCE_EXHAUSTED, "batch size"),
    ("absurd shape", _case_absurd, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
    ("no inputs", _case_no_inputs, grpc.StatusCode.INVALID_ARGUMENT, "no inputs"),
    ("unknown model", _case_unknown_model, grpc.StatusCode.NOT_FOUND, "unknown model"),
    ("unknown version", _case_unknown_version, grpc.StatusCode.NOT_FOUND, "v9.9.9"),
    ("unknown output", _case_unknown_output, grpc.StatusCode.INVALID_ARGUMENT, "zzz"),
    ("bad priority", _case_bad_priority, grpc.StatusCode.INVALID_ARGUMENT, "priority"),
    ("over message limit", _case_too_big, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]


@pytest.mark.parametrize(
    ("case", "build", "code", "words"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_requests_get_the_right_status(
    channel: grpc.Channel,
    client: tg.InferenceServerClient,
    server: RunningServer,
    case: str,
    build: Any,
    code: grpc.StatusCode,
    words: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_infer(channel, build())
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or "")
    assert client.is_server_ready()
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_errors_carry_the_rest_message(channel: grpc.Channel, server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_infer(channel, _case_shape())
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 31], "data": [0.0] * 31}]}
    rest = httpx.post(f"{server.url}/v2/models/tabular/infer", json=body)
    assert rest.status_code == 400
    assert info.value.details() == rest.json()["error"]


def test_repository_control_needs_the_token_when_one_is_set(home: Path, tmp_path: Path) -> None:
    srv = start_server(home, tmp_path, "--workers", "1", "--admin-token", "s3cret")
    try:
        c = tg.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            c.unload_model("echo")
        with pytest.raises(InferenceServerException, match="not valid"):
            c.unload_model("echo", headers={"authorization": "Bearer wrong"})
        c.unload_model("echo", headers={"authorization": "Bearer s3cret"})
        assert not c.is_model_ready("echo")
        c.load_model("echo", headers={"authorization": "Bearer s3cret"})
        assert c.is_model_ready("echo")
    finally:
        srv.stop()


def test_sigterm_drains_grpc_calls(home: Path, tmp_path: Path) -> None:
    srv = start_server(home, tmp_path, "--workers", "1")
    c = tg.InferenceServerClient(srv.grpc_url)
    text = tg.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"slow"], dtype=object))
    delay = tg.InferInput("delay", [1], "FP32")
    delay.set_data_from_numpy(np.array([1.5], np.float32))
    results: list[object] = []
    caller = threading.Thread(target=lambda: results.append(c.infer("echo", [text, delay])))
    caller.start()
    time.sleep(0.5)  # the call is running in the model
    srv.proc.send_signal(signal.SIGTERM)
    caller.join(30)
    assert srv.proc.wait(30) == 0
    assert len(results) == 1
    got = results[0].as_numpy("text")  # type: ignore[attr-defined]
    assert list(got) == [b"slow"]


def test_no_grpc_and_port_conflicts(home: Path, tmp_path: Path) -> None:
    srv = start_server(home, tmp_path, "--workers", "1", "--no-grpc")
    try:
        assert srv.grpc_port is None
        assert httpx.get(f"{srv.url}/v2/health/ready").status_code == 200
    finally:
        srv.stop()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        done = cli(home, "serve", "--port", "0", "--grpc-port", str(taken))
        assert done.returncode == 2
        assert f"127.0.0.1:{taken}" in done.stderr and "--grpc-port" in done.stderr
