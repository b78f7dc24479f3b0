"""MLflow model folders register by the flavor servion serves without running code from it,
with the MLflow run recorded; the rest are refused, naming why, before anything is stored."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow_folders import RUN_ID, MlflowFolders, X, make_mlflow_folders

from conftest import cli
from servion.cli.main import cli as servion
from servion.config import Settings
from servion.errors import ValidationFailed
from servion.registry import ModelRegistry, ModelVersion, RegisterRequest
from servion.registry.mlflow import read_mlflow_model
from servion.runtime.pickle_check import check_pickle_file
from servion.runtime.safe_pickle import AllowList
from servion.runtime.torch_options import check_archive

mlflow = pytest.importorskip("mlflow")

Registered = tuple[ModelRegistry, "Future[ModelVersion]"]


# One registration per flavor (and the ONNX folder form); the other serializations of a
# flavor reach the same runtimes, and are checked up to the probe.
PROBED = ["sklearn-skops", "pytorch-pt2", "xgboost", "lightgbm", "onnx", "onnx-external"]
REFUSED = [
    "sklearn-cloudpickle",
    "pytorch-pickle",
    "xgboost-binary",
    "lightgbm-sklearn",
    "pyfunc",
    "unknown-flavor",
    "escape",
    "absolute",
    "symlink",
    "not-yaml",
    "no-flavors",
    "huge",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> MlflowFolders:
    return make_mlflow_folders(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def registered(
    folders: MlflowFolders, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Registered]]:
    # Each probe is a child process importing its framework (seconds each): one
    # registry per folder lets them run side by side.
    found: dict[str, Registered] = {}
    with ThreadPoolExecutor(max_workers=len(PROBED)) as pool:
        for name in PROBED:
            case = folders.accepted[name]
            registry = ModelRegistry(Settings.load(home=tmp_path_factory.mktemp(name)))
            request = RegisterRequest(name, case.folder, "v1.0.0")
            found[name] = (registry, pool.submit(registry.register, request))
        yield found
    for registry, _ in found.values():
        registry.close()


@pytest.mark.parametrize("name", PROBED)
def test_a_servable_flavor_registers_and_answers_like_its_framework(
    folders: MlflowFolders, registered: dict[str, Registered], name: str
) -> None:
    case = folders.accepted[name]
    registry, future = registered[name]
    mv = future.result()
    assert (mv.format, mv.source_name) == (case.format, case.folder.name)
    assert mv.mlflow is not None and mv.mlflow["flavor"] == case.flavor
    runtime = registry.open_runtime(mv)
    try:
        answer = runtime.predict({mv.signature.inputs[0].name: X})[case.output]
    finally:
        runtime.unload()
    np.testing.assert_allclose(answer, case.expected, rtol=1e-4, atol=1e-5)


def test_the_flavor_file_is_what_is_stored_and_checksummed(
    folders: MlflowFolders, registered: dict[str, Registered]
) -> None:
    skops = registered["sklearn-skops"][1].result()
    model_file = folders.accepted["sklearn-skops"].folder / "model.skops"
    assert skops.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert skops.artifact.endswith("/artifact.skops")
    # An ONNX graph with its weights beside it is stored as the folder it came in.
    external = registered["onnx-external"][1].result()
    assert external.artifact.endswith("/") and external.mlflow is not None
    assert (external.mlflow["file"], external.mlflow["serialization"]) == (
        ".",
        "onnx with external data",
    )


def test_the_mlflow_run_is_recorded_beside_servions_own_signature(
    registered: dict[str, Registered],
) -> None:
    import sklearn

    mv = registered["sklearn-skops"][1].result()
    record = mv.mlflow
    assert record is not None
    assert {k: record[k] for k in ("run_id", "artifact_path", "flavor", "serialization")} == {
        "run_id": RUN_ID,
        "artifact_path": "model",
        "flavor": "sklearn",
        "serialization": "skops",
    }
    assert record["mlflow_version"] == mlflow.__version__
    assert record["framework_version"] == sklearn.__version__
    assert re.fullmatch(r"[0-9a-f]{32}", record["model_uuid"])
    assert record["utc_time_created"].startswith("20")
    assert record["file"] == "model.skops"
    # MLflow names the columns; servion's probe names its one input. Both are kept.
    mlflow_inputs = [c["name"] for c in json.loads(record["signature"]["inputs"])]
    assert mlflow_inputs == ["amount", "age", "balance", "tenure"]
    assert [s.name for s in mv.signature.inputs] == ["input"]
    assert mv.to_dict()["environment"]["mlflow"] == record


@pytest.mark.parametrize(
    ("name", "file"), [("sklearn-pickle", "model.pkl"), ("pytorch-script", "data/model.pth")]
)
def test_the_other_serializations_map_to_their_formats_and_pass_the_static_gate(
    folders: MlflowFolders, name: str, file: str
) -> None:
    case = folders.accepted[name]
    chosen = read_mlflow_model(case.folder)
    assert (chosen.format, chosen.artifact) == (case.format, case.folder / file)
    if chosen.format == "sklearn-pickle":
        check_pickle_file(chosen.artifact, AllowList.default())
    else:
        check_archive(chosen.format, chosen.artifact)


@pytest.mark.parametrize("name", REFUSED)
def test_a_refused_folder_leaves_nothing_behind_and_exits_2(
    folders: MlflowFolders, settings: Settings, name: str
) -> None:
    case = folders.refused[name]
    registry = ModelRegistry(settings)
    try:
        with pytest.raises(case.error, match=case.message):
            registry.register(RegisterRequest("refused", case.folder, "v1.0.0"))
    finally:
        registry.close()
    args = ["--home", str(settings.home), "register", "refused", str(case.folder)]
    done = CliRunner().invoke(servion, [*args, "--version", "v1.0.0"])
    assert done.exit_code == 2, done.output
    assert re.search(case.message, done.stderr) and done.stderr.startswith("error: ")
    registry = ModelRegistry(settings)
    try:
        assert registry.list_versions() == []
    finally:
        registry.close()
    assert not any(settings.artifacts_dir.iterdir())


def test_a_format_that_is_not_the_flavor_is_refused(
    folders: MlflowFolders, registry: ModelRegistry
) -> None:
    folder = folders.accepted["sklearn-skops"].folder
    with pytest.raises(ValidationFailed, match=r"--format sklearn-pickle does not match .*skops"):
        registry.register(RegisterRequest("mixed", folder, "v1.0.0", format="sklearn-pickle"))


def test_a_pyfunc_folder_is_served_by_the_users_own_trusted_model_py(
    folders: MlflowFolders, registry: ModelRegistry
) -> None:
    case = folders.accepted["pyfunc-wrapped"]
    request = RegisterRequest("wrapped", case.folder, "v1.0.0", format="python", trust_code=True)
    mv = registry.register(request)
    assert (mv.format, mv.mlflow) == ("python", None)
    runtime = registry.open_runtime(mv)
    try:
        np.testing.assert_array_equal(runtime.predict({"x": X})["y"], case.expected)
    finally:
        runtime.unload()


def test_the_cli_registers_an_mlflow_folder_and_shows_its_run(
    folders: MlflowFolders, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    folder = folders.accepted["onnx"].folder
    done = cli(home, "register", "fraud", str(folder), "--version", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert f"from MLflow: run {RUN_ID}, flavor onnx (onnx)" in done.stdout
    shown = cli(home, "models", "show", "fraud:v1.0.0")
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^  mlflow +run {RUN_ID}, flavor onnx", shown.stdout, re.MULTILINE)
