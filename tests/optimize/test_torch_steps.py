"""PyTorch programs through servion optimize: conversion to ONNX (both exporters), magnitude
pruning, and structured pruning that shrinks MLP layers for real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from servion.config import RuntimeSettings, Settings
from servion.errors import InvalidInput
from servion.optimize import OptimizeRequest, optimize
from servion.optimize.prune import find_layers, prune_structured
from servion.registry import ModelRegistry, RegisterRequest
from servion.runtime import make_runtime

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def mlp_data(tmp_path_factory: pytest.TempPathFactory, torch_models: Any) -> Path:
    data = tmp_path_factory.mktemp("torch-steps") / "val.npz"
    np.savez(data, input=torch_models.mlp_x[:600], target=torch_models.mlp_y[:600])
    return data


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, torch_models: Any
) -> Iterator[ModelRegistry]:
    """One registry for the module: the MLP as a torch.export program (``mlp``) and as
    TorchScript (``mlpscript``); each test derives its own version from them."""
    home = tmp_path_factory.mktemp("torch-steps-home")
    reg = ModelRegistry(Settings.load(home=home))
    reg.register(RegisterRequest("mlp", torch_models.mlp_exported, "v1.0.0"))
    sample = {"input": torch_models.mlp_x[:2]}
    reg.register(RegisterRequest("mlpscript", torch_models.mlp_script, "v1.0.0", sample=sample))
    yield reg
    reg.close()


VERSIONS = iter(f"v1.{minor}.0" for minor in range(1, 100))


def run(registry: ModelRegistry, source: str, data: Path, *steps: str, **kw: Any) -> Any:
    request = OptimizeRequest(source, next(VERSIONS), data, steps, "target", measure_s=0.05, **kw)
    return optimize(registry, request)


def test_an_exported_program_converts_faithfully_with_its_names_and_batch(
    registry: ModelRegistry, torch_models: Any, mlp_data: Path
) -> None:
    result = run(registry, "mlp:v1.0.0", mlp_data, "onnx")
    assert result.accepted, result.report.to_dict()
    onnx_stage = result.report.stages[1]
    assert onnx_stage.checked and onnx_stage.equivalence is not None
    assert (onnx_stage.equivalence.max_score_diff or 0) < 1e-4
    derived = result.registered
    source = registry.get("mlp", "v1.0.0")
    assert derived.format == "onnx" and not derived.held
    assert derived.signature.inputs == source.signature.inputs  # (-1, 16): batch stays free


def test_a_torchscript_archive_converts_and_prune_structured_halves_its_layers(
    registry: ModelRegistry, torch_models: Any, mlp_data: Path, tmp_path: Path
) -> None:
    result = run(registry, "mlpscript:v1.0.0", mlp_data, "onnx", "prune-structured", sparsity=0.5)
    assert result.accepted, result.report.to_dict()
    converted, pruned = result.report.stages[1:]
    assert pruned.size_bytes < 0.6 * converted.size_bytes
    assert pruned.notes == ("2 hidden layers, 128 units -> 64 (50% removed by |w_in|*|w_out|)",)
    assert (
        result.report.to_dict()["recipe"]["sparsity"] == 0.5
        if "recipe" in result.report.to_dict()
        else True
    )
    mv = result.registered
    lineage = registry.lineage.get(mv.name, mv.version)
    assert lineage is not None and lineage.recipe["sparsity"] == 0.5
    model = onnx.load(str(registry.store.path(mv.artifact)))
    shapes = sorted(tuple(t.dims) for t in model.graph.initializer if len(t.dims) == 2)
    assert shapes == [(3, 32), (32, 16), (32, 32)]


def test_magnitude_pruning_zeroes_the_share_asked_and_says_it_does_not_shrink(
    registry: ModelRegistry, torch_models: Any, mlp_data: Path
) -> None:
    result = run(registry, "mlp:v1.0.0", mlp_data, "prune", sparsity=0.6)
    assert result.accepted, result.report.to_dict()
    (note,) = result.report.stages[1].notes
    assert note.startswith("zeroed 3,187 of 5,312 weights (60%) by magnitude")
    mv = result.registered
    model = onnx.load(str(registry.store.path(mv.artifact)))
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 2]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == 3187


def test_pruning_past_what_the_model_can_lose_fails_the_gate(
    registry: ModelRegistry, torch_models: Any, mlp_data: Path
) -> None:
    result = run(registry, "mlp:v1.0.0", mlp_data, "onnx", "prune-structured", sparsity=0.99)
    assert not result.accepted
    assert "more than --max-accuracy-drop" in str(result.report.stages[-1].failure)
    attempted = result.report.target.split(":")[1]
    assert attempted not in [v.version for v in registry.list_versions("mlp")]


def test_torchscript_dict_outputs_are_refused_naming_the_way_out(
    torch_models: Any, tmp_path: Path
) -> None:
    from servion.optimize.steps import StepInput
    from servion.optimize.torch_steps import torch_to_onnx

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 8]},
              {"name": "scale", "datatype": "FP32", "shape": [-1, 1]}]  # fmt: skip
    runtime = make_runtime(
        "torchscript", torch_models.script, RuntimeSettings(), {"inputs": inputs}
    )
    runtime.load()
    step = StepInput(
        torch_models.script, tmp_path / "out.onnx", "torchscript", runtime.signature(),
        RuntimeSettings(), {}, {},
    )  # fmt: skip
    with pytest.raises(InvalidInput, match=r"dict of outputs.*torch\.export program \(\.pt2\)"):
        torch_to_onnx(step)
    assert not step.target.exists()


def test_bad_recipes_for_torch_models_are_refused_before_any_work(
    registry: ModelRegistry, torch_models: Any, mlp_data: Path
) -> None:
    with pytest.raises(InvalidInput, match="step 'prune-structured' takes an ONNX model"):
        run(registry, "mlp:v1.0.0", mlp_data, "prune-structured")
    with pytest.raises(InvalidInput, match="step 'prune' takes a torch-export, torchscript model"):
        run(registry, "mlp:v1.0.0", mlp_data, "onnx", "prune")
    with pytest.raises(InvalidInput, match="--sparsity 1: a share, above 0 and below 1"):
        run(registry, "mlp:v1.0.0", mlp_data, "prune", sparsity=1.0)


def test_prune_structured_finds_gemm_and_matmul_layers_and_refuses_graphs_without(
    tabular: Any, tmp_path: Path
) -> None:
    # skl2onnx writes a LogisticRegression pipeline with no hidden layer.
    with pytest.raises(InvalidInput, match="found no hidden layer to shrink"):
        prune_structured(tabular.onnx, tmp_path / "out.onnx", 0.5)
    assert not (tmp_path / "out.onnx").exists()
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier((40, 20), max_iter=200, random_state=0).fit(tabular.x, tabular.x[:, 0] > 0)
    source = tmp_path / "sk.onnx"
    source.write_bytes(to_onnx(mlp, tabular.x[:1], options={"zipmap": False}).SerializeToString())
    assert [layer.units for layer in find_layers(onnx.load(str(source)).graph)] == [40, 20]
    prune_structured(source, tmp_path / "pruned.onnx", 0.5)
    runtime = make_runtime("onnx", tmp_path / "pruned.onnx", RuntimeSettings())
    runtime.load()
    out = runtime.predict({runtime.signature().inputs[0].name: tabular.x[:5]})
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in out.values())
