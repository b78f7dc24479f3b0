"""``servion drift quality MODEL --policy P``: what a request failing a data quality check
gets, per model."""

from __future__ import annotations

import click

from servion.cli.common import Context, audited_change, refusals_exit_2
from servion.errors import ModelNotFound

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
    resources = {"policy": policy, "range_margin": range_margin}
    change = audited_change(ctx, "data_quality_policy", model_name=model, resources=resources)
    with change as (registry, op):
        if not registry.list_versions(model):
            raise ModelNotFound(model)
        registry.drift.set_quality(model, policy, range_margin)
        op.resources_affected = [f"model:{model}"]
    margin = f", ranges widened by {range_margin:g} of their span" if range_margin else ""
    click.echo(f"data quality policy of {model}: {policy}{margin}")
