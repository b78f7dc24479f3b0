"""The PyTorch runtime on real TorchScript and torch.export files (CPU torch)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servion.config import RuntimeSettings
from servion.errors import InvalidInput, RuntimeFailure, UnsafeArtifact, ValidationFailed
from servion.runtime import Runtime, check_options, check_static, detect_format, make_runtime

pytest.importorskip("torch")


def loaded(fmt: str, path: Path, sample: Any = None, **given: str) -> Runtime:
    runtime = make_runtime(fmt, path, RuntimeSettings(), check_options(fmt, given, sample))
    runtime.load()
    return runtime


def test_an_exported_program_describes_itself_and_predicts_like_the_module(
    torch_models: Any,
) -> None:
    runtime = loaded("torch-export", torch_models.exported)
    sig = runtime.signature()
    assert [(t.name, t.datatype, t.shape) for t in sig.inputs] == [
        ("x", "FP32", (-1, 8)),
        ("scale", "FP32", (-1, 1)),
    ]
    assert [(t.name, t.datatype, t.shape) for t in sig.outputs] == [
        ("probs", "FP32", (-1, 3)),
        ("total", "FP32", (-1,)),
    ]
    assert sig.batched and runtime.platform == "pytorch_export"
    rng = np.random.default_rng(1)
    for rows in (1, 5, 64):
        x = rng.standard_normal((rows, 8)).astype(np.float32)
        scale = rng.uniform(0.5, 2, (rows, 1)).astype(np.float32)
        got = runtime.predict({"x": x, "scale": scale})
        want = torch_models.expected(x, scale)
        for name in ("probs", "total"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


def test_a_program_exported_without_dynamic_dims_takes_its_fixed_shapes(
    torch_models: Any,
) -> None:
    runtime = loaded("torch-export", torch_models.fixed_batch)
    sig = runtime.signature()
    assert not sig.batched and sig.inputs[0].shape == (4, 8)
    got = runtime.predict({"x": torch_models.x, "scale": torch_models.scale})
    np.testing.assert_allclose(
        got["probs"], torch_models.expected(torch_models.x, torch_models.scale)["probs"], atol=1e-6
    )


def test_an_exported_program_refuses_rows_beyond_its_exported_range(torch_models: Any) -> None:
    runtime = loaded("torch-export", torch_models.exported)
    x = np.zeros((1025, 8), np.float32)
    with pytest.raises(
        InvalidInput, match="'x' dimension 0 is 1025; the program was exported for 0 to 1024"
    ):
        runtime.predict({"x": x, "scale": np.ones((1025, 1), np.float32)})


def test_torchscript_takes_its_input_shapes_from_the_sample(torch_models: Any) -> None:
    sample = {"scale": torch_models.scale, "x": torch_models.x.astype(np.float64)}
    runtime = loaded("torchscript", torch_models.script, sample)
    sig = runtime.signature()
    # Ordered as forward()'s arguments, whatever the sample's order; JSON's float64 is FP32.
    assert [(t.name, t.datatype, t.shape) for t in sig.inputs] == [
        ("x", "FP32", (-1, 8)),
        ("scale", "FP32", (-1, 1)),
    ]
    assert [t.name for t in sig.outputs] == ["probs", "total"]
    assert runtime.platform == "pytorch_libtorch"
    got = runtime.predict({"x": torch_models.x, "scale": torch_models.scale})
    want = torch_models.expected(torch_models.x, torch_models.scale)
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-6, atol=1e-6)


def test_torchscript_needs_a_sample_named_after_forwards_arguments(torch_models: Any) -> None:
    with pytest.raises(RuntimeFailure, match="does not record its input shapes"):
        loaded("torchscript", torch_models.script)
    with pytest.raises(RuntimeFailure, match=r"not forward\(\)'s arguments \['x', 'scale'\]"):
        loaded("torchscript", torch_models.script, {"input": torch_models.x})
    with pytest.raises(ValidationFailed, match="holds text"):
        check_options("torchscript", {}, {"x": np.array([[b"a"]], dtype=object)})


def test_low_precision_keeps_the_clients_datatypes(torch_models: Any) -> None:
    runtime = loaded("torch-export", torch_models.exported, precision="bf16", warmup="1,4,16")
    runtime.warmup()
    got = runtime.predict({"x": torch_models.x, "scale": torch_models.scale})
    want = torch_models.expected(torch_models.x, torch_models.scale)
    assert got["probs"].dtype == np.float32
    np.testing.assert_allclose(got["probs"], want["probs"], atol=0.05)
    assert runtime.signature().outputs[0].datatype == "FP32"


def test_a_missing_cuda_device_falls_back_to_the_cpu_and_says_so(
    torch_models: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing to fall back from")
    with caplog.at_level(logging.WARNING, logger="servion.runtime.pytorch"):
        runtime = loaded("torch-export", torch_models.exported, device="cuda:3")
    assert str(getattr(runtime, "device", "")) == "cpu"
    assert "device cuda:3 was asked for but 0 CUDA devices are visible" in caplog.text


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"device": "gpu"}, "device 'gpu' is not auto, cpu, cuda or cuda:N"),
        ({"precision": "int4"}, "precision 'int4' is not one of fp32, fp16, bf16"),
        ({"warmup": "1,x"}, "warmup '1,x' is not a list of batch sizes"),
        ({"warmup": "0"}, "warmup batch size 0 is not between 1 and 4096"),
        ({"warmup": ",".join(["1"] * 9)}, "warmup names 1 to 8 batch sizes, not 9"),
        ({"threads": "4"}, "unknown option 'threads' for format torch-export"),
    ],
)
def test_bad_options_are_refused_by_name(given: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        check_options("torch-export", given, None)


def test_formats_without_options_refuse_them() -> None:
    with pytest.raises(ValidationFailed, match="format onnx takes no --option"):
        check_options("onnx", {"device": "cpu"}, None)


def test_torch_save_files_are_refused_for_what_they_are(torch_models: Any) -> None:
    with pytest.raises(UnsafeArtifact, match="is a state dict"):
        check_static("torchscript", torch_models.state_dict)
    with pytest.raises(UnsafeArtifact, match=r"untrusted globals.*torch_models\.TwoHeads"):
        check_static("torchscript", torch_models.whole_pickle)
    with pytest.raises(
        ValidationFailed, match=r"is a torch.export program \(.pt2\), not format torchscript"
    ):
        check_static("torchscript", torch_models.exported)
    with pytest.raises(ValidationFailed, match="is a TorchScript archive"):
        check_static("torch-export", torch_models.script)


def test_garbage_and_renamed_files_are_refused(tmp_path: Path, torch_models: Any) -> None:
    garbage = tmp_path / "model.pt2"
    garbage.write_bytes(b"\x80\x04K\x01." * 100)
    with pytest.raises(UnsafeArtifact, match="not a PyTorch archive"):
        check_static("torch-export", garbage)
    with pytest.raises(UnsafeArtifact, match="not a PyTorch archive"):
        make_runtime("torch-export", garbage, RuntimeSettings(), {}).load()
    renamed = tmp_path / "weights.pt2"
    shutil.copy(torch_models.state_dict, renamed)
    with pytest.raises(UnsafeArtifact, match=r"written by torch\.save"):
        check_static("torch-export", renamed)


def test_extensions_and_folders_name_the_torch_formats(tmp_path: Path, torch_models: Any) -> None:
    assert detect_format(torch_models.exported) == "torch-export"
    assert detect_format(torch_models.script) == "torchscript"
    assert detect_format(Path("weights.pth")) == "torchscript"
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(torch_models.exported, folder / "model.pt2")
    assert detect_format(folder) == "torch-export"


def test_state_dicts_load_weights_only_for_custom_models(torch_models: Any) -> None:
    from servion.runtime.pytorch import load_state_dict

    weights = load_state_dict(torch_models.state_dict)
    assert sorted(weights) == ["head.bias", "head.weight", "hidden.bias", "hidden.weight"]
    with pytest.raises(UnsafeArtifact, match="untrusted globals"):
        load_state_dict(torch_models.whole_pickle)


def test_a_program_that_updates_its_buffers_runs_through_module(tmp_path: Path) -> None:
    import torch

    class Counting(torch.nn.Module):
        calls: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls.add_(1)
            return x * 2 + self.calls

    batch = torch.export.Dim("batch")
    program = torch.export.export(Counting(), (torch.ones(2, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "counting.pt2")
    runtime = loaded("torch-export", tmp_path / "counting.pt2")
    before = runtime.predict({"x": np.ones((1, 3), np.float32)})["output"][0, 0]
    after = runtime.predict({"x": np.ones((1, 3), np.float32)})["output"][0, 0]
    assert after == before + 1  # the buffer's update is kept from call to call
