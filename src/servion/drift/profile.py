"""A reference profile: per feature of a model's inputs and outputs, what the data looked
like when the model was trusted, as plain JSON stored with the version in the registry.

A feature is one column of a tensor flattened to ``[rows, -1]``: ``X[3]`` for the fourth
column of ``X``, ``X`` itself for a tensor with one value per row. Floating-point features
are numeric (quantiles, PSI bins from the reference deciles, moments and a sample of up to
``SAMPLE_ROWS`` values for the KS test); integer, boolean and BYTES features are
categorical (the frequencies of the ``TOP_K`` most common values).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

QUANTILES: Final = (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 100)
"""Percentiles kept per numeric feature (for reports; the tests use the bins and sample)."""
SAMPLE_ROWS: Final = 1000
"""Reference values kept per numeric feature: KS on the values themselves is exact, and
1,000 floats per feature is a few kB of JSON, less than a quantile sketch would save."""
TOP_K: Final = 20
MAX_FEATURES: Final = 512
"""Wider tensors (images, embeddings) are not profiled: per-column tests would mean
nothing there and cost much."""
PROFILE_FORMAT: Final = 1

Columns = dict[str, np.ndarray]
"""Feature name -> one value per row."""


def columns_of(arrays: Mapping[str, np.ndarray], skipped: list[str] | None = None) -> Columns:
    """Each tensor of ``arrays`` as per-row feature columns (see the module docstring).

    >>> sorted(columns_of({"X": np.zeros((4, 2), np.float32)}))
    ['X[0]', 'X[1]']
    """
    out: Columns = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.ndim == 0 or not _profiled_dtype(array):
            _note(skipped, f"{name}: not a per-row numeric or string tensor")
            continue
        flat = array.reshape(len(array), -1)
        if flat.shape[1] > MAX_FEATURES:
            _note(skipped, f"{name}: {flat.shape[1]} values per row (more than {MAX_FEATURES})")
            continue
        if array.ndim == 1:
            out[name] = flat[:, 0]
            continue
        for j in range(flat.shape[1]):
            out[f"{name}[{j}]"] = flat[:, j]
    return out


def _profiled_dtype(array: np.ndarray) -> bool:
    return array.dtype.kind in "fiubSUO"


def _note(skipped: list[str] | None, why: str) -> None:
    if skipped is not None:
        skipped.append(why)


def is_numeric(column: np.ndarray) -> bool:
    return column.dtype.kind == "f"


def numeric_profile(values: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The profile of one floating-point feature (non-finite values are left out)."""
    x = values.astype(np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"kind": "numeric", "rows": 0}
    # Interior decile edges; ties (a constant feature) collapse into fewer bins.
    edges = np.unique(np.quantile(x, np.linspace(0.1, 0.9, 9)))
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= SAMPLE_ROWS else rng.choice(x, SAMPLE_ROWS, replace=False)
    return {
        "kind": "numeric",
        "rows": len(x),
        "quantiles": dict(
            zip([str(q) for q in QUANTILES], np.percentile(x, QUANTILES).tolist(), strict=True)
        ),
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
        "sample": sample.tolist(),
    }


def categories(values: np.ndarray) -> list[str]:
    """Category labels of a column: bytes decoded, numbers as text."""
    if values.dtype.kind in "SO":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    return [str(v) for v in values.tolist()]


def categorical_profile(values: np.ndarray) -> dict[str, Any]:
    """The frequencies of the ``TOP_K`` most common values; the rest share ``other``."""
    labels, counts = np.unique(np.asarray(categories(values)), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:TOP_K]
    total = max(int(counts.sum()), 1)
    top = {str(labels[i]): int(counts[i]) / total for i in order}
    return {
        "kind": "categorical",
        "rows": int(counts.sum()),
        "frequencies": top,
        "other": max(0.0, 1.0 - sum(top.values())),
    }


def feature_profiles(columns: Columns) -> dict[str, dict[str, Any]]:
    return {
        name: numeric_profile(col, seed=i) if is_numeric(col) else categorical_profile(col)
        for i, (name, col) in enumerate(columns.items())
    }


def build_profile(
    inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], source: str
) -> dict[str, Any]:
    """The reference profile of rows of inputs and the outputs the model gave for them.

    >>> p = build_profile({"X": np.ones((5, 2), np.float32)}, {}, "test")
    >>> sorted(p["inputs"]), p["rows"]
    (['X[0]', 'X[1]'], 5)
    """
    skipped: list[str] = []
    ins = columns_of(inputs, skipped)
    outs = columns_of(outputs, skipped)
    rows = len(next(iter(ins.values()))) if ins else 0
    return {
        "format": PROFILE_FORMAT,
        "source": source,
        "rows": rows,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": feature_profiles(ins),
        "outputs": feature_profiles(outs),
        "skipped": skipped,
    }
