"""Canary rollouts: the steps and the rollout's state in the registry DB.

A canary spec names one model version (the canary) and a ``rollout``. Against
the endpoint's current revision (the stable one) each step is recorded as a
revision in which the canary gets the step's share and the stable arms share
the rest in their old proportions. After ``interval_s`` at a step, with at
least ``gates.min_requests`` requests of each arm seen during it, the canary's
errors and latencies are compared with the stable arms' over the same step
(``gates.judge``): if a gate fails the stable revision is restored; at the last
step (100 %) the spec itself becomes the revision (``promote``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from servion.deploy import tables
from servion.deploy.spec import Arm, DeploymentSpec, said, spec_from_dict
from servion.deploy.tables import DEPLOY
from servion.errors import InvalidInput, quoted
from servion.registry import ModelRegistry
from servion.routing import add_histograms
from servion.state import utcnow

ACTIVE = ("running", "paused")


@dataclass(frozen=True, slots=True)
class RolloutState:
    endpoint: str
    state: str
    """``running``, ``paused``, ``promoted``, ``rolled_back``, ``aborted``, or ``superseded``
    (a later deploy, rollback or undeploy changed what the endpoint serves)."""
    spec: DeploymentSpec
    base_revision: int
    step: int
    """Index into ``spec.rollout.steps`` of the step being served (-1: not started)."""
    step_started_at: float
    reason: str
    updated_at: str
    created_by: str
    driver: str | None = None
    lease_until: float = 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        assert self.spec.rollout is not None
        steps = self.spec.rollout.steps
        return {
            "endpoint": self.endpoint,
            "state": self.state,
            "canary": self.spec.models[0].label,
            "steps": steps,
            "step": self.step,
            "percent": steps[self.step] if 0 <= self.step < len(steps) else 0,
            "base_revision": self.base_revision,
            "reason": self.reason,
            "updated_at": self.updated_at,
            "created_by": self.created_by,
            "driver": self.driver,
        }


def step_spec(stable: DeploymentSpec, canary: DeploymentSpec, percent: float) -> DeploymentSpec:
    """The endpoint at one step: the canary at ``percent``, the stable arms scaled into the rest.

    Everything else (cache, shadows, fallback, timeout, sticky key, ...) is the stable
    revision's unless the canary spec sets it: a canary spec names a version to roll out,
    not a new configuration to lose the old one's settings to.
    """
    arm = canary.models[0]
    doc = stable.to_dict()
    explicit = canary.to_dict()
    for field in said(canary) - {"models", "rollout"}:
        if field in explicit:
            doc[field] = explicit[field]
        else:
            doc.pop(field, None)
    doc.pop("rollout", None)
    # The canary cannot stay a shadow of itself once it serves.
    doc["shadows"] = [
        s
        for s in doc.get("shadows", [])
        if (s["model"], s["version"])
        != (
            arm.model,
            arm.version,
        )
    ]
    if percent >= 100:
        doc["models"] = [arm.model_dump()]
        return spec_from_dict(doc, "rollout promotion")
    rest = (100.0 - percent) / 100.0
    arms = [Arm(model=a.model, version=a.version, weight=a.weight * rest) for a in stable.models]
    arms.append(Arm(model=arm.model, version=arm.version, weight=percent))
    # The rounding of the scaled weights must not break the sum-to-100 rule.
    drift = 100.0 - sum(a.weight for a in arms)
    arms[0] = Arm(model=arms[0].model, version=arms[0].version, weight=arms[0].weight + drift)
    doc["models"] = [a.model_dump() for a in arms]
    return spec_from_dict(doc, "rollout step")


def delta(now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    if before is None:
        return now
    return {
        "requests": now["requests"] - before["requests"],
        "errors": now["errors"] - before["errors"],
        "latency": [a - b for a, b in zip(now["latency"], before["latency"], strict=True)],
    }


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests": sum(p["requests"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "latency": add_histograms(parts),
    }


class Rollouts:
    """Rollout rows: one per endpoint, the latest rollout's state."""

    def __init__(self, registry: ModelRegistry) -> None:
        registry.database.migrate(DEPLOY)
        self.engine = registry.database.engine

    def start(
        self, spec: DeploymentSpec, base_revision: int, user: str, driver: str, lease_s: float
    ) -> RolloutState:
        existing = self.find(spec.endpoint)
        if existing is not None and existing.active:
            raise InvalidInput(
                f"endpoint {quoted(spec.endpoint)} has a rollout {existing.state}: resume or"
                " abort it first (servion rollout)"
            )
        values = {
            "state": "running",
            "spec": spec.to_dict(),
            "base_revision": base_revision,
            "step": -1,
            "step_started_at": time.time(),
            "reason": "",
            "updated_at": utcnow(),
            "created_by": user,
            "driver": driver,
            "lease_until": time.time() + lease_s,
        }
        t = tables.rollouts
        with self.engine.begin() as conn:
            if existing is None:
                conn.execute(t.insert().values(endpoint=spec.endpoint, **values))
            else:
                conn.execute(t.update().where(t.c.endpoint == spec.endpoint).values(**values))
        found = self.find(spec.endpoint)
        assert found is not None
        return found

    def find(self, endpoint: str) -> RolloutState | None:
        t = tables.rollouts
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.endpoint == endpoint)).first()
        if row is None:
            return None
        return RolloutState(
            row.endpoint,
            row.state,
            spec_from_dict(row.spec, "rollout"),
            int(row.base_revision),
            int(row.step),
            float(row.step_started_at),
            row.reason,
            row.updated_at,
            row.created_by,
            row.driver,
            float(row.lease_until or 0.0),
        )

    def update(self, endpoint: str, **values: Any) -> None:
        t = tables.rollouts
        with self.engine.begin() as conn:
            conn.execute(
                t.update().where(t.c.endpoint == endpoint).values(updated_at=utcnow(), **values)
            )

    def hold(self, endpoint: str, driver: str, lease_s: float) -> bool:
        """Take or keep the lease on an active rollout; False when another worker holds it.

        One statement decides, so of two workers claiming an expired lease only one wins.
        """
        t = tables.rollouts
        now = time.time()
        with self.engine.begin() as conn:
            moved = conn.execute(
                t.update()
                .where(
                    (t.c.endpoint == endpoint)
                    & t.c.state.in_(ACTIVE)
                    & ((t.c.driver == driver) | (t.c.lease_until < now) | t.c.driver.is_(None))
                )
                .values(driver=driver, lease_until=now + lease_s)
            )
        return bool(moved.rowcount)

    def orphans(self) -> list[str]:
        """Active rollouts whose driver's lease has run out."""
        t = tables.rollouts
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.endpoint).where(
                    t.c.state.in_(ACTIVE) & (t.c.lease_until < time.time())
                )
            ).all()
        return [r.endpoint for r in rows]
