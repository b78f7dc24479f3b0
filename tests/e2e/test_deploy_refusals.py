"""Deployments refuse what cannot work, at deploy time and with `servion deploy --check`:
arms that answer different requests, an endpoint that takes another model's name, and a
fixed fallback that is not one row of the arms' answer (which is repeated per request row)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from model_sources import DOUBLER_MODEL, SHADOW_MODEL

from conftest import RunningServer, TabularModels, cli, register, start_server
from servion.config import Settings
from servion.registry import ModelRegistry

ONNX = {"model": "fraud", "version": "v1.0.0"}  # ONNX: input X, outputs label, probabilities
JOBLIB = {"model": "fraud", "version": "v1.2.0"}  # scikit-learn: input "input", FP64 outputs


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels) -> Path:
    tmp = tmp_path_factory.mktemp("refusals")
    settings = Settings.load(home=tmp / "home")
    registry = ModelRegistry(settings)
    register(registry, "fraud", tabular.onnx, "v1.0.0")
    register(registry, "fraud", tabular.onnx, "v1.1.0")
    register(registry, "fraud", tabular.joblib, "v1.2.0")
    register(registry, "ridge", tabular.onnx, "v1.0.0")
    for name, source in (("doubler", DOUBLER_MODEL), ("failing", "MODE='fail'\n" + SHADOW_MODEL)):
        path = tmp / f"{name}.py"
        path.write_text(source)
        register(registry, name, path, trust_code=True)
    registry.close()
    return settings.home


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(home, tmp_path_factory.mktemp("refusals-run"), "--workers", "1")
    yield srv
    srv.stop()


def arm(ref: dict[str, str], weight: float = 100) -> dict[str, Any]:
    return {**ref, "weight": weight}


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "arms-inputs",
        {"endpoint": "ab-split", "models": [arm(ONNX, 50), arm(JOBLIB, 50)]},
        "models[1]: 'fraud:v1.2.0' has no input 'X', unlike 'fraud:v1.0.0' (models[0])",
    ),
    (
        "shadow-inputs",
        {"endpoint": "shadowed", "models": [arm(ONNX)], "shadows": [JOBLIB]},
        "shadows[0]: 'fraud:v1.2.0' has no input 'X'",
    ),
    (
        "fallback-outputs",
        {
            "endpoint": "fallback-ep",
            "models": [arm(ONNX)],
            "fallback": {"model": "doubler", "version": "v1.0.0"},
        },
        "fallback: 'doubler:v1.0.0' has no input 'X'",
    ),
    (
        "stage-outputs",
        {
            "endpoint": "cascaded",
            "models": [arm(ONNX)],
            "cascade": {"output": "probabilities", "min_confidence": 0.9, "then": [JOBLIB]},
        },
        "cascade.then[0]: 'fraud:v1.2.0' has no input 'X'",
    ),
    (
        "takeover",
        {"endpoint": "ridge", "models": [arm(ONNX)]},
        "endpoint: 'ridge' is a registered model's name; an endpoint of that name may serve"
        " only its versions, not 'fraud'",
    ),
    (
        "fixed-missing",
        {
            "endpoint": "fixed-ep",
            "models": [arm(ONNX)],
            "fallback": {
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]
            },
        },
        "fallback.outputs: no 'probabilities'; the arms answer label, probabilities",
    ),
    (
        "fixed-datatype",
        {
            "endpoint": "fixed-ep",
            "models": [arm(ONNX)],
            "fallback": {
                "outputs": [
                    {"name": "label", "datatype": "INT32", "shape": [1], "data": [0]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [1, 0]},
                ]
            },
        },
        "fallback.outputs.label: INT32, but the arms give INT64",
    ),
    (
        "fixed-shape",
        {
            "endpoint": "fixed-ep",
            "models": [arm(ONNX)],
            "fallback": {
                "outputs": [
                    {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [2], "data": [1, 0]},
                ]
            },
        },
        "fallback.outputs.probabilities: shape [2]; one row of it is [1, 2]",
    ),
]


@pytest.mark.parametrize(("case", "spec", "words"), CASES, ids=[c[0] for c in CASES])
def test_refused_at_deploy_and_by_check(
    server: RunningServer, home: Path, tmp_path: Path, case: str, spec: dict[str, Any], words: str
) -> None:
    reply = httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(spec), timeout=60)
    assert reply.status_code == 400 and words in reply.json()["error"], reply.text
    spec_file = tmp_path / f"{case}.json"
    spec_file.write_text(json.dumps(spec))
    checked = cli(home, "deploy", "--check", str(spec_file))
    assert checked.returncode == 2 and words in checked.stderr, checked.stderr
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_compatible_arms_and_same_model_names_deploy(server: RunningServer) -> None:
    for spec in (
        {"endpoint": "ab-ok", "models": [arm(ONNX, 50), arm({**ONNX, "version": "v1.1.0"}, 50)]},
        {"endpoint": "fraud", "models": [arm(ONNX)]},  # its own versions: allowed
    ):
        reply = httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(spec))
        assert reply.status_code == 200, reply.text


def test_a_model_cannot_take_an_endpoints_name(
    server: RunningServer, home: Path, tabular: TabularModels
) -> None:
    spec = {"endpoint": "scoring", "models": [arm(ONNX)]}
    assert (
        httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(spec)).status_code == 200
    )
    taken = cli(home, "register", "scoring", str(tabular.onnx), "--version", "v1.0.0")
    assert taken.returncode == 2 and "'scoring' is a deployed endpoint's name" in taken.stderr


def test_a_fixed_fallback_answers_every_row(server: RunningServer) -> None:
    spec = {
        "endpoint": "rows-fb",
        "models": [{"model": "failing", "version": "v1.0.0"}],
        "fallback": {
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [7]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]},
            ]
        },
    }
    assert (
        httpx.post(f"{server.url}/v2/admin/endpoints", content=json.dumps(spec)).status_code == 200
    )
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [3, 32], "data": [0.25] * 96}]}
    reply = httpx.post(f"{server.url}/v2/models/rows-fb/infer", json=body)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["label"]["shape"] == [3] and outputs["label"]["data"] == [7, 7, 7]
    assert outputs["probabilities"]["shape"] == [3, 2]
    only = httpx.post(
        f"{server.url}/v2/models/rows-fb/infer", json={**body, "outputs": [{"name": "label"}]}
    )
    assert [o["name"] for o in only.json()["outputs"]] == ["label"]
