"""Deploy's tables: endpoints, their revisions, and canary rollouts.

Every deploy or rollback appends a revision; ``endpoints`` points at the one
serving. Rollbacks are new revisions too, so history only grows.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from servion.state import Track

metadata = sa.MetaData()

endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)

endpoint_revisions = sa.Table(
    "endpoint_revisions",
    metadata,
    sa.Column("endpoint", sa.String(64), primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("source_revision", sa.Integer, nullable=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

# One row per endpoint with a canary rollout, kept after it ends (its outcome).
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("endpoint", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("base_revision", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("step_started_at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    # The worker driving the rollout and until when its lease holds: another worker
    # takes the rollout over when a lease runs out (its driver died).
    sa.Column("driver", sa.String(128), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
)


def _create_endpoints_v1(conn: Connection) -> None:
    for table in (endpoints, endpoint_revisions):
        table.create(conn, checkfirst=True)


def _create_rollouts_v2(conn: Connection) -> None:
    rollouts.create(conn, checkfirst=True)


def _add_rollout_lease_v3(conn: Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("rollouts")}
    if "driver" not in columns:  # databases created before it lack them
        conn.execute(sa.text("ALTER TABLE rollouts ADD COLUMN driver VARCHAR(128)"))
        conn.execute(
            sa.text("ALTER TABLE rollouts ADD COLUMN lease_until FLOAT DEFAULT 0 NOT NULL")
        )


DEPLOY = Track("deploy", (_create_endpoints_v1, _create_rollouts_v2, _add_rollout_lease_v3))
