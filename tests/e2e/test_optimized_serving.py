"""An optimized version serves through a real server: the request a client sent to the
joblib original works unchanged against its ONNX version, and the answers agree; verify
--accuracy scores it again on its recorded validation data, and notices that data change."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from conftest import RunningServer, TabularModels, cli


def infer(server: RunningServer, path: str, x: np.ndarray, version: str) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
    reply = httpx.post(f"{server.url}{path}/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == version
    outputs = reply.json()["outputs"]
    assert {o["name"]: o["datatype"] for o in outputs} == {
        "label": "INT64",
        "probabilities": "FP64",
    }
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in outputs}


def test_the_onnx_version_answers_the_sources_requests_alike(
    tmp_path: Path, tabular: TabularModels, serve: Callable[..., RunningServer]
) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.joblib), "--version", "v1.0.0").returncode == 0
    )
    np.savez(tmp_path / "val.npz", input=tabular.x)
    done = cli(
        home, "optimize", "tabular:v1.0.0", "--to-version", "v1.1.0",
        "--validate", str(tmp_path / "val.npz"), "--measure-seconds", "0.1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "agreement against the source's answers" in done.stdout
    assert cli(home, "models", "policy", "tabular", "all").returncode == 0
    server = serve(home)
    for version, platform in (("v1.0.0", "sklearn"), ("v1.1.0", "onnxruntime_onnx")):
        meta = httpx.get(f"{server.url}/v2/models/tabular/versions/{version}").json()
        assert meta["platform"] == platform
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 32]}]
    x = tabular.x[:64]
    source = infer(server, "/v2/models/tabular/versions/v1.0.0", x, "v1.0.0")
    optimized = infer(server, "/v2/models/tabular/versions/v1.1.0", x, "v1.1.0")
    np.testing.assert_array_equal(optimized["label"], source["label"])
    np.testing.assert_allclose(optimized["probabilities"], source["probabilities"], atol=1e-5)
    # The model's own route, as a client of the original calls it, reaches the new version.
    latest = infer(server, "/v2/models/tabular", x, "v1.1.0")
    np.testing.assert_array_equal(latest["label"], source["label"])

    # Deployed, it is verified on its validation data; data changed since is refused.
    spec = {"endpoint": "tab-ep", "models": [{"model": "tabular", "version": "v1.1.0"}]}
    assert httpx.post(f"{server.url}/v2/admin/endpoints", json=spec, timeout=60).status_code == 200
    flags = ("--url", server.url, "--duration", "0.5", "--accuracy")
    verified = cli(home, "verify", "tab-ep", *flags)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert re.search(
        r"accuracy tabular:v1\.1\.0: agreement 1\.0000 \(recorded 1\.0000, source 1\.0000,"
        r" limit 0\.01\) ok",
        verified.stdout,
    ), verified.stdout
    np.savez(tmp_path / "val.npz", input=tabular.x[::-1])
    changed = cli(home, "verify", "tab-ep", *flags, "--json")
    assert changed.returncode == 1
    (found,) = json.loads(changed.stdout)["accuracy"]
    assert not found["ok"] and "changed since it was registered" in found["failure"]
