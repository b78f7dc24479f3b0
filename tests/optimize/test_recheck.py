"""A derived version is scored again on the validation data its lineage recorded; missing
or changed data, or a source gone when the data has no target, fail the re-check by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TabularModels
from servion.errors import InvalidInput
from servion.optimize import OptimizeRequest, optimize, recheck
from servion.registry import ModelRegistry, RegisterRequest


def test_a_derived_version_is_scored_again_on_its_recorded_data(
    registry: ModelRegistry, tabular: TabularModels, tmp_path: Path
) -> None:
    registry.register(RegisterRequest("tabular", tabular.joblib, "v1.0.0"))
    data = tmp_path / "val.npz"
    np.savez(data, input=tabular.x[:200])
    request = OptimizeRequest("tabular:v1.0.0", "v1.1.0", data, measure_s=0.05)
    result = optimize(registry, request)
    assert result.accepted and result.report.metric == "agreement"
    again = recheck(registry, "tabular", "v1.1.0")
    assert again.ok and again.now == again.recorded == again.source == 1.0
    with pytest.raises(InvalidInput, match="was not made by servion optimize"):
        recheck(registry, "tabular", "v1.0.0")
    # Without a target the score is agreement with the source: it must still be there.
    registry.delete("tabular", "v1.0.0")
    orphan = recheck(registry, "tabular", "v1.1.0")
    assert not orphan.ok and orphan.now is None
    assert "source 'tabular:v1.0.0' is no longer registered" in str(orphan.failure)
    data.unlink()
    gone = recheck(registry, "tabular", "v1.1.0")
    assert f"the validation file of tabular:v1.1.0, {data}, is gone" == gone.failure
