"""A model folder's files must each have one name: a hard link may be a file outside the
folder. They are refused in the source, before anything is copied, and in the store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import cli
from servion.errors import UnsafeArtifact
from servion.registry import ModelRegistry, RegisterRequest


def _external_data_model(folder: Path) -> Path:
    """A real ONNX MatMul whose weights live in ``weights.bin`` beside it."""
    weights = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return folder


def _replace_with_link(path: Path, outside: Path) -> None:
    """Make ``path`` a second name of ``outside`` (same bytes, so the model still loads)."""
    outside.write_bytes(path.read_bytes())
    path.unlink()
    os.link(outside, path)


def _stored_files(registry: ModelRegistry) -> list[Path]:
    return [p for p in registry.store.root.rglob("*") if p.is_file()]


def test_hard_linked_external_data_is_refused_before_it_is_copied(tmp_path: Path) -> None:
    folder = _external_data_model(tmp_path / "model")
    _replace_with_link(folder / "weights.bin", tmp_path / "secret.bin")
    home = tmp_path / "home"

    done = cli(home, "register", "linked", str(folder), "--version", "v1.0.0")

    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: 'weights.bin' in the model directory is a hard link (2 names for one file):"
        " it may be a file outside the folder; copy it in instead"
    )
    assert not [p for p in (home / "artifacts").rglob("*") if p.is_file()]


def test_any_hard_linked_file_in_a_folder_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    folder = _external_data_model(tmp_path / "model")
    (folder / "docs").mkdir()
    (folder / "docs/README.txt").write_text("about the model")
    _replace_with_link(folder / "docs/README.txt", tmp_path / "elsewhere.txt")

    with pytest.raises(UnsafeArtifact, match=r"'docs/README\.txt' .* is a hard link"):
        registry.register(RegisterRequest("linked", folder, "v1.0.0"))

    assert _stored_files(registry) == []
    os.unlink(tmp_path / "elsewhere.txt")  # one name left: the same folder is admitted
    assert registry.register(RegisterRequest("linked", folder, "v1.0.0")).format == "onnx"


def test_a_hard_link_made_to_a_stored_file_later_is_refused_at_load(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    folder = _external_data_model(tmp_path / "model")
    (folder / "README.txt").write_text("about the model")
    mv = registry.register(RegisterRequest("stored", folder, "v1.0.0"))
    stored = registry.store.path(mv.artifact)
    assert registry.open_runtime(mv).signature() == mv.signature

    # The bytes are unchanged, so the checksum alone would pass: through the other
    # name they could change at any time.
    os.link(stored / "README.txt", tmp_path / "other-name.txt")

    with pytest.raises(
        UnsafeArtifact, match=r"'README\.txt' in the model directory is a hard link"
    ):
        registry.open_runtime(mv)
