"""The validation data an optimization is judged on: the inputs, fitted to the source
version's signature, and (with a target) the expected outputs, read by the same reader
as drift references so a file that works for one works for the other."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servion.drift import load_labelled
from servion.errors import ValidationFailed
from servion.runtime import Signature
from servion.types import Array, Arrays

CHUNK_ROWS = 1024
"""Rows run through a model at once when predicting the whole set."""


@dataclass(frozen=True)
class ValidationSet:
    """Inputs (one array per input of the source signature) and the optional target.

    >>> data = load_validation(Path("val.csv"), mv.signature, "y")   # doctest: +SKIP
    >>> data.rows, data.target_name                                  # doctest: +SKIP
    (600, 'y')
    """

    path: Path
    sha256: str
    inputs: Arrays
    target: Array | None
    target_name: str | None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def chunks(self) -> Iterator[Arrays]:
        """The inputs in slices of at most ``CHUNK_ROWS`` rows, in order."""
        for start in range(0, self.rows, CHUNK_ROWS):
            yield {k: v[start : start + CHUNK_ROWS] for k, v in self.inputs.items()}

    def batches(self, size: int, count: int) -> list[Arrays]:
        """``count`` batches of ``size`` consecutive rows, wrapping around (a set smaller
        than a batch is repeated): real rows for timing, cut once before the clock runs."""
        out = []
        for i in range(count):
            index = np.arange(i * size, (i + 1) * size) % self.rows
            out.append({k: np.ascontiguousarray(v[index]) for k, v in self.inputs.items()})
        return out

    def sample(self, rows: int, seed: int = 0) -> Arrays:
        """Up to ``rows`` rows drawn without replacement (calibration data)."""
        if rows >= self.rows:
            return dict(self.inputs)
        index = np.sort(np.random.default_rng(seed).choice(self.rows, rows, replace=False))
        return {k: v[index] for k, v in self.inputs.items()}

    def describe(self) -> dict[str, Any]:
        """What lineage keeps of it: enough to find the file again and know it unchanged."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "rows": self.rows,
            "target": self.target_name,
        }


def load_validation(path: Path, signature: Signature, target: str | None) -> ValidationSet:
    """Read ``path`` (.npz, .csv or .parquet) for a model of ``signature``; ``target``
    names the column (or array) of expected outputs, if any."""
    try:
        inputs, expected = load_labelled(path, signature, target, role="validation")
    except ValidationFailed as exc:
        if target is None and "no columns" in exc.message:
            raise ValidationFailed(
                f"{exc.message}; if one column is the expected output, name it with --target"
            ) from None
        raise
    return ValidationSet(path.absolute(), _sha256(path), inputs, expected, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ValidationFailed(f"cannot read validation file {path.name!r}: {exc}") from None
    return digest.hexdigest()
