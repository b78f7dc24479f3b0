"""PyTorch programs: TorchScript archives (``.pt``) and ``torch.export`` programs (``.pt2``).

Nothing here unpickles Python objects. TorchScript archives are read by torch's C++
loader, which builds TorchScript classes and cannot import Python code; ``torch.export``
programs are a JSON graph plus raw weights, and every ``torch.load`` this process makes
is forced to ``weights_only`` (torch's own allow-list), because torch.export's loader
would otherwise fall back to a full unpickle for the file's sample inputs.

Outputs are named ``output`` (one tensor), by their keys (a dict of tensors), or
``output_0``, ``output_1``, ... (a tuple, a list, or anything nested, in flattening order).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from servion.datatypes import datatype_of
from servion.errors import InvalidInput, RuntimeFailure, quoted
from servion.runtime.base import Runtime, Signature, TensorSpec, sample_inputs
from servion.runtime.torch_fast import SLOW, FastCall
from servion.runtime.torch_options import NEEDS_SAMPLE, check_archive
from servion.types import Arrays

log = logging.getLogger(__name__)

_LOW_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}
_DATATYPE_OF_TORCH = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}


def _forced_weights_only() -> None:
    # torch reads this at every torch.load call, including those inside torch.export.load.
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    # Request tensors are read-only views of the request body; the model only reads them.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    # torch's own loaders trip torch's own deprecations; they say nothing to a servion user.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")


def _device(requested: str) -> torch.device:
    """The device asked for, or the CPU when it is not there (said once, in the log)."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    wanted = torch.device("cuda:0" if requested in ("auto", "cuda") else requested)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted.index is not None and wanted.index < count:
        return wanted
    log.warning(
        "device %s was asked for but %d CUDA devices are visible: running on the CPU",
        requested,
        count,
    )
    return torch.device("cpu")


def output_names(result: Any) -> list[str]:
    """Names for a forward() result's tensors, in flattening order."""
    if isinstance(result, torch.Tensor):
        return ["output"]
    leaves = pytree.tree_leaves(result)
    if isinstance(result, dict) and len(leaves) == len(result):
        return [str(key) for key in result]
    return [f"output_{i}" for i in range(len(leaves))]


