"""The registry's tables: model names, their versions, their drift references, data
quality policies and the lineage of versions derived from others."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from servion.state import Track

metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("version_policy", sa.String(256), nullable=False, server_default="latest:1"),
    sa.Column("loaded", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("batching", sa.JSON, nullable=True),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), sa.ForeignKey("models.name"), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("major", sa.Integer, nullable=False),
    sa.Column("minor", sa.Integer, nullable=False),
    sa.Column("patch", sa.Integer, nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("artifact", sa.String(512), nullable=False),
    sa.Column("signature", sa.JSON, nullable=False),
    sa.Column("environment", sa.JSON, nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("large_reason", sa.Text, nullable=True),
    sa.Column("source_name", sa.String(512), nullable=False),
    sa.Column("registered_at", sa.String(32), nullable=False),
    sa.Column("registered_by", sa.String(128), nullable=False),
    sa.Column("held", sa.Text, nullable=True),
    sa.UniqueConstraint("name", "version", name="uq_model_version"),
)


drift_profiles = sa.Table(
    "drift_profiles",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("profile", sa.JSON, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)

drift_thresholds = sa.Table(
    "drift_thresholds",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("psi", sa.Float, nullable=False),
    sa.Column("alpha", sa.Float, nullable=False),
)

quality_policies = sa.Table(
    "quality_policies",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("policy", sa.String(16), nullable=False),
    sa.Column("margin", sa.Float, nullable=False),
)

model_lineage = sa.Table(
    "model_lineage",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("derived_from", sa.String(140), nullable=False),
    sa.Column("recipe", sa.JSON, nullable=False),
    sa.Column("validation", sa.JSON, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)


def _create_v1(conn: Connection) -> None:
    for table in (models, model_versions):
        table.create(conn, checkfirst=True)


def _add_batching_v2(conn: Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("models")}
    if "batching" not in columns:  # databases created before it lack it
        conn.execute(sa.text("ALTER TABLE models ADD COLUMN batching JSON"))


def _add_held_v3(conn: Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("model_versions")}
    if "held" not in columns:
        conn.execute(sa.text("ALTER TABLE model_versions ADD COLUMN held TEXT"))


def _add_drift_v4(conn: Connection) -> None:
    for table in (drift_profiles, drift_thresholds):
        table.create(conn, checkfirst=True)


def _add_quality_v5(conn: Connection) -> None:
    quality_policies.create(conn, checkfirst=True)


def _add_lineage_v6(conn: Connection) -> None:
    model_lineage.create(conn, checkfirst=True)


REGISTRY = Track(
    "registry",
    (
        _create_v1,
        _add_batching_v2,
        _add_held_v3,
        _add_drift_v4,
        _add_quality_v5,
        _add_lineage_v6,
    ),
)
