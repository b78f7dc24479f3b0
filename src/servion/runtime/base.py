"""The one interface every model format implements.

A runtime owns one loaded model: it loads it, describes its signature, and
predicts on a batch of named numpy arrays. Methods are synchronous on purpose:
inference is CPU-bound, and the caller (the server's model manager) decides
whether a call runs inline, in a thread, or in another process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servion.config import RuntimeSettings
from servion.datatypes import NUMPY_OF
from servion.errors import quoted
from servion.types import Arrays


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor of a signature; ``-1`` marks a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["datatype"]), tuple(int(d) for d in data["shape"]))

    def same_rows(self, other: TensorSpec) -> bool:
        """The same datatype and shape, the batch dimension aside."""
        return self.datatype == other.datatype and self.shape[1:] == other.shape[1:]

    def describe(self) -> str:
        return f"{quoted(self.name)} {self.datatype} {list(self.shape)}"


@dataclass(frozen=True, slots=True)
class Signature:
    """Inputs and outputs a model accepts and produces.

    >>> sig = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1,)),))
    >>> Signature.from_dict(sig.to_dict()) == sig
    True
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batched: bool = field(default=True)
    """True when the first dimension of every input is the batch dimension."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "batched": self.batched,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            bool(data.get("batched", True)),
        )

    def input_difference(self, other: Signature) -> str | None:
        """How ``other`` fails to take this signature's requests (None: it takes them):
        the same input names, datatypes and shapes, the batch dimension aside."""
        theirs = {t.name: t for t in other.inputs}
        for tensor in self.inputs:
            found = theirs.pop(tensor.name, None)
            if found is None:
                return f"has no input {quoted(tensor.name)}"
            if not tensor.same_rows(found):
                return (
                    f"takes input {found.describe()} where the endpoint takes {tensor.describe()}"
                )
        if theirs:
            return f"also needs input {quoted(next(iter(theirs)))}"
        return None

    def output_difference(self, other: Signature) -> str | None:
        """How ``other`` fails to give this signature's outputs (it may give more)."""
        theirs = {t.name: t for t in other.outputs}
        for tensor in self.outputs:
            found = theirs.get(tensor.name)
            if found is None:
                return f"has no output {quoted(tensor.name)}"
            if not tensor.same_rows(found):
                return (
                    f"gives output {found.describe()} where the endpoint gives {tensor.describe()}"
                )
        return None


def sample_inputs(signature: Signature, batch_size: int = 1, seed: int = 0) -> Arrays:
    """A small valid input for a signature; dynamic dimensions become 1 (batch: ``batch_size``)."""
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for spec in signature.inputs:
        shape = tuple(
            (batch_size if i == 0 and signature.batched else 1) if d < 0 else d
            for i, d in enumerate(spec.shape)
        )
        dtype = NUMPY_OF[spec.datatype]
        if spec.datatype == "BYTES":
            arr = np.full(shape, b"sample", dtype=object)
        elif spec.datatype == "BOOL":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(size=shape).astype(dtype)
        out[spec.name] = arr
    return out


class Runtime(ABC):
    """A loaded model of one format.

    Subclasses set ``format`` and ``platform`` and implement ``load``,
    ``signature`` and ``predict``; ``warmup`` and ``unload`` have defaults.

    >>> rt = OnnxRuntime(Path("model.onnx"), RuntimeSettings())   # doctest: +SKIP
    >>> rt.load(); rt.predict({"input": x})                        # doctest: +SKIP
    """

    format: ClassVar[str]
    """The registry's name for the artifact format (``onnx``, ``sklearn-joblib``, ...)."""
    platform: ClassVar[str]
    """What model metadata reports as ``platform``."""
    runs_on_loop: ClassVar[bool] = True
    """False for code servion cannot vouch for (a user's class): it always runs in the
    model's thread unless its batching says ``execution: inline``, so that one slow call
    never holds up the other models of the worker."""
    finite_inputs: ClassVar[bool] = False
    """True when the model cannot take NaN or infinite values: such requests are refused
    as the caller's error (400) before the model runs, instead of failing inside it."""

    def __init__(self, path: Path, settings: RuntimeSettings, options: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.options = options

    @abstractmethod
    def load(self) -> None:
        """Load the artifact at ``self.path``; raise ``RuntimeFailure`` or ``UnsafeArtifact``."""

    @abstractmethod
    def signature(self) -> Signature:
        """Describe inputs and outputs; only valid after ``load``."""

    @abstractmethod
    def predict(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        """Run one batch; inputs are already validated against ``signature()``.

        ``outputs`` names the outputs the caller wants (``None``: all); a
        runtime may skip work for the others and may return extra ones.
        """

    def warmup(self, batch_size: int = 1) -> None:
        """Run one inference so first real requests do not pay lazy initialisation."""
        self.predict(sample_inputs(self.signature(), batch_size))

    def unload(self) -> None:  # noqa: B027 - most runtimes free everything on garbage collection
        """Release what ``load`` acquired."""
