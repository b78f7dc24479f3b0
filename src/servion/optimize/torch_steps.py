"""PyTorch programs to ONNX (``torch.onnx``), and magnitude pruning before the export.

A ``torch.export`` program goes through torch's own exporter for such programs (the
"dynamo" exporter, onnxscript), which keeps the program's dynamic dimensions; a
TorchScript archive goes through the TorchScript exporter, with the dimensions its
signature leaves free (-1) marked dynamic. Both keep the version's input and output names,
so its clients send the same request to the ONNX version. The export runs in float32 on
the CPU whatever the source version's ``device`` and ``precision`` options say.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

from servion.errors import InvalidInput, printable
from servion.optimize.steps import StepInput
from servion.runtime import Signature, make_runtime, sample_inputs

OPSET = 18
"""The opset both exporters write and every onnxruntime since 1.16 runs."""


def torch_to_onnx(step: StepInput) -> None:
    """Export the program in ``step.source`` to ``step.target``."""
    _export(_load(step), step)


def prune_magnitude(step: StepInput) -> tuple[str, ...]:
    """Zero the ``step.sparsity`` share of the smallest weights (all weight matrices and
    kernels taken together), then export; gives the report's note."""
    import torch

    program = _load(step)
    weights = [p for p in _parameters(program) if p.dim() >= 2 and p.is_floating_point()]
    if not weights:
        raise InvalidInput("prune found no weight matrix or kernel in the program")
    total = sum(w.numel() for w in weights)
    count = round(total * step.sparsity)
    if count:
        with torch.no_grad():
            magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
            threshold = magnitudes.kthvalue(count).values
            for w in weights:
                w.masked_fill_(w.abs() <= threshold, 0.0)
    _export(program, step)
    return (
        f"zeroed {count:,} of {total:,} weights ({step.sparsity:.0%}) by magnitude;"
        " dense kernels still multiply the zeros, so size and speed stay (prune-structured"
        " removes whole hidden units)",
    )


def _load(step: StepInput) -> Any:
    # The runtime's loader is the gate (archive check, weights-only loads); the export
    # wants the plain program on the CPU in float32.
    options = {"device": "cpu", "precision": "fp32"}
    if step.format == "torchscript":
        options["inputs"] = [t.to_dict() for t in step.signature.inputs]  # type: ignore[assignment]
    runtime = make_runtime(step.format, step.source, step.runtime, options)
    runtime.load()
    return getattr(runtime, "program")  # noqa: B009 - both PyTorch runtimes have it


def _parameters(program: Any) -> list[Any]:
    import torch

    if isinstance(program, torch.export.ExportedProgram):
        return [v for v in program.state_dict.values() if isinstance(v, torch.Tensor)]
    return [p for _, p in program.named_parameters()]


def _export(program: Any, step: StepInput) -> None:
    import torch

    signature = step.signature
    args = tuple(torch.from_numpy(a) for a in sample_inputs(signature, 2).values())
    inputs = [t.name for t in signature.inputs]
    outputs = [t.name for t in signature.outputs]
    # torch.export programs take the dynamo exporter (dimensions come from the program);
    # TorchScript takes its own exporter, told which dimensions are free.
    exporter: dict[str, Any] = (
        {"dynamo": True, "external_data": False}
        if isinstance(program, torch.export.ExportedProgram)
        else {"dynamo": False, "dynamic_axes": _dynamic_axes(signature)}
    )
    try:
        with _quiet():
            if not exporter["dynamo"]:
                _refuse_dict_outputs(program)
            torch.onnx.export(
                program,
                args,
                str(step.target),
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                **exporter,
            )
    except InvalidInput:
        raise
    except ImportError as exc:
        raise InvalidInput(
            f"exporting a torch.export program needs {exc.name}: pip install 'servion[optimize]'"
        ) from None
    except Exception as exc:  # the exporters raise anything, with long reports
        first = printable(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 300)
        raise InvalidInput(
            f"torch.onnx cannot convert the {step.format} program: {type(exc).__name__}: {first}"
        ) from exc


def _refuse_dict_outputs(program: Any) -> None:
    returns = program.forward.schema.returns
    if returns and "Dict" in str(returns[0].type):
        raise InvalidInput(
            "torch.onnx's TorchScript exporter cannot export forward()'s dict of outputs"
            " (prim::DictConstruct); register the model as a torch.export program (.pt2),"
            " whose exporter can, or return a tuple"
        )


def _dynamic_axes(signature: Signature) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for tensor in (*signature.inputs, *signature.outputs):
        free = {i: f"{tensor.name}_{i}" for i, d in enumerate(tensor.shape) if d < 0}
        if signature.batched and 0 in free:
            free[0] = "batch"  # one name: every batch dimension is the same size
        if free:
            axes[tensor.name] = free
    return axes


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and log warnings about packages servion does not use."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
