"""The metadata database every subsystem keeps its tables in.

Any SQLAlchemy URL works; SQLite is the embedded default. Each subsystem owns
its tables and declares them as a ``Track``: an ordered list of idempotent steps
that create or change them. ``Database.migrate`` applies a track's pending steps
once and records how far it got in ``schema_versions``, so a database created by
an older servion is brought forward when the subsystem first opens it.

The database itself owns two things all workers share: the generation counter,
bumped by every change that workers must apply (so a worker polls one integer
instead of every table), and the workers' heartbeats with their reports.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

Step = Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class Track:
    """One subsystem's schema: its name and its steps, oldest first (each idempotent)."""

    name: str
    steps: tuple[Step, ...]


_own = sa.MetaData()

schema_versions = sa.Table(
    "schema_versions",
    _own,
    sa.Column("track", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.String(32), nullable=False),
)

serving_state = sa.Table(
    "serving_state",
    _own,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
)

worker_state = sa.Table(
    "worker_state",
    _own,
    sa.Column("worker_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("stats", sa.JSON, nullable=False),
)


def _create_state_v1(conn: Connection) -> None:
    serving_state.create(conn, checkfirst=True)
    worker_state.create(conn, checkfirst=True)
    if conn.execute(sa.select(serving_state.c.id)).first() is None:
        conn.execute(serving_state.insert().values(id=1, generation=0))


STATE = Track("state", (_create_state_v1,))


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _on_connect_sqlite(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]  # DB-API connection
    # WAL lets workers read while the CLI writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """The engine, the schema tracks applied so far, the generation and the workers.

    >>> db = Database("sqlite:///:memory:")
    >>> db.generation()
    0
    """

    def __init__(self, url: str) -> None:
        self.engine: Engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _on_connect_sqlite)
        self._migrated: set[str] = set()
        self.migrate(STATE)

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self, track: Track) -> int:
        """Apply ``track``'s pending steps (once per process); return its version."""
        if track.name in self._migrated:
            return len(track.steps)
        with self._schema_lock(), self.engine.begin() as conn:
            schema_versions.create(conn, checkfirst=True)
            row = conn.execute(
                sa.select(schema_versions.c.version).where(schema_versions.c.track == track.name)
            ).first()
            done = int(row.version) if row else 0
            for step in track.steps[done:]:
                step(conn)
            if row is None:
                conn.execute(
                    schema_versions.insert().values(
                        track=track.name, version=len(track.steps), applied_at=utcnow()
                    )
                )
            elif done < len(track.steps):
                conn.execute(
                    schema_versions.update()
                    .where(schema_versions.c.track == track.name)
                    .values(version=len(track.steps), applied_at=utcnow())
                )
        self._migrated.add(track.name)
        return len(track.steps)

    def versions(self) -> dict[str, int]:
        """Each track's applied version."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(schema_versions)).all()
        return {r.track: int(r.version) for r in rows}

    @contextmanager
    def _schema_lock(self) -> Iterator[None]:
        # Workers start together and each opens the database: one migrates, the
        # others wait on the lock and then find nothing left to do.
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- the generation counter -----------------------------------------------------------

    @staticmethod
    def bump(conn: Connection) -> None:
        """Tell every worker, inside the caller's transaction, that something changed."""
        conn.execute(
            serving_state.update()
            .where(serving_state.c.id == 1)
            .values(generation=serving_state.c.generation + 1)
        )

    def generation(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(serving_state.c.generation)).scalar_one())

    # -- worker heartbeats ----------------------------------------------------------------

    def report_worker(self, worker_id: str, generation: int, stats: dict[str, Any]) -> None:
        """Record that a worker applied ``generation``, with its statistics so far."""
        values = {"generation": generation, "heartbeat": time.time(), "stats": stats}
        with self.engine.begin() as conn:
            updated = conn.execute(
                worker_state.update().where(worker_state.c.worker_id == worker_id).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(worker_state.insert().values(worker_id=worker_id, **values))

    def worker_reports(self, max_age_s: float) -> list[tuple[str, int, dict[str, Any]]]:
        """(worker id, generation, stats) of every worker heard from within ``max_age_s``."""
        cutoff = time.time() - max_age_s
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(worker_state).where(worker_state.c.heartbeat >= cutoff)
            ).all()
        return [(r.worker_id, int(r.generation), r.stats) for r in rows]

    def remove_worker(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(worker_state.delete().where(worker_state.c.worker_id == worker_id))
