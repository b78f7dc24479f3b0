"""External-data checks on real ONNX models: clean ones pass and run, tampered ones are refused."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from servion.errors import UnsafeArtifact, ValidationFailed
from servion.runtime.onnx_checks import check_external_data

WEIGHTS = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
OPSET = [helper.make_opsetid("", 17)]


# --- builders ---------------------------------------------------------------


def _matmul_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _if_model() -> onnx.ModelProto:
    """Y = cond ? then_w : else_w, with each weight an initializer of its own branch."""

    def branch(name: str, value: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Identity", [f"{name}_w"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])],
            [numpy_helper.from_array(np.full(2, value, dtype=np.float32), f"{name}_w")],
        )

    node = helper.make_node(
        "If", ["cond"], ["Y"], then_branch=branch("then", 7.0), else_branch=branch("else", -1.0)
    )
    graph = helper.make_graph(
        [node],
        "branchy",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _save_external(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


def _external(location: str, **extra: str) -> list[onnx.StringStringEntryProto]:
    entries = {"location": location, **extra}
    return [onnx.StringStringEntryProto(key=k, value=v) for k, v in entries.items()]


def _make_external(tensor: onnx.TensorProto, location: str, **extra: str) -> None:
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.external_data.extend(_external(location, **extra))


def _tamper(model_path: Path, edit: Callable[[onnx.ModelProto], None]) -> None:
    """Rewrite the graph only; the external files stay as they are."""
    model = onnx.load(str(model_path), load_external_data=False)
    edit(model)
    onnx.save_model(model, str(model_path))


def _set_entry(key: str, value: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        for entry in model.graph.initializer[0].external_data:
            if entry.key == key:
                entry.value = value
                return
        model.graph.initializer[0].external_data.append(
            onnx.StringStringEntryProto(key=key, value=value)
        )

    return edit


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _save_external(_matmul_model(), tmp_path / "model")


# --- clean models -----------------------------------------------------------


def test_clean_external_model_passes_and_runs(model_path: Path) -> None:
    assert check_external_data(model_path) == [model_path.parent / "weights.bin"]

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.array([[1.0, 1.0]], dtype=np.float32)
    (y,) = session.run(None, {"X": x})
    np.testing.assert_allclose(y, x @ WEIGHTS)


def test_clean_if_model_returns_its_one_weights_file_and_runs(tmp_path: Path) -> None:
    path = _save_external(_if_model(), tmp_path / "model")

    assert check_external_data(path) == [path.parent / "weights.bin"]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"cond": np.array(True)})
    np.testing.assert_allclose(y, [7.0, 7.0])


def test_model_without_external_data_has_no_files(tmp_path: Path) -> None:
    path = tmp_path / "inline.onnx"
    onnx.save_model(_matmul_model(), str(path))

    assert check_external_data(path) == []


def test_files_are_unique_sorted_and_normalised(tmp_path: Path) -> None:
    path = _save_external(_if_model(), tmp_path / "model")
    sub = path.parent / "sub"
    sub.mkdir()
    (sub / "b.bin").write_bytes((path.parent / "weights.bin").read_bytes())

    def edit(model: onnx.ModelProto) -> None:
        then_w = model.graph.node[0].attribute[0].g.initializer[0]
        for entry in then_w.external_data:
            if entry.key == "location":
                entry.value = "./sub//b.bin"

    _tamper(path, edit)

    assert check_external_data(path) == [sub / "b.bin", path.parent / "weights.bin"]


# --- escaping locations -----------------------------------------------------


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("../outside.bin", "'..'"),
        ("sub/../../outside.bin", "'..'"),
        ("/etc/passwd", "absolute"),
        ("..\\outside.bin", "backslash"),
        ("C:/outside.bin", "drive letter"),
        ("", "empty"),
        ("*/_ORT_MEM_ADDR_/*", "memory address"),
    ],
)
def test_escaping_location_is_refused(model_path: Path, location: str, reason: str) -> None:
    (model_path.parent.parent / "outside.bin").write_bytes(WEIGHTS.tobytes())
    _tamper(model_path, _set_entry("location", location))

    with pytest.raises(UnsafeArtifact, match=reason) as err:
        check_external_data(model_path)

    assert f"'{location}'" in str(err.value)


def test_ort_memory_tag_is_refused_even_when_such_a_file_exists(model_path: Path) -> None:
    fake = model_path.parent / "*" / "_ORT_MEM_ADDR_"
    fake.mkdir(parents=True)
    (fake / "*").write_bytes(WEIGHTS.tobytes())
    _tamper(model_path, _set_entry("location", "*/_ORT_MEM_ADDR_/*"))

    with pytest.raises(UnsafeArtifact, match="memory address"):
        check_external_data(model_path)


def test_symlink_pointing_outside_is_refused(model_path: Path) -> None:
    outside = model_path.parent.parent / "x"
    weights = model_path.parent / "weights.bin"
    os.replace(weights, outside)
    weights.symlink_to("../x")

    with pytest.raises(UnsafeArtifact, match=r"'weights\.bin'.*symbolic link"):
        check_external_data(model_path)


def test_symlink_inside_the_folder_is_refused_too(model_path: Path) -> None:
    weights = model_path.parent / "weights.bin"
    os.replace(weights, model_path.parent / "real.bin")
    weights.symlink_to("real.bin")

    with pytest.raises(UnsafeArtifact, match="symbolic link"):
        check_external_data(model_path)


def test_symlinked_folder_component_is_refused(model_path: Path) -> None:
    elsewhere = model_path.parent.parent / "elsewhere"
    elsewhere.mkdir()
    os.replace(model_path.parent / "weights.bin", elsewhere / "weights.bin")
    (model_path.parent / "data").symlink_to(elsewhere)
    _tamper(model_path, _set_entry("location", "data/weights.bin"))

    with pytest.raises(UnsafeArtifact, match=r"'data/weights\.bin'.*symbolic link"):
        check_external_data(model_path)


def test_hard_link_is_refused(model_path: Path) -> None:
    os.link(model_path.parent / "weights.bin", model_path.parent.parent / "alias.bin")

    with pytest.raises(UnsafeArtifact, match=r"'weights\.bin'.*hard link"):
        check_external_data(model_path)


def test_missing_file_is_refused(model_path: Path) -> None:
    (model_path.parent / "weights.bin").unlink()

    with pytest.raises(UnsafeArtifact, match=r"'weights\.bin'.*does not exist"):
        check_external_data(model_path)


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_location_that_is_not_a_regular_file_is_refused(model_path: Path, kind: str) -> None:
    weights = model_path.parent / "weights.bin"
    weights.unlink()
    if kind == "fifo":
        os.mkfifo(weights)  # onnxruntime would block forever reading it
    else:
        weights.mkdir()

    with pytest.raises(UnsafeArtifact, match="not a regular file"):
        check_external_data(model_path)


def test_file_where_a_folder_is_expected_is_refused(model_path: Path) -> None:
    _tamper(model_path, _set_entry("location", "weights.bin/inner.bin"))

    with pytest.raises(UnsafeArtifact, match=r"cannot be read|not a regular file"):
        check_external_data(model_path)


# --- offsets and lengths ----------------------------------------------------


@pytest.mark.parametrize(("offset", "length"), [("0", "17"), ("8", "9"), ("17", None)])
def test_span_past_the_end_of_the_file_is_refused(
    model_path: Path, offset: str, length: str | None
) -> None:
    assert (model_path.parent / "weights.bin").stat().st_size == 16

    def edit(model: onnx.ModelProto) -> None:
        extra = {"offset": offset} if length is None else {"offset": offset, "length": length}
        _make_external(model.graph.initializer[0], "weights.bin", **extra)

    _tamper(model_path, edit)

    with pytest.raises(UnsafeArtifact, match="of a 16-byte file"):
        check_external_data(model_path)


def test_span_up_to_the_end_of_the_file_is_accepted(model_path: Path) -> None:
    _tamper(model_path, _set_entry("length", "16"))

    assert check_external_data(model_path) == [model_path.parent / "weights.bin"]


@pytest.mark.parametrize("value", ["-1", "0x10", "ten", "1e3", "٣"])
def test_non_decimal_offset_is_malformed(model_path: Path, value: str) -> None:
    _tamper(model_path, _set_entry("offset", value))

    with pytest.raises(ValidationFailed, match="non-numeric external data offset"):
        check_external_data(model_path)


def test_duplicate_location_keys_are_refused(model_path: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        model.graph.initializer[0].external_data.extend(_external("../outside.bin"))

    _tamper(model_path, edit)

    with pytest.raises(UnsafeArtifact, match="repeats external data key 'location'"):
        check_external_data(model_path)


def test_external_tensor_without_location_is_malformed(model_path: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        del model.graph.initializer[0].external_data[:]

    _tamper(model_path, edit)

    with pytest.raises(ValidationFailed, match="names no location"):
        check_external_data(model_path)


# --- tensors hidden deeper in the model -------------------------------------


def test_if_subgraph_initializer_with_escaping_location_is_refused(tmp_path: Path) -> None:
    path = _save_external(_if_model(), tmp_path / "model")
    (tmp_path / "outside.bin").write_bytes(bytes(8))

    def edit(model: onnx.ModelProto) -> None:
        else_branch = next(a for a in model.graph.node[0].attribute if a.name == "else_branch")
        _make_external(else_branch.g.initializer[0], "../outside.bin", offset="0", length="8")

    _tamper(path, edit)

    with pytest.raises(UnsafeArtifact, match=r"'\.\./outside\.bin'"):
        check_external_data(path)


def test_constant_attribute_in_a_loop_body_is_checked(model_path: Path) -> None:
    value = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "c")
    _make_external(value, "/etc/shadow")
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["c_out"], value=value)], "body", [], []
    )
    loop = helper.make_node("Loop", ["", ""], [], body=body)

    def edit(model: onnx.ModelProto) -> None:
        model.graph.node.append(loop)

    _tamper(model_path, edit)

    with pytest.raises(UnsafeArtifact, match=r"'/etc/shadow'.*absolute"):
        check_external_data(model_path)


def test_sparse_initializer_with_escaping_location_is_refused(model_path: Path) -> None:
    values = numpy_helper.from_array(np.ones(1, dtype=np.float32), "s")
    indices = numpy_helper.from_array(np.zeros(1, dtype=np.int64), "s_idx")
    _make_external(values, "../sparse.bin")

    def edit(model: onnx.ModelProto) -> None:
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))

    _tamper(model_path, edit)

    with pytest.raises(UnsafeArtifact, match=r"'\.\./sparse\.bin'"):
        check_external_data(model_path)


def test_function_body_constant_with_escaping_location_is_refused(model_path: Path) -> None:
    value = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "k")
    _make_external(value, "../f.bin")
    function = helper.make_function(
        "custom",
        "Const2",
        [],
        ["out"],
        [helper.make_node("Constant", [], ["out"], value=value)],
        OPSET,
    )

    def edit(model: onnx.ModelProto) -> None:
        model.functions.append(function)

    _tamper(model_path, edit)

    with pytest.raises(UnsafeArtifact, match=r"'\.\./f\.bin'"):
        check_external_data(model_path)


# --- messages and malformed models ------------------------------------------


def test_control_characters_in_location_are_escaped(model_path: Path) -> None:
    _tamper(model_path, _set_entry("location", "weights.bin\nERROR forged\x1b[2J"))

    with pytest.raises(UnsafeArtifact) as err:
        check_external_data(model_path)

    assert str(err.value).isprintable()
    assert "weights.bin\\nERROR forged" in str(err.value)


@pytest.mark.parametrize(
    ("content", "detail"),
    [(b"\xff\xff\xff\xff not protobuf", r"\(\w+\)"), (b"", "has no graph")],
)
def test_unparseable_file_is_not_a_valid_onnx_model(
    tmp_path: Path, content: bytes, detail: str
) -> None:
    path = tmp_path / "secret-folder" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(content)

    with pytest.raises(ValidationFailed, match=f"^not a valid ONNX model: model.onnx {detail}"):
        check_external_data(path)


def test_missing_model_file_is_not_a_valid_onnx_model(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=r"model\.onnx is not a file") as err:
        check_external_data(tmp_path / "model.onnx")

    assert str(tmp_path) not in str(err.value)


def test_text_format_suffix_does_not_switch_the_parser(tmp_path: Path) -> None:
    # onnx picks a text parser from a .txt/.json suffix; onnxruntime never does.
    path = tmp_path / "model.json"
    path.write_text('{"graph": {"initializer": [{"dataLocation": "EXTERNAL"}]}}')

    with pytest.raises(ValidationFailed, match="not a valid ONNX model"):
        check_external_data(path)


# --- any location at all ----------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(location=st.text(alphabet="w./\\:C*\n", min_size=0, max_size=14))
def test_no_location_is_accepted_outside_the_model_folder(location: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _save_external(_matmul_model(), Path(tmp) / "model")
        (Path(tmp) / "w").write_bytes(WEIGHTS.tobytes())  # bait one level up
        _tamper(path, _set_entry("location", location))
        try:
            files = check_external_data(path)
        except (UnsafeArtifact, ValidationFailed):
            return
        folder = os.path.realpath(path.parent)
        for file in files:
            assert os.path.commonpath([folder, os.path.realpath(file)]) == folder
