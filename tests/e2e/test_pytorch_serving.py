"""PyTorch programs registered with the real CLI and served by a real server, over REST
(JSON and binary, tritonclient) and gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from conftest import RunningServer, cli, server_home, start_server

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, torch_models: Any) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("torch-serving")
    home = tmp / "home"
    done = cli(
        home,
        "register",
        "exported",
        str(torch_models.exported),
        "--version",
        "v1.0.0",
        "--option",
        "warmup=1,8",
    )
    assert done.returncode == 0, done.stderr
    sample = tmp / "sample.json"
    sample.write_text(
        json.dumps({"x": torch_models.x.tolist(), "scale": torch_models.scale.tolist()})
    )
    done = cli(
        home,
        "register",
        "scripted",
        str(torch_models.script),
        "--version",
        "v1.0.0",
        "--sample",
        str(sample),
        "--option",
        "precision=fp32",
        "--option",
        "device=cpu",
    )
    assert done.returncode == 0, done.stderr
    running = start_server(home, tmp, "--workers", "1")
    yield running
    running.stop()


@pytest.mark.parametrize("model", ["exported", "scripted"])
def test_both_formats_answer_like_the_module_over_rest_and_grpc(
    server: RunningServer, torch_models: Any, model: str
) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    scale = rng.uniform(0.5, 2, (6, 1)).astype(np.float32)
    want = torch_models.expected(x, scale)

    rest = th.InferenceServerClient(server.url.removeprefix("http://"))
    inputs = [th.InferInput("x", [6, 8], "FP32"), th.InferInput("scale", [6, 1], "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=True)
    inputs[1].set_data_from_numpy(scale, binary_data=False)
    got = rest.infer(model, inputs)
    np.testing.assert_allclose(got.as_numpy("probs"), want["probs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.as_numpy("total"), want["total"], rtol=1e-5, atol=1e-5)

    grpc = tg.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    g_inputs = [tg.InferInput("x", [6, 8], "FP32"), tg.InferInput("scale", [6, 1], "FP32")]
    g_inputs[0].set_data_from_numpy(x)
    g_inputs[1].set_data_from_numpy(scale)
    got_grpc = grpc.infer(model, g_inputs)
    np.testing.assert_allclose(got_grpc.as_numpy("probs"), want["probs"], rtol=1e-5, atol=1e-6)


def test_metadata_names_the_platform_and_dynamic_batch(server: RunningServer) -> None:
    meta = httpx.get(f"{server.url}/v2/models/exported", timeout=10).json()
    assert meta["platform"] == "pytorch_export"
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 8]}
    scripted = httpx.get(f"{server.url}/v2/models/scripted", timeout=10).json()
    assert scripted["platform"] == "pytorch_libtorch"


def test_bad_requests_get_400_and_the_server_keeps_serving(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/exported/infer"
    wrong = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 7], "data": [0.0] * 7},
            {"name": "scale", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
        ]
    }
    reply = httpx.post(url, json=wrong, timeout=10)
    assert reply.status_code == 400, reply.text
    assert "'x'" in reply.json()["error"]
    good = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.0] * 8},
            {"name": "scale", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
        ]
    }
    assert httpx.post(url, json=good, timeout=10).status_code == 200


def test_the_cli_refuses_torch_save_files_and_bad_options(
    tmp_path: Path, torch_models: Any
) -> None:
    home = tmp_path / "home"
    refused = [
        ("weights", torch_models.state_dict, (), "is a state dict"),
        ("weights", torch_models.whole_pickle, (), "untrusted globals"),
        ("scripted", torch_models.script, (), "pass --sample FILE"),
        (
            "exported",
            torch_models.exported,
            ("--option", "device"),
            "--option 'device' is not KEY=VALUE",
        ),
        ("exported", torch_models.exported, ("--option", "precision=fp8"), "precision 'fp8'"),
    ]
    for name, path, extra, message in refused:
        done = cli(home, "register", name, str(path), "--version", "v1.0.0", *extra)
        assert done.returncode == 2 and message in done.stderr, (name, done.stderr)
    listed = cli(home, "models", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_models_show_names_the_runtime_options(server: RunningServer) -> None:
    shown = cli(server_home(server), "models", "show", "exported:v1.0.0")
    assert shown.returncode == 0, shown.stderr
    assert "runtime        device=auto, precision=fp32, warmup=1,8" in shown.stdout
