"""Endpoint revisions in the registry's database.

A deploy appends a revision and points the endpoint at it; a rollback appends a
revision that copies an earlier one's spec. Both bump the registry's
generation, so every worker applies the change on its next sync (0.2 s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from servion.deploy import tables
from servion.deploy.checks import FIELDS, raw_problems, registry_problems
from servion.deploy.plans import policy_of
from servion.deploy.spec import DeploymentSpec, read_spec, spec_from_dict
from servion.deploy.tables import DEPLOY
from servion.errors import InvalidInput, ModelNotFound, ValidationFailed, quoted
from servion.registry import ModelRegistry
from servion.routing import EndpointPolicy
from servion.runtime import Signature
from servion.state import Database, utcnow

log = logging.getLogger("servion.deploy")


class EndpointNotFound(ModelNotFound):
    """No endpoint of that name is deployed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.message = f"unknown endpoint {quoted(name)}"


@dataclass(frozen=True, slots=True)
class Revision:
    """One recorded state of an endpoint."""

    endpoint: str
    revision: int
    spec: DeploymentSpec
    action: str
    """``deploy``, ``rollback``, or ``failed`` (a deploy whose arms did not load)."""
    source_revision: int | None
    """For a rollback: the revision whose spec it restored."""
    created_at: str
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "revision": self.revision,
            "action": self.action,
            "source_revision": self.source_revision,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "spec": self.spec.to_dict(),
        }


def _revision(row: Any) -> Revision:
    return Revision(
        row.endpoint,
        int(row.revision),
        spec_from_dict(row.spec, f"revision {row.revision}"),
        row.action,
        row.source_revision,
        row.created_at,
        row.created_by,
    )


