"""Reference data from a file, checked against a model's signature.

``.npz``: one array per input name. ``.csv`` (with a header) and ``.parquet``: one column
per feature, named as the profile names them (``X[3]``; ``X`` for an input with one value
per row); a model with a single input may also give exactly its columns, in order, under
any names. Parquet needs pyarrow (``pip install 'servion[drift]'``).
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from servion.datatypes import NUMPY_OF
from servion.drift.profile import build_profile
from servion.errors import ValidationFailed
from servion.runtime import Signature, TensorSpec
from servion.types import Arrays

Table = dict[str, np.ndarray]


def load_reference(path: Path, signature: Signature) -> Arrays:
    """The inputs in ``path``, one array per input of ``signature``, rows aligned."""
    if not path.is_file():
        raise ValidationFailed(f"reference file {path.name!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        elif suffix == ".csv":
            arrays = _from_table(_read_csv(path), signature)
        elif suffix == ".parquet":
            arrays = _from_table(_read_parquet(path), signature)
        else:
            raise ValidationFailed(
                f"reference file {path.name!r}: use .npz, .csv or .parquet, not {suffix!r}"
            )
    except (ValueError, OSError) as exc:
        raise ValidationFailed(f"cannot read reference file {path.name!r}: {exc}") from None
    return _fit(arrays, signature, path.name)


def _read_csv(path: Path) -> Table:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValidationFailed(f"reference file {path.name!r} needs a header and rows")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise ValidationFailed(f"reference file {path.name!r}: rows differ in length")
    return {h: np.asarray([r[i] for r in body]) for i, h in enumerate(header)}


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValidationFailed(
            "reading Parquet needs pyarrow: pip install 'servion[drift]'"
        ) from None
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _width(spec: TensorSpec) -> int:
    return math.prod(spec.shape[1:]) if len(spec.shape) > 1 else 1


def _from_table(table: Table, signature: Signature) -> Arrays:
    """Table columns gathered into the signature's input tensors."""
    inputs = signature.inputs
    names = list(table)
    arrays: Arrays = {}
    for spec in inputs:
        width = _width(spec)
        if len(spec.shape) <= 1 and spec.name in table:
            arrays[spec.name] = table[spec.name]
            continue
        wanted = [f"{spec.name}[{j}]" for j in range(width)]
        if all(w in table for w in wanted):
            cols = [table[w] for w in wanted]
        elif len(inputs) == 1 and len(names) == width and width > 0:
            cols = [table[n] for n in names]
        else:
            raise ValidationFailed(
                f"the reference has no columns {wanted[0]}..{wanted[-1]} for input"
                f" {spec.name!r} (or exactly {width} columns for a single-input model)"
            )
        stacked = np.stack(cols, axis=1)
        arrays[spec.name] = stacked.reshape(len(stacked), *spec.shape[1:])
    return arrays


def _fit(arrays: Arrays, signature: Signature, file: str) -> Arrays:
    out: Arrays = {}
    rows: set[int] = set()
    for spec in signature.inputs:
        value = arrays.get(spec.name)
        if value is None:
            raise ValidationFailed(f"reference file {file!r} has no input {spec.name!r}")
        expected = spec.shape[1:]
        if value.ndim != len(spec.shape) or any(
            d >= 0 and d != v for d, v in zip(expected, value.shape[1:], strict=False)
        ):
            raise ValidationFailed(
                f"reference input {spec.name!r} has shape {list(value.shape)};"
                f" the model takes {list(spec.shape)}"
            )
        try:
            out[spec.name] = value.astype(NUMPY_OF[spec.datatype])
        except (ValueError, KeyError) as exc:
            raise ValidationFailed(
                f"reference input {spec.name!r} is not {spec.datatype}: {exc}"
            ) from None
        rows.add(len(value))
    if len(rows) != 1 or 0 in rows:
        raise ValidationFailed(f"reference file {file!r}: inputs differ in rows or are empty")
    return out


PREDICT_ROWS = 1024
"""Reference rows run through the model at once to profile its outputs."""


def profile_from_file(
    path: Path, signature: Signature, predict: Callable[[Arrays], Arrays]
) -> dict[str, Any]:
    """The reference profile of the inputs in ``path`` and the outputs ``predict`` gives
    for them (prediction drift needs the outputs the reference would have had)."""
    if importlib.util.find_spec("scipy") is None:
        raise ValidationFailed("drift detection needs scipy: pip install 'servion[drift]'")
    inputs = load_reference(path, signature)
    rows = len(next(iter(inputs.values())))
    chunks = [
        predict({k: v[start : start + PREDICT_ROWS] for k, v in inputs.items()})
        for start in range(0, rows, PREDICT_ROWS)
    ]
    names = [s.name for s in signature.outputs if all(s.name in c for c in chunks)]
    outputs = {n: np.concatenate([np.asarray(c[n]) for c in chunks]) for n in names}
    outputs = {n: v for n, v in outputs.items() if v.ndim > 0 and len(v) == rows}
    return build_profile(inputs, outputs, f"file:{path.name}")
