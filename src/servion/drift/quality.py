"""Data quality of one request against a version's reference profile, cheaply.

Every floating-point feature the reference profiled numerically has a range: the
reference's minimum and maximum, widened by ``margin`` times their span on each side. A
request passes when each of its values lies in its feature's range, which a NaN never does;
only then is it clean. The pass is the hot path and costs well under a microsecond for a
small request (plain Python comparisons: numpy's per-call overhead is several times the
work at a few values), and a few numpy calls for a large one. Only a request that fails
it is taken apart per feature into findings: NaN, infinite and out-of-range values, and
columns the reference does not know (``extra``) or misses (``missing``).

Checks the signature already makes (a wrong datatype, an unknown or missing input, a
shape it does not allow) are refused before this, and counted by the caller as ``type``,
``extra``, ``missing`` and ``shape`` findings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np

POLICIES: Final = ("off", "accept", "flag", "refuse")
"""What a finding does: nothing is checked; it is counted; it is also named in the
response's ``servion_data_quality`` parameter; the request is refused with a 400."""
CHECKS: Final = ("nan", "inf", "range", "missing", "extra", "type", "shape")
SMALL: Final = 64
"""Values up to which the pass runs in plain Python rather than numpy."""

_FEATURE = re.compile(r"^(?P<tensor>.+)\[(?P<column>\d+)\]$")


class Finding(NamedTuple):
    """Values of one feature that failed one check in one request."""

    feature: str
    check: str
    values: int


@dataclass(frozen=True, slots=True)
class _Tensor:
    """The ranges of one input tensor's features, as the pass and the breakdown use them."""

    name: str
    features: tuple[str, ...]
    """Feature name per column (one, the tensor's own name, for a tensor of one value per row)."""
    lo: np.ndarray
    hi: np.ndarray
    bounds: tuple[tuple[float, float], ...]
    """``(lo, hi)`` per column, as floats for the plain-Python pass."""


class QualityCheck:
    """One version's ranges and the policy that says what a finding does."""

    __slots__ = ("margin", "policy", "tensors")

    def __init__(self, tensors: tuple[_Tensor, ...], policy: str, margin: float) -> None:
        self.tensors = tensors
        self.policy = policy
        self.margin = margin

    @classmethod
    def from_profile(
        cls, profile: Mapping[str, Any], policy: str, margin: float = 0.0
    ) -> QualityCheck | None:
        """The check of a reference profile, or None when it ranges no feature (or the
        policy is ``off``).

        >>> p = {"inputs": {"X[0]": {"kind": "numeric", "rows": 3, "min": 0.0, "max": 1.0}}}
        >>> QualityCheck.from_profile(p, "accept").inspect({"X": np.array([[0.5], [3.0]])})
        [Finding(feature='X[0]', check='range', values=1)]
        """
        if policy == "off":
            return None
        columns: dict[str, dict[int, tuple[float, float]]] = {}
        for feature, ref in profile.get("inputs", {}).items():
            match = _FEATURE.match(feature)
            tensor, column = (match["tensor"], int(match["column"])) if match else (feature, -1)
            numeric = ref.get("kind") == "numeric" and ref.get("rows")
            span = (ref["max"] - ref["min"]) * margin if numeric else 0.0
            lo, hi = (ref["min"] - span, ref["max"] + span) if numeric else (-np.inf, np.inf)
            columns.setdefault(tensor, {})[column] = (float(lo), float(hi))
        tensors = tuple(
            _tensor(name, ranges)
            for name, ranges in sorted(columns.items())
            if any(np.isfinite(b).all() for b in ranges.values())
        )
        return cls(tensors, policy, margin) if tensors else None

    def inspect(self, arrays: Mapping[str, np.ndarray]) -> list[Finding]:
        """The findings of one request's inputs (none for a clean request)."""
        findings: list[Finding] = []
        for t in self.tensors:
            x = arrays.get(t.name)
            if x is None or x.ndim == 0 or x.dtype.kind != "f":
                continue  # the signature vouches for presence and type; ranges are for floats
            if not _passes(x, t):
                findings += _breakdown(x, t)
        return findings


def _tensor(name: str, ranges: dict[int, tuple[float, float]]) -> _Tensor:
    features: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    if -1 in ranges:  # one value per row: the feature is the tensor itself
        features, bounds = (name,), (ranges[-1],)
    else:
        width = max(ranges) + 1
        features = tuple(f"{name}[{j}]" for j in range(width))
        bounds = tuple(ranges.get(j, (-np.inf, np.inf)) for j in range(width))
    lo = np.array([b[0] for b in bounds], dtype=np.float64)
    hi = np.array([b[1] for b in bounds], dtype=np.float64)
    return _Tensor(name, features, lo, hi, bounds)


def _passes(x: np.ndarray, t: _Tensor) -> bool:
    """Every value in its column's range, and as many columns as the reference knows.
    (Written for speed: a reshape alone costs more than checking a few values.)"""
    bounds = t.bounds
    if x.ndim == 1:
        if len(bounds) != 1:
            return False
        lo, hi = bounds[0]
        if x.size <= SMALL:
            return all(lo <= value <= hi for value in x.tolist())  # NaN fails both
        return bool(np.logical_and(x >= lo, x <= hi).all())
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    if x.shape[1] != len(bounds):
        return False
    if x.size <= SMALL:
        for row in x.tolist():
            for value, (lo, hi) in zip(row, bounds, strict=False):  # widths checked above
                if not lo <= value <= hi:  # NaN fails both comparisons
                    return False
        return True
    return bool(np.logical_and(x >= t.lo, x <= t.hi).all())


def _breakdown(x: np.ndarray, t: _Tensor) -> list[Finding]:
    flat = (x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(-1, 1)).astype(np.float64)
    width = len(t.features)
    found: list[Finding] = []
    if flat.shape[1] > width:
        found.append(Finding(t.name, "extra", flat.shape[1] - width))
    for j in range(flat.shape[1], width):
        found.append(Finding(t.features[j], "missing", 1))
    part = flat[:, :width]
    lo, hi = t.lo[: part.shape[1]], t.hi[: part.shape[1]]
    finite = np.isfinite(part)
    counts = {
        "nan": np.isnan(part).sum(axis=0),
        "inf": np.isinf(part).sum(axis=0),
        "range": (finite & ((part < lo) | (part > hi))).sum(axis=0),
    }
    for j in range(part.shape[1]):
        for check, per_column in counts.items():
            if per_column[j]:
                found.append(Finding(t.features[j], check, int(per_column[j])))
    return found


def describe(findings: list[Finding]) -> str:
    """Findings as the response parameter and refusals name them: ``X[0]:nan=1,X[2]:range=3``.

    >>> describe([Finding("X[0]", "nan", 1), Finding("X[2]", "range", 3)])
    'X[0]:nan=1,X[2]:range=3'
    """
    return ",".join(f"{f.feature}:{f.check}={f.values}" for f in findings)
