"""``servion models list | show | delete | policy``."""

from __future__ import annotations

from typing import Any

import click

from servion.audit import Auditor
from servion.batching import BatchingConfig
from servion.cli.client import confirm, when
from servion.cli.common import (
    Context,
    echo_json,
    human_bytes,
    mlflow_origin,
    open_registry,
    refusals_exit_2,
    table,
)
from servion.errors import ModelNotFound, ValidationFailed
from servion.registry import Lineage, ModelRegistry, VersionPolicy, check_name, parse_ref


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
            str(policies[mv.name][0])
            + ("" if policies[mv.name][1] else " (unloaded)")
            + (" (held)" if mv.held else ""),
            when(mv.registered_at),
        )
        for mv in versions
    ]
    headers = ("NAME", "VERSION", "FORMAT", "SIZE", "SHA256", "POLICY", "REGISTERED (UTC)")
    click.echo(table(headers, rows))


@models.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def show(ctx: Context, ref: str, as_json: bool) -> None:
    """One version in full (the latest when VERSION is left out)."""
    name, version = parse_ref(ref)
    registry = ModelRegistry(ctx.settings)
    try:
        mv = registry.get(name, version)
        lineage = registry.lineage.get(mv.name, mv.version)
    finally:
        registry.close()
    if as_json:
        echo_json({**mv.to_dict(), "lineage": lineage.to_dict() if lineage else None})
        return
    click.echo(f"{mv.label}")
    click.echo(f"  format         {mv.format}")
    click.echo(f"  size           {human_bytes(mv.size_bytes)} ({mv.size_bytes} bytes)")
    click.echo(f"  sha256         {mv.sha256}")
    click.echo(f"  registered     {when(mv.registered_at)} UTC by {mv.registered_by}")
    click.echo(f"  source         {mv.source_name}")
    runtime = _runtime_options(mv.options)
    if runtime:
        click.echo(f"  runtime        {runtime}")
    if mv.large_reason:
        click.echo(f"  large because  {mv.large_reason}")
    if mv.held:
        click.echo(f"  held           {mv.held} (servion models confirm {mv.label})")
    env = mv.environment
    pkgs = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    click.echo(f"  environment    Python {env.get('python')}; {pkgs}")
    if mv.mlflow is not None:
        click.echo(f"  mlflow         {mlflow_origin(mv.mlflow)}")
    if lineage is not None:
        _show_lineage(lineage)
    rows = [("input", s.name, s.datatype, list(s.shape)) for s in mv.signature.inputs]
    rows += [("output", s.name, s.datatype, list(s.shape)) for s in mv.signature.outputs]
    click.echo(table(("ROLE", "TENSOR", "DATATYPE", "SHAPE"), rows))


def _runtime_options(options: dict[str, Any]) -> str:
    """The options given at registration (``--option``, ``--trust-code``), as KEY=VALUE."""
    shown = []
    for key in ("device", "precision", "warmup", "trust_code"):
        value = options.get(key)
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            shown.append(f"{key}={text}")
    return ", ".join(shown)


def _show_lineage(lineage: Lineage) -> None:
    recipe, data = lineage.recipe, lineage.validation
    against = f"target {data.get('target')!r}" if data.get("target") else "the source's answers"
    click.echo(f"  derived from   {lineage.derived_from}")
    click.echo(
        f"  recipe         {', '.join(recipe.get('steps', []))}"
        f" (max accuracy drop {recipe.get('max_accuracy_drop')})"
    )
    click.echo(
        f"  validated on   {data.get('path')} ({data.get('rows')} rows, {against},"
        f" sha256 {str(data.get('sha256'))[:12]}...)"
    )
    click.echo(f"  report         {lineage.report.get('summary', '-')}")


@models.command("delete")
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@refusals_exit_2
def delete(ctx: Context, ref: str, yes: bool) -> None:
    """Remove one version (and its artifact, unless another version shares it)."""
    name, version = parse_ref(ref)
    if version is None:
        raise ValidationFailed("name the version to delete: NAME:VERSION")
    confirm(f"Delete {name}:{version} and its artifact?", yes)
    registry: ModelRegistry = open_registry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(
            "delete", model_name=name, model_version=version, rollback_available=False
        ) as op:
            mv = registry.delete(name, version)
            op.resources_affected = [f"model:{mv.label}"]
    finally:
        registry.close()
        audit.close()
    click.echo(f"deleted {mv.label}")


