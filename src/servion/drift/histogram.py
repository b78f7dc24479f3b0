"""What a plot of one feature needs: the reference's and a live window's shares over the
same bins. Numeric features use the reference's decile bins, closed at the lowest and
highest value either side saw; categorical ones the reference's top categories and the
rest. A few dozen rounded numbers per feature, so a window can carry them for its worst
features without making the worker reports or the admin answer heavy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from servion.drift.profile import categories

OTHER = "(other)"
"""The bar of the categories the reference's top ones leave out."""
DIGITS = 4
"""Shares are rounded to this many decimals: a plot shows no more."""


def _shares(counts: np.ndarray) -> list[float]:
    total = max(float(counts.sum()), 1.0)
    return [round(float(c) / total, DIGITS) for c in counts]


def _edge(value: float) -> float:
    return float(f"{value:.6g}")


def histogram(reference: dict[str, Any], live: np.ndarray) -> dict[str, Any]:
    """The shares of the reference and of ``live`` over the reference feature's bins.

    Numeric: ``edges`` (one more than the bins), ``reference`` and ``live`` shares.
    Categorical: ``labels`` instead of ``edges``.

    >>> ref = {"kind": "numeric", "edges": [1.0], "counts": [5, 5], "min": 0.0, "max": 2.0}
    >>> histogram(ref, np.array([0.5, 1.5, 1.5, 3.0]))
    {'edges': [0.0, 1.0, 3.0], 'reference': [0.5, 0.5], 'live': [0.25, 0.75]}
    """
    if reference["kind"] == "numeric":
        x = live.astype(np.float64)
        x = x[np.isfinite(x)]
        inner = np.asarray(reference["edges"], dtype=np.float64)
        counts = np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1)
        low = min(float(reference["min"]), float(x.min())) if len(x) else reference["min"]
        high = max(float(reference["max"]), float(x.max())) if len(x) else reference["max"]
        return {
            "edges": [_edge(e) for e in (low, *inner.tolist(), high)],
            "reference": _shares(np.asarray(reference["counts"], dtype=np.float64)),
            "live": _shares(counts),
        }
    known = list(reference["frequencies"])
    labels, counts = np.unique(np.asarray(categories(live)), return_counts=True)
    seen = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    observed = np.array([seen.pop(k, 0) for k in known] + [sum(seen.values())], np.float64)
    expected = np.array([*reference["frequencies"].values(), reference["other"]], np.float64)
    return {"labels": [*known, OTHER], "reference": _shares(expected), "live": _shares(observed)}
