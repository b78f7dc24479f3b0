"""A derived version's lineage is recorded with it, in the same transaction, and goes
with it when it is deleted; databases from before lineage gain the table in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import TabularModels
from servion.config import Settings
from servion.errors import DuplicateVersion
from servion.registry import Lineage, ModelRegistry, RegisterRequest
from servion.registry.tables import REGISTRY

LINEAGE = Lineage(
    "tabular:v1.0.0",
    {"steps": ["onnx"], "max_accuracy_drop": 0.01},
    {"path": "/data/val.csv", "sha256": "ab" * 32, "rows": 600, "target": "y"},
    {"stages": [{"step": "source"}, {"step": "onnx"}]},
)


def test_lineage_is_recorded_with_the_version_and_deleted_with_it(
    registry: ModelRegistry, tabular: TabularModels
) -> None:
    registry.register(RegisterRequest("tabular", tabular.onnx, "v1.0.0"))
    registry.register(RegisterRequest("tabular", tabular.onnx, "v1.1.0", lineage=LINEAGE))
    assert registry.lineage.get("tabular", "v1.1.0") == LINEAGE
    assert registry.lineage.get("tabular", "v1.0.0") is None
    # A refused registration writes no lineage over the version already there.
    other = Lineage("tabular:v0.9.0", {}, {}, {})
    with pytest.raises(DuplicateVersion):
        registry.register(RegisterRequest("tabular", tabular.onnx, "v1.1.0", lineage=other))
    assert registry.lineage.get("tabular", "v1.1.0") == LINEAGE
    registry.delete("tabular", "v1.1.0")
    assert registry.lineage.get("tabular", "v1.1.0") is None
    # The number registered again is a new version, not a derived one.
    registry.register(RegisterRequest("tabular", tabular.onnx, "v1.1.0"))
    assert registry.lineage.get("tabular", "v1.1.0") is None


def test_a_database_from_before_lineage_gains_the_table(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "home")
    ModelRegistry(settings).close()
    engine = sa.create_engine(settings.db_url)
    with engine.begin() as conn:  # as servion left it before lineage existed
        conn.execute(sa.text("DROP TABLE model_lineage"))
        conn.execute(sa.text("UPDATE schema_versions SET version = 5 WHERE track = 'registry'"))
    engine.dispose()
    registry = ModelRegistry(settings)
    try:
        assert registry.database.versions()["registry"] == len(REGISTRY.steps) == 6
        assert registry.lineage.get("tabular", "v1.0.0") is None  # the table is there
    finally:
        registry.close()
