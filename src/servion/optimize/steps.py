"""The steps a recipe is made of, and which order they can run in.

Each step turns one model file into an ONNX file. Its implementation is imported only
when it runs, so a build without one (the ONNX graph and quantization steps live in
``onnx_steps``) still converts, checks and registers, and says which step is missing.

A *faithful* step must not change what the model predicts: its output is held to the
equivalence check (largest score difference, label agreement) against the model before
it. A *lossy* step (quantization, fp16) may: only the accuracy gate judges it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servion.config import RuntimeSettings
from servion.errors import InvalidInput, quoted
from servion.runtime import FORMATS, Signature

SKLEARN_FORMATS = frozenset({"sklearn-joblib", "sklearn-skops", "sklearn-pickle"})
TORCH_FORMATS = frozenset({"torchscript", "torch-export"})
ONNX = frozenset({"onnx"})
ANY = frozenset(FORMATS)
ONNX_STEPS = "servion.optimize.onnx_steps"
QUANTIZE = "servion.optimize.quantize"


@dataclass(frozen=True)
class StepInput:
    """What a step is given: the file to start from and where to write its result."""

    source: Path
    """The model file (or folder) the step starts from."""
    target: Path
    """Where the step writes its ONNX file."""
    format: str
    """The registry format of ``source``."""
    signature: Signature
    """The source version's signature: the names and types clients send and expect."""
    runtime: RuntimeSettings
    calibration: Mapping[str, np.ndarray]
    """A sample of the validation inputs, for steps that calibrate on data."""
    rows: Mapping[str, np.ndarray]
    """Every validation input row, for steps that learn from data (distillation)."""
    sparsity: float = 0.5
    """The share of weights (``prune``) or hidden units (``prune-structured``) to remove."""


@dataclass(frozen=True)
class Step:
    """One entry of the step table."""

    name: str
    summary: str
    takes: frozenset[str]
    """Formats the step applies to; every step gives ONNX."""
    faithful: bool
    run: Callable[[StepInput], tuple[str, ...] | None]
    """Writes ``target``; may give notes for the report (a student's fidelity)."""
    needs: tuple[str, ...]
    """Modules the step imports when it runs (checked before any work starts)."""


def _convert(step: StepInput) -> None:
    if step.format in TORCH_FORMATS:
        from servion.optimize.torch_steps import torch_to_onnx

        torch_to_onnx(step)
        return
    from servion.optimize.convert import sklearn_to_onnx

    sklearn_to_onnx(step)


def _prune(step: StepInput) -> tuple[str, ...]:
    from servion.optimize.torch_steps import prune_magnitude

    return prune_magnitude(step)


def _prune_structured(step: StepInput) -> tuple[str, ...]:
    from servion.optimize.prune import prune_structured

    return prune_structured(step.source, step.target, step.sparsity)


def _onnx_step(function: str, module: str = ONNX_STEPS) -> Callable[[StepInput], None]:
    def run(step: StepInput) -> None:
        getattr(importlib.import_module(module), function)(step.source, step.target)

    return run


def _distill(kind: str) -> Callable[[StepInput], tuple[str, ...] | None]:
    def run(step: StepInput) -> tuple[str, ...] | None:
        from servion.optimize.student import distill_step

        return distill_step(kind)(step)

    return run


def _static_int8(step: StepInput) -> None:
    module = importlib.import_module(QUANTIZE)
    module.quantize_static_int8(step.source, step.target, step.calibration, per_channel=True)


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("onnx", "convert to ONNX", SKLEARN_FORMATS | TORCH_FORMATS, True, _convert, ()),
        Step(
            "graph",
            "optimize the ONNX graph (constant folding, operator fusion)",
            ONNX,
            True,
            _onnx_step("optimize_graph"),
            (ONNX_STEPS,),
        ),
        Step(
            "int8-dynamic",
            "quantize weights to int8 (activations at run time)",
            ONNX,
            False,
            _onnx_step("quantize_dynamic_int8", QUANTIZE),
            (QUANTIZE,),
        ),
        Step(
            "int8-static",
            "quantize to int8, calibrated on a sample of the validation data",
            ONNX,
            False,
            _static_int8,
            (QUANTIZE,),
        ),
        Step("fp16", "convert floats to fp16", ONNX, False, _onnx_step("to_fp16"), (ONNX_STEPS,)),
        Step(
            "prune",
            "zero the smallest weights of a PyTorch program (--sparsity), then export",
            TORCH_FORMATS,
            False,
            _prune,
            ("torch",),
        ),
        Step(
            "prune-structured",
            "remove the weakest hidden units of MLP layers (--sparsity)",
            ONNX,
            False,
            _prune_structured,
            (ONNX_STEPS,),
        ),
        Step(
            "distill-mlp",
            "train a small MLP on the model's answers (any format; a lossy step)",
            ANY,
            False,
            _distill("mlp"),
            ("sklearn", "skl2onnx"),
        ),
        Step(
            "distill-trees",
            "train gradient-boosted trees on the model's answers (tabular teachers)",
            ANY,
            False,
            _distill("trees"),
            ("sklearn", "skl2onnx"),
        ),
        Step(
            "tensorrt",
            "build for TensorRT (GPU only)",
            ONNX,
            False,
            _onnx_step("tensorrt"),
            (ONNX_STEPS,),
        ),
    )
}
"""Every step, in the order a recipe usually takes them."""

