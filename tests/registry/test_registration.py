"""Registration validates at the door, stores by content, and re-checks at load."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import TabularModels
from servion.config import RegistrySettings, Settings
from servion.errors import (
    ChecksumMismatch,
    DuplicateVersion,
    ModelNotFound,
    RuntimeFailure,
    UnsafeArtifact,
    ValidationFailed,
)
from servion.registry import ModelRegistry, RegisterRequest, VersionPolicy
from servion.registry.tables import REGISTRY


def req(name: str, path: Path, version: str = "v1.0.0", **kw: object) -> RegisterRequest:
    return RegisterRequest(name, path, version, **kw)  # type: ignore[arg-type]


def test_register_records_signature_checksum_and_environment(
    registry: ModelRegistry, tabular: TabularModels
) -> None:
    mv = registry.register(req("tabular", tabular.onnx))
    assert mv.sha256 == hashlib.sha256(tabular.onnx.read_bytes()).hexdigest()
    assert mv.format == "onnx" and mv.size_bytes == tabular.onnx.stat().st_size
    assert [s.to_dict() for s in mv.signature.inputs] == [
        {"name": "X", "datatype": "FP32", "shape": [-1, 32]}
    ]
    assert mv.environment["packages"]["onnxruntime"]
    assert mv.environment["python"].count(".") == 2
    assert registry.get("tabular").version == "v1.0.0"
    # the schema is versioned from the start
    assert registry.database.versions() == {"state": 1, "registry": len(REGISTRY.steps)}


@pytest.mark.parametrize("name", ["ab", "x" * 65, "has space", "semi;colon", "../etc", "名前名前"])
def test_bad_names_are_refused(registry: ModelRegistry, tabular: TabularModels, name: str) -> None:
    with pytest.raises(ValidationFailed, match="invalid model name"):
        registry.register(req(name, tabular.onnx))


@pytest.mark.parametrize("version", ["1.0.0", "v1.0", "v1.0.0-rc1", "V1.0.0", "v01.a.0", ""])
def test_bad_versions_are_refused(
    registry: ModelRegistry, tabular: TabularModels, version: str
) -> None:
    with pytest.raises(ValidationFailed, match="invalid version"):
        registry.register(req("tabular", tabular.onnx, version))


def test_paths_must_be_real_regular_files(
    registry: ModelRegistry, tabular: TabularModels, tmp_path: Path
) -> None:
    with pytest.raises(ValidationFailed, match="no such file"):
        registry.register(req("tabular", tmp_path / "missing.onnx"))
    link = tmp_path / "link.onnx"
    link.symlink_to(tabular.onnx)
    with pytest.raises(ValidationFailed, match="symbolic link"):
        registry.register(req("tabular", link))
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ValidationFailed, match="not a regular file"):
        registry.register(req("tabular", fifo))
    odd = tmp_path / "model.weird"
    odd.write_bytes(b"x")
    with pytest.raises(ValidationFailed, match="unknown model format"):
        registry.register(req("tabular", odd))
    with pytest.raises(ValidationFailed, match="control characters"):
        registry.register(req("tabular", Path("bad\nname.onnx")))


def test_size_limit_needs_an_explicit_reason(tmp_path: Path, tabular: TabularModels) -> None:
    settings = Settings(
        home=tmp_path,
        db_url=f"sqlite:///{tmp_path}/r.db",
        registry=RegistrySettings(max_artifact_bytes=100),
    )
    registry = ModelRegistry(settings)
    with pytest.raises(ValidationFailed, match="over the 100-byte limit"):
        registry.register(req("tabular", tabular.onnx))
    mv = registry.register(req("tabular", tabular.onnx, large_reason="approved by ML-42"))
    assert mv.large_reason == "approved by ML-42"
    registry.close()


def test_duplicate_version_is_refused_and_same_bytes_stored_once(
    registry: ModelRegistry, tabular: TabularModels
) -> None:
    first = registry.register(req("tabular", tabular.onnx))
    with pytest.raises(DuplicateVersion):
        registry.register(req("tabular", tabular.onnx))
    second = registry.register(req("tabular", tabular.onnx, "v1.0.1"))
    other = registry.register(req("tabular2", tabular.onnx))
    assert first.artifact == second.artifact == other.artifact
    stored = [p for p in registry.store.root.iterdir() if not p.name.startswith(".")]
    assert len(stored) == 1
    registry.delete("tabular", "v1.0.0")
    assert registry.store.path(second.artifact).exists()  # still used by two versions


def test_checksum_is_checked_when_given(registry: ModelRegistry, tabular: TabularModels) -> None:
    digest = hashlib.sha256(tabular.onnx.read_bytes()).hexdigest()
    with pytest.raises(ChecksumMismatch, match="not the expected"):
        registry.register(req("tabular", tabular.onnx, checksum="0" * 64))
    assert not [p for p in registry.store.root.iterdir() if not p.name.startswith(".")]
    with pytest.raises(ValidationFailed, match="not a hex SHA-256"):
        registry.register(req("tabular", tabular.onnx, checksum="abc"))
    assert (
        registry.register(req("tabular", tabular.onnx, checksum=f"sha256:{digest}")).sha256
        == digest
    )


def test_tampered_artifact_is_refused_at_load(
    registry: ModelRegistry, tabular: TabularModels
) -> None:
    mv = registry.register(req("tabular", tabular.onnx))
    assert registry.open_runtime(mv).signature() == mv.signature
    path = registry.store.path(mv.artifact)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ChecksumMismatch, match="modified after registration"):
        registry.open_runtime(mv)


@pytest.mark.parametrize("fmt_file", ["joblib", "skops", "pickle"])
def test_sklearn_formats_register_with_label_and_probabilities(
    registry: ModelRegistry, tabular: TabularModels, fmt_file: str
) -> None:
    mv = registry.register(req("tabsk", getattr(tabular, fmt_file)))
    assert [o.name for o in mv.signature.outputs] == ["label", "probabilities"]
    runtime = registry.open_runtime(mv)
    out = runtime.predict({"input": tabular.x[:7]})
    np.testing.assert_array_equal(out["label"], tabular.pipeline.predict(tabular.x[:7]))  # type: ignore[attr-defined]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/servion-should-never-exist",))


def test_pickle_with_untrusted_global_is_refused_before_any_load(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "evil.joblib"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(UnsafeArtifact, match="system"):
        registry.register(req("evil", path))
    assert not Path("/tmp/servion-should-never-exist").exists()
    with pytest.raises(ModelNotFound):
        registry.get("evil")


def _custom_model(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "model.py"
    path.write_text(
        "import numpy as np\n"
        "class Model:\n"
        "    inputs = [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 2]}]\n"
        "    outputs = [{'name': 'y', 'datatype': 'FP32', 'shape': [-1]}]\n"
        f"    def load(self):\n        {body}\n"
        "    def predict(self, inputs):\n        return {'y': inputs['x'].sum(axis=1)}\n"
    )
    return path


def test_custom_python_model_needs_trust(registry: ModelRegistry, tmp_path: Path) -> None:
    path = _custom_model(tmp_path, "pass")
    with pytest.raises(ValidationFailed, match="--trust-code"):
        registry.register(req("custom", path))
    mv = registry.register(req("custom", path, trust_code=True))
    runtime = registry.open_runtime(mv)
    assert runtime.predict({"x": np.ones((3, 2), np.float32)})["y"].tolist() == [2, 2, 2]


def test_model_that_crashes_while_loading_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    path = _custom_model(tmp_path, "import os; os._exit(3)")
    with pytest.raises(RuntimeFailure, match="crashed the process"):
        registry.register(req("crasher", path, trust_code=True))
    with pytest.raises(ModelNotFound):
        registry.get("crasher")


def test_model_that_hangs_while_loading_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        db_url=f"sqlite:///{tmp_path}/r.db",
        registry=RegistrySettings(probe_timeout_s=3),
    )
    registry = ModelRegistry(settings)
    path = _custom_model(tmp_path, "import time; time.sleep(600)")
    with pytest.raises(RuntimeFailure, match="did not load and answer within 3 s"):
        registry.register(req("hanger", path, trust_code=True))
    registry.close()


def test_smoke_inference_uses_the_given_sample(
    registry: ModelRegistry, tabular: TabularModels
) -> None:
    with pytest.raises(RuntimeFailure, match="sample's inputs"):
        registry.register(req("tabular", tabular.onnx, sample={"wrong": tabular.x[:1]}))
    mv = registry.register(req("tabular", tabular.onnx, sample={"X": tabular.x[:3]}))
    assert mv.version == "v1.0.0"


def test_model_directory_in_an_archive(
    registry: ModelRegistry, tabular: TabularModels, tmp_path: Path
) -> None:
    folder = tmp_path / "tabular"
    folder.mkdir()
    shutil.copy(tabular.onnx, folder / "model.onnx")
    (folder / "README.txt").write_text("docs travel with the model")
    archive = tmp_path / "tabular.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="tabular")
    mv = registry.register(req("tabular", archive))
    assert mv.format == "onnx"
    assert (registry.store.path(mv.artifact) / "README.txt").exists()
    assert registry.open_runtime(mv).signature() == mv.signature


def test_archive_member_escaping_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_bytes(b"x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../../escaped.onnx")
    with pytest.raises(UnsafeArtifact):
        registry.register(req("evil", archive))
    assert not (tmp_path.parent / "escaped.onnx").exists()


def test_onnx_external_data_outside_the_folder_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert registry.register(req("extok", folder)).format == "onnx"
    loaded = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for entry in loaded.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../outside.bin"
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    onnx.save_model(loaded, str(folder / "model.onnx"))
    with pytest.raises(UnsafeArtifact):
        registry.register(req("extbad", folder))


def test_version_policy_and_listing(registry: ModelRegistry, tabular: TabularModels) -> None:
    for version in ("v1.0.0", "v1.10.0", "v1.2.0"):
        registry.register(req("tabular", tabular.onnx, version))
    assert [mv.version for mv in registry.list_versions("tabular")] == [
        "v1.0.0",
        "v1.2.0",
        "v1.10.0",
    ]
    assert registry.get("tabular").version == "v1.10.0"
    registry.set_policy("tabular", VersionPolicy.parse("latest:2"))
    assert str(registry.policies()["tabular"][0]) == "latest:2"
    with pytest.raises(ValidationFailed):
        VersionPolicy.parse("newest")
