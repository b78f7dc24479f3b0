"""``servion drift quality MODEL --policy P``: what a request failing a data quality check
gets, per model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from servion.cli.common import Context, open_registry, refusals_exit_2
from servion.errors import ModelNotFound

if TYPE_CHECKING:  # the registry and audit (sqlalchemy, pydantic): only where used
    from servion.registry import ModelRegistry

POLICIES = ("off", "accept", "flag", "refuse")
"""``servion.drift.quality.POLICIES``, spelled out: ``drift report`` must not import numpy."""


@click.command()
@click.argument("model")
@click.option(
    "--policy",
    type=click.Choice(POLICIES),
    required=True,
    help="off: no checks; accept: count findings; flag: also name them in the response"
    " parameter servion_data_quality; refuse: answer 400.",
)
@click.option(
    "--range-margin",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Widen each feature's reference range by this times its span on each side.",
)
@click.pass_obj
@refusals_exit_2
def quality(ctx: Context, model: str, policy: str, range_margin: float) -> None:
    """Check MODEL's requests against each version's reference range (servers follow
    within a second)."""
    from servion.audit import Auditor

    registry: ModelRegistry = open_registry(ctx.settings)
    audit = Auditor(ctx.settings)
    try:
        with audit.operation(
            "data_quality_policy",
            model_name=model,
            resources={"policy": policy, "range_margin": range_margin},
        ) as op:
            if not registry.list_versions(model):
                raise ModelNotFound(model)
            registry.drift.set_quality(model, policy, range_margin)
            op.resources_affected = [f"model:{model}"]
    finally:
        registry.close()
        audit.close()
    margin = f", ranges widened by {range_margin:g} of their span" if range_margin else ""
    click.echo(f"data quality policy of {model}: {policy}{margin}")
