"""What a PyTorch model may be told at registration, and what its file must look like.

Everything here runs without importing torch, so ``servion register`` checks a
PyTorch archive and its options in the CLI process; only the probe child and the
server's workers import torch.

Options (``servion register ... --option KEY=VALUE``):

- ``device``: ``auto`` (default: ``cuda:0`` when CUDA is there, else the CPU), ``cpu``,
  ``cuda`` or ``cuda:N``. A CUDA device that is missing falls back to the CPU, and says so.
- ``precision``: ``fp32`` (default), ``fp16`` or ``bf16``: the weights and floating inputs
  are cast inside the runtime; clients keep sending and receiving the model's own datatypes.
- ``warmup``: batch sizes run once at load (``1,8,32``), so no request pays a first-call cost.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

from servion.datatypes import datatype_of
from servion.errors import UnsafeArtifact, ValidationFailed, quoted
from servion.types import Arrays

NEEDS_SAMPLE = (
    "a TorchScript model does not record its input shapes: pass --sample FILE"
    " (.npz, or JSON) with one batch of its inputs, named as forward()'s arguments;"
    " or export it with torch.export (.pt2), which records them"
)
TORCH_FORMATS = frozenset({"torchscript", "torch-export"})
PRECISIONS = ("fp32", "fp16", "bf16")
MAX_WARMUP_SIZES = 8
MAX_WARMUP_BATCH = 4096
_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,2})?")


def check_options(fmt: str, given: dict[str, str], sample: Arrays | None) -> dict[str, Any]:
    """The runtime options to record for a version of a PyTorch format, checked."""
    unknown = sorted(set(given) - {"device", "precision", "warmup"})
    if unknown:
        raise ValidationFailed(
            f"unknown option {quoted(unknown[0])} for format {fmt}"
            " (known: device, precision, warmup)"
        )
    options: dict[str, Any] = {}
    device = given.get("device", "auto")
    if not _DEVICE.fullmatch(device):
        raise ValidationFailed(
            f"device {quoted(device)} is not auto, cpu, cuda or cuda:N (N a device index)"
        )
    options["device"] = device
    precision = given.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ValidationFailed(
            f"precision {quoted(precision)} is not one of {', '.join(PRECISIONS)}"
        )
    options["precision"] = precision
    if "warmup" in given:
        options["warmup"] = _warmup_sizes(given["warmup"])
    if fmt == "torchscript" and sample is not None:
        options["inputs"] = _inputs_from_sample(sample)
    return options


def _warmup_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValidationFailed(
            f"warmup {quoted(text)} is not a list of batch sizes like 1,8,32"
        ) from None
    if not sizes or len(sizes) > MAX_WARMUP_SIZES:
        raise ValidationFailed(
            f"warmup names 1 to {MAX_WARMUP_SIZES} batch sizes, not {len(sizes)}"
        )
    bad = [s for s in sizes if not 1 <= s <= MAX_WARMUP_BATCH]
    if bad:
        raise ValidationFailed(
            f"warmup batch size {bad[0]} is not between 1 and {MAX_WARMUP_BATCH}"
        )
    return sorted(set(sizes))


def _inputs_from_sample(sample: Arrays) -> list[dict[str, Any]]:
    """A TorchScript program records no input shapes: one batch of real inputs names them."""
    specs = []
    for name, array in sample.items():
        if array.ndim == 0:
            raise ValidationFailed(
                f"sample input {quoted(name)} is a scalar; give it a batch dimension"
            )
        kind = array.dtype.kind
        if kind in "OSU":
            raise ValidationFailed(
                f"sample input {quoted(name)} holds text; PyTorch takes tensors of numbers"
            )
        # JSON samples arrive as float64; torch's default (and nearly every model's) is float32.
        datatype = "FP32" if kind == "f" and array.dtype.itemsize == 8 else datatype_of(array.dtype)
        specs.append({"name": name, "datatype": datatype, "shape": [-1, *array.shape[1:]]})
    return specs


def check_archive(fmt: str, path: Path) -> None:
    """Refuse a file that is not the PyTorch program its format says, without loading it.

    A ``torch.save`` file passes for neither: it is a pickle of Python objects (a whole
    ``nn.Module`` would run its class's code on load) or, at best, weights with no
    architecture to run them.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if len(set(names)) != len(names) or archive.testzip() is not None:
                raise UnsafeArtifact(f"{path.name}: duplicate or corrupt zip members")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        raise UnsafeArtifact(
            f"{path.name}: not a PyTorch archive (a zip file) ({exc}); legacy torch.save"
            " files are refused"
        ) from None
    roots = {n.split("/", 1)[0] for n in names}
    leaves = {n.split("/", 1)[1] for n in names if "/" in n}
    if len(roots) != 1:
        raise UnsafeArtifact(f"{path.name}: a PyTorch archive has one top folder, not {len(roots)}")
    is_script = "constants.pkl" in leaves and any(n.startswith("code/") for n in leaves)
    is_export = "archive_format" in leaves and any(n.startswith("models/") for n in leaves)
    if (fmt == "torchscript" and is_script) or (fmt == "torch-export" and is_export):
        return
    if "data.pkl" in leaves and not is_script:
        _refuse_torch_save(path)
    other = "a torch.export program (.pt2)" if is_export else "a TorchScript archive (.pt)"
    if is_export or is_script:
        raise ValidationFailed(f"{path.name} is {other}, not format {fmt}")
    raise UnsafeArtifact(f"{path.name}: not a TorchScript archive or a torch.export program")


def _refuse_torch_save(path: Path) -> None:
    """Say what a ``torch.save`` file holds, and why it is not served."""
    from servion.runtime.pickle_check import check_torch_zip
    from servion.runtime.safe_pickle import AllowList

    # The scan reads the pickles' opcodes only; a global outside the allow-list is named
    # in the error, so a pickled nn.Module is refused for what it is.
    check_torch_zip(path, AllowList.default())
    raise UnsafeArtifact(
        f"{path.name} is a state dict (weights with no architecture), written by torch.save:"
        " save the model with torch.jit.script(model).save(...) (.pt) or torch.export.save"
        " (.pt2); or load the weights in a --trust-code Python model with"
        " servion.runtime.pytorch.load_state_dict"
    )
