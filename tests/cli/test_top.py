"""How ``servion top`` writes a row's cells (the numbers come from ``monitoring.rates``)."""

from __future__ import annotations

from servion.cli.top import HEADERS, cells
from servion.monitoring import Row


def test_the_drift_cell_counts_drifted_features_or_says_ok() -> None:
    def drift(drifted: int | None) -> str:
        row = Row("m", "", 1.0, 0.0, None, None, None, None, drifted)
        return dict(zip(HEADERS, cells(row), strict=True))["DRIFT"]

    assert (drift(3), drift(0), drift(None)) == ("3 drifted", "ok", "-")
