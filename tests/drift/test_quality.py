"""Data quality checks against a reference profile: which values fail which check, for
small requests (the plain-Python pass) and large ones (numpy) alike."""

from __future__ import annotations

import numpy as np
import pytest

from servion.drift import build_profile
from servion.drift.quality import SMALL, Finding, QualityCheck, describe


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)


def check_of(reference: np.ndarray, policy: str = "accept", margin: float = 0.0) -> QualityCheck:
    check = QualityCheck.from_profile(build_profile({"X": reference}, {}, "test"), policy, margin)
    assert check is not None
    return check


@pytest.mark.parametrize("rows", [1, SMALL])  # 4 and 256 values: both passes
def test_rows_inside_the_reference_range_are_clean(reference: np.ndarray, rows: int) -> None:
    assert check_of(reference).inspect({"X": reference[:rows]}) == []


@pytest.mark.parametrize("rows", [1, SMALL])
def test_each_kind_of_bad_value_is_found_on_its_feature(reference: np.ndarray, rows: int) -> None:
    x = reference[:rows].copy()
    x[0, 0] = np.nan
    x[0, 1] = -np.inf
    x[-1, 2] = reference[:, 2].max() + 1
    found = check_of(reference).inspect({"X": x})
    assert set(found) == {("X[0]", "nan", 1), ("X[1]", "inf", 1), ("X[2]", "range", 1)}


def test_columns_the_reference_lacks_or_has_are_extra_or_missing(reference: np.ndarray) -> None:
    check = check_of(reference)
    wide = np.hstack([reference[:2], reference[:2, :1]])
    assert check.inspect({"X": wide}) == [Finding("X", "extra", 1)]
    assert check.inspect({"X": reference[:2, :3]}) == [Finding("X[3]", "missing", 1)]


def test_the_margin_widens_each_range_by_its_span(reference: np.ndarray) -> None:
    x = reference[:1].copy()
    span = reference[:, 0].max() - reference[:, 0].min()
    x[0, 0] = reference[:, 0].max() + 0.25 * span
    assert check_of(reference).inspect({"X": x}) == [Finding("X[0]", "range", 1)]
    assert check_of(reference, margin=0.3).inspect({"X": x}) == []


def test_a_one_value_per_row_tensor_is_its_own_feature() -> None:
    profile = build_profile({"age": np.linspace(0, 90, 100)}, {}, "test")
    check = QualityCheck.from_profile(profile, "flag")
    assert check is not None
    assert check.inspect({"age": np.array([30.0, 140.0])}) == [Finding("age", "range", 1)]


def test_nothing_to_check_without_numeric_features_or_with_policy_off(
    reference: np.ndarray,
) -> None:
    categorical = build_profile({"code": np.arange(100) % 3}, {}, "test")
    assert QualityCheck.from_profile(categorical, "accept") is None
    assert QualityCheck.from_profile(build_profile({"X": reference}, {}, "t"), "off") is None


def test_integer_and_missing_tensors_are_left_to_the_signature(reference: np.ndarray) -> None:
    check = check_of(reference)
    assert check.inspect({"X": np.full((1, 4), 10**6, np.int64)}) == []
    assert check.inspect({}) == []


def test_findings_read_as_feature_check_and_count() -> None:
    assert describe([Finding("X[0]", "nan", 2), Finding("X", "extra", 1)]) == "X[0]:nan=2,X:extra=1"


def test_every_place_knows_the_same_policies() -> None:
    from typing import get_args

    from servion.cli.quality import POLICIES as CLI
    from servion.config import QualitySettings
    from servion.drift.quality import POLICIES

    assert CLI == POLICIES == get_args(QualitySettings.model_fields["policy"].annotation)
