"""Where a derived version came from: the version it was made from, the recipe that made
it, the data it was checked on and the report of that check.

``servion optimize`` writes it in the same transaction that records the version (a
version is never left without the lineage it was registered with), and deleting the
version deletes it. The recipe and report are plain JSON here: ``servion.optimize``
builds and reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from servion.registry import tables
from servion.state import utcnow


@dataclass(frozen=True)
class Lineage:
    """How a version was derived.

    >>> Lineage("tabular:v1.0.0", {"steps": ["onnx"]}, {"sha256": "..."}, {}).derived_from
    'tabular:v1.0.0'
    """

    derived_from: str
    """``NAME:VERSION`` of the version it was made from."""
    recipe: dict[str, Any]
    """The steps and the thresholds they were held to."""
    validation: dict[str, Any]
    """The validation data: its path, SHA-256, rows and target column."""
    report: dict[str, Any]
    """Size, latency and accuracy of the source and after each step."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "derived_from": self.derived_from,
            "recipe": self.recipe,
            "validation": self.validation,
            "report": self.report,
        }


class LineageStore:
    """Lineage by (name, version); only derived versions have one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, name: str, version: str) -> Lineage | None:
        t = tables.model_lineage
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name, t.c.version == version)).first()
        if row is None:
            return None
        return Lineage(
            str(row.derived_from), dict(row.recipe), dict(row.validation), dict(row.report)
        )


def record_lineage(conn: Connection, name: str, version: str, lineage: Lineage) -> None:
    """Store a version's lineage inside the transaction that records the version."""
    conn.execute(
        tables.model_lineage.insert().values(
            name=name, version=version, created_at=utcnow(), **lineage.to_dict()
        )
    )


def forget_lineage(conn: Connection, name: str, version: str) -> None:
    """Drop a deleted version's lineage (a version registered again under that number
    was not derived the same way)."""
    t = tables.model_lineage
    conn.execute(t.delete().where(t.c.name == name, t.c.version == version))