class Deployments:
    """Deploy, roll back and read endpoint revisions."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        registry.database.migrate(DEPLOY)
        self.engine = registry.database.engine
        registry.add_delete_guard(self._refuse_delete)
        registry.add_name_guard(self._refuse_name)

    def _refuse_name(self, conn: sa.Connection, name: str) -> None:
        """A new model may not take a deployed endpoint's name."""
        ep = tables.endpoints
        if conn.execute(sa.select(ep.c.name).where(ep.c.name == name)).first() is not None:
            raise ValidationFailed(
                f"{quoted(name)} is a deployed endpoint's name: register the model under"
                " another name (or undeploy the endpoint first)"
            )

    def _refuse_delete(self, conn: sa.Connection, name: str, version: str) -> None:
        """A version the current or previous revision of an endpoint names stays."""
        ep, rev = tables.endpoints, tables.endpoint_revisions
        rows = conn.execute(
            sa.select(rev.c.endpoint, rev.c.revision, rev.c.spec).join(
                ep,
                (ep.c.name == rev.c.endpoint)
                & ((rev.c.revision == ep.c.revision) | (rev.c.revision == ep.c.revision - 1)),
            )
        ).all()
        for row in rows:
            spec = spec_from_dict(row.spec, f"revision {row.revision}")
            for role, ref in spec.model_refs():
                if (ref.model, ref.version) == (name, version):
                    raise ValidationFailed(
                        f"{name}:{version} is used by endpoint {quoted(row.endpoint)} as"
                        f" {FIELDS[role]} (revision {row.revision}): deploy a spec without it,"
                        " or undeploy the endpoint, first"
                    )

    def check(self, spec: DeploymentSpec) -> None:
        """Every version the spec names is registered, signatures agree, a cascade's output
        exists, fixed outputs fit (400 naming every problem otherwise)."""
        problems = registry_problems(spec, self.signatures(), self.registry.settings.deploy)
        if problems:
            raise InvalidInput("; ".join(problems))

    def signatures(self) -> dict[tuple[str, str], Signature]:
        return {(mv.name, mv.version): mv.signature for mv in self.registry.list_versions()}

    def problems(self, text: bytes, source: str) -> list[str]:
        """Everything wrong with a spec file, registry checks included, all at once."""
        raw, problems = read_spec(text, source)
        if raw is None:
            return problems
        registered = self.signatures()
        if problems:
            return problems + raw_problems(raw, registered)
        spec = spec_from_dict(raw, source)
        return registry_problems(spec, registered, self.registry.settings.deploy)

    def deploy(self, spec: DeploymentSpec, user: str) -> Revision:
        """Record ``spec`` as the endpoint's next revision and serve it."""
        self.check(spec)
        return self.append(spec, "deploy", None, user)

    def rollback(self, endpoint: str, to: int | None, user: str) -> Revision:
        """Serve an earlier revision's spec again (default: the last good one before the
        current)."""
        current = self.current(endpoint)
        target = to if to is not None else self._previous_good(endpoint, current.revision)
        if target < 1:
            raise InvalidInput(
                f"endpoint {quoted(endpoint)} has no revision before {current.revision}"
            )
        if target == current.revision:
            raise InvalidInput(f"endpoint {quoted(endpoint)} is already serving revision {target}")
        old = self.get(endpoint, target)
        self.check(old.spec)  # its versions may have been deleted since
        return self.append(old.spec, "rollback", old.revision, user)

    def append(self, spec: DeploymentSpec, action: str, source: int | None, user: str) -> Revision:
        """Record ``spec`` as the endpoint's next revision (``action`` says why) and serve it."""
        now = utcnow()
        rev = tables.endpoint_revisions
        with self.engine.begin() as conn:
            last = conn.execute(
                sa.select(sa.func.max(rev.c.revision)).where(rev.c.endpoint == spec.endpoint)
            ).scalar()
            number = int(last or 0) + 1
            conn.execute(
                rev.insert().values(
                    endpoint=spec.endpoint,
                    revision=number,
                    spec=spec.to_dict(),
                    action=action,
                    source_revision=source,
                    created_at=now,
                    created_by=user,
                )
            )
            ep = tables.endpoints
            moved = conn.execute(
                ep.update().where(ep.c.name == spec.endpoint).values(revision=number)
            )
            if moved.rowcount == 0:
                conn.execute(
                    ep.insert().values(name=spec.endpoint, revision=number, created_at=now)
                )
            Database.bump(conn)
        return Revision(spec.endpoint, number, spec, action, source, now, user)

    def mark_failed(self, endpoint: str, revision: int) -> None:
        """Record that a revision never served (an arm failed to load)."""
        rev = tables.endpoint_revisions
        with self.engine.begin() as conn:
            conn.execute(
                rev.update()
                .where((rev.c.endpoint == endpoint) & (rev.c.revision == revision))
                .values(action="failed")
            )

    def _previous_good(self, endpoint: str, before: int) -> int:
        rev = tables.endpoint_revisions
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.max(rev.c.revision)).where(
                    (rev.c.endpoint == endpoint)
                    & (rev.c.revision < before)
                    # A canary's steps are not places to go back to: the revision from
                    # before the rollout is (and a failed deploy never served).
                    & rev.c.action.notin_(("failed", "rollout"))
                )
            ).scalar()
        return int(found or 0)

    def undeploy(self, endpoint: str) -> None:
        """Stop serving the endpoint (its history is kept)."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                tables.endpoints.delete().where(tables.endpoints.c.name == endpoint)
            )
            if gone.rowcount == 0:
                raise EndpointNotFound(endpoint)
            Database.bump(conn)

    # -- reading -------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.endpoints.c.name).order_by("name")).all()
        return [r.name for r in rows]

    def current(self, endpoint: str) -> Revision:
        ep, rev = tables.endpoints, tables.endpoint_revisions
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(rev)
                .join(ep, (ep.c.name == rev.c.endpoint) & (ep.c.revision == rev.c.revision))
                .where(ep.c.name == endpoint)
            ).first()
        if row is None:
            raise EndpointNotFound(endpoint)
        return _revision(row)

    def all_current(self) -> list[Revision]:
        ep, rev = tables.endpoints, tables.endpoint_revisions
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(rev)
                .join(ep, (ep.c.name == rev.c.endpoint) & (ep.c.revision == rev.c.revision))
                .order_by(rev.c.endpoint)
            ).all()
        return [_revision(r) for r in rows]

    def get(self, endpoint: str, revision: int) -> Revision:
        rev = tables.endpoint_revisions
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(rev).where((rev.c.endpoint == endpoint) & (rev.c.revision == revision))
            ).first()
        if row is None:
            if not self.history(endpoint):
                raise EndpointNotFound(endpoint)
            raise InvalidInput(f"endpoint {quoted(endpoint)} has no revision {revision}")
        return _revision(row)

    def history(self, endpoint: str) -> list[Revision]:
        rev = tables.endpoint_revisions
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(rev).where(rev.c.endpoint == endpoint).order_by(rev.c.revision)
            ).all()
        return [_revision(r) for r in rows]

    def plans(self) -> list[tuple[EndpointPolicy, EndpointPolicy | None]]:
        """``serving`` as the policies routing serves by."""
        plans = []
        for current, previous in self.serving():
            try:
                plan = policy_of(current.spec, current.revision)
            except InvalidInput as exc:  # stored before a rule tightened: not served
                log.error(
                    "endpoint_policy_invalid",
                    extra={"endpoint": current.endpoint, "error": exc.message},
                )
                continue
            before = None
            if previous is not None:
                try:
                    before = policy_of(previous.spec, previous.revision)
                except InvalidInput:
                    before = None
            plans.append((plan, before))
        return plans

    def serving(self) -> list[tuple[Revision, Revision | None]]:
        """Each deployed endpoint's current revision and the one before it, which
        workers keep loaded so that a rollback needs no model load."""
        out = []
        for current in self.all_current():
            number = self._previous_good(current.endpoint, current.revision)
            previous = self.get(current.endpoint, number) if number else None
            out.append((current, previous))
        return out