PLANNED = {
    "distill": "name the student: distill-mlp or distill-trees",
}
"""Names reserved for steps to come; a recipe naming one is refused with this reason.
A new step joins ``STEPS`` (with the formats it takes) and leaves this table."""


def parse_recipe(texts: Iterable[str]) -> list[str]:
    """Step names from ``--steps`` values, each a comma-separated list, in order.

    >>> parse_recipe(["onnx,graph", "int8-dynamic"])
    ['onnx', 'graph', 'int8-dynamic']
    """
    names = []
    for text in texts:
        parts = [part.strip() for part in text.split(",")]
        if any(not part for part in parts):
            raise InvalidInput(f"--steps {quoted(text)} has an empty step (a stray comma?)")
        names.extend(parts)
    return names


def default_recipe(fmt: str) -> list[str]:
    """What runs when no step is named: convert what is not ONNX, else optimize its graph."""
    return ["graph"] if fmt in ONNX else ["onnx"]


_FORMAT_NEEDS: dict[tuple[str, str], tuple[str, ...]] = {
    **{("onnx", fmt): ("skl2onnx",) for fmt in SKLEARN_FORMATS},
    ("onnx", "torchscript"): ("torch",),
    ("onnx", "torch-export"): ("torch", "onnxscript"),
    ("prune", "torch-export"): ("onnxscript",),
}
"""Modules a step needs for one source format only (torch.export programs export
through onnxscript; TorchScript archives through torch alone)."""
_EXTRA_OF = {"torch": "torch", "onnxscript": "optimize"}


def plan(names: Iterable[str], fmt: str) -> list[Step]:
    """The steps of a recipe, refused unless each applies to what the one before gives
    and is in this build."""
    steps: list[Step] = []
    current = fmt
    for name in names:
        step = _known(name)
        if current not in step.takes:
            raise InvalidInput(_misplaced(step, current, [s.name for s in steps]))
        needs = (*step.needs, *_FORMAT_NEEDS.get((step.name, current), ()))
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:
            raise InvalidInput(_unavailable(step, missing[0]))
        steps.append(step)
        current = "onnx"
    if not steps:
        raise InvalidInput("the recipe has no step: name at least one with --steps")
    return steps


def _known(name: str) -> Step:
    if name in PLANNED:
        raise InvalidInput(f"step {quoted(name)}: {PLANNED[name]}")
    found = STEPS.get(name)
    if found is None:
        raise InvalidInput(f"unknown step {quoted(name)} (known: {', '.join(STEPS)})")
    return found


def _misplaced(step: Step, current: str, before: list[str]) -> str:
    where = f"after {', '.join(before)}" if before else "first"
    if step.takes == ONNX:
        return (
            f"step {quoted(step.name)} takes an ONNX model, but {where} the model is"
            f" {current}: put 'onnx' before it"
        )
    takes = ", ".join(sorted(step.takes))
    return f"step {quoted(step.name)} takes a {takes} model, but {where} the model is {current}"


def _unavailable(step: Step, module: str) -> str:
    if module in (ONNX_STEPS, QUANTIZE):
        return f"step {quoted(step.name)} is not in this build of servion ({module} is missing)"
    extra = _EXTRA_OF.get(module, "sklearn")
    return f"step {quoted(step.name)} needs {module}: pip install 'servion[{extra}]'"
