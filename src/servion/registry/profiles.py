"""Drift reference profiles stored with model versions, and per-model drift thresholds
and data quality policies.

The profile itself is opaque JSON here (``servion.drift`` builds and reads it). A profile
learnt from live traffic is stored only if none is there yet, so when every worker builds
one at once the first writer wins and all of them compare against the same reference.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from servion.registry import tables
from servion.state import Database, utcnow


class DriftStore:
    """Profiles by (name, version) and thresholds by model name."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def profile(self, name: str, version: str) -> dict[str, Any] | None:
        t = tables.drift_profiles
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.profile).where(t.c.name == name, t.c.version == version)
            ).first()
        return None if row is None else dict(row.profile)

    def put_profile(self, name: str, version: str, profile: dict[str, Any], replace: bool) -> bool:
        """Store ``profile``; unless ``replace``, only when the version has none (True if
        stored)."""
        t = tables.drift_profiles
        where = (t.c.name == name) & (t.c.version == version)
        try:
            with self.engine.begin() as conn:
                if replace:
                    conn.execute(t.delete().where(where))
                conn.execute(
                    t.insert().values(
                        name=name, version=version, profile=profile, created_at=utcnow()
                    )
                )
                Database.bump(conn)  # servers take the new ranges for their quality checks
        except IntegrityError:  # another writer was first
            return False
        return True

    def thresholds(self, name: str) -> tuple[float, float] | None:
        t = tables.drift_thresholds
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.psi, t.c.alpha).where(t.c.name == name)).first()
        return None if row is None else (float(row.psi), float(row.alpha))

    def set_thresholds(self, name: str, psi: float, alpha: float) -> None:
        t = tables.drift_thresholds
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.name == name))
            conn.execute(t.insert().values(name=name, psi=psi, alpha=alpha))

    def stamps(self) -> dict[tuple[str, str], str]:
        """When each version's profile was stored: whether a copy read before is current."""
        t = tables.drift_profiles
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.name, t.c.version, t.c.created_at)).all()
        return {(r.name, r.version): str(r.created_at) for r in rows}

    def quality(self) -> dict[str, tuple[str, float]]:
        """Each model's own data quality policy and range margin (the others use the
        server's defaults)."""
        t = tables.quality_policies
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t)).all()
        return {r.name: (str(r.policy), float(r.margin)) for r in rows}

    def set_quality(self, name: str, policy: str, margin: float) -> None:
        """Store a model's policy (validated by the caller); running servers follow."""
        t = tables.quality_policies
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.name == name))
            conn.execute(t.insert().values(name=name, policy=policy, margin=margin))
            Database.bump(conn)


def forget_version(conn: Connection, name: str, version: str) -> None:
    """Drop a deleted version's profile (a re-registered version learns a new one)."""
    t = tables.drift_profiles
    conn.execute(t.delete().where(t.c.name == name, t.c.version == version))
