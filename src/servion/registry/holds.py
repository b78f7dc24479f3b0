"""Signature holds: a new version that would change what callers of ``/v2/models/NAME``
must send (or get back) is registered but not served by a ``latest:N`` policy until the
operator confirms it (``servion models confirm``, or ``--allow-signature-change`` at
registration). An explicit policy (``all``, ``specific:``) serves it: it was asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from servion.registry import tables
from servion.registry.naming import parse_version
from servion.registry.policy import VersionPolicy
from servion.registry.versions import ModelVersion, RegisterRequest, row_to_version
from servion.runtime import Signature


def hold_for(conn: sa.Connection, req: RegisterRequest, signature: Signature) -> str | None:
    """The hold of a version being registered, read in its registering transaction (so two
    registrations cannot both pass as "no change")."""
    mv_t = tables.model_versions
    rows = conn.execute(
        sa.select(mv_t)
        .where(mv_t.c.name == req.name)
        .order_by(mv_t.c.major, mv_t.c.minor, mv_t.c.patch)
    ).all()
    existing = [row_to_version(r) for r in rows]
    policy_text = conn.execute(
        sa.select(tables.models.c.version_policy).where(tables.models.c.name == req.name)
    ).scalar_one()
    ordered = sorted([*(mv.version for mv in existing), req.version], key=parse_version)
    return signature_hold(
        existing, VersionPolicy.parse(policy_text), req.version, signature, ordered
    )


def signature_hold(
    existing: Sequence[ModelVersion],
    policy: VersionPolicy,
    version: str,
    signature: Signature,
    ordered: Sequence[str],
) -> str | None:
    """Why a new ``version`` (with ``ordered``, every version's name oldest first, it
    included) must wait, or None when it changes nothing its callers rely on."""
    if policy.kind != "latest" or not existing:
        return None
    held = {mv.version for mv in existing if mv.held}
    if version not in policy.select(list(ordered), held):
        return None  # an older version than the ones served: nobody calls it by default
    served = policy.select([mv.version for mv in existing], held)
    if not served:
        return None
    current = next(mv for mv in existing if mv.version == served[-1])
    problem = current.signature.input_difference(signature)
    if problem is None:
        problem = current.signature.output_difference(signature)
    if problem is None:
        return None
    return f"it {problem}, unlike {current.label}, which {policy} serves now"