@models.command("confirm")
@click.argument("ref", metavar="NAME:VERSION")
@click.pass_obj
@refusals_exit_2
def confirm_command(ctx: Context, ref: str) -> None:
    """Serve a version held for a signature change (latest:N policies pass over it until
    then); running servers follow within a second."""
    name, version = parse_ref(ref)
    if version is None:
        raise ValidationFailed("name the version to confirm: NAME:VERSION")
    registry = ModelRegistry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(
            "config_change", model_name=name, model_version=version, resources={"held": None}
        ) as op:
            mv = registry.confirm(name, version)
            op.resources_affected = [f"model:{mv.label}"]
        policy, _ = registry.policies()[name]
        selected = _selected(registry, name, policy)
    finally:
        registry.close()
        audit.close()
    click.echo(f"{mv.label}: signature change confirmed; {policy} {selected}")


@models.command("batching")
@click.argument("name")
@click.option("--max-batch-size", type=int, default=None, help="Rows per request and execution.")
@click.option("--max-queue-delay-us", type=int, default=None, help="Wait for a fuller batch.")
@click.option(
    "--preferred-batch-sizes", default=None, metavar="N,N,...", help="Batch sizes to aim for."
)
@click.option("--max-queue-size", type=int, default=None, help="Queued requests before 503.")
@click.option("--latency-budget-us", type=int, default=None, help="Cap on the added wait.")
@click.option("--default-timeout-us", type=int, default=None, help="Deadline when none is given.")
@click.option("--default-priority", type=int, default=None, help="Priority level when none given.")
@click.option("--dynamic/--no-dynamic", default=None, help="Merge concurrent requests.")
@click.option(
    "--execution",
    type=click.Choice(["auto", "inline", "thread"]),
    default=None,
    help="Run on the event loop, in the model's thread, or decide by execution time.",
)
@click.option("--reset", is_flag=True, help="Forget this model's settings: server defaults apply.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@refusals_exit_2
def batching(ctx: Context, /, name: str, reset: bool, as_json: bool, **values: Any) -> None:
    """Set NAME's dynamic batching; running servers follow within a second.

    Without options, shows the settings in effect and where each comes from.
    """
    check_name(name)
    given = {k: v for k, v in values.items() if v is not None}
    if "preferred_batch_sizes" in given:
        given["preferred_batch_sizes"] = _int_list(given["preferred_batch_sizes"])
    registry = ModelRegistry(ctx.settings)
    try:
        current = registry.batching().get(name)
        if current is None:
            registry.get(name)  # raises ModelNotFound with the usual message
            current = {}
        merged = current
        if given or reset:
            merged = {} if reset else {**current, **given}
            BatchingConfig.from_dict(merged)  # refuse bad values before storing them
            audit = Auditor(ctx.settings)
            try:
                with audit.operation(
                    "config_change", model_name=name, resources={"batching": merged}
                ) as op:
                    registry.set_batching(name, merged)
                    op.resources_affected = [f"model:{name}"]
            finally:
                audit.close()
    finally:
        registry.close()
    base = BatchingConfig(**ctx.settings.batching.model_dump())
    effective = BatchingConfig.from_dict(merged, base=base).to_dict()
    if as_json:
        echo_json({"model": name, "own": merged, "effective": effective})
        return
    rows = [
        (key, _setting(value), "model" if key in merged else "server default")
        for key, value in effective.items()
    ]
    click.echo(
        f"{name}: batching"
        + (" (changed; servers follow within a second)" if given or reset else "")
    )
    click.echo(table(("SETTING", "VALUE", "FROM"), rows))


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValidationFailed(f"not a list of integers: {text!r}") from None


@models.command("policy")
@click.argument("name")
@click.argument("policy", metavar="[latest[:N]|all|specific:vX.Y.Z[,...]]", required=False)
@click.pass_obj
@refusals_exit_2
def policy(ctx: Context, name: str, policy: str | None) -> None:
    """Choose which versions of NAME are served (running servers follow within a second);
    without a policy, show the one in force and the versions it selects."""
    check_name(name)
    if policy is None:
        registry = ModelRegistry(ctx.settings)
        try:
            current, _ = registry.policies().get(name, (VersionPolicy("latest"), True))
            click.echo(f"{name}: {current} ({_selected(registry, name, current)})")
        finally:
            registry.close()
        return
    parsed = VersionPolicy.parse(policy)
    registry = ModelRegistry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(
            "config_change", model_name=name, resources={"version_policy": str(parsed)}
        ) as op:
            registry.set_policy(name, parsed)
            op.resources_affected = [f"model:{name}"]
        selected = _selected(registry, name, parsed)
    finally:
        registry.close()
        audit.close()
    click.echo(f"{name}: serving {parsed} ({selected})")


def _selected(registry: ModelRegistry, name: str, policy: VersionPolicy) -> str:
    mvs = registry.list_versions(name)
    if not mvs:
        raise ModelNotFound(name)
    chosen = policy.select([mv.version for mv in mvs], {mv.version for mv in mvs if mv.held})
    return "selects " + ", ".join(chosen) if chosen else "selects no version"
