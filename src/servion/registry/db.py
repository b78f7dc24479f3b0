"""The registry's metadata database: SQLAlchemy Core tables and versioned migrations.

Any SQLAlchemy URL works; SQLite is the embedded default. Each migration is a
function applied once, in order, and recorded in ``schema_migrations``, so a
database created by an older servion is brought forward on open.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.String(32), nullable=False),
)

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
    sa.UniqueConstraint("name", "version", name="uq_model_version"),
)

# One row; bumped by every change that workers must apply (register, delete,
# load, unload, policy), so a worker polls one integer instead of the tables.
serving_state = sa.Table(
    "serving_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
)

worker_state = sa.Table(
    "worker_state",
    metadata,
    sa.Column("worker_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("stats", sa.JSON, nullable=False),
)


# Deployments: every deploy or rollback appends a revision; ``endpoints`` points
# at the one serving. Rollbacks are new revisions too, so history only grows.
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

# Admin API tokens: only a SHA-256 of each token is kept.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32), nullable=True),
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


def _create_v1(conn: Connection) -> None:
    for table in (models, model_versions):
        table.create(conn, checkfirst=True)


def _create_v2(conn: Connection) -> None:
    serving_state.create(conn, checkfirst=True)
    worker_state.create(conn, checkfirst=True)
    conn.execute(serving_state.insert().values(id=1, generation=0))


def _add_batching_v3(conn: Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("models")}
    if "batching" not in columns:  # databases created before v3 lack it
        conn.execute(sa.text("ALTER TABLE models ADD COLUMN batching JSON"))


def _create_deployments_v4(conn: Connection) -> None:
    for table in (endpoints, endpoint_revisions, tokens):
        table.create(conn, checkfirst=True)


def _create_rollouts_v5(conn: Connection) -> None:
    rollouts.create(conn, checkfirst=True)


def _add_rollout_lease_v6(conn: Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns("rollouts")}
    if "driver" not in columns:  # databases created before v6 lack them
        conn.execute(sa.text("ALTER TABLE rollouts ADD COLUMN driver VARCHAR(128)"))
        conn.execute(
            sa.text("ALTER TABLE rollouts ADD COLUMN lease_until FLOAT DEFAULT 0 NOT NULL")
        )


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _create_v1,
    _create_v2,
    _add_batching_v3,
    _create_deployments_v4,
    _create_rollouts_v5,
    _add_rollout_lease_v6,
)


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _on_connect_sqlite(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]  # DB-API connection
    # WAL lets workers read while the CLI writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: str) -> Engine:
    """Open the database and bring its schema up to date."""
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name != "sqlite":
        migrate(engine)
        return engine
    sa.event.listen(engine, "connect", _on_connect_sqlite)
    database = engine.url.database
    if not database or database == ":memory:":
        migrate(engine)
        return engine
    # Workers start together and each opens the registry: one migrates, the
    # others wait on the lock and then find nothing left to do.
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            migrate(engine)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return engine


def migrate(engine: Engine) -> int:
    """Apply pending migrations; return the schema version."""
    with engine.begin() as conn:
        schema_migrations.create(conn, checkfirst=True)
        done = {row[0] for row in conn.execute(sa.select(schema_migrations.c.version))}
        for number, step in enumerate(MIGRATIONS, start=1):
            if number in done:
                continue
            step(conn)
            conn.execute(schema_migrations.insert().values(version=number, applied_at=utcnow()))
    return len(MIGRATIONS)
