"""``servion registry backup | restore``."""

from __future__ import annotations

from pathlib import Path

import click

from servion.audit import Auditor
from servion.cli.common import Context, echo_json, human_bytes, refusals_exit_2


@click.group("registry")
def registry() -> None:
    """Back up and restore the registry (metadata and artifacts)."""


@registry.command("backup")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def backup_command(ctx: Context, target: Path, force: bool, as_json: bool) -> None:
    """Write a consistent snapshot (models, artifacts, audit trail) to TARGET (.tar.gz),
    safe while a server runs."""
    from servion.registry.backup import backup

    audit = Auditor(ctx.settings)
    try:
        with audit.operation("backup") as op:
            summary = backup(ctx.settings, target, overwrite=force)
            op.resources_affected = [f"file:{target}"]
    finally:
        audit.close()
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"backed up {len(summary['versions'])} model versions,"
        f" {len(summary['artifacts'])} artifacts and {len(summary['audit'])} audit files"
        f" to {target} ({human_bytes(summary['bytes'])})"
    )


@registry.command("restore")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def restore_command(ctx: Context, source: Path, as_json: bool) -> None:
    """Restore a backup into this (empty) home and verify every artifact's checksum."""
    from servion.registry.backup import restore

    audit = Auditor(ctx.settings)
    try:
        with audit.operation("restore") as op:
            summary = restore(ctx.settings, source)
            op.resources_affected = [f"model:{label}" for label in summary["versions"]]
    finally:
        audit.close()
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"restored {len(summary['versions'])} model versions (backup of"
        f" {summary['restored_from']}); every checksum verified"
    )
