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
import zipfile
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
    return load_labelled(path, signature, None)[0]


def load_labelled(
    path: Path, signature: Signature, target: str | None, role: str = "reference"
) -> tuple[Arrays, np.ndarray | None]:
    """The inputs in ``path`` and, when ``target`` names one, the column (or ``.npz``
    array) of expected outputs beside them, rows aligned. ``role`` names the file in
    messages (``reference``, ``validation``)."""
    raw, tabular = _read(path, role)
    expected = None
    if target is not None:
        if target not in raw:
            have = ", ".join(repr(k) for k in list(raw)[:12])
            raise ValidationFailed(f"{role} file {path.name!r} has no {target!r} (it has {have})")
        expected = raw.pop(target)
    arrays = _from_table(raw, signature, role) if tabular else raw
    inputs = _fit(arrays, signature, path.name, role)
    rows = len(next(iter(inputs.values())))
    if expected is not None and (expected.ndim == 0 or len(expected) != rows):
        raise ValidationFailed(
            f"{role} file {path.name!r}: {target!r} has {expected.size} values for {rows} rows"
        )
    return inputs, expected


def _read(path: Path, role: str) -> tuple[Table, bool]:
    """Every array (``.npz``) or column (``.csv``, ``.parquet``: True) in ``path``."""
    if path.is_dir():
        raise ValidationFailed(f"{role} file {path.name!r} is a folder, not a file")
    if not path.is_file():
        raise ValidationFailed(f"{role} file {path.name!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}, False
        if suffix == ".csv":
            return _read_csv(path, role), True
        if suffix == ".parquet":
            return _read_parquet(path), True
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValidationFailed(f"cannot read {role} file {path.name!r}: {exc}") from None
    raise ValidationFailed(f"{role} file {path.name!r}: use .npz, .csv or .parquet, not {suffix!r}")


def _read_csv(path: Path, role: str) -> Table:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValidationFailed(f"{role} file {path.name!r} needs a header and rows")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise ValidationFailed(f"{role} file {path.name!r}: rows differ in length")
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


def _from_table(table: Table, signature: Signature, role: str) -> Arrays:
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
                f"the {role} has no columns {wanted[0]}..{wanted[-1]} for input"
                f" {spec.name!r} (or exactly {width} columns for a single-input model)"
            )
        stacked = np.stack(cols, axis=1)
        arrays[spec.name] = stacked.reshape(len(stacked), *spec.shape[1:])
    return arrays


def _fit(arrays: Arrays, signature: Signature, file: str, role: str) -> Arrays:
    out: Arrays = {}
    rows: set[int] = set()
    for spec in signature.inputs:
        value = arrays.get(spec.name)
        if value is None:
            raise ValidationFailed(f"{role} file {file!r} has no input {spec.name!r}")
        expected = spec.shape[1:]
        if value.ndim != len(spec.shape) or any(
            d >= 0 and d != v for d, v in zip(expected, value.shape[1:], strict=False)
        ):
            raise ValidationFailed(
                f"{role} input {spec.name!r} has shape {list(value.shape)};"
                f" the model takes {list(spec.shape)}"
            )
        try:
            out[spec.name] = value.astype(NUMPY_OF[spec.datatype])
        except (ValueError, KeyError) as exc:
            raise ValidationFailed(
                f"{role} input {spec.name!r} is not {spec.datatype}: {exc}"
            ) from None
        rows.add(len(value))
    if len(rows) != 1 or 0 in rows:
        raise ValidationFailed(f"{role} file {file!r}: inputs differ in rows or are empty")
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
