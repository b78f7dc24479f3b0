"""``servion models list | show | delete | policy``."""

from __future__ import annotations

import click

from servion.cli.common import Context, echo_json, human_bytes, refusals_exit_2, table
from servion.errors import ValidationFailed
from servion.registry import ModelRegistry, VersionPolicy, check_name, parse_ref


@click.group()
def models() -> None:
    """Inspect and manage registered models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def list_models(ctx: Context, as_json: bool) -> None:
    """Every registered model version."""
    registry = ModelRegistry(ctx.settings)
    versions = registry.list_versions()
    policies = registry.policies()
    registry.close()
    if as_json:
        echo_json([mv.to_dict() for mv in versions])
        return
    if not versions:
        click.echo("no models registered (servion register NAME PATH --version v1.0.0)")
        return
    rows = [
        (
            mv.name,
            mv.version,
            mv.format,
            human_bytes(mv.size_bytes),
            mv.sha256[:12],
            str(policies[mv.name][0]) + ("" if policies[mv.name][1] else " (unloaded)"),
            mv.registered_at[:19].replace("T", " "),
        )
        for mv in versions
    ]
    click.echo(table(("NAME", "VERSION", "FORMAT", "SIZE", "SHA256", "POLICY", "REGISTERED"), rows))


@models.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def show(ctx: Context, ref: str, as_json: bool) -> None:
    """One version in full (the latest when VERSION is left out)."""
    name, version = parse_ref(ref)
    registry = ModelRegistry(ctx.settings)
    mv = registry.get(name, version)
    registry.close()
    if as_json:
        echo_json(mv.to_dict())
        return
    click.echo(f"{mv.label}")
    click.echo(f"  format         {mv.format}")
    click.echo(f"  size           {human_bytes(mv.size_bytes)} ({mv.size_bytes} bytes)")
    click.echo(f"  sha256         {mv.sha256}")
    click.echo(f"  registered     {mv.registered_at} by {mv.registered_by}")
    click.echo(f"  source         {mv.source_name}")
    if mv.large_reason:
        click.echo(f"  large because  {mv.large_reason}")
    env = mv.environment
    pkgs = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    click.echo(f"  environment    Python {env.get('python')}; {pkgs}")
    rows = [("input", s.name, s.datatype, list(s.shape)) for s in mv.signature.inputs]
    rows += [("output", s.name, s.datatype, list(s.shape)) for s in mv.signature.outputs]
    click.echo(table(("", "TENSOR", "DATATYPE", "SHAPE"), rows))


@models.command("delete")
@click.argument("ref", metavar="NAME:VERSION")
@click.pass_obj
@refusals_exit_2
def delete(ctx: Context, ref: str) -> None:
    """Remove one version (and its artifact, unless another version shares it)."""
    name, version = parse_ref(ref)
    if version is None:
        raise ValidationFailed("name the version to delete: NAME:VERSION")
    registry = ModelRegistry(ctx.settings)
    mv = registry.delete(name, version)
    registry.close()
    click.echo(f"deleted {mv.label}")


@models.command("policy")
@click.argument("name")
@click.argument("policy", metavar="latest[:N]|all|specific:vX.Y.Z[,...]")
@click.pass_obj
@refusals_exit_2
def policy(ctx: Context, name: str, policy: str) -> None:
    """Choose which versions of NAME are served; running servers follow within a second."""
    check_name(name)
    parsed = VersionPolicy.parse(policy)
    registry = ModelRegistry(ctx.settings)
    registry.set_policy(name, parsed)
    registry.close()
    click.echo(f"{name}: serving {parsed}")