class _TorchRuntime(Runtime):
    """What TorchScript and torch.export programs share: devices, precision, the call."""

    def load(self) -> None:
        _forced_weights_only()
        check_archive(self.format, self.path)
        torch.set_num_threads(self.settings.torch_threads)
        self.device = _device(str(self.options.get("device", "auto")))
        self._cast = _LOW_PRECISION.get(str(self.options.get("precision", "fp32")))
        self._cuda = self.device.type == "cuda"
        try:
            module = self._load_module()
        except RuntimeFailure:
            raise
        except Exception as exc:  # torch's loaders raise many untyped errors
            raise RuntimeFailure(f"torch could not load the program: {exc}") from exc
        module = module.to(self.device)
        self._module = module.to(self._cast) if self._cast is not None else module
        inputs = self._input_specs()
        if any(s.datatype == "BYTES" for s in inputs):
            raise RuntimeFailure("a PyTorch program takes tensors of numbers, not BYTES")
        self._input_names = [s.name for s in inputs]
        batched = all(s.shape and s.shape[0] == -1 for s in inputs)
        self._signature = Signature(tuple(inputs), self._output_specs(inputs, batched), batched)
        self._names = [o.name for o in self._signature.outputs]

    def _load_module(self) -> Any:
        raise NotImplementedError

    def _input_specs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def _output_specs(self, inputs: list[TensorSpec], batched: bool) -> tuple[TensorSpec, ...]:
        """Run the program at batch 1 and 2: dimensions that change with the batch are -1."""
        probe = Signature(tuple(inputs), (), batched)
        first = self._forward(sample_inputs(probe, 1))
        second = self._forward(sample_inputs(probe, 2)) if batched else first
        specs = []
        for name, one in first.items():
            two = second[name]
            shape = tuple(
                -1 if i < two.ndim and two.shape[i] != d else d for i, d in enumerate(one.shape)
            )
            specs.append(TensorSpec(name, datatype_of(one.dtype), shape))
        if not specs:
            raise RuntimeFailure("forward() returned no tensor")
        return tuple(specs)

    def signature(self) -> Signature:
        return self._signature

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        if any(stride < 0 for stride in array.strides):  # torch takes no reversed views
            array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array)
        if self._cuda:
            # A pinned staging copy lets the host-to-device copy overlap the launch.
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        if self._cast is not None and tensor.is_floating_point():
            tensor = tensor.to(self._cast)
        return tensor

    def _forward(self, inputs: Arrays) -> Arrays:
        args = [self._tensor(np.asarray(inputs[name])) for name in self._input_names]
        with torch.inference_mode():
            names, leaves = self._run(args)
        out: Arrays = {}
        for name, tensor in zip(names, leaves, strict=True):
            if tensor.dtype in (torch.bfloat16, self._cast):  # numpy has no bfloat16
                tensor = tensor.float()
            out[name] = tensor.detach().cpu().numpy()
        return out

    def _run(self, args: list[torch.Tensor]) -> tuple[list[str], list[Any]]:
        """The output names and tensors of one call of the program."""
        result = self._module(*args)
        leaves = pytree.tree_leaves(result)
        if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
            kinds = sorted({type(t).__name__ for t in leaves})
            raise RuntimeFailure(f"forward() returned {', '.join(kinds) or 'nothing'}, not tensors")
        return output_names(result), leaves

    def predict(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        try:
            return self._forward(inputs)
        except (AssertionError, RuntimeError) as exc:
            text = str(exc)
            # A torch.export guard is the program refusing a shape it was not exported for.
            if "Guard failed" in text or "Expected input" in text:
                raise InvalidInput(
                    f"the program refused the input: {text.splitlines()[0]}"
                ) from None
            raise RuntimeFailure(
                f"torch failed: {text.splitlines()[0] if text else exc!r}"
            ) from exc

    def warmup(self, batch_size: int = 1) -> None:
        sizes = self.options.get("warmup") or [batch_size]
        for size in sizes if self._signature.batched else [1]:
            self.predict(sample_inputs(self._signature, int(size)))

    def unload(self) -> None:
        self.__dict__.pop("_module", None)
        if self._cuda:
            torch.cuda.empty_cache()


class TorchScriptRuntime(_TorchRuntime):
    """A TorchScript archive (``torch.jit.script``/``trace`` then ``.save``).

    The archive records no input shapes, so the inputs come from the sample given at
    registration (recorded as the ``inputs`` option); their names must be forward()'s.
    """

    format = "torchscript"
    platform = "pytorch_libtorch"

    def _load_module(self) -> Any:
        module = torch.jit.load(str(self.path), map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
        return module

    def _input_specs(self) -> list[TensorSpec]:
        if not self.options.get("inputs"):
            raise RuntimeFailure(NEEDS_SAMPLE)
        declared = [TensorSpec.from_dict(s) for s in self.options["inputs"]]
        arguments = [a.name for a in self._module_schema_arguments()]
        if [s.name for s in declared] != arguments:
            by_name = {s.name: s for s in declared}
            if set(by_name) != set(arguments):
                raise RuntimeFailure(
                    f"the sample's inputs {sorted(by_name)} are not forward()'s arguments"
                    f" {arguments}: name the sample's arrays after them"
                )
            declared = [by_name[name] for name in arguments]
        return declared

    @property
    def program(self) -> Any:
        """The loaded ScriptModule, for tools that read the program (ONNX export)."""
        return self._module

    def _module_schema_arguments(self) -> list[Any]:
        return list(self._module.forward.schema.arguments)[1:]


class TorchExportRuntime(_TorchRuntime):
    """A ``torch.export`` program saved by ``torch.export.save`` (``.pt2``).

    Input names, datatypes and shapes come from the program itself: dimensions exported
    as ``torch.export.Dim`` are dynamic (-1).
    """

    format = "torch-export"
    platform = "pytorch_export"

    def _load_module(self) -> Any:
        program = torch.export.load(str(self.path))
        if self.device.type != "cpu":
            # Device arguments inside the graph (torch.arange(..., device=x.device)) were
            # fixed when it was exported; this pass rewrites them with the weights.
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self.device)
        self._program = program
        self._fast: FastCall | None = None
        return program.module()

    def _run(self, args: list[torch.Tensor]) -> tuple[list[str], list[Any]]:
        if self._fast is None:
            self._fast = FastCall.plan(self._program, self._module) or SLOW
        if self._fast is SLOW:
            return super()._run(args)
        return self._fast.names, self._fast(args)

    @property
    def program(self) -> Any:
        """The loaded ExportedProgram, for tools that read the program (ONNX export)."""
        return self._program

    def _input_specs(self) -> list[TensorSpec]:
        user_inputs = [
            spec.arg.name
            for spec in self._program.graph_signature.input_specs
            if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
        ]
        placeholders = {n.name: n for n in self._program.graph.nodes if n.op == "placeholder"}
        specs = []
        for name in user_inputs:
            value = placeholders[name].meta.get("val")
            if not isinstance(value, torch.Tensor):
                raise RuntimeFailure(
                    f"input {quoted(name)} is not a tensor, which servion cannot feed"
                )
            shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
            datatype = _DATATYPE_OF_TORCH.get(value.dtype)
            if datatype is None:
                raise RuntimeFailure(
                    f"input {quoted(name)} is {value.dtype}, which servion cannot feed"
                )
            specs.append(TensorSpec(name, datatype, shape))
        return specs


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Weights saved by ``torch.save(model.state_dict(), path)``, for a custom Python model.

    The file's pickles are scanned against servion's allow-list before torch reads them,
    and torch reads them with ``weights_only=True``: tensors and plain containers only.
    """
    from pathlib import Path

    from servion.runtime.pickle_check import check_torch_zip
    from servion.runtime.safe_pickle import AllowList

    check_torch_zip(Path(path), AllowList.default())
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise RuntimeFailure(f"{Path(path).name} holds a {type(loaded).__name__}, not a state dict")
    return loaded
