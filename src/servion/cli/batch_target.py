"""What a batch job runs: a model version named outright, the latest of a model, or the one
version an endpoint answers with. An endpoint whose traffic is split between versions (A/B,
a canary under way), or whose answers come from several models (a cascade, an ensemble), is
refused, naming its versions: a job's output is one version's predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from servion.errors import InvalidInput, ModelNotFound, quoted

if TYPE_CHECKING:
    from servion.registry import ModelRegistry, ModelVersion


def target_version(registry: ModelRegistry, name: str, version: str | None) -> ModelVersion:
    """The version a job named ``name[:version]`` runs."""
    try:
        return registry.get(name, version)
    except ModelNotFound:
        if version is None:
            endpoint = _endpoint_version(registry, name)
            if endpoint is not None:
                return endpoint
        raise


def _endpoint_version(registry: ModelRegistry, name: str) -> ModelVersion | None:
    from servion.deploy import Deployments, EndpointNotFound

    try:
        spec = Deployments(registry).current(name).spec
    except EndpointNotFound:
        return None
    serving = [a for a in spec.models if a.weight > 0]
    arms = ", ".join(f"{a.model}:{a.version} ({a.weight:g} %)" for a in serving)
    if spec.cascade is not None or spec.ensemble is not None:
        kind = "a cascade" if spec.cascade is not None else "an ensemble"
        raise InvalidInput(
            f"endpoint {quoted(name)} answers with {kind} of models: a batch job runs one model"
            " version: name it"
        )
    if len(serving) != 1:
        raise InvalidInput(
            f"endpoint {quoted(name)} splits its traffic between {arms}: a batch job runs one"
            " model version: name it"
        )
    arm = serving[0]
    chosen = registry.get(arm.model, arm.version)
    click.echo(f"endpoint {name} answers with {chosen.label}: running it", err=True)
    return chosen
