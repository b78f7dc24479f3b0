"""One window of live rows against a reference profile, feature by feature.

A numeric feature drifts when its population stability index over the reference's
decile bins exceeds ``psi`` *and* the two-sample Kolmogorov-Smirnov test against the
reference sample rejects at ``alpha``: PSI alone flags tiny samples, KS alone flags
shifts too small to matter on large ones; asking both keeps false alarms rare. A
categorical feature uses PSI over its categories and a chi-square test of the live
counts against the reference frequencies in the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from servion.drift.profile import Columns, categories

EPSILON = 1e-4
"""Floor of a bin's share: an empty bin would make PSI infinite."""
MIN_ROWS = 200
"""Fewer live rows than this and a window is not judged. PSI over ten bins has a noise floor
of about 9 / rows: at 50 rows it nears the 0.2 threshold and only the test's alpha holds
(1 % of unshifted features flagged a window); from 200 rows PSI gates again and false alarms
all but vanish (tests/drift)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a feature counts as drifted (both must hold)."""

    psi: float = 0.2
    alpha: float = 0.01


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """How one feature of one window compares with the reference."""

    feature: str
    source: str
    """``input`` or ``output`` (prediction drift)."""
    kind: str
    psi: float
    pvalue: float
    """KS p-value for numeric features, chi-square p-value for categorical ones."""
    drifted: bool
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The population stability index of two distributions over the same bins.

    >>> round(psi(np.array([50, 50]), np.array([50, 50])), 6)
    0.0
    """
    e = np.maximum(expected / max(expected.sum(), 1), EPSILON)
    a = np.maximum(actual / max(actual.sum(), 1), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric(profile: dict[str, Any], live: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp

    x = live.astype(np.float64)
    x = x[np.isfinite(x)]
    edges = np.asarray(profile["edges"], dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    value = psi(np.asarray(profile["counts"], dtype=np.float64), counts.astype(np.float64))
    pvalue = float(ks_2samp(np.asarray(profile["sample"]), x).pvalue)
    return value, pvalue


def _categorical(profile: dict[str, Any], live: np.ndarray) -> tuple[float, float]:
    from scipy.stats import chisquare

    known = list(profile["frequencies"])
    labels, counts = np.unique(np.asarray(categories(live)), return_counts=True)
    seen = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    observed = np.array([seen.pop(k, 0) for k in known] + [sum(seen.values())], np.float64)
    expected = np.array([*profile["frequencies"].values(), profile["other"]], np.float64)
    value = psi(expected, observed)
    share = np.maximum(expected, EPSILON)
    expected_counts = share / share.sum() * observed.sum()
    pvalue = float(chisquare(observed, expected_counts).pvalue)
    return value, pvalue


def compare(
    profile: dict[str, Any],
    inputs: Columns,
    outputs: Columns,
    thresholds: Thresholds = Thresholds(),
) -> list[FeatureResult]:
    """Per feature the profile knows and the window has: PSI, p-value and the verdict."""
    results = []
    for source, live in (("input", inputs), ("output", outputs)):
        for name, ref in profile.get(f"{source}s", {}).items():
            column = live.get(name)
            if column is None or len(column) < MIN_ROWS or not ref.get("rows"):
                continue
            kind = ref["kind"]
            value, pvalue = (_numeric if kind == "numeric" else _categorical)(ref, column)
            drifted = value > thresholds.psi and pvalue < thresholds.alpha
            results.append(FeatureResult(name, source, kind, value, pvalue, drifted, len(column)))
    return results
