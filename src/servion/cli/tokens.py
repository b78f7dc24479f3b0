"""``servion tokens``: admin API tokens in the registry (the server reads them there)."""

from __future__ import annotations

import click

from servion.audit import Auditor
from servion.cli.common import Context, echo_json, refusals_exit_2, table
from servion.registry import ModelRegistry
from servion.server.tokens import ROLES, create_token, list_tokens, revoke_token


@click.group()
def tokens() -> None:
    """Create, list and revoke admin API tokens (viewer, deployer, admin)."""


@tokens.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", required=True, help="Who or what holds it (recorded in revisions).")
@click.pass_obj
@refusals_exit_2
def create(ctx: Context, role: str, name: str) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    registry = ModelRegistry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation("token_create", resources={"role": role, "name": name}) as op:
            info, token = create_token(registry, role, name)
            op.resources_affected = [f"token:{info.id}"]
    finally:
        registry.close()
        audit.close()
    # The secret alone on stdout, so that TOKEN=$(servion tokens create ...) holds just it.
    click.echo(
        f"token {info.id} ({info.name}, {info.role}); keep it, it is not shown again:", err=True
    )
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def list_(ctx: Context, as_json: bool) -> None:
    """Every token: id, name, role, and when it was created or revoked."""
    registry = ModelRegistry(ctx.settings)
    try:
        found = list_tokens(registry)
    finally:
        registry.close()
    if as_json:
        echo_json([_row(t) for t in found])
        return
    rows = [(t.id, t.name, t.role, t.created_at, t.revoked_at or "") for t in found]
    click.echo(table(("ID", "NAME", "ROLE", "CREATED", "REVOKED"), rows))


def _row(t: object) -> dict[str, object]:
    return {k: getattr(t, k) for k in ("id", "name", "role", "created_at", "revoked_at")}


@tokens.command("revoke")
@click.argument("token_id")
@click.pass_obj
@refusals_exit_2
def revoke(ctx: Context, token_id: str) -> None:
    """Revoke a token by id; servers refuse it within a fraction of a second."""
    registry = ModelRegistry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation("token_revoke") as op:
            op.resources_affected = [f"token:{token_id}"]
            revoke_token(registry, token_id)
    finally:
        registry.close()
        audit.close()
    click.echo(f"token {token_id} revoked")
